"""What each augmentation (or loss term) adds to a synthesis stage, measured on held-out real CT (issue 33,
items 1 and 3).

  python experiments/stage_augment.py --run CASCADE_RUN --level 2 --steps 1500 \
      --variants paper,paper+seed1,nomirror,nomirror+noturn,elastic3 [--heldout SERIES,...] [--slices 32] \
      [--ct_dir ../shared/data/ct] [--output_dir W] [--output rows.jsonl]

``CASCADE_RUN`` is a ``cgan-ct-train-cascade`` output folder (benchmarks/synthesis_real.sh writes one): its
``datasets/levelL`` (the training series at level L), its stage's ``runs/stageL/run.json`` (the stage's model
configuration and pipeline: the condition's measured blur and noise) and its ``cascade/cascade.json``. Each
variant retrains stage L from scratch on that dataset with that recipe for ``--steps`` steps, changing only
the training blocks' augmentation, then scores it as experiments/stage_texture.py scores a stage: on each
held-out series taken to level L, against its 2x pixelation (PSNR and texture ratios, 1 = real).

Variants, ``+``-joined changes to ``paper`` (the augmentation every model trained with until now: translation
within the margin, a random quarter turn in the axial plane, each axis mirrored with probability 1/2):

- ``paper``: nothing changed;
- ``nomirror``: no mirroring (the body's handedness kept: the heart stays on the left);
- ``nolr``: no in-plane mirroring (z may still flip: head-foot, which also swaps handedness);
- ``noturn``: no quarter turns (the body's orientation kept: anterior stays up);
- ``elasticN``: elastic deformation of at most N voxels per axis (PipelineOptions.elastic_voxels), read
  trilinearly;
- ``keepnoise``: deformed blocks read so that their noise keeps its power and grain (elastic_sampling
  "noise_preserving"; with ``elasticN``);
- ``rotN``: small rotations about z of up to N degrees (PipelineOptions.max_rotation_deg);
- ``seedN``: train with seed N (the measurement's noise: a second draw of the same recipe);
- ``specN``: the texture term at weight N (ModelConfig.spectral_weight; item 3), ``l1wN``: L1 weight N: the
  stage's loss changed, its augmentation not;
- ``smoothbaseS``: the residual corrects the condition blurred by a Gaussian of S voxels (residual_base
  "smooth"), not the condition's cells repeated: a base without the grid of cells (item 5's squares).

With the default cohort, stage 2 sees 96 training blocks, so 1,500 steps of 8 blocks is 125 passes: what
augmentation is for. Prints one table and appends the rows (with ``variant``) to ``--output``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: a stage scored at its level, the texture table, the JSON-lines record
from absl import app, flags

from cgan_ct import runtime

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_RUN = flags.DEFINE_string("run", None, "A cgan-ct-train-cascade output folder (datasets/, runs/, cascade/).")
_LEVEL = flags.DEFINE_integer("level", 2, "The stage to retrain: stage L refines level L + 1 to level L.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps per variant.")
_VARIANTS = flags.DEFINE_list("variants", ["paper", "nomirror"], "Variants: +-joined changes, see the docstring.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_SLICES = flags.DEFINE_integer("slices", 32, "Central slices of each level volume (all where fewer).")
_OUT = flags.DEFINE_string("output_dir", None, "Work folder for the variants' runs (default: a temporary one).")
_OUTPUT = flags.DEFINE_string("output", None, "Append the rows here as JSON lines.")


MODEL_CHANGES = {"spec": "spectral_weight", "l1w": "l1_weight"}  # variant name -> ModelConfig field


def _split(change: str) -> tuple[str, str]:
    """("elastic", "3") from "elastic3": the name, and the number it ends in ("" without one)."""
    number = change[len(change.rstrip("0123456789.")) :]
    return change[: len(change) - len(number)], number


def variant_model(variant: str, config):
    """The stage's ModelConfig ``config`` with ``variant``'s loss changes (``specN``, ``l1wN``)."""
    changes = {}
    for change in variant.split("+"):
        name, number = _split(change)
        if name in MODEL_CHANGES and number:
            changes[MODEL_CHANGES[name]] = float(number)
        elif name == "smoothbase" and number:
            changes.update(residual_base="smooth", residual_sigma=float(number))
    return dataclasses.replace(config, **changes)


def variant_options(variant: str, pipeline, seed: int):
    """(PipelineOptions, seed) of ``variant`` applied to the stage's own ``pipeline`` and ``seed``."""
    changes = {}
    for change in variant.split("+"):
        name, number = _split(change)
        if change == "paper" or (name in (*MODEL_CHANGES, "smoothbase") and number):
            continue
        if change == "nomirror":
            changes["mirror_axes"] = ()
        elif change == "nolr":
            changes["mirror_axes"] = (0,)
        elif change == "noturn":
            changes["quarter_turns"] = False
        elif change == "keepnoise":
            changes["elastic_sampling"] = "noise_preserving"
        elif name == "elastic" and number:
            changes["elastic_voxels"] = float(number)
        elif name == "rot" and number:
            changes["max_rotation_deg"] = float(number)
        elif name == "seed" and number.isdigit():
            seed = int(number)
        else:
            raise ValueError(f"unknown change {change!r} in variant {variant!r}")
    paper = {
        "mirror_axes": (0, 1, 2),
        "quarter_turns": True,
        "elastic_voxels": 0.0,
        "elastic_sampling": "trilinear",
        "max_rotation_deg": 0.0,
    }
    return dataclasses.replace(pipeline, **{**paper, **changes}), seed


def _train_variant(variant: str, run: pathlib.Path, work: pathlib.Path):
    from cgan_ct.config import ModelConfig
    from cgan_ct.constants import DEPIXELATE
    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.model.training import RunOptions, train

    record = json.loads((run / "runs" / f"stage{_LEVEL.value}" / "run.json").read_text())
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    config = variant_model(variant, ModelConfig(**{k: v for k, v in record["model"].items() if k in fields}))
    pipeline = PipelineOptions(**{k: v for k, v in record["pipeline"].items() if k != "mirror_axes"})
    pipeline, seed = variant_options(variant, pipeline, record["seed"])
    options = RunOptions(DEPIXELATE, seed=seed, steps_per_epoch=_STEPS.value, pipeline=pipeline)
    run_dir = work / variant
    start = time.monotonic()
    train(run / "datasets" / f"level{_LEVEL.value}", run_dir, dataclasses.replace(config, epochs=1), options)
    return run_dir, time.monotonic() - start


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.synthesis.cascade_spec import CascadeSpec

    run = pathlib.Path(_RUN.value)
    spec = CascadeSpec.load(run / "cascade")
    work = pathlib.Path(_OUT.value or tempfile.mkdtemp(prefix="stage-augment-"))
    print(f"cpu: {runtime.status()['cpu']}; stage{_LEVEL.value}, {_STEPS.value} steps a variant; work {work}")
    real = [read_volume(pathlib.Path(_CT.value) / name) for name in _HELDOUT.value]
    slabs = heldout.level_slabs(spec, _LEVEL.value, real, _SLICES.value)
    rows = []
    for variant in _VARIANTS.value:
        run_dir, train_s = _train_variant(variant, run, work)
        start = time.monotonic()
        scored = heldout.score_stage(BlockModel(run_dir), _LEVEL.value, slabs)
        extra = {"variant": variant, "steps": _STEPS.value, "train_s": round(train_s, 1)}
        rows += [{**row, **extra, "score_s": round(time.monotonic() - start, 1)} for row in scored]
        print(f"{variant}: trained in {train_s:.0f} s", flush=True)

    def label(row):
        return f"model ({row['variant']})" if row["method"] == "model" else row["method"]

    first = _VARIANTS.value[0]
    shown = [r for r in rows if r["method"] == "model" or (r["method"] == "condition" and r["variant"] == first)]
    print(f"\nstage{_LEVEL.value} on {len(real)} held-out series (texture: 1 = real):")
    print(heldout.texture_table(shown, label))
    heldout.append_jsonl(_OUTPUT.value, rows)


if __name__ == "__main__":
    flags.mark_flag_as_required("run")
    app.run(main)
