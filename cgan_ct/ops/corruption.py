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
  original size. ``pyramid="mean"``: each factor-voxel cube's mean instead of
  its first voxel (cgan_ct.ops.pyramid: a cascade built on the mean pyramid).
- degraded depixelate (``degrade_low``): the kept samples blurred (Gaussian,
  sigma in kept-sample units), noised (Gaussian, HU) and the up-sampled
  condition shifted by up to a few voxels: what a cascade stage receives from
  a generator rather than from a real scan (cgan_ct.synthesis.degradation
  measures the three from the coarse generator's samples).
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
from cgan_ct.ops.pyramid import check_pyramid

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_PEAK",
    "TASKS",
    "autoencode",
    "degrade_low",
    "depixelate",
    "make_condition",
    "poisson_noise",
    "separable_filter",
]


def autoencode(hu):
    return tf.convert_to_tensor(hu, tf.float32)


def poisson_noise(hu, seed, peak: float = DEFAULT_PEAK):
    """Y = Poisson(peak * x01) / peak in HU; ``seed`` is a shape-[2] int tensor."""
    hu = tf.convert_to_tensor(hu, tf.float32)
    x01 = tf.clip_by_value((hu + POISSON_HU_OFFSET) / POISSON_HU_RANGE, 0.0, 1.0)
    counts = tf.random.stateless_poisson(tf.shape(hu), seed, lam=peak * x01, dtype=tf.float32)
    return counts / peak * POISSON_HU_RANGE - POISSON_HU_OFFSET


def _cell_sums(values, factor: int):
    """Sums over each ``factor``-voxel cube of the last three axes (cells from 0, the end zero-padded)."""
    rank = values.shape.rank
    shape = tf.shape(values)
    cells = [(shape[rank - 3 + i] + factor - 1) // factor for i in range(3)]
    pad = [[0, 0]] * (rank - 3) + [[0, cells[i] * factor - shape[rank - 3 + i]] for i in range(3)]
    split = tf.concat([shape[: rank - 3], [cells[0], factor, cells[1], factor, cells[2], factor]], 0)
    return tf.reduce_sum(tf.reshape(tf.pad(values, pad), split), axis=[rank - 2, rank, rank + 2])


def _mean_cells(hu, factor: int):
    """The mean of each ``factor``-voxel cube of the last three axes (an edge cell: of the voxels it has)."""
    counts = _cell_sums(tf.ones(tf.shape(hu)[-3:], tf.float32), factor)
    return _cell_sums(hu, factor) / counts


def depixelate(hu, factor: int = DEFAULT_FACTOR, degrade=None, seed=None, pyramid: str = "subsample"):
    """Keeps every ``factor``-th voxel along z, y, x and repeats it ``factor`` times.

    ``degrade``: (blur_sigma, noise_hu, max_shift), see ``degrade_low``; applied to the kept
    samples (blur, noise) and to the up-sampled condition (shift); needs ``seed``. None or all
    zero: the plain condition. ``pyramid``: "subsample" (the kept voxels) or "mean" (each cube's
    mean in their place: cgan_ct.ops.pyramid).
    """
    hu = tf.convert_to_tensor(hu, tf.float32)
    check_pyramid(pyramid)
    if factor == 1:
        return hu
    low = _mean_cells(hu, factor) if pyramid == "mean" else hu[..., ::factor, ::factor, ::factor]
    shape = tf.shape(hu)
    rank = hu.shape.rank
    degrading = degrade is not None and any(float(v) > 0 for v in degrade)
    if degrading:
        if seed is None:
            raise ValueError("a degraded depixelate condition needs a seed (a shape-[2] integer tensor)")
        noise_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        low = degrade_low(low, float(degrade[0]), float(degrade[1]), noise_seed)
    up = low
    for axis in (rank - 3, rank - 2, rank - 1):
        up = tf.repeat(up, factor, axis=axis)
    up = up[..., : shape[-3], : shape[-2], : shape[-1]]
    if degrading and int(degrade[2]) > 0:
        shifts = tf.random.stateless_uniform([3], shift_seed, -int(degrade[2]), int(degrade[2]) + 1, tf.int32)
        up = tf.roll(up, shifts, axis=[rank - 3, rank - 2, rank - 1])
    return up


def _gaussian_taps(sigma: float) -> tf.Tensor:
    radius = max(1, int(3 * sigma + 0.5))  # as scipy.ndimage.gaussian_filter with truncate=3
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    taps = tf.exp(-0.5 * (offsets / sigma) ** 2)
    return taps / tf.reduce_sum(taps)


def separable_filter(volume, taps):
    """``volume`` filtered by the odd-length 1-D ``taps`` along each of its last three axes, edges reflected
    (the reflection repeated for axes shorter than the kernel): float32, the same shape.

    A weighted sum of shifted copies: for the short kernels used here (3-7 taps) faster than a convolution
    (the training pipeline smooths every block so: augment.smooth_121)."""
    out = tf.cast(volume, tf.float32)
    shape = out.shape  # kept static (a sampler indexes by it)
    taps = tf.convert_to_tensor(taps, tf.float32)
    width = int(taps.shape[0])
    radius = (width - 1) // 2
    rank = out.shape.rank
    for axis in (rank - 3, rank - 2, rank - 1):
        n = tf.shape(out)[axis]
        index = tf.range(-radius, n + radius)
        period = tf.maximum(2 * n - 2, 1)
        index = tf.math.floormod(index, period)
        index = tf.where(index >= n, period - index, index)
        padded = tf.gather(out, index, axis=axis)
        out = sum(taps[i] * tf.gather(padded, tf.range(i, i + n), axis=axis) for i in range(width))
    return tf.ensure_shape(out, shape)


def degrade_low(low, blur_sigma: float, noise_hu: float, seed):
    """Gaussian blur (``blur_sigma`` samples, along the last three axes, edges reflected) and
    Gaussian noise (``noise_hu`` HU standard deviation) of down-sampled samples."""
    low = tf.convert_to_tensor(low, tf.float32)
    if blur_sigma > 0:
        low = separable_filter(low, _gaussian_taps(blur_sigma))
    if noise_hu > 0:
        low = low + noise_hu * tf.random.stateless_normal(tf.shape(low), seed)
    return low


def make_condition(
    hu,
    task: str,
    seed=None,
    peak: float = DEFAULT_PEAK,
    factor: int = DEFAULT_FACTOR,
    degrade=None,
    pyramid: str = "subsample",
):
    """The condition of ``task`` for the block(s) or volume ``hu`` (float32 HU).

    ``degrade`` and ``pyramid``: depixelate only, as ``depixelate``.
    """
    if task == AUTOENCODE:
        return autoencode(hu)
    if task == DENOISE:
        if seed is None:
            raise ValueError("denoise needs a seed (a shape-[2] integer tensor)")
        return poisson_noise(hu, seed, peak)
    if task == DEPIXELATE:
        return depixelate(hu, factor, degrade, seed, pyramid)
    if task == LOWDOSE:
        raise ValueError(
            "lowdose's condition is made from whole slices (cgan_ct.ops.lowdose.simulate_lowdose) "
            "or stored with the data, not derived from a block"
        )
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
