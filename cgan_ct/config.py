"""Configurations as frozen dataclasses, with named presets.

Jobs pick a preset by name and override fields from their flags.
"""

from __future__ import annotations

import dataclasses
import math

from cgan_ct.constants import AIR_HU, PYRAMIDS

INTENSITY_KINDS = ("equalize", "linear")
PRESETS = ("cpu", "paper", "smoke")  # every kind of config has these three

# The block edge and the U-Net's down-sampling levels meet in two configs (the data is cut for the
# model): one default, one check.
BLOCK_SIZE = 32  # the paper's 32^3 blocks
UNET_DEPTH = 4
_SMOKE_BLOCK_SIZE, _SMOKE_UNET_DEPTH = 16, 2


def check_block_size(block_size: int, depth: int, depth_name: str = "unet_depth") -> None:
    """ValueError unless ``block_size`` is a positive multiple of 2**depth (the generator's down-sampling)."""
    if depth < 1 or block_size <= 0 or block_size % (2**depth):
        raise ValueError(
            f"block_size {block_size} must be a positive multiple of 2**{depth_name} = {2**depth} "
            "(the generator's down-sampling)"
        )


def from_preset(presets: dict, name: str, what: str, overrides: dict):
    """``presets[name]`` with ``overrides`` applied (None values are ignored): the one preset accessor."""
    if name not in presets:
        raise ValueError(f"unknown {what} preset {name!r}; choose from {sorted(presets)}")
    return dataclasses.replace(presets[name], **{k: v for k, v in overrides.items() if v is not None})


STORED_CONDITIONS = (None, "lowdose", "paired")


@dataclasses.dataclass(frozen=True)
class LowDoseConfig:
    """The ``lowdose`` condition: a lower dose simulated in the projection domain (cgan_ct.ops.lowdose).

    Attributes:
      dose: the simulated dose as a fraction of the scan's own (0.25: quarter dose).
      i0: photons per detector bin and view reaching the detector unattenuated at the scan's
        own dose (full dose), for ``views`` views over 180 degrees; None (the default):
        calibrated on each scan, so that the noise simulated at its own dose equals the noise
        it shows (soft tissue, cgan_ct.ops.noise_level), and quarter dose doubles it.
        ``REFERENCE_I0`` (3e6) gives about 20 HU at the centre of a 30 cm water cylinder (0.7 mm
        pixels); scans with no soft tissue to measure fall back to it.
      electronic_variance: variance of the detector's electronic noise (counts squared);
        10 as in the low-dose simulation literature (e.g. Zeng et al., IEEE TNS 2015).
      views: projection angles over 180 degrees (parallel beam).
      seed: seeds the noise; each volume draws from (seed, its pseudonymous id), each slice
        from its index, so a conversion is reproducible.
    """

    dose: float = 0.25
    i0: float | None = None
    electronic_variance: float = 10.0
    views: int = 360
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.dose <= 1:
            raise ValueError(f"dose must be in (0, 1], got {self.dose}")
        if (self.i0 is not None and self.i0 <= 0) or self.electronic_variance < 0:
            raise ValueError(f"i0 must be > 0 and electronic_variance >= 0, got {self.i0}, {self.electronic_variance}")
        if self.views < 8:
            raise ValueError(f"views must be >= 8, got {self.views}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """How CT volumes become TFRecord blocks.

    Attributes:
      block_size: edge of the cubic blocks the GAN sees (voxels).
      margin: context stored on each side of a block, so the input pipeline
        can translate and rotate without inventing voxels. A record holds
        (block_size + 2 * margin)^3 voxels.
      test_fraction: fraction of patients in the test split.
      seed: seed of the patient split.
      shard_target_mb: approximate size of one TFRecord shard.
      spacing_mm: resample every volume to this (z, y, x) spacing; None keeps
        the native grid (the paper's full resolution).
      drop_outside_body: drop blocks with no voxel inside the body.
      unet_depth: down-sampling levels of the generator; block_size must
        divide by 2 ** unet_depth.
      pad_hu: value of voxels beyond the volume's edge (air).
      intensity: "linear" (a fixed window, CLIP_HU to [-1, 1]: the default,
        measured 1.5 dB better in HU on held-out real CT, BUILD_NOTES.md
        "Training recipe") or "equalize" (the paper's histogram
        equalization, fitted on the training split).
      subsample: keep every subsample-th voxel along z, y, x after reading
        (cgan_ct.ops.pyramid: the synthesis cascade's coarser levels); 1 keeps all.
      pyramid: how a subsampled level is made (cgan_ct.ops.pyramid.PYRAMIDS):
        "subsample" (every subsample-th voxel) or "mean" (each cube's mean).
      condition: a paired condition stored beside each block (the ``lowdose``
        task trains on it): None (none), "lowdose" (simulated in the projection
        domain from each volume, with ``lowdose``'s settings) or "paired" (read
        from a second series of the same patient: ``convert(condition_inputs=)``).
      lowdose: the simulation's settings, used when condition is "lowdose".
      nonfinite: NaN / infinite voxels of volume files: "error" (the volume
        is skipped, with the reason) or "air" (set to -1024 HU, with a warning).
    """

    block_size: int = BLOCK_SIZE
    margin: int = 8
    test_fraction: float = 0.2
    seed: int = 0
    shard_target_mb: float = 150.0
    spacing_mm: tuple[float, float, float] | None = None
    drop_outside_body: bool = False
    unet_depth: int = UNET_DEPTH
    pad_hu: int = AIR_HU
    intensity: str = "linear"
    subsample: int = 1
    pyramid: str = "subsample"
    condition: str | None = None
    lowdose: LowDoseConfig = LowDoseConfig()
    nonfinite: str = "error"

    def __post_init__(self):
        if self.nonfinite not in ("error", "air"):
            raise ValueError(f"nonfinite must be 'error' or 'air', got {self.nonfinite!r}")
        if self.condition not in STORED_CONDITIONS:
            raise ValueError(f"condition must be one of {STORED_CONDITIONS}, got {self.condition!r}")
        if self.subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {self.subsample}")
        if self.pyramid not in PYRAMIDS:
            raise ValueError(f"pyramid must be one of {PYRAMIDS}, got {self.pyramid!r}")
        check_block_size(self.block_size, self.unet_depth)
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.shard_target_mb <= 0:
            raise ValueError(f"shard_target_mb must be > 0, got {self.shard_target_mb}")
        if self.intensity not in INTENSITY_KINDS:
            raise ValueError(f"intensity must be one of {INTENSITY_KINDS}, got {self.intensity!r}")
        if self.spacing_mm is not None and (len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0):
            raise ValueError(f"spacing_mm must be three positive values (z, y, x), got {self.spacing_mm}")

    @property
    def stored_size(self) -> int:
        """Edge of a stored record: the block with its margin on both sides."""
        return self.block_size + 2 * self.margin

    @property
    def record_bytes(self) -> int:
        return 2 * self.stored_size**3


CONVERSION_PRESETS = {
    "paper": ConversionConfig(),
    "cpu": ConversionConfig(),
    "smoke": ConversionConfig(
        block_size=_SMOKE_BLOCK_SIZE, margin=4, unet_depth=_SMOKE_UNET_DEPTH, shard_target_mb=1.0
    ),
}


def conversion_config(preset: str = "paper", **overrides) -> ConversionConfig:
    """The named conversion preset with ``overrides`` applied (None values are ignored)."""
    return from_preset(CONVERSION_PRESETS, preset, "conversion", overrides)


NORMALIZATIONS = ("instance", "batch", "none")
ADVERSARIAL_LOSSES = ("nonsaturating", "least_squares")
L1_SPACES = ("normalized", "hu")
RESIDUAL_BASES = ("auto", "condition", "cubic", "smooth")
UPSAMPLINGS = ("transpose", "resize")
OUTER_NORMALIZATIONS = ("auto", "on", "off")


def outer_normalization_used(setting: str, residual: bool) -> str:
    """``ModelConfig.outer_normalization`` as built: "auto" is "on" with the residual output, else "off"."""
    if setting == "auto":
        return "on" if residual else "off"
    return setting


LR_SCHEDULES = ("constant", "cosine")
FLOAT32, BFLOAT16, FLOAT16, AUTO = "float32", "bfloat16", "float16", "auto"
PRECISIONS = (FLOAT32, BFLOAT16, FLOAT16, AUTO)  # cgan_ct.model.precision resolves "auto"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The networks and their training.

    Attributes:
      block_size: edge of the blocks (must divide by 2 ** depth).
      base_filters: filters of the generator's first level (doubling per level).
      depth: down-sampling levels of the U-Net.
      normalization: "instance" (default: per-block statistics, so one and
        several replicas compute the same thing), "batch" or "none".
      dropout: dropout rate in the two deepest levels of the decoder.
      residual: the generator corrects its condition (output starts as Y)
        instead of drawing the block from scratch; see cgan_ct.model.networks.
      residual_base: what the residual output corrects: "condition" (Y),
        "cubic" (the cubic interpolation of Y's samples every
        ``residual_factor`` voxels: depixelate only), "smooth" (Y blurred by a
        Gaussian of ``residual_sigma`` voxels: the noise tasks; the correction
        then restores edges instead of removing noise), or "auto" (cubic for
        depixelate, the condition otherwise; resolved by
        cgan_ct.model.training.model_for_task, which also sets the factor).
      disc_filters, disc_layers: the PatchGAN's first filters and strided layers.
      adversarial: "nonsaturating" (the paper's minimax, non-saturating form)
        or "least_squares".
      l1_weight: lambda of the L1 term (pix2pix: 100).
      spectral_weight: weight of a texture term (0: off, the paper's losses): the
        mean absolute difference between output and target of the axial detail's
        amplitude in four radial frequency bands (cgan_ct.model.losses.spectral_loss).
        Phase-free, so it asks for the target's grain without asking for its
        noise voxel by voxel, which L1 answers with the mean (issue 33, item 3).
      spectral_patch: 0 (the term over each slice's whole plane) or the edge of the
        in-plane tiles it is measured in, each tile apart (dividing block_size):
        so the detail has to be where the target has it, not noise in uniform
        tissue standing in for missing edges.
      upsample: how the U-Net's decoder doubles its grid: "transpose" (a 2 x 2 x 2 transposed convolution,
        stride 2: the paper's and every model before) or "resize" (nearest-neighbour doubling, then a 3 x 3 x 3
        convolution). A stride-2 transposed kernel gives each voxel of a 2-cell its own weights, so its output
        carries a period-2 grid (power at the Nyquist frequency, seen as a cross-hatch); the resize form
        treats every voxel alike (Odena, Dumoulin and Olah, "Deconvolution and checkerboard artifacts", 2016).
      l1_space: "normalized" (L1 of the [-1, 1] values, the paper's) or "hu"
        (L1 of the values mapped back to HU, divided by 2048 so a linear
        window gives the same number: with histogram equalization the
        normalized L1 spends most of its weight on air, HU weights errors as
        PSNR in HU does).
      ema_decay: exponential moving average of the generator's weights, used
        for validation and saved as the run's generators (0: off). The decay
        warms up as min(ema_decay, (1 + t) / (10 + t)) at step t.
      g_learning_rate, d_learning_rate, beta_1: Adam settings.
      lr_schedule: "constant", or "cosine": both learning rates decay along a
        half cosine to 10 % over the run's steps.
      global_batch_size, epochs: the paper's 50 and 100.
      precision: "float32", "bfloat16", "float16" (Keras' mixed policies: variables,
        losses, the output layers and HU in float32) or "auto": bfloat16 on GPUs of
        compute capability >= 8 and CPUs with AMX-BF16, float32 elsewhere
        (cgan_ct.model.precision; the choice and its reason go to run.json).
      mixed_precision: the old switch for float16, kept as an alias: True sets
        precision "float16" (refused beside "bfloat16") and reads back False.
      jit_compile: XLA; for GPUs.
    """

    block_size: int = BLOCK_SIZE
    base_filters: int = 32
    depth: int = UNET_DEPTH
    normalization: str = "instance"
    outer_normalization: str = "auto"
    dropout: float = 0.5
    residual: bool = True
    residual_base: str = "auto"
    residual_factor: int = 2
    residual_sigma: float = 1.0
    disc_filters: int = 32
    disc_layers: int = 3
    adversarial: str = "nonsaturating"
    l1_weight: float = 100.0
    spectral_weight: float = 0.0
    spectral_patch: int = 0
    upsample: str = "transpose"
    l1_space: str = "normalized"
    ema_decay: float = 0.0
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    beta_1: float = 0.5
    lr_schedule: str = "constant"
    global_batch_size: int = 50
    epochs: int = 100
    precision: str = "auto"
    mixed_precision: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.mixed_precision:  # the old switch: float16 over a preset's float32 or auto, never over bfloat16
            if self.precision == BFLOAT16:
                raise ValueError("mixed_precision (float16) contradicts precision 'bfloat16'")
            object.__setattr__(self, "precision", FLOAT16)
            object.__setattr__(self, "mixed_precision", False)  # one canonical form: precision says it
        check_block_size(self.block_size, self.depth, "depth")
        if self.block_size % (2**self.disc_layers):
            raise ValueError(f"block_size {self.block_size} must divide by 2**disc_layers = {2**self.disc_layers}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.outer_normalization not in OUTER_NORMALIZATIONS:
            raise ValueError(
                f"outer_normalization must be one of {OUTER_NORMALIZATIONS}, got {self.outer_normalization!r}"
            )
        if self.adversarial not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.l1_weight >= 0 and self.spectral_weight >= 0):
            raise ValueError(f"loss weights must be >= 0, got l1 {self.l1_weight}, spectral {self.spectral_weight}")
        if self.spectral_patch and (self.spectral_patch < 4 or self.block_size % self.spectral_patch):
            raise ValueError(
                f"spectral_patch must be 0 or a divisor >= 4 of block_size {self.block_size}, got {self.spectral_patch}"
            )
        if self.upsample not in UPSAMPLINGS:
            raise ValueError(f"upsample must be one of {UPSAMPLINGS}, got {self.upsample!r}")
        if self.l1_space not in L1_SPACES:
            raise ValueError(f"l1_space must be one of {L1_SPACES}, got {self.l1_space!r}")
        if self.residual_base not in RESIDUAL_BASES:
            raise ValueError(f"residual_base must be one of {RESIDUAL_BASES}, got {self.residual_base!r}")
        if not 0 < self.residual_sigma <= self.block_size / 4:
            raise ValueError(f"residual_sigma must be in (0, block_size / 4], got {self.residual_sigma}")
        if self.residual_factor < 1 or self.block_size % self.residual_factor:
            raise ValueError(f"residual_factor must divide block_size {self.block_size}, got {self.residual_factor}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if min(self.base_filters, self.disc_filters, self.global_batch_size, self.epochs) < 1:
            raise ValueError("filters, batch size and epochs must be positive")


MODEL_PRESETS = {
    "paper": ModelConfig(),
    # The recipe measured on held-out real CT (BUILD_NOTES.md, "Training recipe"): L1 weight 1000 (the
    # adversarial share at a tenth), a moving average of G's weights, cosine learning-rate decay.
    "cpu": ModelConfig(
        base_filters=8,
        depth=3,
        disc_filters=8,
        global_batch_size=8,
        epochs=5,
        dropout=0.0,
        l1_weight=1000.0,
        ema_decay=0.99,
        lr_schedule="cosine",
    ),
    "smoke": ModelConfig(
        block_size=_SMOKE_BLOCK_SIZE,
        base_filters=4,
        depth=_SMOKE_UNET_DEPTH,
        disc_filters=4,
        disc_layers=2,
        global_batch_size=4,
        epochs=1,
        precision=FLOAT32,  # the same numbers on every machine: tests and smoke runs compare them
    ),
}


def model_config(preset: str = "paper", **overrides) -> ModelConfig:
    """The named model preset with ``overrides`` applied (None values are ignored)."""
    return from_preset(MODEL_PRESETS, preset, "model", overrides)


@dataclasses.dataclass(frozen=True)
class CoarseConfig:
    """The synthesis cascade's coarse generator: whole low-resolution volumes from noise.

    Attributes:
      size: in-plane voxels of the coarse level (512 / 2**levels; a power of
        two >= 8; the latent grid is 4 x 4 in-plane).
      latent_channels: noise channels per latent voxel (one latent slice per
        coarse slice, so the depth follows the requested slice count).
      filters: filters at the latent level, halved at each in-plane
        up-sampling (never below 8); the discriminator mirrors them.
      crop_depth: coarse slices per training example (a random z crop; the
        relative z position of each slice is an input of both networks).
      batch_size, steps, learning_rate, beta_1: training.
      r1_gamma: weight of the R1 penalty (squared gradient of D on real
        volumes); keeps D from overfitting the few training volumes.
      r1_every: the penalty is computed every r1_every-th step only (and
        weighted by it), as in StyleGAN2: it doubles a step's cost.
      augment: translate and cut out what D sees, real and generated alike
        (differentiable augmentation: D cannot memorize the training crops,
        and G is not taught the augmentations, since both sides get them).
      augment_color: with augment, D also sees a random brightness and
        contrast change (the same kind for real and generated).
      disc_filters: the discriminator's filters at the latent level (None:
        ``filters``), halved per level as the generator's.
      scale_augment: training crops are zoomed in-plane by a random factor in
        [1 - x, 1 + x] (body sizes the cohort lacks; G learns them: keep small).
      shift_augment_hu: training crops are shifted by a random HU offset in
        [-x, x] (scanner calibration; G learns it too).
      elastic_augment: training crops are deformed in-plane by a smooth random
        displacement of at most x voxels (4 x 4 control points over the slice,
        the same for every slice of the crop: body shapes the cohort lacks; G
        learns them too). Folds nothing below (size - 1) / (3 pi), 6.7 voxels at 64.
      ema_decay: > 0: what is drawn, checked and saved is an exponential moving
        average of the generator's weights at this decay (warmed up as
        (1 + t) / (10 + t)), not the generator of the last step; the GAN's
        training is unchanged. 0: the last step's generator (as before 2026-12-07).
      mode_seeking: > 0: the generator also minimizes this weight times the
        mode-seeking term of MSGAN (Mao et al. 2019): 1 / (d_volume / d_code),
        over pairs of draws at the same slice heights (each of the first half of
        the batch's draws beside a second draw that D never sees), the volumes'
        distance taken at body scale (in-plane means of squares of
        ``coarse_training.MODE_SEEKING_POOL`` voxels): two codes must draw two
        different bodies. Needs a batch of 2 or more. 0: off (as before 2026-12-07).
      mode_seeking_bounded: the mode-seeking term becomes a hinge: each pair is
        pushed apart only while it is closer at body scale than real bodies are
        (the ``coarse_training.MODE_SEEKING_QUANTILE`` quantile of the distances
        between crops of two different training volumes at the same heights,
        measured once before training), by mode_seeking x (1 - d / that), and
        not at all beyond it: MSGAN's ratio rewards any difference, and bought
        it with noise and too much bone (BUILD_NOTES). Needs mode_seeking > 0 and
        two training volumes or more.
    """

    size: int = 64
    latent_channels: int = 32
    filters: int = 64
    crop_depth: int = 8
    batch_size: int = 8
    steps: int = 2000
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    r1_gamma: float = 1.0
    r1_every: int = 4
    augment: bool = True
    augment_color: bool = False
    disc_filters: int | None = None
    scale_augment: float = 0.0
    shift_augment_hu: float = 0.0
    elastic_augment: float = 0.0
    ema_decay: float = 0.0
    mode_seeking: float = 0.0
    mode_seeking_bounded: bool = False

    def __post_init__(self):
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mode_seeking < 0:
            raise ValueError(f"mode_seeking must be >= 0, got {self.mode_seeking}")
        if self.mode_seeking and self.batch_size < 2:
            raise ValueError(f"mode_seeking pairs draws: batch_size must be at least 2, got {self.batch_size}")
        if self.mode_seeking_bounded and not self.mode_seeking:
            raise ValueError("mode_seeking_bounded bounds the mode-seeking term: it needs mode_seeking > 0")
        if not 0 <= self.scale_augment < 0.5:
            raise ValueError(f"scale_augment must be in [0, 0.5), got {self.scale_augment}")
        if self.shift_augment_hu < 0:
            raise ValueError(f"shift_augment_hu must be >= 0, got {self.shift_augment_hu}")
        if not 0 <= self.elastic_augment <= (self.size - 1) / (3 * math.pi):
            raise ValueError(
                f"elastic_augment must be in [0, {(self.size - 1) / (3 * math.pi):.1f}] (beyond it tissue folds), "
                f"got {self.elastic_augment}"
            )
        if self.disc_filters is not None and self.disc_filters < 1:
            raise ValueError(f"disc_filters must be positive, got {self.disc_filters}")
        if self.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {self.r1_every}")
        if self.r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {self.r1_gamma}")
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"coarse size must be a power of two >= 8, got {self.size}")
        if min(self.latent_channels, self.filters, self.crop_depth, self.batch_size, self.steps) < 1:
            raise ValueError("latent channels, filters, crop depth, batch size and steps must be positive")

    @property
    def upsamplings(self) -> int:
        return (self.size // 4).bit_length() - 1


COARSE_PRESETS = {
    "paper": CoarseConfig(filters=128, latent_channels=64, batch_size=16, steps=20000),
    "cpu": CoarseConfig(),
    "smoke": CoarseConfig(size=8, latent_channels=4, filters=8, crop_depth=4, batch_size=2, steps=4),
}


def coarse_config(preset: str = "cpu", **overrides) -> CoarseConfig:
    """The named coarse-generator preset with ``overrides`` applied (None values are ignored)."""
    return from_preset(COARSE_PRESETS, preset, "coarse", overrides)
