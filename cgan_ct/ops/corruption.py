"""The paper's conditions Y, derived from a block X in HU: one implementation for
training, evaluation and the demo.

Every function takes and returns float32 HU of any rank >= 3 whose last three
axes are (z, y, x) (a block, a batch of blocks, or a whole volume), works on
numpy arrays and tensors alike, and is a pure TensorFlow op (usable in tf.data).

- autoencode: Y = X.
- denoise: Poisson noise. x01 = clip((HU + 1024) / 4096, 0, 1);
  Y = Poisson(peak * x01) / peak, mapped back to HU. ``peak`` (default 512)
  sets the dose: lower is noisier (128 is a harder setting).
- depixelate: nearest-neighbour down-sampling by ``factor`` (every factor-th
  voxel along each axis, starting at 0), then nearest up-sampling back to the
  original size.
"""

from __future__ import annotations

import tensorflow as tf

from cgan_ct.constants import (
    AUTOENCODE,
    DEFAULT_FACTOR,
    DEFAULT_PEAK,
    DENOISE,
    DEPIXELATE,
    LOWDOSE,
    POISSON_HU_OFFSET,
    POISSON_HU_RANGE,
    TASKS,
)

__all__ = ["DEFAULT_FACTOR", "DEFAULT_PEAK", "TASKS", "autoencode", "depixelate", "make_condition", "poisson_noise"]


def autoencode(hu):
    return tf.convert_to_tensor(hu, tf.float32)


def poisson_noise(hu, seed, peak: float = DEFAULT_PEAK):
    """Y = Poisson(peak * x01) / peak in HU; ``seed`` is a shape-[2] int tensor."""
    hu = tf.convert_to_tensor(hu, tf.float32)
    x01 = tf.clip_by_value((hu + POISSON_HU_OFFSET) / POISSON_HU_RANGE, 0.0, 1.0)
    counts = tf.random.stateless_poisson(tf.shape(hu), seed, lam=peak * x01, dtype=tf.float32)
    return counts / peak * POISSON_HU_RANGE - POISSON_HU_OFFSET


def depixelate(hu, factor: int = DEFAULT_FACTOR):
    """Keeps every ``factor``-th voxel along z, y, x and repeats it ``factor`` times."""
    hu = tf.convert_to_tensor(hu, tf.float32)
    if factor == 1:
        return hu
    low = hu[..., ::factor, ::factor, ::factor]
    shape = tf.shape(hu)
    rank = hu.shape.rank
    up = low
    for axis in (rank - 3, rank - 2, rank - 1):
        up = tf.repeat(up, factor, axis=axis)
    return up[..., : shape[-3], : shape[-2], : shape[-1]]


def make_condition(hu, task: str, seed=None, peak: float = DEFAULT_PEAK, factor: int = DEFAULT_FACTOR):
    """The condition of ``task`` for the block(s) or volume ``hu`` (float32 HU)."""
    if task == AUTOENCODE:
        return autoencode(hu)
    if task == DENOISE:
        if seed is None:
            raise ValueError("denoise needs a seed (a shape-[2] integer tensor)")
        return poisson_noise(hu, seed, peak)
    if task == DEPIXELATE:
        return depixelate(hu, factor)
    if task == LOWDOSE:
        raise ValueError(
            "lowdose's condition is made from whole slices (cgan_ct.ops.lowdose.simulate_lowdose) "
            "or stored with the data, not derived from a block"
        )
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
