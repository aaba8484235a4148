"""Sizing the demo to the machine: a few timed steps, then the work that fits the time budget.

A machine that trains 20x slower (TensorFlow without oneDNN, an older CPU, a
busy node) must still finish the demo within its budget with every task
trained, so the demo does not split wall-clock time blindly: it measures a
train step, a block of inference and the evaluation's classical baselines and
metrics per voxel (``measure_speed``, seconds), then picks the largest
evaluation that fits its share of the budget (held-out scans, tile overlap,
whether non-local means runs, the cohort's slice count) and gives training the
rest as a number of steps per task (``plan_evaluation``, ``plan_training``).
Each task's steps are decided when it starts, from the seconds per step that
the tasks before it really took (the input pipeline shares the CPU with the
step, which the calibration on in-memory batches does not see).
Estimates are in seconds; the plan is recorded in the demo's state, so a
resumed run follows the same plan.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from cgan_ct.constants import DENOISE, DEPIXELATE
from cgan_ct.constants import DERIVED_TASKS as TASKS  # the demo's tasks: conditions made from blocks
from cgan_ct.inference.baselines import BASELINES, SLOW_BASELINES
from cgan_ct.ops.blocks import tile_origins

EVALUATION_SHARE = 0.3  # at most this fraction of the budget for inference, baselines, metrics and figures
EXPORT_S = 30.0  # first guess per task (SavedModel traced and written, loaded back); then as measured
SAFETY = 0.1  # of the budget, kept free for what the estimates miss (0.05 left `make demo` 36 s late)


@dataclasses.dataclass(frozen=True)
class Speed:
    """Measured costs on this machine, in seconds."""

    train_step_s: float  # one train step at the preset's global batch
    infer_block_s: float  # one block through the generator (batch 16)
    nlm_voxel_s: float  # non-local means, per voxel
    interp_voxel_s: float  # tricubic interpolation, per voxel
    quality_voxel_s: float  # PSNR + SSIM per slice and MAE, per voxel
    figures_s: float = 0.0  # one scan's and task's evaluation figures drawn and written (0: not measured)


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    slices: int
    test_scans: int
    overlap: float
    non_local_means: bool
    estimate_s: float


CALIBRATION_STEPS = 5  # train steps run to time one: 2 to warm up, 3 timed


def _timed(fn, repeats: int, warm_up: int = 1) -> float:
    for _ in range(warm_up):  # graph tracing, oneDNN primitive creation, allocation
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure_speed(config, size: int) -> Speed:
    """Times 3 train steps (after 2), 2 inference batches and the baselines on a small slab (~10-60 s)."""
    import tensorflow as tf

    from cgan_ct.inference.baselines import interpolate_samples, non_local_means
    from cgan_ct.inference.metrics import quality
    from cgan_ct.model.build import build_gan

    n, batch = config.block_size, config.global_batch_size
    # a schedule of the timed steps' length: a learning-rate schedule does not change a step's cost
    gan = build_gan(config, total_steps=CALIBRATION_STEPS)
    y = tf.random.uniform([batch, n, n, n, 1], -1, 1, seed=1)
    blocks = tf.random.uniform([16, n, n, n, 1], -1, 1, seed=2)
    step = _timed(lambda: gan.train_on_batch(y, y), CALIBRATION_STEPS - 2, warm_up=2)
    infer = tf.function(lambda: gan.generator([blocks, blocks], training=False))
    block = _timed(lambda: infer().numpy(), 2) / 16
    rng = np.random.default_rng(0)
    slab = rng.normal(0, 60, (4, size, size)).astype(np.float32) - 700
    voxels = slab.size
    return Speed(
        train_step_s=step,
        infer_block_s=block,
        nlm_voxel_s=_timed(lambda: non_local_means(slab[:2]), 1) / (voxels / 2),
        interp_voxel_s=_timed(lambda: interpolate_samples(slab, order=3), 1) / voxels,
        quality_voxel_s=_timed(lambda: quality(slab, slab + 1.0), 1) / voxels,
        figures_s=_figures_seconds(slab),
    )


def _figures_seconds(slab: np.ndarray) -> float:
    """One write_figures call (the scan and its close-up, PNG) on a slice of ``slab``'s size."""
    import tempfile

    from cgan_ct.inference import figures

    image = slab[0]
    figure = figures.FigureSlice("denoise", "pat-0", 0, 1, image, image + 5, image + 1, "gaussian", image + 2)
    with tempfile.TemporaryDirectory() as folder:
        return _timed(lambda: figures.write_figures(figure, folder, "calibration"), 1)


def evaluation_seconds(speed: Speed, shape_zyx, scans: int, overlap: float, nlm: bool, block: int) -> float:
    """Inference, baselines, metrics and figures for ``scans`` volumes of ``shape_zyx``, all tasks; 60 % for
    the rest (lung masks, the stitched volumes written as NIfTI and DICOM, the report): on 2026-12-03 (AMD
    EPYC, 2 cores) the evaluation took 257 s where inference, baselines and metrics were estimated at 157 s
    and the figures, not yet counted, took about 14 s; the earlier 35 % left `make demo` a minute late."""
    voxels = math.prod(shape_zyx)
    per_scan = 0.0
    for task in TASKS:
        per_scan += len(tile_origins(shape_zyx, block, overlap)) * speed.infer_block_s
        baselines = [b for b in BASELINES.get(task, ()) if (nlm or b != "non_local_means") and b not in SLOW_BASELINES]
        methods = 2 + len(baselines)  # the model and the condition are scored too
        per_scan += 2 * methods * voxels * speed.quality_voxel_s  # whole volume and lungs
        if task == DENOISE and nlm:
            per_scan += voxels * speed.nlm_voxel_s
        if task == DEPIXELATE:
            per_scan += 2 * voxels * speed.interp_voxel_s
    return scans * (1.6 * per_scan + len(TASKS) * speed.figures_s)


def plan_evaluation(
    speed: Speed,
    budget_s: float,
    in_plane: tuple,
    slices: int,
    scans: int,
    overlap: float,
    block: int,
    can_shrink: bool = True,
) -> EvaluationPlan:
    """The largest evaluation that fits EVALUATION_SHARE of the budget (the smallest one otherwise).

    ``can_shrink``: whether the volumes may have fewer slices (only before the synthetic cohort is made).
    """
    fewer = max(block, slices // 2) if can_shrink else slices
    candidates = [
        (slices, scans, overlap, True),
        (slices, scans, 0.0, True),
        (slices, 1, 0.0, True),
        (fewer, 1, 0.0, True),
        (fewer, 1, 0.0, False),
    ]
    plan = None
    for z, n, lap, nlm in candidates:
        seconds = evaluation_seconds(speed, (z, *in_plane), min(n, scans), lap, nlm, block)
        plan = EvaluationPlan(z, min(n, scans), lap, nlm, seconds)
        if seconds <= EVALUATION_SHARE * budget_s:
            break
    return plan


def plan_training(
    step_s: float,
    seconds_left: float,
    evaluation_s: float,
    validation_steps: int,
    tasks_left: int = len(TASKS),
    export_s: float = EXPORT_S,
) -> int:
    """Train steps for the next task, at ``step_s`` a step, so that it and the ``tasks_left - 1`` after it
    (training, validation, export) and the evaluation end within ``seconds_left``."""
    per_task = (seconds_left - evaluation_s) / tasks_left - export_s - validation_steps * step_s / 3
    return max(1, int(per_task / step_s))


def validation_steps(speed: Speed, budget_s: float, available: int) -> int:
    """Validation batches per task: about 1 % of the budget each (they only pick the best generator)."""
    return int(max(1, min(available, 0.01 * budget_s / (speed.train_step_s / 3))))
