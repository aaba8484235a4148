"""Training a ConditionalGAN on a converted dataset with keras fit: resumable, distributed.

A run folder holds:
  run.json               what was trained: model config, task, seed, dataset, intensity
  backup/                the resume point, one file replaced atomically every ``checkpoint_every``
                         steps and at each epoch end: resume.weights.h5 (networks, both optimizers,
                         and the GAN's training_state: steps taken, random states, the epoch's metric
                         sums so far); state.json beside it says the step for people and tools, is
                         written after it, and is read only to resume a run saved before issue 18
  generator_last.keras   the generator after the last finished epoch with finite losses
  generator_best.keras   the generator with the best validation PSNR in HU so far (best.json: which epoch)
  log.csv, tensorboard/  per-epoch metrics; scalars and condition / generated / target images

Resuming is exact in steps: the data of epoch e depends only on (seed, e), so a
restarted job restores the weights, the optimizers and the random states, rebuilds
epoch e, skips the batches already used, and trains exactly the remaining steps.
Steps are the GAN's own count (``ConditionalGAN.steps_taken``), not an optimizer's
``iterations``, which with mixed precision skips the steps dropped for overflow.
A resumed epoch's log.csv row averages all its steps, as an uninterrupted one does:
the resume point keeps the metric sums of the steps before it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil

import keras
import numpy as np
import tensorflow as tf

from cgan_ct.config import ModelConfig
from cgan_ct.constants import DEFAULT_FACTOR, GENERATOR_BEST, GENERATOR_LAST
from cgan_ct.data.input_pipeline import PipelineOptions, make_dataset
from cgan_ct.data.manifest import Manifest, load_manifest
from cgan_ct.errors import InputError
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN
from cgan_ct.model.precision import Precision, resolve_precision
from cgan_ct.model.run_record import RunRecord, is_run_dir
from cgan_ct.tasks import task_spec

BACKUP = "backup"
RESUME_POINT = "resume.weights.h5"
LEGACY_WEIGHTS = "weights.weights.h5"  # with state.json: the resume point before issue 18


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What to train beyond the model: task, seed, epoch length, checkpoint cadence."""

    task: str
    seed: int = 0
    steps_per_epoch: int | None = None  # default: training blocks // global batch
    validation_steps: int | None = None  # default: the whole test split
    checkpoint_every: int = 100
    pipeline: PipelineOptions = PipelineOptions()


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    steps: int
    epochs: int
    diverged: bool
    message: str


class JaxPlacement:
    """The strategy's part on the JAX backend, where there is no tf.distribute.

    One input pipeline yields global batches; ``keras.distribution.DataParallel`` (set by
    ``make_strategy`` when JAX sees several devices) shards each over the devices, and XLA
    reduces the gradients. Losses divide by the global batch, as under a TF strategy.
    """

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()

    def distribute_datasets_from_function(self, make):
        return make(None)


def make_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers, else
    MirroredStrategy over all visible GPUs (one CPU device when there is none).
    On the JAX backend: a JaxPlacement, with data parallelism over JAX's devices."""
    if keras.backend.backend() == "jax":
        import jax

        if len(jax.devices()) > 1 and keras.distribution.distribution() is None:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return JaxPlacement()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if sum(len(v) for v in cluster.values()) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy()


def is_chief() -> bool:
    """Whether this process writes the run's files (the only one, or the chief / worker 0)."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0)


def _steps(gan: ConditionalGAN) -> int:
    return gan.steps_taken


class Backup(keras.callbacks.Callback):
    """Saves the resume point every ``every`` steps and at each epoch end (only finite states).

    One file, written beside and renamed over the last: a crash at any moment leaves a whole
    resume point. The metric sums saved are the training ones: validation, which reuses the
    trackers, is preceded by ``on_test_begin``, which keeps them.
    """

    def __init__(self, folder: pathlib.Path, every: int, guard):
        super().__init__()
        self.folder, self.every, self.guard = folder, every, guard
        self.training_sums = None

    def save(self):
        if self.guard.diverged:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        sums = self.model.metric_sums() if self.training_sums is None else self.training_sums
        self.model.capture_resume_state(sums)
        tmp = self.folder / f".tmp-{RESUME_POINT}"
        self.model.save_weights(tmp)
        os.replace(tmp, self.folder / RESUME_POINT)
        (self.folder / LEGACY_WEIGHTS).unlink(missing_ok=True)  # superseded (a run begun before issue 18)
        write_json_atomic(self.folder / "state.json", {"step": _steps(self.model), "resume_point": RESUME_POINT})

    def on_epoch_begin(self, epoch, logs=None):
        self.training_sums = None

    def on_test_begin(self, logs=None):
        self.training_sums = self.model.metric_sums()

    def on_train_batch_end(self, batch, logs=None):
        if _steps(self.model) % self.every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


class ContinueEpochMetrics(keras.callbacks.Callback):
    """At the start of a resumed epoch (after fit reset the trackers), adds back the steps before the resume."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_metric_sums(self.model.training_state.metric_sums.numpy())


def restore(gan: ConditionalGAN, run_dir: pathlib.Path) -> int:
    """Loads the resume point if there is one; returns the training steps it had taken."""
    folder = run_dir / BACKUP
    if (folder / RESUME_POINT).exists():
        gan.load_weights(folder / RESUME_POINT)
        if not gan.training_state.loaded:
            raise InputError(folder / RESUME_POINT, "holds no training state: not a resume point of this cgan-ct")
        gan.restore_random_states()
        return gan.steps_taken
    if (folder / LEGACY_WEIGHTS).exists() and (folder / "state.json").exists():  # written before issue 18
        state = json.loads((folder / "state.json").read_text())
        gan.load_weights(folder / LEGACY_WEIGHTS)
        gan.noise_seed.state.assign(np.asarray(state["noise_seed_state"], dtype=gan.noise_seed.state.dtype))
        gan.training_state.steps.assign(int(state["step"]))
        return int(state["step"])
    return 0


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss; checkpoints after it are not written."""

    def __init__(self):
        super().__init__()
        self.diverged = False
        self.message = ""

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not math.isfinite(float(v))}
        if bad and not self.diverged:
            self.diverged = True
            self.message = (
                f"training diverged at step {_steps(self.model)}: non-finite {', '.join(sorted(bad))}; "
                "the last good checkpoints are kept"
            )
            self.model.stop_training = True


# What the best generator is chosen by, best first: validation PSNR in HU (the number users read), else
# validation L1, else training L1 (a dataset without a test split). Sign: higher is better.
SELECTION_METRICS = (("val_psnr_hu", 1.0), ("val_g_l1", -1.0), ("g_l1", -1.0))


def selection_score(logs: dict) -> tuple[str, float] | None:
    """(metric, score with higher better) for an epoch's logs, by SELECTION_METRICS."""
    for name, sign in SELECTION_METRICS:
        if name in logs:
            return name, sign * float(logs[name])
    return None


class GeneratorCheckpoints(keras.callbacks.Callback):
    """generator_last.keras after every finite epoch; generator_best.keras by validation PSNR in HU.

    best.json records the metric, its value and the epoch; a best chosen by another metric (runs before
    PSNR in HU was measured chose by validation L1) is replaced by the next finite epoch.
    """

    def __init__(self, run_dir: pathlib.Path, guard: DivergenceGuard):
        super().__init__()
        self.run_dir, self.guard = run_dir, guard
        self.best = self._recorded(run_dir / "best.json")

    @staticmethod
    def _recorded(path: pathlib.Path) -> tuple[str, float] | None:
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if "metric" in record:
            return record["metric"], float(record["score"])
        return selection_score(record)  # {"val_g_l1": ..., "epoch": ...} from before

    def _save(self, name: str):
        tmp = self.run_dir / f".tmp-{name}"
        self.model.export_generator().save(tmp)  # with EMA: the averaged weights
        os.replace(tmp, self.run_dir / name)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.guard.diverged or not all(math.isfinite(float(v)) for v in logs.values()):
            return
        self._save(GENERATOR_LAST)
        scored = selection_score(logs)
        if scored is None:
            return
        metric, score = scored
        if self.best is None or self.best[0] != metric or score > self.best[1]:
            self.best = scored
            self._save(GENERATOR_BEST)
            record = {"metric": metric, "score": score, metric: float(logs[metric]), "epoch": epoch + 1}
            write_json_atomic(self.run_dir / "best.json", record)


class ImageSummaries(keras.callbacks.Callback):
    """TensorBoard images: central axial slice of condition | generated | target, fixed batch."""

    def __init__(self, log_dir: pathlib.Path, batch):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / "images"))
        self.condition, self.target = (t[:4] for t in batch)
        self.noise = tf.random.stateless_uniform(tf.shape(self.condition), [7, 7], -1.0, 1.0)

    def on_epoch_end(self, epoch, logs=None):
        generated = self.model.evaluation_generate(self.condition, self.noise)
        middle = self.condition.shape[1] // 2
        row = tf.concat(
            [self.condition[:, middle], tf.cast(generated[:, middle], tf.float32), self.target[:, middle]], 2
        )
        with self.writer.as_default():
            tf.summary.image("condition | generated | target", (row + 1.0) / 2.0, step=epoch, max_outputs=4)


def _run_record(
    dataset_dir: pathlib.Path, config: ModelConfig, options: RunOptions, manifest: Manifest, precision: Precision
) -> RunRecord:
    return RunRecord(
        model=dataclasses.asdict(config),
        task=options.task,
        seed=options.seed,
        pipeline=dataclasses.asdict(options.pipeline),
        dataset_dir=str(dataset_dir.resolve()),
        dataset_fingerprint=manifest.plan_fingerprint,
        intensity=manifest.intensity,
        condition=manifest.condition,
        precision=precision.to_json(),
    )


def _check_run_dir(run_dir: pathlib.Path, record: RunRecord) -> None:
    if is_run_dir(run_dir):
        differences = RunRecord.load(run_dir).differences(record)
        if differences:
            raise InputError(
                run_dir,
                "holds a run with other settings or data (recorded -> asked: "
                + "; ".join(differences[:6])
                + "); use another output folder",
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    record.save(run_dir)


def model_for_task(config: ModelConfig, task: str, factor: int = DEFAULT_FACTOR) -> ModelConfig:
    """The model a task trains: autoencode without the residual output; the residual base resolved.

    A residual generator starts as the identity, which is the autoencoder's answer: it would score
    perfectly at step 0 and measure nothing. The paper's autoencoder learns to reproduce its input.
    ``residual_base`` "auto" becomes "cubic" for depixelate (with the task's ``factor``) and
    "condition" otherwise; "cubic" for another task is refused (its condition has no samples to
    interpolate). "smooth" serves the noise tasks (a noisy condition blurred) and depixelate (the cell edges
    of a nearest-neighbour condition, as the mean pyramid's, blurred away: issue 33's grid of cells).
    """
    spec = task_spec(task)
    base = spec.residual_base if config.residual_base == "auto" else config.residual_base
    if base == "cubic" and not spec.factor_grid:
        raise ValueError(f"residual_base 'cubic' interpolates a pixelated condition: for depixelate, not {task}")
    if base == "smooth" and not (spec.noise or spec.factor_grid):
        raise ValueError(
            f"residual_base 'smooth' blurs a noisy or pixelated condition: for the noise tasks and depixelate, "
            f"not {task}"
        )
    config = dataclasses.replace(config, residual_base=base, residual_factor=factor if base == "cubic" else 2)
    if not spec.residual and config.residual:
        return dataclasses.replace(config, residual=False)
    return config


def train(
    dataset_dir,
    run_dir,
    config: ModelConfig,
    options: RunOptions,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 0,
    extra_callbacks: list | None = None,
) -> TrainingResult:
    """Trains (or resumes training) for ``config.epochs`` epochs; see the module docstring.

    ``extra_callbacks`` are added to the job's own (e.g. a time budget that sets
    ``model.stop_training``; the epoch then ends early and is checkpointed).
    """
    dataset_dir, run_dir = pathlib.Path(dataset_dir), pathlib.Path(run_dir)
    config = model_for_task(config, options.task, options.pipeline.factor)
    manifest = load_manifest(dataset_dir)
    if manifest.block_size != config.block_size:
        raise InputError(dataset_dir, f"blocks are {manifest.block_size}^3, the model expects {config.block_size}^3")
    strategy = strategy or make_strategy()
    chief = is_chief()
    out_dir = run_dir if chief else run_dir / f".worker-{json.loads(os.environ['TF_CONFIG'])['task']['index']}"
    precision = resolve_precision(config.precision)
    record = _run_record(dataset_dir, config, options, manifest, precision)
    if chief:
        _check_run_dir(run_dir, record)
        print(f"cgan-ct-train: {precision.describe()}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = manifest.splits["train"].blocks * options.pipeline.augment_copies
    spe = options.steps_per_epoch or max(1, blocks // config.global_batch_size)
    total = spe * config.epochs
    with strategy.scope():
        gan = build_gan(config, options.seed, manifest.mapping, total_steps=total, precision=precision)
    step = restore(gan, run_dir)  # every worker resumes from the chief's resume point
    if step >= total:
        return TrainingResult(step, config.epochs, False, f"already finished: {step} steps")

    def dataset(split, **kw):
        def make(ctx):
            data = make_dataset(
                dataset_dir,
                split,
                options.task,
                config.global_batch_size,
                options.seed,
                options.pipeline,
                input_context=ctx,
                **kw,
            )
            # an epoch of steps_per_epoch may be longer than one pass (or than this worker's shards)
            return data.repeat() if split == "train" else data

        return strategy.distribute_datasets_from_function(make)

    validation = dataset("test") if manifest.splits["test"].shards else None
    validation_steps = max(1, math.ceil(manifest.splits["test"].blocks / config.global_batch_size))
    guard = DivergenceGuard()
    callbacks = [
        guard,
        Backup(out_dir / BACKUP, options.checkpoint_every, guard),
        GeneratorCheckpoints(out_dir, guard),
        keras.callbacks.CSVLogger(str(out_dir / "log.csv"), append=True),
        keras.callbacks.TensorBoard(str(out_dir / "tensorboard"), write_graph=False),
    ]
    if validation is not None:
        sample = next(iter(make_dataset(dataset_dir, "test", options.task, 4, options.seed, options.pipeline)))
        callbacks.append(ImageSummaries(out_dir / "tensorboard", sample))
    callbacks += list(extra_callbacks or [])
    try:
        return _fit_epochs(
            gan, dataset, validation, validation_steps, callbacks, guard, config, options, step, spe, verbose
        )
    finally:
        if not chief:  # other workers write to a scratch folder (savers must run on every worker)
            shutil.rmtree(out_dir, ignore_errors=True)


def _fit_epochs(gan, dataset, validation, validation_steps, callbacks, guard, config, options, step, spe, verbose):
    for epoch in range(step // spe, config.epochs):
        skip = step - epoch * spe if epoch == step // spe else 0
        gan.fit(
            dataset("train", epoch=epoch, skip_batches=skip),
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=spe - skip,
            validation_data=validation,
            validation_steps=options.validation_steps or validation_steps,
            shuffle=False,  # the pipeline shuffles
            callbacks=callbacks + ([ContinueEpochMetrics()] if skip else []),
            verbose=verbose,
        )
        if guard.diverged:
            return TrainingResult(_steps(gan), epoch, True, guard.message)
    return TrainingResult(_steps(gan), config.epochs, False, f"finished: {_steps(gan)} steps")
