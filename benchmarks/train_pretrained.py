"""Trains, exports and scores the models that ship with the package (cgan_ct/model/pretrained_models/).

  python benchmarks/train_pretrained.py [--models denoise,denoise-peak128,depixelate] [--steps 1800]
      [--train SERIES,...]
      [--heldout SERIES,...] [--ct_dir ../shared/data/ct] [--work_dir /tmp/pretrained]
      [--into cgan_ct/model/pretrained_models]

Reproducible from the shared real chest cohort with a seed: the training series are converted once
(cgan-ct-convert defaults, no test split: the held-out patients are never converted, and with one
epoch the run's best generator is its last, so nothing is chosen on them); each model trains the
``cpu`` preset (the recipe its defaults hold) for ``--steps`` steps, is exported, and is scored on
every held-out series by the project's protocol against its condition and the classical baselines
(slice-averaged PSNR and SSIM, HU clipped to [-1024, 3071], whole volume and lungs). Each model
folder gets a MODEL_CARD.md with the data, the split, the steps, the per-patient table and the goal
verdicts, and scores.json with the rows. Prints a summary table.
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

import cohort  # benchmarks/cohort.py, beside this script
from absl import app, flags

from cgan_ct import runtime
from cgan_ct.constants import DENOISE, DEPIXELATE

_ROOT = pathlib.Path(__file__).resolve().parents[1]
# name -> (task, Poisson peak); the names are what ``pretrained:NAME`` finds
MODELS = {"denoise": (DENOISE, 512.0), "denoise-peak128": (DENOISE, 128.0), "depixelate": (DEPIXELATE, 512.0)}
BASELINE = {DENOISE: "non_local_means", DEPIXELATE: "tricubic"}  # what the goal compares with
GOAL_DB = 1.0

_MODELS = flags.DEFINE_list("models", list(MODELS), f"Models to train: {', '.join(MODELS)}.")
_STEPS = flags.DEFINE_integer("steps", 1800, "Training steps per model (one epoch).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, corruption and noise.")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAIN = flags.DEFINE_list("train", cohort.train_series(), "Training series (folders; default: cohort.json).")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_WORK = flags.DEFINE_string("work_dir", None, "Work folder (default: a temporary one).")
_INTO = flags.DEFINE_string("into", str(_ROOT / "cgan_ct" / "model" / "pretrained_models"), "Where models go.")
_SCORE_ONLY = flags.DEFINE_bool("score_only", False, "Score the models already in --into; train nothing.")


def _per_patient(rows: list[dict], region: str) -> dict:
    """patient -> method -> (PSNR, SSIM)."""
    out: dict = {}
    for r in rows:
        if r["region"] == region:
            out.setdefault(r["patient"], {})[r["method"]] = (r["psnr_slices_db"], r["ssim_slices"])
    return out


def goal_lines(rows: list[dict], task: str) -> list[str]:
    """Per held-out patient: the goal (PSNR >= baseline + 1 dB, SSIM not below) met or missed, with figures."""
    baseline = BASELINE[task]
    lines = []
    for patient, methods in sorted(_per_patient(rows, "volume").items()):
        (psnr, ssim), (base_psnr, base_ssim) = methods["model"], methods[baseline]
        cond_psnr = methods["condition"][0]
        met = psnr >= base_psnr + GOAL_DB and ssim >= base_ssim
        lines.append(
            f"{patient[:12]}: model {psnr:.2f} dB / SSIM {ssim:.4f}, {baseline} {base_psnr:.2f} dB / {base_ssim:.4f}, "
            f"condition {cond_psnr:.2f} dB: goal (>= {baseline} + {GOAL_DB:.0f} dB, SSIM not below) "
            + (
                "met"
                if met
                else f"missed by {base_psnr + GOAL_DB - psnr:.2f} dB"
                if psnr < base_psnr + GOAL_DB
                else "missed on SSIM"
            )
        )
    return lines


def table(rows: list[dict]) -> str:
    patients = sorted({r["patient"] for r in rows})
    lines = ["| region | method | " + " | ".join(f"{p[:12]} PSNR / SSIM" for p in patients) + " |"]
    lines.append("|---|---|" + "---|" * len(patients))
    for region in ("volume", "lungs"):
        by_patient = _per_patient(rows, region)
        methods = sorted({m for v in by_patient.values() for m in v}, key=lambda m: (m != "model", m))
        for method in methods:
            cells = []
            for p in patients:
                value = by_patient.get(p, {}).get(method)
                cells.append(f"{value[0]:.2f} / {value[1]:.4f}" if value else "-")
            lines.append(f"| {region} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(name: str, task: str, peak: float, record: dict, rows: list[dict]) -> str:
    condition = f"Poisson noise, peak {peak:g}" if task == DENOISE else "2x nearest-neighbour pixelation"
    spread = [r["z_std_hu"] for r in rows if r["method"] == "model" and r["region"] == "volume"]
    return "\n".join(
        [
            f"# Model card: `pretrained:{name}`",
            "",
            f"A cgan-ct block generator for **{task}** ({condition}), 32^3 HU blocks in and out. "
            "**For research only: not for diagnosis or any clinical use.** It restores the synthetic "
            "corruption it was trained on; it has not been validated on real low-dose or low-resolution scans.",
            "",
            "## Use",
            "",
            f"    cgan-ct-infer --model pretrained:{name} --input CT --output_dir OUT",
            f"    cgan-ct-evaluate --model {task}=pretrained:{name} --input CT --output_dir REPORT",
            "",
            "## Training",
            "",
            f"- Data: {', '.join(record['train'])} (the shared real chest cohort: TCIA Lung-PET-CT-Dx, CC BY 4.0; "
            "COVID-CT-MD, Afshar et al., Scientific Data 2021; see ../shared/data/ct/README.md for provenance).",
            f"- Held out (never converted, never seen, nothing chosen on them): {', '.join(record['heldout'])} "
            "(LIDC-IDRI, CC BY 3.0; COVID-CT-MD).",
            f"- Recipe: `cpu` preset {json.dumps(record['model'])}; pipeline {json.dumps(record['pipeline'])}.",
            f"- {record['steps']} steps (one epoch: the exported generator is the last), seed {record['seed']}, "
            f"{record['train_minutes']:.1f} minutes on {record['cpu']} (oneDNN {record['onednn']}).",
            "- Reproduce: `python benchmarks/train_pretrained.py --models " + name + "`.",
            "",
            "## Held-out real patients",
            "",
            "Slice-averaged PSNR (dB) and SSIM, HU clipped to [-1024, 3071], data range 4096 HU, the same "
            "simulated condition (seed 0) for the model and the baselines.",
            "",
            table(rows),
            "",
            "Goal of issue 16 (per patient, whole volume):",
            "",
            *[f"- {line}" for line in goal_lines(rows, task)],
            "",
            f"Noise input Z: the output's per-voxel spread over two noise draws is "
            f"{', '.join(f'{s:.2f}' for s in spread)} HU inside the body.",
            "",
        ]
    )


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.config import conversion_config, model_config
    from cgan_ct.data.conversion import convert
    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.inference.evaluation import evaluate_inputs
    from cgan_ct.inference.inference import BlockModel
    from cgan_ct.model.export import export_generator
    from cgan_ct.model.training import RunOptions, train

    unknown = set(_MODELS.value) - set(MODELS)
    if unknown:
        raise app.UsageError(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    work = pathlib.Path(_WORK.value or tempfile.mkdtemp(prefix="pretrained-"))
    into = pathlib.Path(_INTO.value)
    status = runtime.status()
    print(f"cpu: {status['cpu']}; oneDNN {status['onednn']}; {_STEPS.value} steps per model", flush=True)
    dataset = work / "dataset"
    if not _SCORE_ONLY.value and not (dataset / "manifest.json").exists():
        inputs = [pathlib.Path(_CT.value) / name for name in _TRAIN.value]
        convert(inputs, dataset, conversion_config("cpu", test_fraction=0.0), workers=None)
    heldout = [pathlib.Path(_CT.value) / name for name in _HELDOUT.value]
    summary = []
    for name in _MODELS.value:
        task, peak = MODELS[name]
        folder = into / name
        record_path = work / f"{name}.json"
        if not _SCORE_ONLY.value:
            config = model_config("cpu", epochs=1)
            pipeline = PipelineOptions(peak=peak)
            run_dir = work / "runs" / name
            start = time.monotonic()
            result = train(dataset, run_dir, config, RunOptions(task, _SEED.value, _STEPS.value, pipeline=pipeline))
            if result.diverged:
                raise SystemExit(f"{name}: {result.message}")
            record = {
                "train": _TRAIN.value,
                "heldout": _HELDOUT.value,
                "model": {k: v for k, v in dataclasses.asdict(config).items() if k != "epochs"},
                "pipeline": dataclasses.asdict(pipeline),
                "steps": result.steps,
                "seed": _SEED.value,
                "train_minutes": (time.monotonic() - start) / 60,
                "cpu": status["cpu"],
                "onednn": status["onednn"],
            }
            record_path.write_text(json.dumps(record))
            staged = work / "export" / name
            shutil.rmtree(staged, ignore_errors=True)
            export_generator(run_dir, staged, "last")
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged, folder)
        record = json.loads(record_path.read_text())
        rows = evaluate_inputs(heldout, {task: BlockModel(folder)}, work / "eval" / name, overlap=0.25)
        (folder / "MODEL_CARD.md").write_text(model_card(name, task, peak, record, rows))
        (folder / "scores.json").write_text(json.dumps(rows, indent=1) + "\n")
        summary.append(f"## {name}\n\n{table(rows)}\n\n" + "\n".join(f"- {x}" for x in goal_lines(rows, task)))
        print(summary[-1], flush=True)
    size = sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
    print(f"\nshipped models: {size / 1e6:.2f} MB in {into}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main)
