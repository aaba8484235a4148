"""Input pipeline throughput per task against what a training step consumes.

Both are measured in the same run on the same machine:
- pipeline: blocks/s of make_dataset(train split, task) alone, iterated
  without a model (the data side);
- consumption: blocks/s of ConditionalGAN.train_step for a model preset, built
  as cgan-ct-train builds it (build_gan: the preset's losses, moving average and
  learning-rate schedule), fed one in-memory batch repeatedly (the compute side,
  no input cost).
The pipeline should deliver at least 3x the consumption. On a CPU-only
machine the two would share the cores during training; on a GPU machine the
step runs on the GPU and the pipeline on the CPU, as measured here.

  python benchmarks/pipeline_bench.py [--dataset_dir DIR | --series_dir DIR] [--presets cpu] [--seconds 15]
                                      [--batch 8] [--elastic_voxels 3]

--elastic_voxels N adds two figures: the depixelate pipeline with elastic deformation of N voxels
(PipelineOptions.elastic_voxels) read by each elastic_sampling, their cost against the plain pipeline's.

Without --dataset_dir the series at --series_dir (default: the shared chest series) is converted into a
temporary dataset.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import tensorflow as tf
from absl import app, flags

from cgan_ct.config import ConversionConfig, model_config
from cgan_ct.constants import DERIVED_TASKS as TASKS  # lowdose needs a dataset converted with its condition
from cgan_ct.constants import ELASTIC_SAMPLINGS
from cgan_ct.data.conversion import convert
from cgan_ct.data.input_pipeline import PipelineOptions, make_dataset
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN

HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:  # run as a script it is there already; loaded by path (the tests) it is not
    sys.path.insert(0, HERE)
import peaks  # noqa: E402  (the timing loop model_bench.py and step_profile.py use)

_CHEST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "lung-pet-ct-dx-A0001"
_DATASET = flags.DEFINE_string("dataset_dir", None, "A converted dataset (default: convert --series_dir).")
_SERIES = flags.DEFINE_string("series_dir", str(_CHEST), "The series converted when no --dataset_dir is given.")
_PRESETS = flags.DEFINE_list("presets", ["cpu"], "Model presets whose train step to measure.")
_SECONDS = flags.DEFINE_float("seconds", 15.0, "Seconds of measurement for each figure.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch for the pipeline figure.")
_ELASTIC = flags.DEFINE_float("elastic_voxels", 0.0, "Also measure depixelate with this elastic deformation (0: no).")

# The length of a preset's learning-rate schedule (the cpu preset's cosine needs one): the step is timed for
# a while, not a step count, and the rate a schedule sets does not change what a step costs.
SCHEDULE_STEPS = 1000


def pipeline_rate(dataset_dir, task: str, batch: int, seconds: float, options=None) -> float:
    iterator = iter(make_dataset(dataset_dir, "train", task, batch, options=options).repeat())
    return peaks.rate(lambda: next(iterator), batch, seconds)


def build(preset: str, steps: int) -> ConditionalGAN:
    """The preset's compiled GAN as cgan-ct-train builds it, its schedule (if any) ``steps`` long."""
    return build_gan(model_config(preset), total_steps=steps)


def train_step_rate(preset: str, seconds: float) -> tuple[float, int]:
    config = model_config(preset)
    gan = build(preset, SCHEDULE_STEPS)
    n, batch = config.block_size, config.global_batch_size
    data = tf.random.uniform([batch, n, n, n, 1], -1, 1)
    return peaks.rate(lambda: gan.train_on_batch(data, data), batch, seconds), batch


def main(argv: list[str]) -> None:
    del argv
    scratch = None
    dataset_dir = _DATASET.value
    if dataset_dir is None:
        scratch = pathlib.Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
        dataset_dir = scratch / "ds"
        convert([pathlib.Path(_SERIES.value)], dataset_dir, ConversionConfig(), workers=1)
    try:
        pipe = {task: pipeline_rate(dataset_dir, task, _BATCH.value, _SECONDS.value) for task in TASKS}
        for sampling in ELASTIC_SAMPLINGS if _ELASTIC.value > 0 else ():
            elastic = PipelineOptions(elastic_voxels=_ELASTIC.value, elastic_sampling=sampling)
            name = f"depixelate, elastic {_ELASTIC.value:g}" + ("" if sampling == "trilinear" else f" {sampling}")
            pipe[name] = pipeline_rate(dataset_dir, "depixelate", _BATCH.value, _SECONDS.value, elastic)
        steps = {preset: train_step_rate(preset, _SECONDS.value) for preset in _PRESETS.value}
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"devices: {[d.name for d in tf.config.list_logical_devices()]}")
    for preset, (rate, batch) in steps.items():
        print(f"train step, preset {preset} (batch {batch}): {rate:8.1f} blocks/s consumed")
    for task, rate in pipe.items():
        ratios = "  ".join(f"{rate / steps[p][0]:.1f}x {p}" for p in steps)
        print(f"pipeline {task:<11}: {rate:8.1f} blocks/s   ({ratios}; goal >= 3x)")


if __name__ == "__main__":
    app.run(main)
