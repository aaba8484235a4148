"""Training a synthesis cascade: a coarse generator and one depixelation stage per level.

Output folder:

  datasets/level<j>/   TFRecords of the inputs at level j (every 2**j-th voxel, or
                       each 2**j cube's mean: ``CascadeSettings.pyramid``),
                       one patient split for all levels (the same seed)
  runs/coarse.keras    the coarse generator (the last step's, or with ``CascadeSettings.coarse_keep``
                       "diverse" the most diverse check's)
  runs/coarse_diversity.json  its diversity checks, what was kept and from which step (with
                       ``CoarseConfig.ema_decay``, also the checks of the generator being trained)
  runs/coarse_calibration.json  its intensity calibration's fit (with
                       ``CascadeSettings.calibrate_coarse``: cgan_ct.synthesis.calibration)
  runs/degradation.json  blur and noise of the coarse generator's samples against
                       the training volumes' coarse level (cgan_ct.synthesis.degradation)
  runs/stage<j>/       the depixelate training run for level j (cgan-ct-train's),
                       its conditions degraded so (``CascadeSettings.degrade``)
  runs/output_calibration.json  the full-resolution volumes' intensity calibration's
                       fit (``CascadeSettings.calibrate_output``), in cascade.json too
  runs/output_grain.json  the fit of the full-resolution volumes' texture (mottle out,
                       real grain in: ``CascadeSettings.output_grain``), in cascade.json too
  cascade/             the model set cgan_ct.synthesis.synthesis.Cascade loads

Order: datasets, coarse generator, degradation, stages, output calibration, output
grain (the stages train on what the coarse generator's samples look like, so it
comes first; the output calibration and then the grain measure the whole cascade's
volumes). Every step
is skipped when its output exists, so an interrupted run resumes at the step it
was in (a depixelation run resumes mid-training, as cgan-ct-train does).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from cgan_ct.config import CoarseConfig, ConversionConfig, ModelConfig
from cgan_ct.constants import (
    AIR_HU,
    BONE_HU,
    CASCADE_FILE,
    COARSE_INFO_FILE,
    DEPIXELATE,
    FAT_HU,
    MANIFEST_FILE,
    SAVED_MODEL_FILE,
)
from cgan_ct.data.conversion import convert
from cgan_ct.data.input_pipeline import PipelineOptions
from cgan_ct.data.manifest import Manifest, load_manifest
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.sources import discover
from cgan_ct.model.export import export_generator
from cgan_ct.model.precision import matrix_features
from cgan_ct.model.training import RunOptions, train
from cgan_ct.ops.intensity import linear_mapping
from cgan_ct.ops.lung import LUNG_THRESHOLD_HU
from cgan_ct.ops.pyramid import check_pyramid, downsample, level_length
from cgan_ct.runtime import cpu_model
from cgan_ct.synthesis.calibration import QUANTILES, Calibration, band_quantiles, fit_band_quantiles, fit_calibration
from cgan_ct.synthesis.cascade_spec import CascadeSpec
from cgan_ct.synthesis.coarse_diversity import (
    DiversityMonitor,
    body_histogram,
    diversity_line,
    like_real,
    mean_w1_hu,
    measurable,
    most_diverse,
)
from cgan_ct.synthesis.coarse_export import CoarseModel, CoarseModule, save_coarse_model
from cgan_ct.synthesis.coarse_training import train_coarse
from cgan_ct.synthesis.degradation import Degradation, fit_degradation
from cgan_ct.synthesis.grain import fit_grain, soft_tissue_nps
from cgan_ct.synthesis.placement import measure as measure_placement
from cgan_ct.synthesis.synthesis import Cascade

DEGRADATION_FILE = "degradation.json"
DEGRADATION_SEED = 1_000_003  # coarse draws for the measurement, apart from any synthesis seed
CALIBRATION_FILE = "coarse_calibration.json"
DIVERSITY_FILE = "coarse_diversity.json"
COARSE_KEEPS = ("last", "diverse")
CALIBRATION_SEED = 2_000_003  # coarse draws the calibration is fitted to, apart from the others
OUTPUT_CALIBRATION_FILE = "output_calibration.json"
OUTPUT_CALIBRATION_SEED = 3_000_017  # whole synthetic volumes the output calibration is fitted to
OUTPUT_GRAIN_FILE = "output_grain.json"
OUTPUT_GRAIN_SEED = 5_000_011  # whole synthetic volumes the output grain is fitted to
# The output calibration matches four bands apart: lung (below the lung mask's threshold), the partial
# range between lung and fat, fat to soft tissue, and bone (so the bone's amount stays the generator's, not
# the fit's: BUILD_NOTES "Calibrated output intensities").
OUTPUT_SPLITS_HU = (float(LUNG_THRESHOLD_HU), float(FAT_HU[0]), float(BONE_HU))
BANDS = ("lung", "partial", "fat to soft tissue", "bone")  # the output calibration's bands, as OUTPUT_SPLITS_HU cut
assert len(BANDS) == len(OUTPUT_SPLITS_HU) + 1, "a name for each band the splits cut"
AUGMENTATION_FIELDS = (  # of PipelineOptions
    "mirror_axes",
    "quarter_turns",
    "max_rotation_deg",
    "elastic_voxels",
    "elastic_sampling",
)


@dataclasses.dataclass(frozen=True)
class CascadeSettings:
    """What to train.

    Attributes:
      levels: x2 stages between the coarse level and full resolution
        (3: 64 x 64 coarse slices for 512 x 512).
      size: in-plane voxels of the synthetic volumes; training volumes are
        centre-cropped or padded with air to it for the coarse level.
      stage: the depixelation models' configuration (block size, filters...).
      stage_steps: training steps per depixelation stage.
      coarse: the coarse generator's configuration (its size is set from
        size and levels).
      conversion: block size, margin and split of the level datasets
        (intensity is forced to the linear window, subsample to each level).
      seed: seeds the split, the training and the noise.
      degrade: train the stages on conditions blurred and noised as the coarse
        generator's samples are (measured, ``degradation_samples`` draws); False:
        on clean down-sampled volumes.
      condition_shift: the stages' conditions also shifted by up to this many
        voxels per axis (not measurable without a paired reference; 0: off).
      stage_augmentation: the stages' training-block augmentation, PipelineOptions keyword
        arguments (mirror_axes, quarter_turns, max_rotation_deg, elastic_voxels,
        elastic_sampling); empty:
        the pipeline's defaults (the paper's turns and mirrors).
      diversity_checks: how many times over its steps the coarse generator's diversity is measured
        (coarse_diversity.DiversityMonitor; rows in runs/coarse_diversity.json; 0: never).
      coarse_keep: which coarse generator the cascade keeps: "last" (the last step's) or "diverse" (the one of
        the check ``coarse_diversity.most_diverse`` picks: the least collapsed whose body HU are near the real
        ones' and whose median draw's body size, lung and bone share lie in the real volumes' range; the last where
        no check qualifies or diversity is not measurable at this size).
      pyramid: how the levels are made (cgan_ct.ops.pyramid): "subsample" (every 2**j-th voxel: each level
        keeps full-resolution voxel noise) or "mean" (each cube's mean: a coarse level with little noise,
        each stage adding its own). With "mean", stages whose residual base is "auto" correct the
        nearest-neighbour condition ("condition"), whose cells are the mean's, instead of the cubic
        interpolation of samples taken at the cells' corners.
      spectral_levels: the stages whose loss carries the texture term (``stage.spectral_weight``), by level
        (0: the stage that gives full resolution); None: every stage. The others train without it.
      calibrate_coarse: calibrate the coarse generator's HU to the training volumes' at the coarse level
        (cgan_ct.synthesis.calibration, fitted to ``calibration_samples`` draws; the saved coarse model serves
        calibrated draws, and the degradation and the stages see them). On by default since 2026-12-06
        (BUILD_NOTES "Calibrated coarse intensities"); False: served as drawn, as before.
      calibrate_output: calibrate the full-resolution volumes' HU to the training volumes', the bands that
        OUTPUT_SPLITS_HU cut apart (lung, partial, fat to soft tissue, bone), so each band's amount stays the
        generator's (fitted to ``output_calibration_samples`` whole volumes of the training volumes' median depth;
        cascade.json's ``output_calibration``, which cgan-ct-synthesize applies). On by default since 2026-12-06
        (BUILD_NOTES "Calibrated output intensities"); False: none, as before.
      output_grain: fit the full-resolution volumes' texture to the training volumes' soft-tissue noise power
        (cgan_ct.synthesis.grain: mottle smoothed out below their median noise, the missing grain added; fitted
        to ``output_grain_samples`` whole calibrated volumes; cascade.json's ``output_grain``, which
        cgan-ct-synthesize applies unless told not to). On by default since 2026-12-07 (BUILD_NOTES "Output
        grain"); False: none, as before.
      placement: record the training volumes' placements (in-plane spacing and body offset:
        cgan_ct.synthesis.placement; cascade.json's ``placements``), from which cgan-ct-synthesize draws each
        volume's grid unless told not to. Experimental, off by default: as measured on two sets of draws
        (BUILD_NOTES "Placement on the coarse level") pairs of volumes differ more, as stored and aligned, at no
        measured cost; the shipped cascade does not carry it yet.
    """

    levels: int = 3
    size: int = 512
    stage: ModelConfig = ModelConfig()
    stage_steps: int = 2000
    coarse: CoarseConfig = CoarseConfig()
    conversion: ConversionConfig = ConversionConfig()
    seed: int = 0
    degrade: bool = True
    condition_shift: int = 0
    degradation_samples: int = 4
    diversity_checks: int = 10
    coarse_keep: str = "last"
    stage_augmentation: dict = dataclasses.field(default_factory=dict)
    pyramid: str = "subsample"
    spectral_levels: tuple[int, ...] | None = None
    calibrate_coarse: bool = True
    calibration_samples: int = 16
    calibrate_output: bool = True
    output_calibration_samples: int = 8
    output_grain: bool = True
    output_grain_samples: int = 4
    placement: bool = False

    def __post_init__(self):
        check_pyramid(self.pyramid)
        if self.spectral_levels is not None:
            levels = tuple(int(level) for level in self.spectral_levels)
            if len(set(levels)) != len(levels) or not all(0 <= level < self.levels for level in levels):
                raise ValueError(f"spectral_levels must be distinct stages in 0..{self.levels - 1}, got {levels}")
            if not self.stage.spectral_weight:
                raise ValueError("spectral_levels chooses the stages of the texture term, whose weight is 0")
            object.__setattr__(self, "spectral_levels", tuple(sorted(levels)))
        if self.diversity_checks < 0:
            raise ValueError(f"diversity_checks must be >= 0, got {self.diversity_checks}")
        if self.coarse_keep not in COARSE_KEEPS:
            raise ValueError(f"coarse_keep must be one of {', '.join(COARSE_KEEPS)}, got {self.coarse_keep!r}")
        if self.coarse_keep == "diverse" and not self.diversity_checks:
            raise ValueError("coarse_keep 'diverse' picks among the diversity checks: diversity_checks must be >= 1")
        if min(self.calibration_samples, self.output_calibration_samples, self.output_grain_samples) < 1:
            raise ValueError(
                f"calibration_samples, output_calibration_samples and output_grain_samples must be >= 1, got "
                f"{self.calibration_samples}, {self.output_calibration_samples}, {self.output_grain_samples}"
            )
        if self.condition_shift < 0 or self.degradation_samples < 1:
            raise ValueError(
                f"need condition_shift >= 0 and degradation_samples >= 1, got "
                f"{self.condition_shift}, {self.degradation_samples}"
            )
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        unknown = set(self.stage_augmentation) - set(AUGMENTATION_FIELDS)
        if unknown:
            raise ValueError(f"stage_augmentation takes {', '.join(AUGMENTATION_FIELDS)}, got {sorted(unknown)}")
        if self.size % 2**self.levels:
            raise ValueError(f"size {self.size} must divide by 2**levels = {2**self.levels}")


def train_cascade(
    inputs, output_dir, settings: CascadeSettings, say=lambda message: None, callbacks=None, workers: int | None = None
) -> pathlib.Path:
    """Trains every stage not yet done; returns the cascade folder.

    ``workers``: conversion processes (default: all cores).

    ``callbacks``: a function ``stage name -> list of Keras callbacks`` (progress, time budgets).
    """
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    callbacks = callbacks or (lambda name: [])
    cascade = out / "cascade"
    conversion = dataclasses.replace(
        settings.conversion, intensity="linear", seed=settings.seed, pyramid=settings.pyramid
    )
    for level in range(settings.levels):
        dataset = out / "datasets" / f"level{level}"
        if not (dataset / MANIFEST_FILE).exists():
            how = f"every {2**level}-th voxel" if settings.pyramid == "subsample" else f"{2**level}-voxel cube means"
            how = "full resolution" if level == 0 else how
            say(f"stage{level}: converting the inputs at level {level} ({how})")
            convert(inputs, dataset, dataclasses.replace(conversion, subsample=2**level), workers=workers)
    coarse_size = level_length(settings.size, settings.levels)
    coarse_config = dataclasses.replace(settings.coarse, size=coarse_size)
    manifest = load_manifest(out / "datasets" / "level0")
    if (cascade / CASCADE_FILE).exists():
        return cascade
    volumes, spacing, slices, real_quantiles, real_nps, placements = coarse_volumes(inputs, manifest, settings)
    if not (cascade / "coarse" / SAVED_MODEL_FILE).exists():
        say(f"coarse: training the {coarse_size} x {coarse_size} generator on {len(volumes)} training volume(s)")
        mapping = linear_mapping()
        monitor = _diversity_monitor(volumes, mapping, coarse_config, settings)
        # with a moving average, the generator being trained is watched too: the curve the average smooths
        raw = _diversity_monitor(volumes, mapping, coarse_config, settings, True) if coarse_config.ema_decay else None
        extra = [m for m in (monitor, raw) if m]
        generator = train_coarse(
            volumes, mapping, coarse_config, settings.seed, [*extra, *callbacks("coarse")], say=say
        )
        (out / "runs").mkdir(exist_ok=True)
        if monitor:
            record = {"rows": monitor.rows, "keep": settings.coarse_keep, "kept_step": monitor.kept_step}
            if raw:
                record["training_generator_rows"] = raw.rows
                say(f"coarse: the generator being trained, at {diversity_line(raw.rows[-1])}")
            write_json_atomic(out / "runs" / DIVERSITY_FILE, record)
            say(f"coarse: diversity at {diversity_line(monitor.rows[-1])}")
            kept = next((row for row in monitor.rows if row["step"] == monitor.kept_step), None)
            if kept is not None and kept is not monitor.rows[-1]:
                say(f"coarse: kept the most diverse generator, of {diversity_line(kept)}")
            elif settings.coarse_keep == "diverse" and most_diverse(monitor.rows) is None:
                say("coarse: kept the last generator: no check drew bodies like the real ones (HU, size, lung, bone)")
            if kept is not None and not like_real(kept):
                say(
                    "coarse: warning: the kept generator's median draw is outside the real volumes' range in body size,"
                    " lung or bone share; the cascade's volumes will be too (another --seed may do better)"
                )
        elif settings.coarse_keep == "diverse":
            say("coarse: kept the last generator (diversity is not measurable at this size)")
        generator.save(out / "runs" / "coarse.keras")
        calibration = None
        if settings.calibrate_coarse:
            module = CoarseModule(generator, mapping, coarse_config)
            try:
                calibration, fit = calibrate_coarse(module, volumes, settings.calibration_samples)
            except ValueError as exc:  # no body in any draw (or volume): nothing to match, served as drawn
                say(f"coarse: not calibrated ({exc})")
            else:
                write_json_atomic(out / "runs" / CALIBRATION_FILE, fit)
                say(calibration_line(fit))
        info = {"levels": settings.levels}
        save_coarse_model(generator, mapping, coarse_config, cascade / "coarse", info, calibration)
    degradation = stage_degradation(cascade / "coarse", volumes, out / "runs", settings, say)
    pipeline = PipelineOptions(
        condition_blur=degradation.blur_sigma if degradation else 0.0,
        condition_noise_hu=degradation.noise_hu if degradation else 0.0,
        condition_shift=settings.condition_shift,
        pyramid=settings.pyramid,
        **settings.stage_augmentation,
    )
    stage_names = []
    for level in range(settings.levels):
        name = f"stage{level}"
        stage_names.append(name)
        if not (cascade / name / SAVED_MODEL_FILE).exists():
            say(f"{name}: training the x2 depixelation from level {level + 1} to level {level}")
            options = RunOptions(
                DEPIXELATE, seed=settings.seed, steps_per_epoch=settings.stage_steps, pipeline=pipeline
            )
            config = stage_model(settings, level)
            dataset = out / "datasets" / f"level{level}"
            train(dataset, out / "runs" / name, config, options, verbose=0, extra_callbacks=callbacks(name))
            export_generator(out / "runs" / name, cascade / name, checkpoint="last", overwrite=True)
    spec = _cascade_spec(cascade, settings, stage_names, spacing, slices, manifest, degradation)
    # calibration and grain are fitted on the cascade's own grid; the placements apply after (Cascade.slabs)
    if settings.calibrate_output:
        samples = settings.output_calibration_samples
        spec = calibrate_output(Cascade(cascade, spec), real_quantiles, samples, out / "runs", say)
    if settings.output_grain:
        spec = fit_output_grain(Cascade(cascade, spec), real_nps, settings.output_grain_samples, out / "runs", say)
    if settings.placement and placements:
        spec = dataclasses.replace(spec, placements=[p.to_json() for p in placements])
        say(placements_line(placements))
    elif settings.placement:
        say("output: no placements (no training volume has a body above -500 HU): one grid for all volumes")
    spec.save(cascade)
    return cascade


def placements_line(placements) -> str:
    """One line about the recorded placements: how many, and their range."""
    spacing = [p.spacing_mm[0] for p in placements]
    offset = [float(np.hypot(*p.offset_mm)) for p in placements]
    return (
        f"output: {len(placements)} placements recorded, one per volume trained on (in-plane spacing "
        f"{min(spacing):.2f}-{max(spacing):.2f} mm, body centre {min(offset):.0f}-{max(offset):.0f} mm from the "
        "image centre)"
    )


def stage_model(settings: CascadeSettings, level: int | None = None) -> ModelConfig:
    """The stages' model: ``settings.stage`` for one epoch of ``stage_steps``; on the mean pyramid an "auto"
    residual base corrects the nearest-neighbour condition (see CascadeSettings.pyramid). With ``level``,
    that stage's: without the texture term where ``settings.spectral_levels`` leaves it out."""
    config = dataclasses.replace(settings.stage, epochs=1)
    if level is not None and settings.spectral_levels is not None and level not in settings.spectral_levels:
        config = dataclasses.replace(config, spectral_weight=0.0)
    if settings.pyramid == "mean" and config.residual_base == "auto":
        config = dataclasses.replace(config, residual_base="condition")
    return config


def calibrate_coarse(module, volumes, samples: int) -> tuple[Calibration, dict]:
    """The calibration of a coarse generator (``module.draw(seed, depth)``, uncalibrated HU) to the training
    ``volumes`` at the coarse level, fitted to ``samples`` draws of their median depth, and the fit's record:
    the calibration, and the body HU W1 (mean over those draws, against the volumes pooled) before and after."""
    depth = int(np.median([len(v) for v in volumes]))
    draws = [module.draw(CALIBRATION_SEED + i, depth) for i in range(samples)]
    calibration = fit_calibration(draws, volumes)
    real = [body_histogram(v) for v in volumes]
    before = mean_w1_hu([body_histogram(d) for d in draws], real)
    after = mean_w1_hu([body_histogram(calibration.apply(d)) for d in draws], real)
    return calibration, {"calibration": calibration.to_json(), "w1_before_hu": before, "w1_after_hu": after}


def calibration_line(fit: dict) -> str:
    """One line about a calibration's fit (``calibrate_coarse``'s record)."""
    draws, volumes = fit["calibration"]["draws"], fit["calibration"]["volumes"]
    before, after = (f"{fit[key]:.1f}" if fit[key] is not None else "-" for key in ("w1_before_hu", "w1_after_hu"))
    return (
        f"coarse: intensities calibrated ({draws} draws matched to {volumes} real volumes): "
        f"body HU W1 of those draws to the real ones {before} -> {after} HU"
    )


def calibrate_output(cascade: Cascade, real_quantiles, samples: int, runs_dir: pathlib.Path, say) -> CascadeSpec:
    """``cascade.info`` with the output calibration fitted to ``samples`` whole volumes of its default depth,
    against the training volumes' ``real_quantiles`` (``band_quantiles`` at full resolution, OUTPUT_SPLITS_HU);
    the fit's record in ``runs/output_calibration.json``. Unchanged (and said) when the draws or the volumes
    lack a band."""
    slices = cascade.info.default_slices
    draws = []
    for i in range(samples):
        volume = np.concatenate(list(cascade.slabs(OUTPUT_CALIBRATION_SEED + i, slices)))
        draws.append(band_quantiles(volume, OUTPUT_SPLITS_HU))
    try:
        calibration = fit_band_quantiles(draws, real_quantiles, OUTPUT_SPLITS_HU)
    except ValueError as exc:
        say(f"output: not calibrated ({exc})")
        return cascade.info
    fit = {"calibration": calibration.to_json(), "medians_hu": output_medians(calibration, draws, real_quantiles)}
    write_json_atomic(runs_dir / OUTPUT_CALIBRATION_FILE, fit)
    say(output_calibration_line(fit))
    return dataclasses.replace(cascade.info, output_calibration=calibration.to_json())


def output_medians(calibration: Calibration, draws, volumes) -> dict:
    """Per band (BANDS): the draws' median HU (mean over draws) before and after ``calibration``, and the real
    volumes'. A monotone map's quantiles are the map of the quantiles, so "after" needs no new draws."""
    middle = len(QUANTILES) // 2  # the 128th of 255: the median
    medians = {}
    for band, name in enumerate(BANDS):
        before = [row[band][middle] for row in draws if row[band] is not None]
        real = [row[band][middle] for row in volumes if row[band] is not None]
        medians[name] = {
            "draws": float(np.mean(before)),
            "calibrated": float(np.mean(calibration.apply(np.asarray(before)))),
            "real": float(np.mean(real)),
        }
    return medians


def output_calibration_line(fit: dict) -> str:
    """One line about the output calibration's fit (``calibrate_output``'s record)."""
    calibration, medians = fit["calibration"], fit["medians_hu"]
    bands = "; ".join(
        f"{name} {m['draws']:.0f} -> {m['calibrated']:.0f} HU (real {m['real']:.0f})" for name, m in medians.items()
    )
    splits = ", ".join(f"{v:g}" for v in calibration["splits_hu"])
    return (
        f"output: intensities calibrated ({calibration['draws']} volumes matched to {calibration['volumes']} "
        f"real ones, each band apart, split at {splits} HU): body median {bands}"
    )


def fit_output_grain(cascade: Cascade, real_nps, samples: int, runs_dir: pathlib.Path, say) -> CascadeSpec:
    """``cascade.info`` with the output grain (cgan_ct.synthesis.grain) fitted to ``samples`` whole volumes of its
    default depth (through its output calibration, if any), against the training volumes' soft-tissue NPS
    (``real_nps``: grain.soft_tissue_nps of each); the fit's record in ``runs/output_grain.json``. Unchanged
    (and said) when no draw or no volume has uniform soft tissue to measure."""
    slices = cascade.info.default_slices
    spacing = cascade.spacing_mm
    draws = ((np.concatenate(list(cascade.slabs(OUTPUT_GRAIN_SEED + i, slices))), spacing) for i in range(samples))
    try:
        grain, fit = fit_grain(draws, real_nps)
    except ValueError as exc:
        say(f"output: no grain ({exc})")
        return cascade.info
    write_json_atomic(runs_dir / OUTPUT_GRAIN_FILE, fit)
    say(output_grain_line(fit))
    return dataclasses.replace(cascade.info, output_grain=grain.to_json())


def output_grain_line(fit: dict) -> str:
    """One line about the output grain's fit (``fit_output_grain``'s record)."""
    grain = fit["grain"]

    def figures(name: str) -> str:
        return f"{fit[name]['noise_hu']:.1f} HU at {fit[name]['mean_frequency_per_mm']:.3f} /mm"

    return (
        f"output: grain fitted ({grain['draws']} volumes against {grain['volumes']} real ones): soft-tissue noise "
        f"{figures('synthetic')}, smoothed below {grain['smooth_hu']:.1f} HU {figures('smoothed')}, "
        f"grained {figures('expected')} (real {figures('real')})"
    )


def stage_degradation(coarse_dir, volumes, runs_dir: pathlib.Path, settings: CascadeSettings, say):
    """The coarse generator's blur and noise (``runs/degradation.json``, measured once); None if not degrading."""
    if not settings.degrade:
        return None
    path = runs_dir / DEGRADATION_FILE
    if path.exists():
        return Degradation.from_json(json.loads(path.read_text()))
    model = CoarseModel(coarse_dir)
    depth = int(np.median([len(v) for v in volumes]))
    draws = [model.draw(DEGRADATION_SEED + i, depth) for i in range(settings.degradation_samples)]
    degradation = fit_degradation(volumes, draws)
    write_json_atomic(path, degradation.to_json())
    say(
        f"degradation: the coarse samples look like the training volumes blurred by sigma "
        f"{degradation.blur_sigma:g} voxel(s) with {degradation.noise_hu:g} HU of noise "
        f"(fit error {degradation.fit_error:.3f}, {degradation.fit_error_clean:.3f} undegraded); "
        "the stages train on conditions degraded so"
    )
    return degradation


def _diversity_monitor(volumes, mapping, config, settings: CascadeSettings, training_generator: bool = False):
    """The coarse stage's DiversityMonitor, ``diversity_checks`` rows over its steps (None when switched off, or
    when the coarse slices are smaller than MS-SSIM's window); ``training_generator``: one that watches the
    generator being trained rather than the moving average of its weights (and keeps nothing)."""
    if not settings.diversity_checks or not measurable(config):
        return None
    every = max(1, config.steps // settings.diversity_checks)
    keep = settings.coarse_keep == "diverse" and not training_generator
    return DiversityMonitor(mapping, config, volumes, every, keep_diverse=keep, training_generator=training_generator)


def coarse_volumes(inputs, manifest: Manifest, settings: CascadeSettings):
    """(coarse HU arrays of the training split, median full-resolution spacing, median slice count, their
    full-resolution ``band_quantiles`` at OUTPUT_SPLITS_HU: empty without ``settings.calibrate_output``, their
    ``grain.soft_tissue_nps``: empty without ``settings.output_grain``, their ``placement.Placement`` on the
    ``size`` grid, sorted: volumes without a body left out)."""
    train_ids = {v.volume_id for v in manifest.volumes_in("train")}
    sources, _ = discover(inputs)
    volumes, spacings, slices, quantiles, spectra, placements = [], [], [], [], [], []
    for source in sources:
        volume = source.read(None)
        if volume.volume_id not in train_ids:
            continue
        hu = fit_plane(volume.hu, settings.size)
        volumes.append(downsample(hu, 2**settings.levels, settings.pyramid).astype(np.float32))
        if settings.calibrate_output:
            quantiles.append(band_quantiles(hu, OUTPUT_SPLITS_HU))
        if settings.output_grain:
            spectra.append(soft_tissue_nps(volume.hu, volume.spacing_mm))
        spacings.append(volume.spacing_mm)
        slices.append(volume.shape[0])
        placement = measure_placement(hu, volume.spacing_mm[1:])
        if placement is not None:
            placements.append(placement)
    if not volumes:
        raise InputError(None, "no training-split volume could be read for the coarse generator")
    spacing = tuple(float(s) for s in np.median(spacings, axis=0))
    placements.sort(key=lambda p: (p.spacing_mm, p.offset_mm))  # numbers only, in no patient's order
    return volumes, spacing, int(np.median(slices)), quantiles, spectra, placements


def fit_plane(hu: np.ndarray, size: int) -> np.ndarray:
    """Centre-crops or pads (with air) the in-plane axes to size x size."""
    out = np.full((hu.shape[0], size, size), AIR_HU, hu.dtype)
    src, dst = [], []
    for n in hu.shape[1:]:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[:, dst[0], dst[1]] = hu[:, src[0], src[1]]
    return out


def stage_augmentation(settings: CascadeSettings) -> dict:
    """The augmentation the stages train with, every field (the pipeline's defaults filled in)."""
    options = PipelineOptions(**settings.stage_augmentation)
    return {name: getattr(options, name) for name in AUGMENTATION_FIELDS}


def coarse_kept_step(runs_dir: pathlib.Path) -> int | None:
    """The step whose coarse generator the cascade holds (runs/coarse_diversity.json), None where unrecorded."""
    path = runs_dir / DIVERSITY_FILE
    return json.loads(path.read_text()).get("kept_step") if path.exists() else None


def coarse_calibration_record(coarse_dir) -> dict | None:
    """What cascade.json records of the saved coarse model's calibration (counts only), None without one."""
    recorded = json.loads((pathlib.Path(coarse_dir) / COARSE_INFO_FILE).read_text()).get("calibration")
    return None if not recorded else {"draws": recorded["draws"], "volumes": recorded["volumes"]}


def _cascade_spec(
    cascade: pathlib.Path, settings: CascadeSettings, stage_names, spacing, slices, manifest, degradation
) -> CascadeSpec:
    """cascade.json: what Cascade needs, and counts only (no ids, no paths) about the training data."""
    return CascadeSpec(
        levels=settings.levels,
        size=settings.size,
        spacing_mm=tuple(spacing),
        default_slices=slices,
        coarse="coarse",
        stages=tuple(reversed(stage_names)),  # coarsest first
        cascade_id=pseudonym("cas", f"{manifest.plan_fingerprint}:{settings.seed}"),
        training={
            "volumes": len(manifest.volumes_in("train")),
            "stage_steps": settings.stage_steps,
            "coarse_steps": settings.coarse.steps,
            "stage_model": dataclasses.asdict(stage_model(settings)),
            "coarse_model": dataclasses.asdict(settings.coarse),
            "condition_degradation": degradation.to_json() if degradation else None,
            "condition_shift": settings.condition_shift,
            "stage_augmentation": stage_augmentation(settings),
            "pyramid": settings.pyramid,
            # each stage's texture term as trained (stage_model's is the shared setting)
            "stage_spectral_weight": {
                f"stage{level}": stage_model(settings, level).spectral_weight for level in range(settings.levels)
            },
            "coarse_calibration": coarse_calibration_record(cascade / "coarse"),
            "coarse_keep": settings.coarse_keep,
            "coarse_kept_step": coarse_kept_step(cascade.parent / "runs"),
            # the CPU that finished the training: GAN training repeats exactly on one machine, and need not on
            # another (BUILD_NOTES, "The smooth base, a third training")
            "cpu": {"model": cpu_model(), "matrix_features": matrix_features()},
        },
    )
