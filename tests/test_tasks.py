"""Each task's needs are written once (cgan_ct.tasks) and the code that differs per task follows them."""

from __future__ import annotations

import ast
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.config import model_config
from cgan_ct.constants import AUTOENCODE, DENOISE, DEPIXELATE, LOWDOSE, TASKS
from cgan_ct.inference.baselines import BASELINES, baselines
from cgan_ct.model.training import model_for_task
from cgan_ct.ops import corruption
from cgan_ct.tasks import DERIVED, IDENTITY, STORED, TASK_SPECS, task_spec
from tests.conftest import REPO


def test_one_spec_per_task_and_a_clear_error_for_others():
    assert tuple(TASK_SPECS) == TASKS
    with pytest.raises(ValueError, match="unknown task 'sharpen': one of autoencode, denoise"):
        task_spec("sharpen")


@pytest.mark.parametrize("task", TASKS)
def test_the_model_and_its_residual_base_follow_the_spec(task):
    spec = task_spec(task)
    config = model_for_task(model_config("smoke"), task, factor=2)
    assert config.residual == spec.residual
    assert config.residual_base == spec.residual_base
    if spec.residual_base != "cubic":
        with pytest.raises(ValueError, match="for depixelate"):
            model_for_task(dataclasses.replace(model_config("smoke"), residual_base="cubic"), task)


@pytest.mark.parametrize("task", TASKS)
def test_the_condition_comes_from_where_the_spec_says(task):
    block = tf.constant(np.random.default_rng(0).uniform(-1000, 1000, (1, 8, 8, 8, 1)), tf.float32)
    spec = task_spec(task)
    if spec.condition == STORED:
        with pytest.raises(ValueError, match="stored with the data"):
            corruption.make_condition(block, task, tf.constant([0, 1]))
        return
    condition = corruption.make_condition(block, task, tf.constant([0, 1]))
    same = bool(np.array_equal(condition.numpy(), block.numpy()))
    assert same == (spec.condition == IDENTITY), task
    assert spec.condition in (IDENTITY, DERIVED)


@pytest.mark.parametrize("task", TASKS)
def test_baselines_run_what_the_spec_names(task):
    condition = np.random.default_rng(1).uniform(-1000, 400, (8, 16, 16)).astype(np.float32)
    made = baselines(task, condition, skip=("bm3d",), peak=512.0, factor=2)
    assert set(made) == {"condition", *task_spec(task).baselines} - {"bm3d"}
    assert {t: s.baselines for t, s in TASK_SPECS.items() if s.baselines} == BASELINES


def test_the_noise_tasks_and_the_factor_grid():
    assert {t for t, s in TASK_SPECS.items() if s.noise} == {DENOISE, LOWDOSE}
    assert {t for t, s in TASK_SPECS.items() if s.factor_grid} == {DEPIXELATE}
    assert not task_spec(AUTOENCODE).residual


def test_the_library_asks_the_spec_instead_of_comparing_task_names():
    """Issue 32 counted 20 branches on the task's name across 8 modules; what is left is the definitions
    (the corruption dispatch, the tuned baseline table, the demo's plan and a cascade stage's check)."""
    allowed = {"ops/corruption.py", "inference/baselines.py", "demo/plan.py", "synthesis/synthesis.py", "tasks.py"}
    found = []
    for path in sorted((REPO / "cgan_ct").rglob("*.py")):
        name = str(path.relative_to(REPO / "cgan_ct"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):  # task == DENOISE, task != LOWDOSE, task in (DENOISE, LOWDOSE)
                names = {
                    n.id for side in [node.left, *node.comparators] for n in ast.walk(side) if isinstance(n, ast.Name)
                }
                if {"AUTOENCODE", "DENOISE", "DEPIXELATE", "LOWDOSE"} & names and name not in allowed:
                    found.append(f"{name}:{node.lineno}")
    assert not found, found
