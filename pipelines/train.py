"""cgan-ct-train: train the conditional GAN for one task on a converted dataset.

  cgan-ct-train --dataset_dir DIR --task denoise --output_dir RUN_DIR [--preset cpu|paper|smoke]
                [--epochs N] [--global_batch N] [--g_lr 2e-4] [--d_lr 2e-4] [--seed 0]
                [--steps_per_epoch N] [--checkpoint_every 100] [--jit_compile]
                [--precision auto|float32|bfloat16|float16]
                [--air_keep 0.1] [--noise_scale_min 0] [--l1_space normalized|hu] [--ema_decay D]
                [--lr_schedule constant|cosine]
                [--residual_base condition|cubic|smooth] [--residual_sigma 1] [--l1_weight 100]
                [--spectral_weight 0] [--spectral_patch 0] [--upsample transpose|resize]
                [--mirror_axes z,y,x|none] [--[no]quarter_turns] [--max_rotation_deg 0] [--elastic_voxels 0]
                [--elastic_sampling trilinear|noise_preserving]

Runs keras fit under MirroredStrategy (all visible GPUs, else the CPU), or
MultiWorkerMirroredStrategy when TF_CONFIG names several workers. With
--backend jax (or KERAS_BACKEND=jax) the same models train on JAX, from the
same tf.data pipeline, data-parallel over JAX's devices (keras.distribution). Re-running
the same command after an interruption resumes where it stopped.
Exit status: 0 trained (or already finished), 3 diverged, 2 on an input error.
"""

from __future__ import annotations

import sys

from cgan_ct.runtime import KERAS_BACKENDS, select_keras_backend

select_keras_backend()  # --backend jax must reach Keras before anything imports it (main, below)

from absl import flags  # noqa: E402

from cgan_ct.cli import job  # noqa: E402
from cgan_ct.cli.augmentation import augmentation_from_flags, define_augmentation  # noqa: E402
from cgan_ct.config import (  # noqa: E402
    L1_SPACES,
    LR_SCHEDULES,
    PRECISIONS,
    PRESETS,
    RESIDUAL_BASES,
    UPSAMPLINGS,
    model_config,
)
from cgan_ct.constants import TASKS  # noqa: E402

_DATASET = flags.DEFINE_string("dataset_dir", None, "Dataset folder written by cgan-ct-convert.")
_TASK = flags.DEFINE_enum("task", None, list(TASKS), "The condition to learn from.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Run folder (checkpoints, logs); reused to resume.")
_PRESET = flags.DEFINE_enum("preset", "cpu", list(PRESETS), "Model preset.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs (paper: 100).")
_BATCH = flags.DEFINE_integer("global_batch", None, "Global batch over all replicas (paper: 50).")
_G_LR = flags.DEFINE_float("g_lr", None, "Generator learning rate (default 2e-4).")
_D_LR = flags.DEFINE_float("d_lr", None, "Discriminator learning rate (default 2e-4).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation, corruption and noise.")
_SPE = flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the blocks).")
_VAL_STEPS = flags.DEFINE_integer("validation_steps", None, "Validation batches per epoch (default: all).")
_CKPT = flags.DEFINE_integer("checkpoint_every", 100, "Steps between resume points.")
_PEAK = flags.DEFINE_float("peak", None, "Poisson peak for the denoise task (default 512).")
_AIR = flags.DEFINE_float("air_keep", None, "Share of air blocks kept in training (default 0.1; 1: all).")
_NOISE_MIN = flags.DEFINE_float(
    "noise_scale_min",
    None,
    "denoise, lowdose: train on every noise level from the task's (1) down to this share of it (0: clean "
    "blocks too), so one model serves mild and strong noise (default 1: the task's level only).",
)
_L1_SPACE = flags.DEFINE_enum("l1_space", None, list(L1_SPACES), "L1 on normalized values or in HU.")
_L1_WEIGHT = flags.DEFINE_float("l1_weight", None, "Weight of the L1 term (the adversarial term's is 1).")
_SPECTRAL = flags.DEFINE_float(
    "spectral_weight",
    None,
    "Weight of the texture term: output against target in radial frequency bands, phase-free (0: off).",
    lower_bound=0.0,
)
_SPECTRAL_PATCH = flags.DEFINE_integer(
    "spectral_patch",
    None,
    "Measure the texture term in in-plane tiles of this edge, each apart (0: over the whole plane).",
    lower_bound=0,
)
_UPSAMPLE = flags.DEFINE_enum(
    "upsample",
    None,
    list(UPSAMPLINGS),
    "How the U-Net's decoder doubles its grid: a stride-2 transposed convolution (transpose, the preset's) or "
    "nearest doubling and a convolution (resize: no period-2 cross-hatch in the output).",
)
_EMA = flags.DEFINE_float("ema_decay", None, "Moving average of G's weights, used for validation and export (0: off).")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", None, list(LR_SCHEDULES), "Learning-rate schedule.")
_BASE = flags.DEFINE_enum("residual_base", None, list(RESIDUAL_BASES), "What the residual output corrects.")
_SIGMA = flags.DEFINE_float(
    "residual_sigma", None, "Gaussian sigma in voxels of the smoothed base (--residual_base smooth)."
)
_PRECISION = flags.DEFINE_enum(
    "precision",
    None,
    list(PRECISIONS),
    "Compute precision (variables, losses and HU stay float32). auto (the presets' default): bfloat16 on CPUs "
    "with AMX-BF16 and GPUs of compute capability >= 8, float32 elsewhere; the choice is printed and recorded.",
)
_MIXED = flags.DEFINE_bool("mixed_precision", None, "Old name of --precision float16 (mixed float16, GPUs).")
_XLA = flags.DEFINE_bool("jit_compile", None, "XLA-compile the train step (GPUs).")
_BACKEND = flags.DEFINE_enum(
    "backend",
    None,
    list(KERAS_BACKENDS),
    "Keras backend (default: $KERAS_BACKEND, else tensorflow). jax: XLA-compiled steps, pip install -e '.[jax]'.",
)
_AUGMENT = define_augmentation()
_VERBOSE = flags.DEFINE_integer("verbose", 1, "Keras progress: 0 silent, 1 bar, 2 a line per epoch.")


def main(argv: list[str]) -> int:
    # Keras and the library are imported here, not at the top: --help and --version stay fast.
    import keras

    from cgan_ct.data.input_pipeline import PipelineOptions
    from cgan_ct.model.training import RunOptions, train

    if _BACKEND.value and keras.backend.backend() != _BACKEND.value:
        raise ValueError(f"--backend {_BACKEND.value}: Keras runs on {keras.backend.backend()} in this process")
    config = model_config(
        _PRESET.value,
        epochs=_EPOCHS.value,
        global_batch_size=_BATCH.value,
        g_learning_rate=_G_LR.value,
        d_learning_rate=_D_LR.value,
        precision=_PRECISION.value,
        mixed_precision=_MIXED.value,
        jit_compile=_XLA.value,
        l1_space=_L1_SPACE.value,
        l1_weight=_L1_WEIGHT.value,
        spectral_weight=_SPECTRAL.value,
        spectral_patch=_SPECTRAL_PATCH.value,
        upsample=_UPSAMPLE.value,
        ema_decay=_EMA.value,
        lr_schedule=_LR_SCHEDULE.value,
        residual_base=_BASE.value,
        residual_sigma=_SIGMA.value,
    )
    chosen = {"peak": _PEAK.value, "air_keep": _AIR.value, "noise_scale_min": _NOISE_MIN.value}
    chosen.update(augmentation_from_flags(_AUGMENT))
    pipeline = PipelineOptions(**{k: v for k, v in chosen.items() if v is not None})
    options = RunOptions(
        _TASK.value,
        seed=_SEED.value,
        steps_per_epoch=_SPE.value,
        validation_steps=_VAL_STEPS.value,
        checkpoint_every=_CKPT.value,
        pipeline=pipeline,
    )
    result = train(_DATASET.value, _OUTPUT.value, config, options, verbose=_VERBOSE.value)
    if result.diverged:
        print(f"cgan-ct-train: {result.message}", file=sys.stderr)
        return 3
    print(f"cgan-ct-train: {result.message}; run folder {_OUTPUT.value}")
    return 0


def run() -> None:
    job.run(main, __name__, required=("dataset_dir", "task", "output_dir"))


if __name__ == "__main__":
    run()
