"""Training-recipe A/B on real CT: each variant trained the same way, scored on patients held out.

  python experiments/recipe_ab.py --task depixelate --steps 600 --variants before,air,air+l1hu \
      [--train SERIES,...] [--slices 32] [--bm3d] [--peak 512] \
      [--heldout SERIES,...] [--ct_dir ../shared/data/ct] [--output_dir /tmp/recipe_ab]

The training series (default: three of the shared chest series) are converted once (cgan-ct-convert
defaults, no test split: the held-out patients are never converted); each variant trains the `cpu`
preset for ``--steps`` steps in a fresh process and is scored on every held-out series by the project's
protocol (slice-averaged PSNR and SSIM, HU clipped to [-1024, 3071], whole volume and lungs) beside the
condition and the classical baselines, in the same run. A variant is ``+``-joined changes applied to
``before`` (the recipe before issue 16's recipe work: every block, equalization, normalized L1 with weight
100, no EMA, constant rate, the residual on the condition; the cpu preset's defaults now differ):

- ``before``: nothing changed (``range`` is accepted as its old name);
- ``air``: content sampling, 10 % of air blocks kept (PipelineOptions.air_keep = 0.1);
- ``l1hu``: the L1 term in HU (ModelConfig.l1_space = "hu");
- ``ema``: the moving average of G's weights (ema_decay 0.99);
- ``cosine``: the cosine learning-rate decay;
- ``linear``: the linear intensity window instead of histogram equalization (a second dataset; ``cpu``
  variants train on it, as the conversion default is linear; ``equalize`` puts them back on equalization);
- ``cubic``: the residual output corrects the cubic interpolation of the condition's samples
  (ModelConfig.residual_base = "cubic"; depixelate);
- ``outernorm``: the U-Net's outermost level normalized whatever the output (ModelConfig.outer_normalization
  "on"; the default "auto" leaves it unnormalized for autoencode, which has no residual output);
- ``l1wN``: L1 weight N instead of 100 (the adversarial term's share shrinks by 100 / N);
- ``specN``: the texture term at weight N (ModelConfig.spectral_weight: band amplitudes against the target's);
- ``tanh``: the residual output before issue 16, Y + (1 - |Y|) tanh(D) (cannot move a voxel at Y = -1);
- ``seedN``: train with seed N (a second sample of the same recipe: the measurement's noise);
- ``bf16`` / ``f16``: train in bfloat16 / float16 (ModelConfig.precision); every other variant trains in
  float32, whatever ``auto`` would pick on this machine. On CPUs without bfloat16 matrix units
  TensorFlow emulates bfloat16 ~50x slower than float32 for this train step (BUILD_NOTES.md, "Precision"):
  run ``bf16`` on a CPU with AMX-BF16 or a GPU.

- ``cpu``: start from today's ``cpu`` preset instead (L1 weight 1000, EMA, cosine, content sampling, the
  task's residual base: the recipe the shipped models train with) in float32; the changes below apply to it;
- ``stepsN``: N training steps for this variant instead of ``--steps``;
- ``filtersN`` / ``depthN``: the generator's first-level filters / U-Net depth (the size rows);
- ``nsminX``: noise_scale_min X (denoise): the condition's noise scaled by s in [X, 1] per block, so one
  model trains on every level from the peak's down to X times it (0: down to the clean block);
- ``peakN``: train the denoise condition at Poisson peak N (scoring stays at ``--peak``);
- ``smooth`` / ``sigmaX``: the residual output corrects the condition blurred by a Gaussian (sigma X voxels,
  default 1; ModelConfig.residual_base = "smooth", the noise tasks) instead of the condition itself.

Today's cpu recipe as a variant: ``cpu`` (or, spelled out on ``before``, ``air+ema+cosine+l1w1000+cubic``
for depixelate; drop ``cubic`` for denoise).

Scoring: each held-out series' central ``--slices`` slices (32, as the model cards; 0: the whole volume),
BM3D beside the other baselines with ``--bm3d`` (denoise; ~5 min a 32-slice slab on 2 cores).

Prints one table (per patient and the mean) and appends it as JSON lines to ``--output`` if given. With
``--texture``, a second table: the model's and the condition's noise power (noise and NPS mean frequency) and
edge sharpness as ratios to the real scan (cgan_ct.realism.texture; 1 = real), beside PSNR: what an L1 weight
or an adversarial share does to texture, which PSNR (rewarding the mean) does not show (issue 33, item 3).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: scoring and the JSON-lines record
from absl import app, flags

from cgan_ct import runtime

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_TASK = flags.DEFINE_enum("task", "depixelate", ["autoencode", "denoise", "depixelate"], "Task to compare on.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps per variant.")
_VARIANTS = flags.DEFINE_list("variants", ["before", "air"], "Variants: +-joined changes, see the docstring.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", cohort.train_series(), "Training series (folders; default: cohort.json).")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_SLICES = flags.DEFINE_integer("slices", 32, "Score each held-out series' central SLICES slices (0: all).")
_BM3D = flags.DEFINE_bool("bm3d", False, "Score BM3D too (denoise).")
_TEXTURE = flags.DEFINE_bool(
    "texture", False, "Also measure noise power and edge sharpness against the real scan (cgan_ct.realism.texture)."
)
_PEAK = flags.DEFINE_float("peak", 512.0, "Poisson peak of the denoise condition, scored (and trained unless peakN).")
_OUT = flags.DEFINE_string("output_dir", None, "Work folder (default: a temporary one).")
_OUTPUT = flags.DEFINE_string("output", None, "Append the results as JSON lines to this file.")
_VARIANT = flags.DEFINE_string("child_variant", None, "(internal) train and score this variant in this process.")
_DATASET = flags.DEFINE_string("child_dataset", None, "(internal)")


def _child(variant: str, dataset: pathlib.Path, work: pathlib.Path) -> list[dict]:
    from cgan_ct.config import model_config
    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.model import networks
    from cgan_ct.model.training import RunOptions, train

    # "before": the cpu preset as it was before issue 16's recipe (the preset's defaults have moved since)
    model = {
        "epochs": 1,
        "l1_space": "normalized",
        "ema_decay": 0.0,
        "lr_schedule": "constant",
        "l1_weight": 100.0,
        "residual_base": "condition",
    }
    changes = variant.split("+")
    preset_cpu = "cpu" in changes
    if preset_cpu:
        model = {}  # the preset's own recipe
    model["precision"] = "float32"
    pipeline = {"peak": _PEAK.value} if preset_cpu else {"air_keep": 1.0, "peak": _PEAK.value}
    seed, steps = 0, _STEPS.value
    for change in changes:
        if change in ("before", "range", "cpu"):
            continue
        number = change.lstrip("abcdefghijklmnopqrstuvwxyz")
        name = change[: len(change) - len(number)]
        if name in ("steps", "filters", "depth", "nsmin", "peak", "sigma") and number:
            if name == "steps":
                steps = int(number)
            elif name in ("filters", "depth"):
                model["base_filters" if name == "filters" else "depth"] = int(number)
            elif name == "nsmin":
                pipeline["noise_scale_min"] = float(number)
            elif name == "sigma":
                model["residual_base"], model["residual_sigma"] = "smooth", float(number)
            else:
                pipeline["peak"] = float(number)
            continue
        if change == "tanh":  # the output layer before issue 16, kept in networks so old checkpoints load
            networks.ResidualRange = networks.ResidualTanh
        elif change == "air":
            pipeline["air_keep"] = 0.1
        elif change == "l1hu":
            model["l1_space"] = "hu"
        elif change == "ema":
            model["ema_decay"] = 0.99
        elif change == "cosine":
            model["lr_schedule"] = "cosine"
        elif change == "cubic":
            model["residual_base"] = "cubic"
        elif change == "smooth":
            model["residual_base"] = "smooth"
        elif change == "outernorm":
            model["outer_normalization"] = "on"
        elif change in ("linear", "equalize"):
            pass  # the parent gave this variant its dataset (_intensity)
        elif change.startswith("l1w") and change[3:].isdigit():
            model["l1_weight"] = float(change[3:])
        elif change.startswith("spec") and change[4:].isdigit():
            model["spectral_weight"] = float(change[4:])
        elif change in ("bf16", "f16"):
            model["precision"] = {"bf16": "bfloat16", "f16": "float16"}[change]
        elif change.startswith("seed") and change[4:].isdigit():
            seed = int(change[4:])
        else:
            raise ValueError(f"unknown change {change!r} in variant {variant!r}")
    config = model_config("cpu", **model)
    config = dataclasses.replace(config, epochs=1)
    options = RunOptions(_TASK.value, seed=seed, steps_per_epoch=steps, pipeline=PipelineOptions(**pipeline))
    start = time.monotonic()
    train(dataset, work / f"{_TASK.value}-{variant}" / "run", config, options)
    train_s = time.monotonic() - start
    model = BlockModel(work / f"{_TASK.value}-{variant}" / "run")  # one epoch: its best generator is its last
    inputs = [pathlib.Path(_CT.value) / name for name in _HELDOUT.value]
    start = time.monotonic()
    rows, _ = heldout.score_heldout(inputs, _TASK.value, model, _SLICES.value, _BM3D.value, _TEXTURE.value)
    score_s = time.monotonic() - start
    for row in rows:
        row.update(variant=variant, steps=steps, train_s=round(train_s, 1), score_s=round(score_s, 1))
        row.update(slices=_SLICES.value)
    return rows


def _intensity(variant: str) -> str:
    """The dataset a variant trains on: today's linear window for ``cpu`` variants (the conversion default)
    and ``linear``; histogram equalization for ``before`` variants (issue 16's recipe) and ``equalize``."""
    changes = variant.split("+")
    if "equalize" in changes:
        return "equalize"
    return "linear" if "linear" in changes or "cpu" in changes else "equalize"


def _table(rows: list[dict]) -> str:
    methods = sorted({(r["variant"], r["method"]) for r in rows}, key=lambda m: (m[1] != "model", m))
    patients = sorted({r["patient"] for r in rows})
    lines = ["| method | region | " + " | ".join(p[:10] for p in patients) + " | mean PSNR | mean SSIM |"]
    lines.append("|---|---|" + "---|" * (len(patients) + 2))
    seen = set()
    for variant, method in methods:
        label = f"model ({variant})" if method == "model" else method
        for region in ("volume", "lungs"):
            if method != "model" and (method, region) in seen:
                continue
            seen.add((method, region))
            chosen = [r for r in rows if r["variant"] == variant and r["method"] == method and r["region"] == region]
            if not chosen:
                continue
            by_patient = {r["patient"]: r for r in chosen}
            cells = [f"{by_patient[p]['psnr_slices_db']:.2f}" if p in by_patient else "-" for p in patients]
            mean_psnr = sum(r["psnr_slices_db"] for r in chosen) / len(chosen)
            mean_ssim = sum(r["ssim_slices"] for r in chosen) / len(chosen)
            lines.append(f"| {label} | {region} | " + " | ".join(cells) + f" | {mean_psnr:.2f} | {mean_ssim:.4f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    if _VARIANT.value:
        rows = _child(_VARIANT.value, pathlib.Path(_DATASET.value), pathlib.Path(_OUT.value))
        print("ROWS " + json.dumps(rows))
        return
    from cgan_ct.config import conversion_config
    from cgan_ct.data.conversion import convert

    work = pathlib.Path(_OUT.value or tempfile.mkdtemp(prefix="recipe-ab-"))
    status = runtime.status()
    print(f"cpu: {status['cpu']}; oneDNN {status['onednn']}; task {_TASK.value}, {_STEPS.value} steps")
    inputs = [pathlib.Path(_CT.value) / name for name in _TRAIN.value]
    datasets = {}
    for intensity in sorted({_intensity(v) for v in _VARIANTS.value}):
        datasets[intensity] = work / ("dataset" if intensity == "equalize" else f"dataset-{intensity}")
        if not (datasets[intensity] / "manifest.json").exists():
            config = conversion_config("paper", test_fraction=0.0, intensity=intensity)
            convert(inputs, datasets[intensity], config, workers=None)
    rows = []
    for variant in _VARIANTS.value:
        dataset = datasets[_intensity(variant)]
        command = [sys.executable, __file__, f"--child_variant={variant}", f"--child_dataset={dataset}"]
        command += [f"--output_dir={work}", f"--task={_TASK.value}", f"--steps={_STEPS.value}"]
        command += [f"--ct_dir={_CT.value}", f"--heldout={','.join(_HELDOUT.value)}", f"--slices={_SLICES.value}"]
        command += [f"--peak={_PEAK.value}", "--bm3d" if _BM3D.value else "--nobm3d"]
        command += ["--texture" if _TEXTURE.value else "--notexture"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=_ROOT)
        if result.returncode != 0:
            raise SystemExit(f"variant {variant} failed:\n{result.stderr[-3000:]}")
        line = next(x for x in result.stdout.splitlines() if x.startswith("ROWS "))
        rows += json.loads(line[5:])
        print(f"{variant}: trained in {rows[-1]['train_s']} s, scored in {rows[-1]['score_s']} s", flush=True)
    print(_table(rows))
    if _TEXTURE.value:

        def label(row):
            return f"model ({row['variant']})" if row["method"] == "model" else row["method"]

        print("\ntexture against the real scans (1 = real; mean over the held-out series):")
        print(heldout.texture_table([r for r in rows if r["method"] == "model"] + _first_condition(rows), label))
    heldout.append_jsonl(_OUTPUT.value, rows)


def _first_condition(rows: list[dict]) -> list[dict]:
    """The condition's texture rows of the first variant (the condition does not depend on the model)."""
    first = next((r["variant"] for r in rows), None)
    return [r for r in rows if r["method"] == "condition" and r["variant"] == first]


if __name__ == "__main__":
    app.run(main)
