"""Geometric augmentation of a stored block (block + margin) into a training block.

Input: int16 or float HU of shape [S, S, S], S = block + 2 * margin, axes
(z, y, x). Output: float32 HU [block, block, block]. Stateless and seeded: the
same seed gives the same block; all ops are TensorFlow ops (tf.data-safe).

Only the target X is augmented; the condition Y is derived from the
augmented X afterwards, so Y and X are aligned by construction.

- translation: a random crop within the margin (uniform offsets);
- mirroring: each axis flipped with probability 1/2;
- rotation: a multiple of 90 degrees in the axial (y, x) plane, and, if
  ``max_rotation_deg`` > 0, a small extra angle about z (bilinear), which uses
  part of the in-plane margin and so narrows the in-plane translation.
"""

from __future__ import annotations

import math

import tensorflow as tf


def center_crop(stored, block: int):
    """The block without its margin (evaluation): float32 [block]^3."""
    margin = (stored.shape[0] - block) // 2
    return tf.cast(stored[margin : margin + block, margin : margin + block, margin : margin + block], tf.float32)


def rotation_reach(block: int, max_rotation_deg: float) -> int:
    """Voxels of margin a rotation of up to ``max_rotation_deg`` needs in-plane."""
    angle = math.radians(min(abs(max_rotation_deg), 45.0))
    half = block / 2
    return math.ceil(half * (math.cos(angle) + math.sin(angle)) - half)


def _crop_rotated(stored, z0, yx_center, angle, block: int):
    """Bilinear samples of a block rotated by ``angle`` about z, centred at ``yx_center``."""
    size = tf.shape(stored)[1]
    grid = tf.range(block, dtype=tf.float32) - (block - 1) / 2.0
    gy, gx = tf.meshgrid(grid, grid, indexing="ij")
    cos, sin = tf.cos(angle), tf.sin(angle)
    sy = yx_center[0] + cos * gy - sin * gx
    sx = yx_center[1] + sin * gy + cos * gx
    y0 = tf.clip_by_value(tf.cast(tf.floor(sy), tf.int32), 0, size - 2)
    x0 = tf.clip_by_value(tf.cast(tf.floor(sx), tf.int32), 0, size - 2)
    wy, wx = sy - tf.cast(y0, tf.float32), sx - tf.cast(x0, tf.float32)  # after clipping: exact at the edge
    slab = tf.reshape(tf.cast(stored[z0 : z0 + block], tf.float32), [block, -1])

    def corner(dy, dx):
        index = tf.reshape((y0 + dy) * size + (x0 + dx), [-1])
        return tf.reshape(tf.gather(slab, index, axis=1), [block, block, block])

    return (
        corner(0, 0) * (1 - wy) * (1 - wx)
        + corner(0, 1) * (1 - wy) * wx
        + corner(1, 0) * wy * (1 - wx)
        + corner(1, 1) * wy * wx
    )


def random_block(stored, seed, block: int, max_rotation_deg: float = 0.0):
    """One augmented block from ``stored`` [S, S, S]; ``seed`` is a shape-[2] int tensor."""
    size = stored.shape[0]
    margin = (size - block) // 2
    reach = rotation_reach(block, max_rotation_deg) if max_rotation_deg > 0 else 0
    if reach > margin:
        raise ValueError(f"a {max_rotation_deg} degree rotation needs a margin of {reach}, the data has {margin}")
    seeds = tf.random.experimental.stateless_split(seed, 5)
    shift_z = tf.random.stateless_uniform([], seeds[0], 0, 2 * margin + 1, dtype=tf.int32)
    shift_yx = tf.random.stateless_uniform([2], seeds[1], -(margin - reach), margin - reach + 1, dtype=tf.int32)
    if max_rotation_deg > 0:
        angle = tf.random.stateless_uniform([], seeds[2], -1.0, 1.0) * math.radians(max_rotation_deg)
        center = tf.cast(shift_yx, tf.float32) + (size - 1) / 2.0
        out = _crop_rotated(stored, shift_z, center, angle, block)
    else:
        y0, x0 = margin + shift_yx[0], margin + shift_yx[1]
        out = tf.cast(stored[shift_z : shift_z + block, y0 : y0 + block, x0 : x0 + block], tf.float32)
    quarter_turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    out = tf.image.rot90(out[..., None], quarter_turns)[..., 0]  # z acts as the batch: turns in (y, x)
    flips = tf.random.stateless_uniform([3], seeds[4], 0, 2, dtype=tf.int32)
    for axis in range(3):
        out = tf.cond(flips[axis] > 0, lambda o=out, a=axis: tf.reverse(o, [a]), lambda o=out: o)
    return tf.ensure_shape(out, [block, block, block])
