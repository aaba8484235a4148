"""HU <-> [-1, 1]: the paper's histogram equalization, invertible, in numpy and TensorFlow.

The mapping is piecewise linear through one knot per integer HU in
[-1024, 3071] (values outside are clipped first; 3071 is the top of the
12-bit CT range). Its levels are

    level(h) = (1 - w) * CDF(h) + w * (h + 1024) / 4095,   rescaled to [-1, 1],

where CDF is the mid-point cumulative histogram of the training split and w
(``linear_weight``, 0.1 by default) keeps every HU range a minimum slope.
Pure equalization (w = 0) squeezes rare ranges (dense bone, metal, contrast)
to almost nothing, so a generator could not express them and the inverse
would amplify float rounding there by orders of magnitude; with w = 0.1 the
HU -> [-1, 1] -> HU round trip in float32 stays within 0.01 HU everywhere.
The linear window (``linear_mapping``) is the same machinery with two knots.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cgan_ct.constants import CLIP_HU

DEFAULT_LINEAR_WEIGHT = 0.1


@dataclasses.dataclass(frozen=True)
class IntensityMapping:
    """A monotone piecewise-linear map from HU knots to levels in [-1, 1].

    ``knots_hu`` and ``levels`` are strictly increasing, of equal length;
    levels run from -1 to 1.
    """

    kind: str
    knots_hu: tuple[float, ...]
    levels: tuple[float, ...]

    def __post_init__(self):
        knots, levels = np.asarray(self.knots_hu), np.asarray(self.levels)
        if knots.shape != levels.shape or knots.size < 2:
            raise ValueError("knots_hu and levels must have the same length >= 2")
        if (np.diff(knots) <= 0).any() or (np.diff(levels) <= 0).any():
            raise ValueError("knots_hu and levels must be strictly increasing")

    def to_json(self) -> dict:
        return {"kind": self.kind, "knots_hu": list(self.knots_hu), "levels": list(self.levels)}

    @classmethod
    def from_json(cls, data: dict) -> IntensityMapping:
        return cls(data["kind"], tuple(data["knots_hu"]), tuple(data["levels"]))

    def forward(self, hu: np.ndarray) -> np.ndarray:
        """HU (any shape) -> float32 in [-1, 1]."""
        return np.interp(np.asarray(hu, np.float64), self.knots_hu, self.levels).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Values in [-1, 1] (clipped) -> float32 HU."""
        return np.interp(np.asarray(values, np.float64), self.levels, self.knots_hu).astype(np.float32)

    def forward_tf(self, hu):
        """TensorFlow version of ``forward``: any-shape tensor of HU -> float32."""
        return interp_tf(hu, self.knots_hu, self.levels)

    def inverse_tf(self, values):
        """TensorFlow version of ``inverse``: any-shape float tensor -> float32 HU."""
        return interp_tf(values, self.levels, self.knots_hu)

    def inverse_ops(self, values):
        """``inverse`` in keras.ops (any backend): any-shape float tensor -> float32 HU. For losses and metrics."""
        return _interp_ops(values, self.levels, self.knots_hu)


def interp_tf(x, xp, fp):
    """np.interp in TensorFlow ops (clamped at both ends).

    Evenly spaced knots (the HU side of both mappings) are indexed directly;
    others are searched.
    """
    import tensorflow as tf  # the conversion side of the project runs without TensorFlow

    steps = np.diff(np.asarray(xp, np.float64))
    if np.allclose(steps, steps[0], rtol=1e-9, atol=0):
        return _interp_uniform_tf(tf, x, float(xp[0]), float(steps[0]), fp)
    xp = tf.constant(xp, tf.float32)
    fp = tf.constant(fp, tf.float32)
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    flat = tf.clip_by_value(tf.reshape(x, [-1]), xp[0], xp[-1])
    upper = tf.clip_by_value(tf.searchsorted(xp, flat, side="right"), 1, tf.size(xp) - 1)
    x0, x1 = tf.gather(xp, upper - 1), tf.gather(xp, upper)
    f0, f1 = tf.gather(fp, upper - 1), tf.gather(fp, upper)
    out = f0 + (flat - x0) * (f1 - f0) / (x1 - x0)
    return tf.reshape(out, shape)


def _interp_ops(x, xp, fp):
    """np.interp in keras.ops (clamped at both ends): the backend-neutral ``interp_tf``."""
    from keras import ops

    xp_np, fp_np = np.asarray(xp, np.float32), np.asarray(fp, np.float32)
    x = ops.cast(x, "float32")
    flat = ops.clip(ops.reshape(x, (-1,)), float(xp_np[0]), float(xp_np[-1]))
    upper = ops.clip(ops.searchsorted(ops.convert_to_tensor(xp_np), flat, side="right"), 1, len(xp_np) - 1)
    x0, x1 = ops.take(xp_np, upper - 1), ops.take(xp_np, upper)
    f0, f1 = ops.take(fp_np, upper - 1), ops.take(fp_np, upper)
    return ops.reshape(f0 + (flat - x0) * (f1 - f0) / (x1 - x0), ops.shape(x))


def _interp_uniform_tf(tf, x, start: float, step: float, fp):
    last = int(np.asarray(fp).shape[0]) - 1  # before tf.constant: a graph tensor has no len()
    fp = tf.constant(fp, tf.float32)
    position = tf.clip_by_value((tf.cast(x, tf.float32) - start) / step, 0.0, float(last))
    lower = tf.minimum(tf.cast(tf.floor(position), tf.int32), last - 1)
    frac = position - tf.cast(lower, tf.float32)
    f0, f1 = tf.gather(fp, lower), tf.gather(fp, lower + 1)
    return f0 + frac * (f1 - f0)


def linear_mapping(low_hu: float = CLIP_HU[0], high_hu: float = CLIP_HU[1]) -> IntensityMapping:
    """A fixed window: low_hu -> -1, high_hu -> 1, linear between, clipped outside."""
    return IntensityMapping("linear", (float(low_hu), float(high_hu)), (-1.0, 1.0))


def hu_histogram(hu: np.ndarray, stride: int = 1) -> np.ndarray:
    """Counts of each integer HU in CLIP_HU (values outside counted at the ends): int64 [4096].

    ``stride`` > 1 counts every stride-th voxel along each axis: a CT volume has
    millions of voxels, and 1/8 of them estimate its histogram as well.
    """
    low, high = CLIP_HU
    clipped = np.clip(hu[::stride, ::stride, ::stride], low, high).astype(np.int32) - low
    return np.bincount(clipped.ravel(), minlength=high - low + 1).astype(np.int64)


def fit_equalization(histogram: np.ndarray, linear_weight: float = DEFAULT_LINEAR_WEIGHT) -> IntensityMapping:
    """The equalization mapping for a histogram from ``hu_histogram`` (summed over volumes)."""
    low, high = CLIP_HU
    counts = np.asarray(histogram, np.float64)
    if counts.shape != (high - low + 1,) or counts.sum() <= 0:
        raise ValueError(f"histogram must be {high - low + 1} non-negative counts with a positive sum")
    if not 0 < linear_weight <= 1:
        raise ValueError(f"linear_weight must be in (0, 1], got {linear_weight}")
    cdf = (np.cumsum(counts) - 0.5 * counts) / counts.sum()
    ramp = np.linspace(0.0, 1.0, counts.size)
    levels = (1 - linear_weight) * cdf + linear_weight * ramp
    levels = 2 * (levels - levels[0]) / (levels[-1] - levels[0]) - 1
    knots = np.arange(low, high + 1, dtype=np.float64)
    return IntensityMapping("equalize", tuple(knots.tolist()), tuple(levels.tolist()))
