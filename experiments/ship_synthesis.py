"""Ships a trained synthesis cascade as ``pretrained:synthesis`` (cgan_ct/model/pretrained_models/synthesis/).

  python experiments/ship_synthesis.py --cascade RUN/cascade --report REPORT [--train SERIES,...]
      [--heldout SERIES,...] [--into cgan_ct/model/pretrained_models] [--name synthesis] [--slices 64]

RUN is a ``cgan-ct-train-cascade`` output folder trained on the cohort's training series (cohort.json;
``--test_fraction 0``: the held-out series are never converted), REPORT the ``cgan-ct-synthesis-report``
folder of volumes drawn from it, scored against the held-out series. Copies the cascade (cascade.json and
its SavedModels: no dataset, no run state), times one ``cgan-ct-synthesize`` of a 512 x 512 x ``--slices``
DICOM series from the copy, draws ``example.jpg`` (orthogonal views of that synthetic volume, lung and
soft-tissue windows: no real patient), and writes ``card.json`` (the facts: training settings and data,
the report's goals with their figures, the time) and ``MODEL_CARD.md`` rendered from it. Everything is
written to a hidden folder beside the target and renamed into place when complete; refuses a cascade
over ``MAX_MB``. Prints the card.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_MB = 25.0  # issue 33: a shipped synthesis model of at most 25 MB
TIME_GOAL_S = 120.0  # issue 33: a DICOM series in <= 2 minutes on 2 cores

_CASCADE = flags.DEFINE_string("cascade", None, "The cascade folder (cgan-ct-train-cascade OUT/cascade).")
_REPORT = flags.DEFINE_string("report", None, "Its cgan-ct-synthesis-report folder (its summary.json).")
_TRAIN = flags.DEFINE_list("train", None, "Series the cascade trained on (default: cohort.json's chest series).")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (default: cohort.json).")
_INTO = flags.DEFINE_string("into", str(_ROOT / "cgan_ct" / "model" / "pretrained_models"), "Where models go.")
_NAME = flags.DEFINE_string("name", "synthesis", "The model's name (pretrained:NAME).")
_SLICES = flags.DEFINE_integer("slices", 64, "Slices of the timed synthetic volume.")
_NOTES = flags.DEFINE_string("notes", None, "A JSON file of extra card fields (what the montage shows, limits).")


def chest_training_series() -> list[str]:
    """cohort.json's training series that are chest scans (the abdomen-pelvis ones hold little lung)."""
    data = cohort.load()
    return [name for name in data["train"] if data["series"][name]["region"] == "chest"]


def folder_mb(folder: pathlib.Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def timed_synthesis(model: pathlib.Path, slices: int, work: pathlib.Path) -> tuple[float, pathlib.Path]:
    """Seconds of one ``cgan-ct-synthesize`` of a DICOM series (and NIfTI for the figure), start to exit."""
    out = work / "synthetic"
    command = [sys.executable, "-m", "pipelines.synthesize", "--model_dir", str(model), "--output_dir", str(out)]
    command += ["--count", "1", "--seed", "0", "--slices", str(slices), "--format", "dicom,nifti"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"cgan-ct-synthesize failed:\n{result.stderr[-3000:]}")
    return seconds, out / "synthetic_000"


def example_figure(volume_path: pathlib.Path, path: pathlib.Path) -> None:
    import numpy as np
    from PIL import Image

    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.realism.synthesis_report import LUNG_RANGE_HU, SOFT_TISSUE_RANGE_HU, orthogonal_views

    volume = read_volume(volume_path)
    rows = [orthogonal_views(volume, LUNG_RANGE_HU), orthogonal_views(volume, SOFT_TISSUE_RANGE_HU)]
    gap = np.full((8, rows[0].shape[1]), 255, np.uint8)
    Image.fromarray(np.concatenate([rows[0], gap, rows[1]])).convert("RGB").save(path, quality=85)


def goal_rows(summary: dict) -> list[dict]:
    """The report's goals (its summary.json), each with its verdict and figures."""
    return [
        {"goal": name, "met": bool(met), "figure": summary["goal_figures"][name]}
        for name, met in summary["goals"].items()
    ]


def _counts(calibration: dict | None) -> dict | None:
    """What the card says of a calibration: its counts and split, not its knots."""
    if not calibration:
        return None
    return {key: calibration.get(key) for key in ("draws", "volumes", "splits_hu")}


def _grain_counts(grain: dict | None) -> dict | None:
    """What the card says of an output grain: its fit's counts and smoothing contrast, None without one."""
    return None if not grain else {key: grain[key] for key in ("draws", "volumes", "smooth_hu")}


def _recipe_lines(t: dict) -> list[str]:
    """The card's words on the recipe's later choices (pyramid, up-sampling, texture term, calibration), where
    the cascade records them (cards of cascades trained before them say nothing)."""
    lines = []
    if t.get("pyramid") == "mean":
        lines.append(
            "- Mean pyramid (`--pyramid mean`): each coarser level is the mean of each cube, so every stage adds "
            "its own level's noise."
        )
    if t["stage_model"].get("upsample") == "resize":
        lines.append(
            "- The stages' U-Nets double their grid by nearest doubling and a convolution (`--stage_upsample "
            "resize`), not a stride-2 transposed convolution (its period-2 grid)."
        )
    if t["stage_model"].get("residual_base") == "smooth":
        lines.append(
            f"- Each stage adds its output to its condition blurred by a Gaussian of "
            f"{t['stage_model']['residual_sigma']:g} voxel, not to the condition's cells "
            "(`--stage_residual_base smooth`): no grid of 2-, 4- and 8-voxel squares to start from (BUILD_NOTES, "
            '"The smooth base at every stage").'
        )
    weights = {name: w for name, w in (t.get("stage_spectral_weight") or {}).items() if w}
    if weights:
        named = ", ".join(f"{name} {w:g}" for name, w in sorted(weights.items()))
        lines.append(f"- The texture term (`--stage_spectral_weight`) in the loss of: {named}; the others without.")
    if t.get("coarse_keep") == "diverse" and t.get("coarse_kept_step"):
        lines.append(
            f"- The coarse generator of step {t['coarse_kept_step']:,} of {t['coarse_steps']:,}, the most diverse of "
            "the trainer's diversity checks whose draws' body HU, size, lung and bone share stay near the real ones' "
            '(`--coarse_keep diverse`; BUILD_NOTES, "Coarse structure").'
        )
    calibration = t.get("coarse_calibration")
    if calibration:
        lines.append(
            f"- The coarse GAN's HU calibrated to the training volumes' (one monotone map fitted from "
            f"{calibration['draws']} draws to {calibration['volumes']} volumes' body intensities; applied inside "
            'the coarse SavedModel: `--coarse_calibration`, BUILD_NOTES "Calibrated coarse intensities").'
        )
    calibration = t.get("output_calibration")
    if calibration:
        lines.append(
            f"- The full-resolution output's HU calibrated to the training volumes' (one monotone map fitted from "
            f"{calibration['draws']} whole volumes to {calibration['volumes']} volumes' body intensities, the bands "
            f"split at {', '.join(f'{v:g}' for v in calibration['splits_hu'])} HU matched apart; in cascade.json, "
            "applied by "
            '`cgan-ct-synthesize`: `--output_calibration`, BUILD_NOTES "Calibrated output intensities").'
        )
    grain = t.get("output_grain")
    if grain:
        lines.append(
            f"- The output grain (fitted from {grain['draws']} whole volumes to {grain['volumes']} volumes' "
            f"soft-tissue noise power): in each axial slice, variations below {grain['smooth_hu']:.1f} HU smoothed "
            "out by a guided filter, then the grain they lack added, Gaussian noise shaped to that noise power. "
            "A fitted noise model after the GAN, not the GAN's own texture; in cascade.json, applied by "
            '`cgan-ct-synthesize` unless `--nograin` (`--output_grain`, BUILD_NOTES "Output grain").'
        )
    return lines


def render(card: dict) -> str:
    from cgan_ct.inference import model_card

    t = card["training"]
    lines = [
        f"# Model card: `pretrained:{card['name']}`",
        "",
        f"Version {card['version']} ({card['date']}), cgan-ct {card['cgan_ct_version']}. A synthesis cascade: a "
        f"coarse GAN draws a whole {t['coarse_size']} x {t['coarse_size']} chest volume from noise and each "
        f"slice's relative height, then {t['levels']} x2 depixelation stages refine it block by block to "
        f"{card['size']} x {card['size']} x any slice count, in Hounsfield units. Memory is bounded by the "
        "block, not the volume. Output: NIfTI and/or a DICOM series marked as synthetic (Synthetic Data = YES, "
        "DERIVED, new UIDs, no patient attributes).",
        "",
        "## Intended use",
        "",
        "- Research on synthetic CT and on this project's cascade; software and pipeline testing with "
        "volumes that identify nobody; teaching.",
        "- **Research only. Not a medical device: not for diagnosis, treatment or any clinical decision.** "
        "The volumes are not realistic (see Results): do not train or validate clinical models on them.",
        "",
        f"    cgan-ct-synthesize --model pretrained:{card['name']} --output_dir synthetic --count 4 --slices 64",
        "",
        "## Training data",
        "",
        f"{len(card['train'])} real chest CT series of {len(card['train'])} patients, one series each, taken "
        f"to {card['size']} x {card['size']} in-plane (centre crop or air padding) and, for the coarser levels, "
        + (
            "to the means of 2-, 4- and 8-voxel cubes:"
            if t.get("pyramid") == "mean"
            else "to every 2nd, 4th and 8th voxel:"
        ),
        "",
        *model_card.data_lines(card["train"]),
        "",
        f"Held out, never converted nor seen in training: {', '.join(card['heldout'])} (the results below "
        "compare with them).",
        "",
        "## Training",
        "",
        f"- Coarse GAN: {t['coarse_steps']:,} steps, R1 {t['coarse_model']['r1_gamma']}, "
        f"discriminator augmentation (translation, cutout) {'on' if t['coarse_model']['augment'] else 'off'}.",
        f"- {t['levels']} x2 stages (the depixelate task, `{t['preset']}` preset: "
        f"{t['stage_model']['base_filters']} first-level filters), {t['stage_steps']:,} steps each, batch "
        f"{t['stage_model']['global_batch_size']}, L1 weight {t['stage_model']['l1_weight']:g} (10 is "
        "cgan-ct-train-cascade's default, chosen by soft-tissue texture against real CT, not PSNR: BUILD_NOTES, "
        '"Stage texture"), on conditions degraded '
        f"as the coarse draws are (blur sigma {t['degradation_blur']:g} voxel, {t['degradation_noise_hu']:g} HU).",
        *_recipe_lines(t),
        f"- Seed {card['seed']}; on {card['machine']}. Reproduce: the commands in docs/synthesis.md "
        '("The shipped cascade").',
        "",
        "## Results against held-out real patients",
        "",
        f"{card['volumes']} volumes of {card['size']} x {card['size']} x {card['shape'][0]} (seeds "
        f"{card['seeds']}) scored by `cgan-ct-synthesis-report` against the training and held-out series:",
        "",
        "| goal | verdict | figures |",
        "|---|---|---|",
        *(f"| {g['goal']} | {'met' if g['met'] else '**missed**'} | {g['figure']} |" for g in card["goals"]),
        "",
        *(f"- {line}" for line in card["findings"]),
        "",
        f"Time: one {card['size']} x {card['size']} x {card['timed_slices']} DICOM series (and its NIfTI) in "
        f"{card['synthesis_seconds']:.0f} s, process start to exit, on {card['machine']} (goal <= "
        f"{TIME_GOAL_S:.0f} s: {'met' if card['synthesis_seconds'] <= TIME_GOAL_S else 'missed'}). "
        f"Size: {card['size_mb']:.1f} MB.",
        "",
        "## Example",
        "",
        "A synthetic volume (seed 0): middle axial, coronal and sagittal slices, lung window above, soft-tissue "
        "window below. No real patient is shown.",
        "",
        "![a synthetic volume, orthogonal views](example.jpg)",
        "",
        "## Limitations",
        "",
        *(f"- {line}" for line in card["limitations"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct import runtime
    from cgan_ct.model.pretrained import MODEL_CARD_FILE
    from cgan_ct.synthesis.cascade_spec import CascadeSpec, cascade_folder

    cascade, report = cascade_folder(_CASCADE.value), pathlib.Path(_REPORT.value)
    spec = CascadeSpec.load(cascade)
    size = folder_mb(cascade)
    if size > MAX_MB:
        raise app.UsageError(f"{cascade}: {size:.1f} MB, over the {MAX_MB:.0f} MB a shipped cascade may take")
    into = pathlib.Path(_INTO.value)
    target = into / _NAME.value
    tmp = into / f".tmp-{_NAME.value}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cascade, tmp, ignore=shutil.ignore_patterns(".*"))
    with tempfile.TemporaryDirectory() as work:
        seconds, volume = timed_synthesis(tmp, _SLICES.value, pathlib.Path(work))
        example_figure(volume / "volume.nii.gz", tmp / "example.jpg")
    synthesized = json.loads((report / "summary.json").read_text())
    extra = json.loads(pathlib.Path(_NOTES.value).read_text()) if _NOTES.value else {}
    t = spec.training
    card = {
        "name": _NAME.value,
        "version": extra.get("version", 1),
        "date": datetime.date.today().isoformat(),
        "cgan_ct_version": cgan_ct.__version__,
        "size": spec.size,
        "train": _TRAIN.value or chest_training_series(),
        "heldout": _HELDOUT.value,
        "seed": extra.get("seed", 0),
        "machine": runtime.status()["cpu"],
        "training": {
            "levels": spec.levels,
            "coarse_size": spec.size // 2**spec.levels,
            "coarse_steps": t["coarse_steps"],
            "coarse_model": t["coarse_model"],
            "stage_steps": t["stage_steps"],
            "stage_model": t["stage_model"],
            "preset": extra.get("preset", "cpu"),
            "degradation_blur": (t.get("condition_degradation") or {}).get("blur_sigma", 0.0),
            "degradation_noise_hu": (t.get("condition_degradation") or {}).get("noise_hu", 0.0),
            "pyramid": t.get("pyramid", "subsample"),
            "stage_spectral_weight": t.get("stage_spectral_weight"),
            "coarse_calibration": t.get("coarse_calibration"),
            "coarse_keep": t.get("coarse_keep", "last"),
            "coarse_kept_step": t.get("coarse_kept_step"),
            "output_calibration": _counts(spec.output_calibration),
            "output_grain": _grain_counts(spec.output_grain),
        },
        "volumes": synthesized.get("synthetic_volumes", extra.get("volumes")),
        "shape": synthesized.get("synthetic_shapes", [extra.get("shape")])[0],
        "seeds": extra.get("seeds", "in the report's synthesis.json"),
        "goals": goal_rows(synthesized),
        "findings": extra.get("findings", []),
        "limitations": extra.get("limitations", []),
        "synthesis_seconds": round(seconds, 1),
        "timed_slices": _SLICES.value,
        "size_mb": round(folder_mb(tmp), 2),
    }
    (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (tmp / MODEL_CARD_FILE).write_text(render(card))
    old = into / f".old-{_NAME.value}"  # the shipped one stays whole until the new one is in place
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    print((target / MODEL_CARD_FILE).read_text())


if __name__ == "__main__":
    flags.mark_flags_as_required(["cascade", "report"])
    app.run(main)
