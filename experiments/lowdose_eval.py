"""Trains a lowdose model on simulated low dose of real chest CT and scores it on held-out patients
against Gaussian smoothing, non-local means and BM3D, each tuned on the training patients.

  python experiments/lowdose_eval.py [--dose 0.25] [--steps 1200] [--slices 32] [--tune_slices 2]
      [--noise_scale_min 1] [--milder_doses 0.5,0.9]
      [--train SERIES,...]
      [--heldout SERIES,...] [--ct_dir ../shared/data/ct] [--work_dir DIR]

1. The training series are converted with the simulated condition (``--condition lowdose``, no test
   split: the held-out patients are never converted).
2. The shipped recipe (``release.RECIPE``: the ``cpu`` preset at 16 first-level filters, float32) trains task
   lowdose for ``--steps`` steps (one epoch; its last generator is kept).
3. The baselines' settings (Gaussian sigma; NLM and BM3D noise-level scale over the level each
   estimates from its own input) are chosen on ``--tune_slices`` central slices of every training
   volume, never on a held-out one.
4. Each held-out volume's central ``--slices`` slices (BM3D costs ~8 s a slice) get the same
   simulated dose (seed 0) and are scored: slice-averaged PSNR / SSIM in HU, whole slab and lungs.
5. "Never worse than its input" (issue 31): at each of ``--milder_doses`` the same held-out slabs get that
   dose, and the model's PSNR is compared with its input's (no baselines: only the model against what it
   was given). ``--noise_scale_min S`` trains on every noise level from the dose's down to S times it
   (0: clean blocks too; PipelineOptions.noise_scale_min).
6. With ``--real``: those real (low-dose) series are denoised as they are and measured without
   reference (noise, edge widths; cgan_ct.inference.no_reference). ``--heldout ''`` skips 3 and 4:
   e.g. ``--train lung-pet-ct-dx-A0001,lidc-idri-0001 --heldout '' --real covid-ct-md-normal001,...``
   trains on standard-dose scans only and denoises the low-dose COVID-CT-MD ones.
Writes ``lowdose_eval.json`` and ``lowdose_eval.md`` in the work folder and prints the table; with
``--into DIR`` the model is copied to DIR/lowdose with scores.json, example.jpg, card.json (the words of the
folder's card.json, else the shipped one's; the facts of this run) and MODEL_CARD.md rendered from them as
every shipped card is (cgan_ct.inference.model_card; how the shipped ``pretrained:lowdose`` was made:
``--into cgan_ct/model/pretrained_models``).
"""

from __future__ import annotations

import json
import pathlib
import shutil
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

_ROOT = pathlib.Path(__file__).resolve().parents[1]

_DOSE = flags.DEFINE_float("dose", 0.25, "Simulated dose (fraction of the scan's).")
_STEPS = flags.DEFINE_integer("steps", 1200, "Training steps.")
_SLICES = flags.DEFINE_integer("slices", 32, "Central slices of each held-out volume scored.")
_TUNE_SLICES = flags.DEFINE_integer(
    "tune_slices", 2, "Central slices of each training volume the baselines tune on (0: their recorded settings)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation and noise.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", cohort.train_series(), "Training series (folders; default: cohort.json).")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_NOISE_MIN = flags.DEFINE_float(
    "noise_scale_min", 1.0, "Train on noise levels from the dose's down to this share of it (0: clean too)."
)
_MILDER = flags.DEFINE_list("milder_doses", ["0.5", "0.9"], "Milder doses the model must not make worse.")
_SKIP = flags.DEFINE_list(
    "skip_baselines", [], "Baselines not to run (e.g. all three for a second model on the same slabs and seed)."
)
_REAL = flags.DEFINE_list(
    "real", [], "Real low-dose series denoised as they are (no-reference measures), e.g. covid-ct-md-normal001."
)
_WORK = flags.DEFINE_string("work_dir", None, "Work folder (default: a temporary one).")
_INTO = flags.DEFINE_string("into", None, "Copy the model, with its card, to INTO/lowdose.")
_CARD_ONLY = flags.DEFINE_bool(
    "card_only", False, "Write --into from the work folder's lowdose_eval.json; run nothing."
)


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.config import LowDoseConfig, conversion_config, model_config
    from cgan_ct.constants import LOWDOSE
    from cgan_ct.data.conversion import convert
    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.model.export import export_generator
    from cgan_ct.model.training import RunOptions, train

    work = pathlib.Path(_WORK.value or tempfile.mkdtemp(prefix="lowdose-"))
    status = runtime.status()
    lowdose = LowDoseConfig(dose=_DOSE.value)
    if _CARD_ONLY.value:
        saved = json.loads((work / "lowdose_eval.json").read_text())
        defaults = {"lowdose": lowdose.to_json(), "seed": _SEED.value, "slices": _SLICES.value}
        record = {**defaults, "train": _TRAIN.value, "heldout": _HELDOUT.value, **saved}
        _ship(record, record.pop("rows"), work / "export")
        return
    print(f"cpu: {status['cpu']}; oneDNN {status['onednn']}; dose {_DOSE.value}; work {work}", flush=True)
    timings = {}
    dataset = work / "dataset"
    train_inputs = [pathlib.Path(_CT.value) / name for name in _TRAIN.value]
    if not (dataset / "manifest.json").exists():
        start = time.monotonic()
        config = conversion_config("cpu", test_fraction=0.0, condition="lowdose", lowdose=lowdose)
        convert(train_inputs, dataset, config)
        timings["convert_s"] = time.monotonic() - start
    run_dir, export_dir = work / "run", work / "export"
    recipe = model_config("cpu", epochs=1, **release.RECIPE)
    if not (export_dir / "cgan_ct_model.json").exists():
        start = time.monotonic()
        pipeline = PipelineOptions(noise_scale_min=_NOISE_MIN.value)
        options = RunOptions(LOWDOSE, _SEED.value, _STEPS.value, pipeline=pipeline)
        result = train(dataset, run_dir, recipe, options)
        if result.diverged:
            raise SystemExit(result.message)
        timings["train_s"] = time.monotonic() - start
        export_generator(run_dir, export_dir, "last")
    model = BlockModel(export_dir)

    rows, params, lines, mild_rows = [], {}, [], []
    if _HELDOUT.value:
        rows, params = _supervised(model, train_inputs, lowdose, timings)
        goals = heldout.goal_lines(rows, heldout.NOISE_GOAL_BASELINES, column="series")
        lines = [heldout.table(rows, column="series"), "", *goals]
        mild_rows = _milder(model, [float(d) for d in _MILDER.value], timings)
        lines += ["", "Never worse than its input, whole slab (model / input PSNR, dB):", "", *mild_lines(mild_rows)]
    if _REAL.value:
        from cgan_ct.inference.evaluation import evaluate_no_reference, no_reference_markdown

        start = time.monotonic()
        real = [pathlib.Path(_CT.value) / name for name in _REAL.value]
        real_rows = evaluate_no_reference(real, {LOWDOSE: model}, work / "no_reference")
        timings["no_reference_s"] = time.monotonic() - start
        chunk = len(real_rows) // len(real)  # rows come input by input, one model, the same measures each
        names = {real_rows[i * chunk]["volume"][:12]: name for i, name in enumerate(_REAL.value)}
        lines += ["", f"Series: {json.dumps(names)}", "", no_reference_markdown(real_rows)]
    record = {
        "dose": _DOSE.value,
        "lowdose": lowdose.to_json(),
        "steps": _STEPS.value,
        "seed": _SEED.value,
        "slices": _SLICES.value,
        "train": _TRAIN.value,
        "heldout": _HELDOUT.value,
        "real": _REAL.value,
        "noise_scale_min": _NOISE_MIN.value,
        "milder": mild_rows,
        "params": params,
        "timings": timings,
        "cpu": status["cpu"],
        # the generator trained in this run (a work folder's earlier model may have had another recipe)
        **(release.model_facts(recipe, LOWDOSE, PipelineOptions().factor) if "train_s" in timings else {}),
    }
    (work / "lowdose_eval.json").write_text(json.dumps({**record, "rows": rows}, indent=1, default=float))
    (work / "lowdose_eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(record, default=float))
    if rows:
        _ship(record, rows, export_dir)


def _supervised(model, train_inputs, lowdose, timings):
    """Baselines tuned on the training series, then model and baselines on the held-out ones."""
    from cgan_ct.constants import LOWDOSE
    from cgan_ct.inference.baselines import tune_baselines, tuned_params
    from cgan_ct.inference.evaluation import evaluate_volume
    from cgan_ct.inference.inference import condition_volume
    from cgan_ct.io.volume_reader import read_volume

    start = time.monotonic()
    if _TUNE_SLICES.value == 0:  # the settings recorded in cgan_ct.inference.baselines.TUNED (training patients)
        params = tuned_params(LOWDOSE, lowdose=lowdose)
        if params is None:
            raise SystemExit(f"no recorded baseline settings for dose {lowdose.dose:g}: tune them (--tune_slices 2)")
        print(f"baselines at their recorded settings: {json.dumps(params)}", flush=True)
    else:
        pairs = []
        for path in train_inputs:
            volume = cohort.central_slices(read_volume(path), _TUNE_SLICES.value)
            pairs.append((condition_volume(volume, LOWDOSE, 0, lowdose=lowdose).hu.astype("float32"), volume.hu))
        params = tune_baselines(LOWDOSE, pairs, methods=("gaussian", "non_local_means", "bm3d"))
        timings["tune_s"] = time.monotonic() - start
        print(f"baselines tuned on {len(pairs)} training volumes: {json.dumps(params)}", flush=True)
    rows = []
    for name in _HELDOUT.value:
        volume = cohort.central_slices(read_volume(pathlib.Path(_CT.value) / name), _SLICES.value)
        start = time.monotonic()
        result = evaluate_volume(
            volume, LOWDOSE, model, skip_baselines=tuple(_SKIP.value), noise_spread=False, baseline_params=params
        )
        timings[f"evaluate_{name}_s"] = time.monotonic() - start
        rows += [{**row, "series": name} for row in result.rows]
        print(f"{name}: scored in {timings[f'evaluate_{name}_s']:.0f} s", flush=True)
    return rows, params


def _milder(model, doses: list[float], timings: dict) -> list[dict]:
    """Model and input PSNR / SSIM on each held-out slab at each milder dose (whole slab)."""
    from cgan_ct.config import LowDoseConfig
    from cgan_ct.constants import LOWDOSE
    from cgan_ct.inference.inference import condition_volume, infer_volume
    from cgan_ct.inference.metrics import quality
    from cgan_ct.io.volume_reader import read_volume

    start, out = time.monotonic(), []
    for name in _HELDOUT.value:
        volume = cohort.central_slices(read_volume(pathlib.Path(_CT.value) / name), _SLICES.value)
        for dose in doses:
            condition = condition_volume(volume, LOWDOSE, 0, lowdose=LowDoseConfig(dose=dose))
            _, generated = infer_volume(condition, model, LOWDOSE, condition_mode="as_is")
            given, made = quality(volume.hu, condition.hu), quality(volume.hu, generated.hu)
            out.append(
                {
                    "series": name,
                    "dose": dose,
                    "input_db": given.psnr_slices_db,
                    "model_db": made.psnr_slices_db,
                    "input_ssim": given.ssim_slices,
                    "model_ssim": made.ssim_slices,
                }
            )
            print(f"{name} at dose {dose:g}: model {made.psnr_slices_db:.2f} dB, input {given.psnr_slices_db:.2f}")
    timings["milder_s"] = time.monotonic() - start
    return out


def mild_lines(rows: list[dict]) -> list[str]:
    from cgan_ct.inference.model_card import milder_lines

    return milder_lines(rows)


def _ship(record: dict, rows: list[dict], export_dir: pathlib.Path) -> None:
    """The model to --into/lowdose with scores.json, card.json (the words of the folder's card, else of the
    shipped one; facts from this run) and MODEL_CARD.md rendered as every shipped card is (model_card.py).
    Everything is written beside the folder first and swapped in: a failure leaves the old folder as it was."""
    if not _INTO.value:
        return
    from cgan_ct.inference import model_card
    from cgan_ct.model.pretrained import PRETRAINED_DIR

    folder = pathlib.Path(_INTO.value) / "lowdose"
    words = folder / model_card.CARD_FILE
    if not words.exists():
        words = PRETRAINED_DIR / "lowdose" / model_card.CARD_FILE
    card = json.loads(words.read_text())
    train_s = record.get("timings", {}).get("train_s")  # absent when the work folder's model was reused
    facts = {
        "train": record["train"],
        "heldout": record["heldout"],
        "steps": record["steps"],
        "seed": record["seed"],
        "train_minutes": train_s / 60 if train_s is not None else card.get("training", {}).get("minutes", 0.0),
        "cpu": record["cpu"],
        **(release.run_facts(card) if train_s is not None else {}),  # trained in this run: a new version
        **{k: record[k] for k in ("model", "parameters") if k in record},
        "scanners": heldout.describe_scanners(pathlib.Path(_CT.value) / x for x in record["train"]),
        "heldout_scanners": heldout.describe_scanners(pathlib.Path(_CT.value) / x for x in record["heldout"]),
    }
    card = model_card.updated_card(card, facts, record["slices"])
    text = model_card.render_model_card(card, rows, has_figure=True)
    staged = folder.with_name(folder.name + ".staged")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(export_dir, staged)
    (staged / model_card.SCORES_FILE).write_text(json.dumps(rows, indent=1, default=float) + "\n")
    (staged / model_card.CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    model_card.write_example_figure(staged, pathlib.Path(_CT.value) / record["heldout"][0])
    (staged / model_card.MODEL_CARD_FILE).write_text(text)
    shutil.rmtree(folder, ignore_errors=True)
    staged.rename(folder)
    print(f"model and card: {folder}")


if __name__ == "__main__":
    app.run(main)
