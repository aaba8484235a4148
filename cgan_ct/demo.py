"""The one-command demo: a synthetic cohort (or the user's data) -> dataset -> three trained
tasks -> SavedModels -> whole-scan inference and evaluation -> a report folder.

Stages record themselves in OUT/demo.json; running again into the same folder
skips finished stages and resumes an interrupted training (a folder made with
other settings is refused).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import time

import keras

from cgan_ct.config import conversion_config, model_config
from cgan_ct.conversion import convert
from cgan_ct.corruption import TASKS
from cgan_ct.dicom_writer import write_dicom_series
from cgan_ct.errors import VolumeError
from cgan_ct.evaluation import evaluate_inputs
from cgan_ct.export import export_generator
from cgan_ct.inference import BlockModel
from cgan_ct.json_files import write_json_atomic
from cgan_ct.phantom import make_phantom
from cgan_ct.training import RunOptions, train
from cgan_ct.volume_files import write_nifti
from cgan_ct.volume_io import read_volume

STATE = "demo.json"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    budget_minutes: float = 15.0
    patients: int = 6
    slices: int = 64
    size: int = 512
    preset: str = "cpu"
    overlap: float = 0.25
    seed: int = 0
    evaluation_reserve: float = 0.35  # fraction of the budget kept for export, inference and evaluation

    @classmethod
    def smoke(cls) -> DemoSettings:
        return cls(budget_minutes=1.0, patients=3, slices=16, size=64, preset="smoke", overlap=0.0)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``seconds`` have passed (the epoch ends and is checkpointed)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.deadline = time.monotonic() + seconds

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() > self.deadline:
            self.model.stop_training = True


class _State:
    def __init__(self, out: pathlib.Path, settings: DemoSettings, data):
        self.path = out / STATE
        if not self.path.exists() and any(out.iterdir()):
            raise VolumeError(out, "holds files that cgan-ct-demo did not make; use an empty or new --output_dir")
        record = {"settings": dataclasses.asdict(settings), "data": None if data is None else str(data)}
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {**record, "done": []}
        if {k: self.data.get(k) for k in record} != record:
            raise VolumeError(out, "holds a demo run with other settings or data; use another --output_dir")
        self.save()

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def mark(self, stage: str) -> None:
        self.data["done"].append(stage)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


def _cohort(out: pathlib.Path, settings: DemoSettings, state: _State, say) -> list[pathlib.Path]:
    folders = [out / "cohort" / f"patient_{i:02d}" for i in range(settings.patients)]
    if not state.done("cohort"):
        (out / "cohort").mkdir(exist_ok=True)
        for i, folder in enumerate(folders):
            say(f"synthesizing patient {i + 1}/{settings.patients} (DICOM series)")
            volume = make_phantom(settings.seed * 1000 + i, settings.slices, settings.size)
            write_dicom_series(volume, folder, description="cgan-ct phantom", overwrite=True)
        state.mark("cohort")
    return folders


def run_demo(
    output_dir, settings: DemoSettings | None = None, data=None, say=print, training_callbacks=None, progress=None
) -> dict:
    """Runs every stage within ``settings.budget_minutes``; returns a summary dict.

    ``training_callbacks(task, seconds)`` returns extra Keras callbacks for a
    task's training (e.g. a progress bar); ``progress(done, total)`` follows
    the evaluation (one step per held-out scan and task).
    """
    settings = settings or DemoSettings()
    start = time.monotonic()
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, settings, data)
    inputs = [pathlib.Path(data)] if data is not None else _cohort(out, settings, state, say)
    config = model_config(settings.preset)
    # The linear window, not equalization: after minutes of CPU training, equalization's weak weighting
    # of rare HU ranges left the models behind their conditions in HU (see BUILD_NOTES.md).
    conversion = conversion_config(
        "smoke" if settings.preset == "smoke" else "paper", test_fraction=0.34, intensity="linear"
    )
    if not state.done("dataset"):
        say("converting to TFRecords")
        convert(inputs, out / "dataset", conversion, workers=None)
        state.mark("dataset")
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    budget = settings.budget_minutes * 60
    models = {}
    for index, task in enumerate(TASKS):
        if not state.done(f"train:{task}"):
            left = budget * (1 - settings.evaluation_reserve) - (time.monotonic() - start)
            seconds = max(20.0, left / (len(TASKS) - index))
            say(f"training {task} for up to {seconds / 60:.1f} minutes")
            options = RunOptions(task, seed=settings.seed, steps_per_epoch=10**6, checkpoint_every=50)
            train(
                out / "dataset",
                out / "runs" / task,
                dataclasses.replace(config, epochs=1),
                options,
                verbose=0,
                extra_callbacks=[
                    TimeBudget(seconds),
                    *(training_callbacks(task, seconds) if training_callbacks else []),
                ],
            )
            state.mark(f"train:{task}")
        if not state.done(f"export:{task}"):
            export_generator(out / "runs" / task, out / "models" / task, checkpoint="last", overwrite=True)
            state.mark(f"export:{task}")
        models[task] = BlockModel(out / "models" / task)
    test_inputs = _test_inputs(inputs, manifest, data)
    if not state.done("evaluate"):
        say(f"inference and evaluation on {len(test_inputs)} held-out scan(s)")
        evaluate_inputs(
            test_inputs,
            models,
            out / "report",
            settings.overlap,
            settings.seed,
            progress,
            _volume_writer(out / "volumes"),
        )
        state.mark("evaluate")
    return {
        "output_dir": str(out),
        "report": str(out / "report" / "report.md"),
        "minutes": (time.monotonic() - start) / 60,
        "test_scans": len(test_inputs),
        "comparison": _compare(_read_rows(out / "report" / "results.csv")),
    }


def _read_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {k: (v if k in ("patient", "volume", "task", "method", "region") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _compare(rows: list[dict]) -> dict:
    """Per task, whole volume: mean PSNR of the model, of its condition and of the best baseline."""
    summary = {}
    for task in sorted({r["task"] for r in rows}):
        psnr: dict = {}
        for r in rows:
            if r["task"] == task and r["region"] == "volume":
                psnr.setdefault(r["method"], []).append(r["psnr_slices_db"])
        mean = {method: sum(v) / len(v) for method, v in psnr.items()}
        others = {m: v for m, v in mean.items() if m not in ("model", "condition")}
        best = max(others, key=others.get) if others else "condition"
        summary[task] = {
            "model_db": mean["model"],
            "condition_db": mean["condition"],
            "best_baseline": best,
            "best_baseline_db": mean[best],
        }
    return summary


def _test_inputs(inputs, manifest: dict, data) -> list[pathlib.Path]:
    """The inputs whose volumes landed in the test split (all inputs when there is one)."""
    if data is not None or len(inputs) == 1:
        return list(inputs)
    test_ids = {v["volume_id"] for v in manifest["volumes"] if v["split"] == "test"}
    chosen = [p for p in inputs if read_volume(p).volume_id in test_ids]
    return chosen or list(inputs[-1:])


def _volume_writer(out: pathlib.Path):
    """Writes the first held-out scan's condition and generated volume per task, as NIfTI and DICOM."""

    def write(index: int, result) -> None:
        if index != 0:
            return
        folder = out / result.task
        folder.mkdir(parents=True, exist_ok=True)
        for name, volume in (("condition", result.condition_volume), ("generated", result.generated_volume)):
            write_nifti(volume, folder / f"{name}.nii.gz", overwrite=True)
            description = f"cgan-ct {result.task} {name}"
            write_dicom_series(volume, folder / f"{name}_dicom", description=description, overwrite=True)

    return write
