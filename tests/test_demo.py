"""cgan-ct-demo: every stage runs on a small budget, the report holds numbers, a second run resumes; the plan."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cgan_ct import read_volume
from cgan_ct.config import PRESETS
from cgan_ct.demo import plan as demo_plan
from cgan_ct.demo.run import DemoSettings, _State, run_demo
from cgan_ct.errors import InputError
from tests.conftest import REPO


@pytest.mark.slow
def test_the_default_demo_runs_every_stage_on_a_small_budget(tmp_path):
    """What `make demo` runs, the cpu preset and the real calibration, with a 2-minute budget."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pipelines.demo", "--output_dir", str(out), "--budget_minutes", "2"]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((out / "demo.json").read_text())
    assert state["settings"]["preset"] == "cpu" and state["speed"]["train_step_s"] > 0
    assert state["done"] == [
        "cohort",
        "dataset",
        *(f"{stage}:{task}" for task in ("autoencode", "denoise", "depixelate") for stage in ("train", "export")),
        "evaluate",
    ]
    assert "plan for this machine" in run.stdout and "done in" in run.stdout
    assert f"models (SavedModels, TF Serving layout): {out}/models/<task>/1/" in run.stdout
    for bar in ("autoencode (steps) [", "depixelate (steps) [", "evaluation (scans x tasks) ["):
        assert bar in run.stderr  # progress bars throughout
    report = (out / "report" / "report.md").read_text()
    for task in ("autoencode", "denoise", "depixelate"):
        assert (out / "models" / task / "1" / "saved_model.pb").exists()  # TF Serving's version folder
        assert f"    {task}" in run.stdout and " dB (" in run.stdout  # each task's verdict is printed
        assert f"| {task} | model |" in report
        generated = read_volume(out / "volumes" / task / "generated_dicom")
        assert generated.shape == read_volume(out / "volumes" / task / "generated.nii.gz").shape
    assert "| depixelate | trilinear |" in report
    assert list((out / "report" / "figures").glob("*.png"))
    assert all(value > 0 for value in state["speed"].values())  # the cpu preset's calibration (see below)
    said = []  # a second run, in this process (the command's settings): every stage was done, nothing retrains
    run_demo(out, DemoSettings(budget_minutes=2), say=said.append)
    assert said and not any(m.startswith("training") for m in said), said


def test_a_folder_with_other_settings_or_files_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    _State(tmp_path / "a", DemoSettings.smoke(), None)
    with pytest.raises(InputError, match="other settings"):
        _State(tmp_path / "a", DemoSettings(), None)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="did not make"):
        _State(tmp_path / "b", DemoSettings(), None)


def _plan_total(speed, budget_s, setup_s=60.0):
    evaluation = demo_plan.plan_evaluation(speed, budget_s, (512, 512), 64, 2, 0.25, 32)
    validation = demo_plan.validation_steps(speed, budget_s, 128)
    steps = demo_plan.plan_training(speed.train_step_s, budget_s - setup_s, evaluation.estimate_s, validation)
    per_task = steps * speed.train_step_s + demo_plan.EXPORT_S + validation * speed.train_step_s / 3
    return evaluation, steps, setup_s + 3 * per_task + evaluation.estimate_s


def test_the_plan_fits_the_budget_on_a_fast_machine_and_on_one_30x_slower():
    baselines = {"nlm_voxel_s": 5e-7, "interp_voxel_s": 4e-7, "quality_voxel_s": 1.3e-7}
    fast = demo_plan.Speed(train_step_s=0.23, infer_block_s=0.0085, **baselines)  # measured here, oneDNN on
    slow = demo_plan.Speed(train_step_s=7.3, infer_block_s=0.031, **baselines)  # oneDNN off (the EPYC)
    fast_eval, fast_steps, fast_total = _plan_total(fast, 900)
    slow_eval, slow_steps, slow_total = _plan_total(slow, 900)
    for evaluation, total in ((fast_eval, fast_total), (slow_eval, slow_total)):
        assert total <= 900 and evaluation.estimate_s <= demo_plan.EVALUATION_SHARE * 900
    assert (fast_eval.test_scans, fast_eval.non_local_means) == (2, True)  # overlap is the first to go
    assert slow_eval.overlap == 0.0  # a smaller evaluation, so that training keeps its share
    assert fast_steps > 600 and slow_steps >= 20
    # the last task gets what the first two left: a slower first task leaves it fewer steps
    on_plan = demo_plan.plan_training(0.3, 300, 200, 10, tasks_left=1)
    assert demo_plan.plan_training(0.3, 250, 200, 10, tasks_left=1) < on_plan


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "cpu"])  # cpu: the demo test above
def test_the_speed_calibration_builds_and_steps_every_preset(preset):
    """The demo's calibration builds each preset's GAN as training would (schedules included) and steps it."""
    from cgan_ct.config import model_config

    config = model_config(preset, global_batch_size=2)  # the paper preset's batch of 50 would take minutes
    speed = demo_plan.measure_speed(config, size=32)
    assert speed.train_step_s > 0 and speed.infer_block_s > 0
    assert all(value > 0 for value in (speed.nlm_voxel_s, speed.interp_voxel_s, speed.quality_voxel_s, speed.figures_s))
