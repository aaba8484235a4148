"""Coarse-GAN A/B on real CT (issue 33, item 2): which change keeps the coarse generator from collapsing.

  python experiments/coarse_ab.py --variants base,lr1e-4,r1g10 [--steps 3000] [--checks 10] \
      [--train SERIES,...] [--ct_dir ../shared/data/ct] [--output_dir /tmp/coarse_ab] [--output rows.jsonl]

The training series (default: the chest series of cohort.json's training split; the held-out patients are
never read) are read once, cut to 512 x 512 in-plane and taken to the coarse level (every 8th voxel:
64 x 64, as ``cgan-ct-train-cascade`` does), cached in the work folder. Each variant trains the coarse GAN
of the ``cpu`` preset (float32) for ``--steps`` steps in a fresh process, with the diversity monitor
(cgan_ct.synthesis.coarse_diversity) measuring ``--checks`` times: the mean MS-SSIM between four fixed-seed
draws against the mean over pairs of the real training volumes. A variant is ``+``-joined changes to
``base`` (today's CoarseConfig):

- ``base``: nothing changed;
- ``lrX``: learning rate X for both networks (2e-4 in base);
- ``r1gX``: R1 weight gamma X (1 in base);
- ``noaug``: no differentiable augmentation of what D sees;
- ``color``: D also sees a random brightness and contrast change (same for real and generated);
- ``dfN``: the discriminator's filters N (base: the generator's, 64);
- ``scaleX``: the training volumes are zoomed in-plane by a random factor in [1 - X, 1 + X] (body sizes the
  cohort lacks; G learns them too, so only small X keeps anatomy plausible);
- ``elasticX``: the training volumes deformed in-plane by a smooth random field of at most X voxels, the same
  for every slice of a crop (CoarseConfig.elastic_augment: body shapes the cohort lacks; G learns them too);
- ``shiftX``: the training volumes' HU shifted by a random offset in [-X, X] per crop (G learns it too);
- ``emaX``: draw, check and save a moving average of the generator's weights at decay X (CoarseConfig.ema_decay);
- ``msX``: MSGAN's mode-seeking term at weight X in the generator's loss (CoarseConfig.mode_seeking);
- ``mbX``: the bounded mode-seeking term at weight X (CoarseConfig.mode_seeking_bounded: no push beyond real
  pairs' distance);
- ``seedN``: seed N (a second sample of the same recipe: the measurement's noise);
- ``stepsN``: N steps for this variant.

``--evaluate`` trains nothing: each variant's saved generator (``<variant>.keras`` in the work folder) is scored
with ``--draws`` draws from other seeds (MS-SSIM over all pairs with its standard error, body HU W1 against
the real volumes), a steadier figure than the monitor's four draws, and its montage kept as ``<variant>.png``
(real training volumes above the line, draws below).

Each variant appends one JSON line to ``--output``: its changes, the rows of the curve, the losses at the end,
seconds, and the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "experiments"))

import cohort  # noqa: E402

_STEPS = flags.DEFINE_integer("steps", 3000, "Training steps per variant.")
_CHECKS = flags.DEFINE_integer("checks", 10, "Diversity measurements over the steps.")
_VARIANTS = flags.DEFINE_list("variants", ["base"], "Variants: +-joined changes, see the docstring.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", None, "Training series (default: the chest series of cohort.json's train).")
_OUT = flags.DEFINE_string("output_dir", "/tmp/coarse_ab", "Work folder (the coarse volumes are cached here).")
_OUTPUT = flags.DEFINE_string("output", None, "Append the results as JSON lines to this file.")
_VARIANT = flags.DEFINE_string("child_variant", None, "(internal) train this variant in this process.")
_EVALUATE = flags.DEFINE_bool(
    "evaluate", False, "Train nothing: score the variants' saved generators with more draws (--draws)."
)
_DRAWS = flags.DEFINE_integer("draws", 8, "With --evaluate: draws per generator (seeds 100, 101, ...).")

SIZE, LEVELS = 512, 3


def _default_train() -> list[str]:
    series = cohort.load()["series"]
    return [name for name in cohort.train_series() if series[name]["region"] == "chest"]


def _coarse_cache(work: pathlib.Path) -> pathlib.Path:
    """The training series at the coarse level, once: ``coarse.npz`` (one HU array per series, in order)."""
    from cgan_ct.io.sources import discover
    from cgan_ct.ops.pyramid import subsample
    from cgan_ct.synthesis.cascade_training import fit_plane

    path = work / "coarse.npz"
    if path.exists():
        return path
    names = _TRAIN.value or _default_train()
    sources, _ = discover([str(pathlib.Path(_CT.value) / name) for name in names])
    arrays = {}
    for index, source in enumerate(sources):
        hu = fit_plane(source.read(None).hu, SIZE)
        arrays[f"v{index:02d}"] = subsample(hu, 2**LEVELS).astype(np.float32)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    print(f"cached {len(arrays)} coarse volumes from {len(names)} series: {[a.shape for a in arrays.values()]}")
    return path


def _config(variant: str):
    """(CoarseConfig, seed) of a variant."""
    from cgan_ct.config import CoarseConfig

    config, seed = CoarseConfig(size=SIZE // 2**LEVELS, steps=_STEPS.value), 0
    for change in variant.split("+"):
        if change == "base":
            continue
        elif change == "noaug":
            config = dataclasses.replace(config, augment=False)
        elif change == "color":
            config = dataclasses.replace(config, augment_color=True)
        elif change.startswith("lr"):
            config = dataclasses.replace(config, learning_rate=float(change[2:]))
        elif change.startswith("r1g"):
            config = dataclasses.replace(config, r1_gamma=float(change[3:]))
        elif change.startswith("df"):
            config = dataclasses.replace(config, disc_filters=int(change[2:]))
        elif change.startswith("scale"):
            config = dataclasses.replace(config, scale_augment=float(change[5:]))
        elif change.startswith("ms"):
            config = dataclasses.replace(config, mode_seeking=float(change[2:]))
        elif change.startswith("mb"):
            config = dataclasses.replace(config, mode_seeking=float(change[2:]), mode_seeking_bounded=True)
        elif change.startswith("ema"):
            config = dataclasses.replace(config, ema_decay=float(change[3:]))
        elif change.startswith("elastic"):
            config = dataclasses.replace(config, elastic_augment=float(change[7:]))
        elif change.startswith("shift"):
            config = dataclasses.replace(config, shift_augment_hu=float(change[5:]))
        elif change.startswith("steps"):
            config = dataclasses.replace(config, steps=int(change[5:]))
        elif change.startswith("seed"):
            seed = int(change[4:])
        else:
            raise app.UsageError(f"unknown change {change!r} in variant {variant!r}")
    return config, seed


def _child(variant: str, work: pathlib.Path) -> dict:
    import keras

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_diversity import DiversityMonitor
    from cgan_ct.synthesis.coarse_export import CoarseModule
    from cgan_ct.synthesis.coarse_training import train_coarse

    with np.load(work / "coarse.npz") as cached:
        volumes = [cached[key] for key in sorted(cached.files)]
    config, seed = _config(variant)
    mapping = linear_mapping()
    monitor = DiversityMonitor(mapping, config, volumes, max(1, config.steps // _CHECKS.value))
    losses = {}

    class Last(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.update({k: float(v) for k, v in (logs or {}).items()})

    start = time.time()
    generator = train_coarse(volumes, mapping, config, seed, [monitor, Last()])
    seconds = time.time() - start
    generator.save(work / f"{variant}.keras")
    _montage(CoarseModule(generator, mapping, config), volumes, work / f"{variant}.png")
    return {
        "variant": variant,
        "config": dataclasses.asdict(config),
        "seed": seed,
        "volumes": len(volumes),
        "rows": monitor.rows,
        "final_losses": losses,
        "seconds": round(seconds, 1),
        "cpu": _cpu(),
    }


def _montage(module, real: list[np.ndarray], path: pathlib.Path, draws: int = 6) -> None:
    """One PNG to look at: a row per volume (the real training volumes, then draws of seeds 0..draws-1 at the
    real median depth), three axial slices each (at 25, 50, 75 % of the height), lung window, 2x enlarged."""
    from PIL import Image

    depth = int(np.median([len(v) for v in real]))
    rows = [*real, *(module.draw(seed, depth) for seed in range(draws))]
    tiles = []
    for volume in rows:
        picks = [volume[int(f * (len(volume) - 1))] for f in (0.25, 0.5, 0.75)]
        tiles.append(np.concatenate(picks, axis=1))
    gap = np.full((4, tiles[0].shape[1]), 1000.0, np.float32)  # a white line between real and synthetic
    image = np.concatenate([*tiles[: len(real)], gap, *tiles[len(real) :]], axis=0)
    grey = np.clip((image + 1350.0) / 1500.0, 0, 1) * 255  # W1500 L-600
    Image.fromarray(grey.astype(np.uint8)).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(path)


def _evaluate(variant: str, work: pathlib.Path) -> dict:
    """A trained variant scored with ``--draws`` draws from seeds the monitor never used: the mean and standard
    error of MS-SSIM over every pair of draws, the body HU W1 of each draw against the pooled real volumes,
    and the same two for the real training volumes."""
    import keras

    import cgan_ct.synthesis.coarse_networks  # noqa: F401  (registers the layers the saved model uses)
    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.realism.ms_ssim import pairwise_ms_ssim
    from cgan_ct.synthesis.coarse_diversity import body_histogram, mean_w1_hu
    from cgan_ct.synthesis.coarse_export import CoarseModule

    with np.load(work / "coarse.npz") as cached:
        real = [cached[key] for key in sorted(cached.files)]
    config, _ = _config(variant)
    module = CoarseModule(keras.models.load_model(work / f"{variant}.keras"), linear_mapping(), config)
    depth = int(np.median([len(v) for v in real]))
    draws = [module.draw(100 + seed, depth) for seed in range(_DRAWS.value)]
    synthetic, between_real = pairwise_ms_ssim(draws), pairwise_ms_ssim(real)
    real_histograms = [body_histogram(v) for v in real]
    return {
        "variant": variant,
        "draws": len(draws),
        "synthetic_ms_ssim": float(np.mean(synthetic)),
        "synthetic_ms_ssim_se": float(np.std(synthetic, ddof=1) / np.sqrt(len(synthetic))),
        "real_ms_ssim": float(np.mean(between_real)),
        "real_ms_ssim_se": float(np.std(between_real, ddof=1) / np.sqrt(len(between_real))),
        "synthetic_w1_hu": mean_w1_hu([body_histogram(v) for v in draws], real_histograms),
        "real_w1_hu": mean_w1_hu(real_histograms),
    }


def _cpu() -> str:
    """The CPU's model (with family and model numbers) and its matrix features, as run records name them."""
    from cgan_ct.model.precision import matrix_features
    from cgan_ct.runtime import cpu_model

    return f"{cpu_model()} ({matrix_features()})"


def main(argv):
    del argv
    work = pathlib.Path(_OUT.value)
    if _VARIANT.value:
        print("RESULT " + json.dumps(_child(_VARIANT.value, work)))
        return
    _coarse_cache(work)
    for variant in _VARIANTS.value:
        _config(variant)  # a typo fails before hours of training
    if _EVALUATE.value:
        for variant in _VARIANTS.value:
            row = _evaluate(variant, work)
            print(
                f"{variant}: {row['draws']} draws, MS-SSIM {row['synthetic_ms_ssim']:.3f} +- "
                f"{row['synthetic_ms_ssim_se']:.3f} (real pairs {row['real_ms_ssim']:.3f} +- "
                f"{row['real_ms_ssim_se']:.3f}); body HU W1 {row['synthetic_w1_hu']:.0f} HU "
                f"(real against real {row['real_w1_hu']:.0f} HU)"
            )
            if _OUTPUT.value:
                with open(_OUTPUT.value, "a") as out:
                    out.write(json.dumps({"evaluation": row}) + "\n")
        return
    for variant in _VARIANTS.value:
        command = [sys.executable, __file__, f"--child_variant={variant}", f"--output_dir={work}"]
        command += [f"--steps={_STEPS.value}", f"--checks={_CHECKS.value}"]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            print(f"{variant}: failed\n{done.stderr[-3000:]}")
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        curve = ", ".join(f"{row['step']}: {row['synthetic_ms_ssim']:.3f}" for row in result["rows"])
        print(f"{variant}: real pairs {result['rows'][-1]['real_ms_ssim']:.3f}; draws {curve}; {result['seconds']} s")
        if _OUTPUT.value:
            with open(_OUTPUT.value, "a") as out:
                out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    app.run(main)
