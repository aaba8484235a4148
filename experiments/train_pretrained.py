"""Trains, exports and scores the models that ship with the package (cgan_ct/model/pretrained_models/).

  python experiments/train_pretrained.py [--models denoise,denoise-peak128,depixelate] [--steps 1200]
      [--train SERIES,...] [--heldout SERIES,...] [--slices 32] [--nobm3d] [--noreuse_bm3d] [--score_only]
      [--ct_dir ../shared/data/ct] [--work_dir /tmp/pretrained] [--into cgan_ct/model/pretrained_models]

Reproducible from the shared real chest cohort with a seed: the training series are converted once
(cgan-ct-convert defaults, no test split: the held-out patients are never converted, and with one
epoch the run's best generator is its last, so nothing is chosen on them); each model trains the
``cpu`` preset with ``release.RECIPE``'s changes (16 first-level filters, float32) for ``--steps`` steps, is
exported, and is scored on
every held-out series by the project's protocol against its condition and the classical baselines
(slice-averaged
PSNR and SSIM, HU clipped to [-1024, 3071], whole slab and lungs) on each held-out patient's central
``--slices`` slices (0: the whole volume), BM3D included for the noise tasks (issue 31: every noise
comparison a card reports has it; ~8 s a 512 x 512 slice, the reason for slabs; its rows are kept from
the folder's previous scores.json where that scoring saw the same conditions, ``--noreuse_bm3d`` runs it).
The scanners seen in training and in the held-out scoring are read from the series' headers. The baselines run at
the settings tuned on training patients (``baselines.TUNED``) where the condition has them. Each model
folder keeps its ``card.json`` (the words; its training, held-out and protocol fields are brought up to
date) and gets ``scores.json`` (the rows), from which ``MODEL_CARD.md`` and ``example.jpg`` are rendered
(``cgan_ct.inference.model_card``, as ``experiments/model_cards.py`` does). Prints a summary table.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import tempfile
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: scoring, tables and goal lines
import release  # experiments/release.py: the shipped recipe and a run's facts
from absl import app, flags

from cgan_ct import runtime
from cgan_ct.constants import DENOISE, DEPIXELATE, LOWDOSE

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# name -> (task, Poisson peak); the names are what ``pretrained:NAME`` finds
MODELS = {"denoise": (DENOISE, 512.0), "denoise-peak128": (DENOISE, 128.0), "depixelate": (DEPIXELATE, 512.0)}
# scored here (--score_only), trained by experiments/lowdose_eval.py (its dataset holds the simulated dose)
SCORED_ONLY = {"lowdose": (LOWDOSE, 512.0)}

_MODELS = flags.DEFINE_list(
    "models", list(MODELS), f"Models to train: {', '.join(MODELS)} (and, with --score_only, {', '.join(SCORED_ONLY)})."
)
_STEPS = flags.DEFINE_integer("steps", 1200, "Training steps per model (one epoch).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, corruption and noise.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", cohort.train_series(), "Training series (folders; default: cohort.json).")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_WORK = flags.DEFINE_string("work_dir", None, "Work folder (default: a temporary one).")
_INTO = flags.DEFINE_string("into", str(_ROOT / "cgan_ct" / "model" / "pretrained_models"), "Where models go.")
_SCORE_ONLY = flags.DEFINE_bool("score_only", False, "Score the models already in --into; train nothing.")
_SLICES = flags.DEFINE_integer("slices", 32, "Score each held-out patient's central SLICES slices (0: whole volume).")
_BM3D = flags.DEFINE_bool("bm3d", True, "Score BM3D too (noise tasks; needs the bm3d extra, ~8 s a slice).")
_REUSE_BM3D = flags.DEFINE_bool(
    "reuse_bm3d",
    True,
    "Keep BM3D's rows from the model folder's scores.json instead of running it again, where that scoring saw "
    "the same conditions (checked: heldout.reused_rows); BM3D does not depend on the model.",
)


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.config import conversion_config, model_config
    from cgan_ct.data.conversion import convert
    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.inference import figures, model_card, report
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.model.export import export_generator
    from cgan_ct.model.training import RunOptions, train
    from cgan_ct.tasks import task_spec

    known = MODELS | SCORED_ONLY if _SCORE_ONLY.value else MODELS
    unknown = set(_MODELS.value) - set(known)
    if unknown:
        raise app.UsageError(f"unknown models {sorted(unknown)}; choose from {list(known)}")
    work = pathlib.Path(_WORK.value or tempfile.mkdtemp(prefix="pretrained-"))
    into = pathlib.Path(_INTO.value)
    status = runtime.status()
    print(f"cpu: {status['cpu']}; oneDNN {status['onednn']}; {_STEPS.value} steps per model", flush=True)
    dataset = work / "dataset"
    if not _SCORE_ONLY.value and not (dataset / "manifest.json").exists():
        inputs = [pathlib.Path(_CT.value) / name for name in _TRAIN.value]
        convert(inputs, dataset, conversion_config("cpu", test_fraction=0.0), workers=None)
    heldout_paths = [pathlib.Path(_CT.value) / name for name in _HELDOUT.value]
    scanners: dict[tuple[str, ...], list[str]] = {}  # series -> their scanner lines, each set read once a run

    def described(series) -> list[str]:
        key = tuple(series)
        if key not in scanners:
            scanners[key] = heldout.describe_scanners(pathlib.Path(_CT.value) / x for x in key)
        return scanners[key]

    summary = []
    for name in _MODELS.value:
        task, peak = known[name]
        folder = into / name
        record_path = work / f"{name}.json"
        card_path = folder / model_card.CARD_FILE
        card = json.loads(card_path.read_text()) if card_path.exists() else None  # kept across a new export
        scores_path = folder / model_card.SCORES_FILE  # read before a new export replaces the folder
        previous = json.loads(scores_path.read_text()) if scores_path.exists() else None
        if not _SCORE_ONLY.value:
            config = model_config("cpu", epochs=1, **release.RECIPE)
            pipeline = PipelineOptions(peak=peak)
            run_dir = work / "runs" / name
            start = time.monotonic()
            result = train(dataset, run_dir, config, RunOptions(task, _SEED.value, _STEPS.value, pipeline=pipeline))
            if result.diverged:
                raise SystemExit(f"{name}: {result.message}")
            record = {
                "train": _TRAIN.value,
                **release.model_facts(config, task, pipeline.factor),
                "pipeline": dataclasses.asdict(pipeline),
                "steps": result.steps,
                "seed": _SEED.value,
                "train_minutes": (time.monotonic() - start) / 60,
                **release.run_facts(card),  # a new model: the card's version goes up by one
            }
            record_path.write_text(json.dumps(record))
            staged = work / "export" / name
            shutil.rmtree(staged, ignore_errors=True)
            export_generator(run_dir, staged, "last")
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged, folder)
        elif record_path.exists():  # trained in this --work_dir: its record is newer than the card
            record = json.loads(record_path.read_text())
        elif card is not None:  # the model as shipped: its training facts are its card's
            t = card["training"]
            record = {"train": t["series"], "steps": t["steps"], "seed": t["seed"], "train_minutes": t["minutes"]}
            record["cpu"] = t["cpu"]
            record.update({k: t[k] for k in ("scanners",) if k in t})
        else:
            raise SystemExit(f"{name}: neither {card_path} nor {record_path}: nothing says how it was trained")
        record["heldout"] = _HELDOUT.value
        if "scanners" not in record:  # what the card's input domain says was seen, from the series' headers
            record["scanners"] = described(record["train"])
        record["heldout_scanners"] = described(_HELDOUT.value)
        reuse = _BM3D.value and _REUSE_BM3D.value and previous is not None and "bm3d" in task_spec(task).baselines
        rows, made = heldout.score_heldout(
            heldout_paths, task, BlockModel(folder), _SLICES.value, _BM3D.value and not reuse
        )
        if reuse:
            rows += heldout.reused_rows(rows, previous, ("bm3d",))
        out = work / "eval" / name
        (out / "figures").mkdir(parents=True, exist_ok=True)
        for index, figure in enumerate(made):
            figures.write_figures(figure, out / "figures", f"{task}_{index:03d}")
        report.write_report(rows, out)
        if card is not None:  # rendered before anything is written: a failure leaves the folder as it was
            card = model_card.updated_card(card, record, _SLICES.value)
            text = model_card.render_model_card(card, rows, has_figure=True)
        (folder / model_card.SCORES_FILE).write_text(json.dumps(rows, indent=1) + "\n")
        if card is None:
            print(f"{name}: no {model_card.CARD_FILE} in {folder} (write one as the others are): no MODEL_CARD.md")
        else:
            (folder / model_card.CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
            model_card.write_example_figure(folder, heldout_paths[0])
            (folder / model_card.MODEL_CARD_FILE).write_text(text)
        goals = heldout.goal_lines(rows, heldout.GOAL_BASELINES[task])
        summary.append(f"## {name}\n\n{heldout.table(rows)}\n\n" + "\n".join(f"- {x}" for x in goals))
        print(summary[-1], flush=True)
    size = sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
    print(f"\nshipped models: {size / 1e6:.2f} MB in {into}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
