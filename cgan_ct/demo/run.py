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
import math
import pathlib
import time

import keras

from cgan_ct.config import conversion_config, model_config
from cgan_ct.constants import DENOISE, DEPIXELATE, LOWDOSE
from cgan_ct.constants import DERIVED_TASKS as TASKS  # lowdose needs a dataset converted with its condition
from cgan_ct.data.conversion import convert
from cgan_ct.data.manifest import Manifest, load_manifest
from cgan_ct.demo import plan as demo_plan
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.errors import InputError
from cgan_ct.inference import report
from cgan_ct.inference.baselines import SLOW_BASELINES
from cgan_ct.inference.evaluation import evaluate_inputs
from cgan_ct.inference.inference import BlockModel
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.image_files import write_nifti
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.io.volume_reader import read_volume
from cgan_ct.model.export import export_version
from cgan_ct.model.training import RunOptions, train

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
    pretrained: bool = False  # evaluate the models shipped with the package; train nothing

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
            raise InputError(out, "holds files that cgan-ct-demo did not make; use an empty or new output folder")
        recorded = dataclasses.asdict(settings)
        if not settings.pretrained:  # as demo folders made before the option existed recorded it
            del recorded["pretrained"]
        record = {"settings": recorded, "data": None if data is None else str(data)}
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {**record, "done": []}
        if {k: self.data.get(k) for k in record} != record:
            raise InputError(out, "holds a demo run with other settings or data; use another output folder")
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


def _speed(state: _State, config, settings: DemoSettings, say) -> demo_plan.Speed:
    if "speed" not in state.data:
        say("measuring this machine's speed (a few train steps, inference and baselines)")
        state.data["speed"] = dataclasses.asdict(demo_plan.measure_speed(config, settings.size))
        state.save()
    return demo_plan.Speed(**state.data["speed"])


def _plan(state: _State, speed, settings: DemoSettings, manifest: Manifest, data, block: int, seconds_left: float):
    """The evaluation and training plan, made once (after conversion) and kept in the state."""
    if "plan" not in state.data:
        budget = settings.budget_minutes * 60
        test = manifest.volumes_in("test") or manifest.volumes
        shape = max((v.shape_zyx for v in test), key=lambda s: s[0] * s[1] * s[2])
        scans = len(test) if data is not None else min(len(test), 2)
        evaluation = demo_plan.plan_evaluation(
            speed, budget, shape[1:], shape[0], scans, settings.overlap, block, can_shrink=False
        )
        available = max(1, math.ceil(manifest.splits["test"].blocks / model_config(settings.preset).global_batch_size))
        validation = demo_plan.validation_steps(speed, budget, available)
        first = demo_plan.plan_training(
            speed.train_step_s, seconds_left - demo_plan.SAFETY * budget, evaluation.estimate_s, validation
        )
        state.data["plan"] = {
            **dataclasses.asdict(evaluation),
            "validation_steps": validation,
            "first_estimate_steps": first,
            "train_steps": {},  # per task, decided when it starts (see _task_steps)
            "step_s": speed.train_step_s,  # seconds per step: calibrated, then as measured by the tasks trained
            "export_s": demo_plan.EXPORT_S,  # seconds per export: a guess, then as measured
        }
        state.save()
    return state.data["plan"]


def _task_steps(state: _State, plan: dict, task: str, seconds_left: float) -> int:
    if task not in plan["train_steps"]:
        tasks_left = len(TASKS) - len(plan["train_steps"])
        plan["train_steps"][task] = demo_plan.plan_training(
            plan["step_s"],
            seconds_left,
            plan["estimate_s"],
            plan["validation_steps"],
            tasks_left,
            plan["export_s"],
        )
        state.save()
    return plan["train_steps"][task]


def _cohort_slices(speed, settings: DemoSettings, block: int) -> int:
    """Slices per phantom: fewer only where the evaluation of full-size ones would not fit the budget."""
    scans = max(1, round(0.34 * settings.patients))
    plan = demo_plan.plan_evaluation(
        speed,
        settings.budget_minutes * 60,
        (settings.size, settings.size),
        settings.slices,
        scans,
        settings.overlap,
        block,
    )
    return plan.slices


def _train_task(out, task, config, settings, plan, steps, training_callbacks) -> None:
    options = RunOptions(
        task, seed=settings.seed, steps_per_epoch=steps, validation_steps=plan["validation_steps"], checkpoint_every=50
    )
    guard_s = 1.3 * steps * plan["step_s"] + 30  # if the machine slows down, stop anyway near the plan
    train(
        out / "dataset",
        out / "runs" / task,
        dataclasses.replace(config, epochs=1),
        options,
        verbose=0,
        extra_callbacks=[TimeBudget(guard_s), *(training_callbacks(task, steps) if training_callbacks else [])],
    )


def run_demo(
    output_dir, settings: DemoSettings | None = None, data=None, say=None, training_callbacks=None, progress=None
) -> dict:
    """Runs every stage within ``settings.budget_minutes``; returns a summary dict.

    The work is sized to this machine (cgan_ct.demo.plan): a few timed steps
    first, then steps per task, validation and evaluation sizes that fit.
    ``say(message)`` hears what the demo is doing (nothing is printed without
    it); ``training_callbacks(task, steps)`` returns extra Keras callbacks for a
    task's training (e.g. a progress bar); ``progress(done, total)`` follows
    the evaluation (one step per held-out scan and task).
    """
    settings = settings or DemoSettings()
    say = say or (lambda message: None)
    start = time.monotonic()
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, settings, data)
    if settings.pretrained:
        return _run_pretrained(out, settings, state, data, say, progress, start)
    config = model_config(settings.preset)
    speed = _speed(state, config, settings, say)
    if data is not None:
        inputs = [pathlib.Path(data)]
    else:
        inputs = _cohort(
            out, dataclasses.replace(settings, slices=_cohort_slices(speed, settings, config.block_size)), state, say
        )
    # The linear window, not equalization: after minutes of CPU training, equalization's weak weighting
    # of rare HU ranges left the models behind their conditions in HU (see BUILD_NOTES.md).
    conversion = conversion_config(
        "smoke" if settings.preset == "smoke" else "paper", test_fraction=0.34, intensity="linear"
    )
    if not state.done("dataset"):
        say("converting to TFRecords")
        convert(inputs, out / "dataset", conversion, workers=None)
        state.mark("dataset")
    manifest = load_manifest(out / "dataset")
    seconds_left = settings.budget_minutes * 60 - (time.monotonic() - start)
    plan = _plan(state, speed, settings, manifest, data, config.block_size, seconds_left)
    say(
        f"plan for this machine (train step {speed.train_step_s:.2f} s, inference {1000 * speed.infer_block_s:.0f} ms "
        f"a block): ~{plan['first_estimate_steps']} steps per task (refined from each task's measured speed), "
        f"{plan['test_scans']} held-out scan(s), overlap "
        f"{plan['overlap']}, non-local means {'on' if plan['non_local_means'] else 'off'}, evaluation ~"
        f"{plan['estimate_s'] / 60:.1f} min"
    )
    models = {}
    budget = settings.budget_minutes * 60
    for task in TASKS:
        if not state.done(f"train:{task}"):
            task_start = time.monotonic()
            steps = _task_steps(state, plan, task, budget * (1 - demo_plan.SAFETY) - (task_start - start))
            say(f"training {task}: {steps} steps")
            _train_task(out, task, config, settings, plan, steps, training_callbacks)
            plan["step_s"] = (time.monotonic() - task_start) / steps  # validation and start-up included
            state.mark(f"train:{task}")
        if not state.done(f"export:{task}"):
            export_start = time.monotonic()
            # version 1 of TF Serving's layout (models/<task>/1/), replaced when an interrupted export reruns
            export_version(out / "runs" / task, out / "models" / task, 1, checkpoint="last", overwrite=True)
            models[task] = BlockModel(out / "models" / task)
            plan["export_s"] = time.monotonic() - export_start  # the model's loading included
            state.mark(f"export:{task}")
        else:
            models[task] = BlockModel(out / "models" / task)
    test_inputs = _test_inputs(inputs, manifest, data)[: plan["test_scans"]]
    if not state.done("evaluate"):
        say(f"inference and evaluation on {len(test_inputs)} held-out scan(s)")
        skip = () if plan["non_local_means"] else ("non_local_means",)
        notes = (
            [f"Non-local means was skipped to fit the demo's {settings.budget_minutes:g}-minute budget."]
            if skip
            else []
        )
        evaluate_inputs(
            test_inputs,
            models,
            out / "report",
            plan["overlap"],
            settings.seed,
            progress,
            _volume_writer(out / "volumes"),
            skip_baselines=(*skip, *SLOW_BASELINES),
            notes=notes,
            noise_spread=False,  # a second inference pass the demo's time plan does not hold
        )
        state.mark("evaluate")
    return _summary(out, start, len(test_inputs), plan)


def _summary(out: pathlib.Path, start: float, test_scans: int, plan: dict) -> dict:
    """What run_demo returns: where things are, how long it took, the plan and the verdicts."""
    return {
        "output_dir": str(out),
        "report": str(out / "report" / "report.md"),
        "minutes": (time.monotonic() - start) / 60,
        "test_scans": test_scans,
        "plan": plan,
        "comparison": report.comparison(_read_rows(out / "report" / "results.csv")),
    }


PRETRAINED_MODELS = {DENOISE: "pretrained:denoise", DEPIXELATE: "pretrained:depixelate", LOWDOSE: "pretrained:lowdose"}
PRETRAINED_SCANS = 2  # phantoms evaluated: none was seen in training, two keep the demo to minutes


def _run_pretrained(out, settings: DemoSettings, state: _State, data, say, progress, start) -> dict:
    """The shipped models (trained on real chest CT) on the cohort or ``data``: no conversion, no training."""
    models = {task: BlockModel(spec) for task, spec in PRETRAINED_MODELS.items()}
    cohort = dataclasses.replace(settings, patients=PRETRAINED_SCANS)
    inputs = [pathlib.Path(data)] if data is not None else _cohort(out, cohort, state, say)
    if not state.done("evaluate"):
        say(f"evaluating the shipped models ({', '.join(PRETRAINED_MODELS.values())}) on {len(inputs)} scan(s)")
        notes = ["Models: the pretrained ones shipped with cgan-ct (see their MODEL_CARD.md); nothing was trained."]
        evaluate_inputs(
            inputs,
            models,
            out / "report",
            settings.overlap,
            settings.seed,
            progress,
            _volume_writer(out / "volumes"),
            notes=notes,
        )
        state.mark("evaluate")
    return _summary(out, start, len(inputs), {"pretrained": dict(PRETRAINED_MODELS)})


def _read_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {k: (v if k in ("patient", "volume", "task", "method", "region") else float(v)) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _test_inputs(inputs, manifest: Manifest, data) -> list[pathlib.Path]:
    """The inputs whose volumes landed in the test split (all inputs when there is one)."""
    if data is not None or len(inputs) == 1:
        return list(inputs)
    test_ids = {v.volume_id for v in manifest.volumes_in("test")}
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
