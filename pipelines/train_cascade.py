"""cgan-ct-train-cascade: train the synthesis cascade (coarse generator + x2 depixelation stages).

  cgan-ct-train-cascade --input PATH [PATH ...] --output_dir OUT [--preset cpu|paper|smoke]
                        [--levels 3] [--size 512] [--stage_steps N] [--coarse_steps N]
                        [--test_fraction 0.2] [--seed 0] [--workers N]
                        [--nodegrade_conditions] [--condition_shift 0] [--stage_l1_weight 10]
                        [--stage_spectral_weight 0] [--stage_spectral_patch 0] [--pyramid subsample]
                        [--stage_upsample transpose] [--stage_spectral_levels 0,1,2] [--nocoarse_calibration]
                        [--stage_residual_base condition|smooth] [--stage_residual_sigma 1]
                        [--nooutput_calibration] [--nooutput_grain] [--placement] [--coarse_augment_color]
                        [--coarse_keep last|diverse] [--coarse_ema_decay 0.999]
                        [--coarse_mode_seeking 1 [--coarse_mode_seeking_bounded]]
                        [--mirror_axes z,y,x|none] [--[no]quarter_turns] [--elastic_voxels 0]
                        [--elastic_sampling trilinear|noise_preserving]

PATH: DICOM folders, volume files, or root folders of them. OUT receives
datasets/level<j>/, runs/ and cascade/ (the model set for cgan-ct-synthesize).
Running again into OUT resumes: finished stages are skipped. The coarse
generator trains first; its samples' blur and noise against the training
volumes are measured (OUT/runs/degradation.json) and the x2 stages train on
conditions degraded so (--nodegrade_conditions: on clean down-sampled volumes).
The stages' L1 weight is 10 unless --stage_l1_weight says otherwise: at the
presets' weight (1000 for cpu) a stage learns the blurred mean, measured with
noise power 0.69x real in mean frequency; at 10, 0.88x. The augmentation flags
set the stages' training blocks, as cgan-ct-train's do. The coarse generator's
HU are calibrated to the training volumes' (one monotone map, fitted to 16
draws: OUT/runs/coarse_calibration.json) before anything sees them
(--nocoarse_calibration: served as drawn, as before 2026-12-06). Last, the
whole cascade's volumes are calibrated to the training volumes' at full
resolution, lung (below -400 HU), the partial range (-400 to -190 HU), fat to
soft tissue and bone (300 HU and above) matched apart, fitted to 8 volumes
(OUT/runs/output_calibration.json; cascade.json's output_calibration, which
cgan-ct-synthesize applies; --nooutput_calibration: none, as before 2026-12-06).
Then the texture of the calibrated volumes is fitted to the training volumes'
soft-tissue noise power, on 4 volumes: mottle below their median noise smoothed
out, the grain they lack added (OUT/runs/output_grain.json; cascade.json's
output_grain, which cgan-ct-synthesize applies unless --nograin; --nooutput_grain:
none, as before 2026-12-07). Experimental: --placement records each training
volume's in-plane spacing and body offset (cascade.json's placements), from
which cgan-ct-synthesize draws each volume's field of view and body position, as
real archives differ in both (measured on two sets of draws: pairs more
different, at no measured cost; BUILD_NOTES "Placement on the coarse level").
The coarse generator's diversity is checked 10 times while it trains
(OUT/runs/coarse_diversity.json), with the draws' body size, lung and bone
share beside the training volumes' range (a warning when the kept generator's
are outside it); --coarse_keep diverse keeps the generator of the most diverse
check whose bodies' HU stay near the real ones' and whose median draw lies in
that range, not the last (a coarse GAN on few bodies can collapse late).
Experimental: before the range joined the rule, it once kept a diverse
generator whose bodies had no lungs. --coarse_ema_decay D draws, checks
and saves a moving average of the coarse generator's weights instead of its last
step's (the generator being trained is checked too, for the record).
--coarse_mode_seeking W adds MSGAN's mode-seeking term at weight W to the coarse
generator's loss: two codes drawn at the same heights must give two different
bodies (compared at body scale); --coarse_mode_seeking_bounded pushes a pair
only while it is closer than real bodies are.
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job
from cgan_ct.cli.augmentation import augmentation_from_flags, define_augmentation
from cgan_ct.config import PRESETS, UPSAMPLINGS, coarse_config, conversion_config, model_config

_INPUT = flags.DEFINE_list("input", None, "DICOM folders, volume files, or root folders of them.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for datasets, runs and the cascade.")
_PRESET = flags.DEFINE_enum("preset", "cpu", list(PRESETS), "Model sizes of every stage.")
_LEVELS = flags.DEFINE_integer("levels", 3, "x2 stages between the coarse level and full resolution.")
_SIZE = flags.DEFINE_integer("size", 512, "In-plane voxels of the synthetic volumes.")
_STAGE_STEPS = flags.DEFINE_integer("stage_steps", 2000, "Training steps per depixelation stage.")
_COARSE_STEPS = flags.DEFINE_integer("coarse_steps", None, "Training steps of the coarse generator (preset's).")
_TEST = flags.DEFINE_float("test_fraction", 0.2, "Fraction of patients held out.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split, the training and the noise.")
_WORKERS = flags.DEFINE_integer("workers", None, "Conversion processes (default: all cores).")
_DEGRADE = flags.DEFINE_boolean(
    "degrade_conditions", True, "Train the stages on conditions blurred and noised as the coarse samples are."
)
_DIVERSITY = flags.DEFINE_integer(
    "diversity_checks",
    10,
    "Measure the coarse generator's diversity (MS-SSIM between draws, against real pairs) this many times "
    "while it trains (OUTPUT/runs/coarse_diversity.json; 0: never).",
    lower_bound=0,
)
_KEEP = flags.DEFINE_enum(
    "coarse_keep",
    "last",
    ["last", "diverse"],
    "Which coarse generator the cascade keeps: the last step's, or the most diverse of the diversity checks "
    "whose draws' body HU stay within 2x the real volumes' W1 and whose median draw's body size, lung and bone "
    "share lie in the training volumes' range (diverse: against a coarse GAN that collapses late; experimental).",
)
_SHIFT = flags.DEFINE_integer("condition_shift", 0, "Also shift the stages' conditions by up to N voxels per axis.")
_AUGMENT = define_augmentation()  # the stages' (the coarse generator augments as CoarseConfig says)
STAGE_L1_WEIGHT = 10.0  # issue 33, item 3: real-like noise texture at a stage (BUILD_NOTES, "Stage texture")
_L1 = flags.DEFINE_float(
    "stage_l1_weight",
    STAGE_L1_WEIGHT,
    "L1 weight of the x2 stages (the preset's, 1000 for cpu, gives smooth stages: the adversarial term then adds "
    "no texture).",
    lower_bound=0.0,
)
_SPECTRAL = flags.DEFINE_float(
    "stage_spectral_weight",
    0.0,
    "Weight of the x2 stages' texture term (cgan-ct-train's --spectral_weight; 0: off).",
    lower_bound=0.0,
)
_SPECTRAL_PATCH = flags.DEFINE_integer(
    "stage_spectral_patch",
    0,
    "Measure the stages' texture term in in-plane tiles of this edge (cgan-ct-train's --spectral_patch; 0: the "
    "whole plane).",
    lower_bound=0,
)
_UPSAMPLE = flags.DEFINE_enum(
    "stage_upsample",
    "transpose",
    list(UPSAMPLINGS),
    "How the stages' U-Nets double their grid (cgan-ct-train's --upsample): transpose, or resize (no period-2 "
    "cross-hatch).",
)
_SPECTRAL_LEVELS = flags.DEFINE_list(
    "stage_spectral_levels",
    None,
    "The stages whose loss carries the texture term (--stage_spectral_weight), by level (0: the full-resolution "
    "stage); default: every stage.",
)
_CALIBRATE = flags.DEFINE_boolean(
    "coarse_calibration",
    True,
    "Calibrate the coarse generator's HU to the training volumes' at the coarse level (one monotone map of its "
    "body intensities' quantiles; the saved coarse model serves calibrated draws).",
)
_CALIBRATE_OUTPUT = flags.DEFINE_boolean(
    "output_calibration",
    True,
    "Calibrate the full-resolution volumes' HU to the training volumes' (lung below -400 HU, -400 to -190 HU, fat "
    "to soft tissue and bone from 300 HU matched apart, so each band's amount stays the generator's); "
    "cgan-ct-synthesize applies it.",
)
_GRAIN = flags.DEFINE_boolean(
    "output_grain",
    True,
    "Fit the calibrated volumes' texture to the training volumes' soft-tissue noise power (mottle below their "
    "median noise smoothed out, the grain they lack added); cgan-ct-synthesize applies it unless --nograin.",
)
_PLACEMENT = flags.DEFINE_boolean(
    "placement",
    False,
    "Experimental: record the training volumes' in-plane spacing, body offset and fill; cgan-ct-synthesize then "
    "draws each volume's field of view and body position from them (off: every volume on one grid).",
)
_COLOR = flags.DEFINE_boolean(
    "coarse_augment_color",
    False,
    "The coarse discriminator also sees a random brightness and contrast change of every volume, real and drawn "
    "alike (DiffAugment's colour). Measured: more diverse coarse draws on the subsampled pyramid, not on the mean "
    "pyramid of pretrained:synthesis's recipe (BUILD_NOTES).",
)
_COARSE_EMA = flags.DEFINE_float(
    "coarse_ema_decay",
    None,
    "Draw, check and save a moving average of the coarse generator's weights at this decay (e.g. 0.999) rather "
    "than its last step's weights (preset's: 0, none). Measured: steadier body HU and bone share, not less "
    'collapse (BUILD_NOTES, "A moving average of the coarse generator").',
)
_COARSE_MODE_SEEKING = flags.DEFINE_float(
    "coarse_mode_seeking",
    None,
    "Weight of MSGAN's mode-seeking term in the coarse generator's loss (preset's: 0, none): pairs of draws at the "
    "same slice heights are pushed apart at body scale, against mode collapse.",
)
_COARSE_MODE_SEEKING_BOUNDED = flags.DEFINE_bool(
    "coarse_mode_seeking_bounded",
    False,
    "With --coarse_mode_seeking: push a pair of draws apart only while it is closer than real bodies are (measured "
    "on the training volumes before training), not beyond.",
)
_STAGE_BASE = flags.DEFINE_enum(
    "stage_residual_base",
    None,
    ["condition", "smooth"],
    "What the x2 stages' residual corrects: the condition's cells repeated (condition, the mean pyramid's default) "
    "or the condition blurred by a Gaussian of --stage_residual_sigma voxels (smooth: a base without the grid).",
)
_STAGE_SIGMA = flags.DEFINE_float(
    "stage_residual_sigma", None, "Gaussian sigma in voxels of the stages' blurred base (--stage_residual_base smooth)."
)
_PYRAMID = flags.DEFINE_enum(
    "pyramid",
    "subsample",
    ["subsample", "mean"],
    "How the coarser levels are made: every 2**j-th voxel (subsample: each level keeps full-resolution voxel "
    "noise) or each 2**j-voxel cube's mean (mean: a smooth coarse level, each stage adding its own noise).",
)


def _stage_levels(values: list[str] | None) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--stage_spectral_levels takes stage levels such as 0,1; got {','.join(values)}") from None


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.fit_progress import FitProgress
    from cgan_ct.synthesis.cascade_training import CascadeSettings, train_cascade

    preset = _PRESET.value
    settings = CascadeSettings(
        levels=_LEVELS.value,
        size=_SIZE.value,
        stage=model_config(
            preset,
            l1_weight=_L1.value,
            spectral_weight=_SPECTRAL.value,
            spectral_patch=_SPECTRAL_PATCH.value,
            upsample=_UPSAMPLE.value,
            residual_base=_STAGE_BASE.value,
            residual_sigma=_STAGE_SIGMA.value,
        ),
        stage_steps=_STAGE_STEPS.value,
        coarse=coarse_config(
            preset,
            steps=_COARSE_STEPS.value,
            augment_color=_COLOR.value,
            ema_decay=_COARSE_EMA.value,
            mode_seeking=_COARSE_MODE_SEEKING.value,
            mode_seeking_bounded=_COARSE_MODE_SEEKING_BOUNDED.value or None,
        ),
        conversion=conversion_config("smoke" if preset == "smoke" else "paper", test_fraction=_TEST.value),
        seed=_SEED.value,
        degrade=_DEGRADE.value,
        condition_shift=_SHIFT.value,
        diversity_checks=_DIVERSITY.value,
        coarse_keep=_KEEP.value,
        stage_augmentation=augmentation_from_flags(_AUGMENT),
        pyramid=_PYRAMID.value,
        spectral_levels=_stage_levels(_SPECTRAL_LEVELS.value),
        calibrate_coarse=_CALIBRATE.value,
        calibrate_output=_CALIBRATE_OUTPUT.value,
        output_grain=_GRAIN.value,
        placement=_PLACEMENT.value,
    )

    def callbacks(name):
        steps = settings.coarse.steps if name == "coarse" else settings.stage_steps
        return [FitProgress(name, steps=steps, show=("g_l1", "d_loss", "g_loss"))]

    cascade = train_cascade(
        _INPUT.value,
        _OUTPUT.value,
        settings,
        say=lambda m: print(m, flush=True),
        callbacks=callbacks,
        workers=_WORKERS.value,
    )
    print(f"cascade ready: {cascade}\nnext: cgan-ct-synthesize --model_dir {cascade} --output_dir SYNTHETIC --count 4")


def run() -> None:
    job.run(main, __name__, required=("input", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
