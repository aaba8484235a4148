"""Geometric augmentation of a stored block (block + margin) into a training block.

Input: int16 or float HU of shape [S, S, S], S = block + 2 * margin, axes
(z, y, x). Output: float32 HU [block, block, block]. Stateless and seeded: the
same seed gives the same block; all ops are TensorFlow ops (tf.data-safe).

Only the target X is augmented; the condition Y is derived from the
augmented X afterwards, so Y and X are aligned by construction.

- translation: a random crop within the margin (uniform offsets);
- mirroring: each axis of ``mirror_axes`` (default all three) flipped with
  probability 1/2; () keeps the body's handedness (heart on the left);
- rotation: a multiple of 90 degrees in the axial (y, x) plane (unless
  ``quarter_turns`` is False), and, if ``max_rotation_deg`` > 0, a small extra
  angle about z (bilinear), which uses part of the in-plane margin and so
  narrows the in-plane translation;
- elastic deformation, if ``elastic_voxels`` > 0: every voxel displaced by a
  smooth random field of at most that many voxels per axis (ELASTIC_GRID^3
  random control displacements, interpolated by raised-cosine weights); it
  uses that many voxels of the margin on every axis.
  Neighbouring voxels move apart by at most pi * elastic_voxels / spacing
  (spacing = (block - 1) / (ELASTIC_GRID - 1), 10.3 voxels at 32), so tissue
  is never folded over itself below about 3.3 voxels at 32.
  ``elastic_sampling`` says how the displaced positions are read:
  ``"trilinear"`` (default) averages up to 8 neighbours, which smooths the
  noise (at half a voxel's offset on every axis its variance falls to 1/8)
  and moves its power to low frequencies; ``"noise_preserving"`` reads a
  [1, 2, 1]-smoothed copy trilinearly and adds back the rest (the detail:
  noise, the sharp part of edges) from the nearest voxel, so the noise keeps
  its power and grain and edges move by at most half a voxel more.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from cgan_ct.constants import ELASTIC_SAMPLINGS
from cgan_ct.ops import corruption

ELASTIC_GRID = 4  # control displacements per axis: one every ~block / 3 voxels
_ELASTIC_FOLD = 5  # the elastic field's seed: folded from the block's seed, so the other draws stay as they were


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


def cosine_weights(block: int, grid: int) -> np.ndarray:
    """[block, grid] weights that blend ``grid`` control values smoothly over ``block`` samples.

    Raised-cosine bumps one control spacing wide: they sum to 1 at every sample and have no kink
    at the control points (linear weights would), so the field's derivative is continuous.
    """
    t = np.linspace(0.0, grid - 1.0, block)[:, None] - np.arange(grid)[None, :]
    return np.where(np.abs(t) < 1.0, 0.5 + 0.5 * np.cos(np.pi * t), 0.0).astype(np.float32)


def elastic_field(seed, block: int, amplitude: float, grid: int = ELASTIC_GRID):
    """A smooth displacement field [block, block, block, 3] (voxels, |d| <= amplitude per axis)."""
    control = tf.random.stateless_uniform([grid, grid, grid, 3], seed, -amplitude, amplitude)
    weights = tf.constant(cosine_weights(block, grid))
    return tf.einsum("zi,yj,xk,ijkc->zyxc", weights, weights, weights, control)


def _flat_index(stored, z, y, x):
    """Indices into ``tf.reshape(stored, [-1])`` of the voxels (z, y, x) of a static-shape [Z, Y, X]."""
    _, rows, columns = stored.shape
    return (z * rows + y) * columns + x


def _sample_trilinear(stored, coords):
    """Trilinear samples of ``stored`` [Z, Y, X] at ``coords`` [..., 3] (z, y, x voxel positions)."""
    flat = tf.reshape(tf.cast(stored, tf.float32), [-1])
    low = tf.clip_by_value(tf.floor(coords), 0.0, tf.constant(stored.shape.as_list(), tf.float32) - 2.0)
    frac = coords - low  # after clipping: exact at the edge
    low = tf.cast(low, tf.int32)
    out = 0.0
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                index = _flat_index(stored, low[..., 0] + dz, low[..., 1] + dy, low[..., 2] + dx)
                weight = 1.0
                for axis, step in enumerate((dz, dy, dx)):
                    weight *= frac[..., axis] if step else 1.0 - frac[..., axis]
                out += tf.gather(flat, index) * weight
    return out


def sample_nearest(stored, coords):
    """Samples of ``stored`` [Z, Y, X] at the voxels nearest ``coords`` [..., 3] (z, y, x voxel positions)."""
    index = tf.floor(coords + 0.5)  # halves up (tf.round's halves to even would read every other voxel twice)
    index = tf.cast(tf.clip_by_value(index, 0.0, tf.constant(stored.shape.as_list(), tf.float32) - 1.0), tf.int32)
    flat = tf.reshape(tf.cast(stored, tf.float32), [-1])
    return tf.gather(flat, _flat_index(stored, index[..., 0], index[..., 1], index[..., 2]))


def smooth_121(volume):
    """``volume`` [Z, Y, X] filtered by [1, 2, 1] / 4 along each axis (edges reflected): float32."""
    return corruption.separable_filter(volume, [0.25, 0.5, 0.25])


def sample(stored, coords, sampling: str = "trilinear"):
    """``stored`` [Z, Y, X] (a static shape) read at ``coords`` [..., 3] (z, y, x voxel positions) by ``sampling``."""
    if sampling == "trilinear":
        return _sample_trilinear(stored, coords)
    if sampling == "noise_preserving":
        smooth = smooth_121(stored)
        return _sample_trilinear(smooth, coords) + sample_nearest(tf.cast(stored, tf.float32) - smooth, coords)
    raise ValueError(f"sampling must be one of {ELASTIC_SAMPLINGS}, got {sampling!r}")


def _crop_deformed(stored, z0, yx_center, angle, field, block: int, sampling: str = "trilinear"):
    """A block rotated by ``angle`` about z and displaced by ``field``, read by ``sampling``."""
    grid = tf.range(block, dtype=tf.float32) - (block - 1) / 2.0
    gz, gy, gx = tf.meshgrid(grid, grid, grid, indexing="ij")
    cos, sin = tf.cos(angle), tf.sin(angle)
    sz = tf.cast(z0, tf.float32) + (block - 1) / 2.0 + gz
    sy = yx_center[0] + cos * gy - sin * gx
    sx = yx_center[1] + sin * gy + cos * gx
    return sample(stored, tf.stack([sz, sy, sx], axis=-1) + field, sampling)


def random_block(
    stored,
    seed,
    block: int,
    max_rotation_deg: float = 0.0,
    mirror_axes: tuple[int, ...] = (0, 1, 2),
    quarter_turns: bool = True,
    elastic_voxels: float = 0.0,
    elastic_sampling: str = "trilinear",
):
    """One augmented block from ``stored`` [S, S, S]; ``seed`` is a shape-[2] int tensor."""
    if elastic_sampling not in ELASTIC_SAMPLINGS:
        raise ValueError(f"elastic_sampling must be one of {ELASTIC_SAMPLINGS}, got {elastic_sampling!r}")
    size = stored.shape[0]
    margin = (size - block) // 2
    reach = rotation_reach(block, max_rotation_deg) if max_rotation_deg > 0 else 0
    bend = math.ceil(elastic_voxels)
    if reach + bend > margin:
        what = f"a {max_rotation_deg} degree rotation" if max_rotation_deg > 0 else ""
        what += " and " if what and bend else ""
        what += f"an elastic displacement of {elastic_voxels} voxels" if bend else ""
        raise ValueError(f"{what} needs a margin of {reach + bend}, the data has {margin}")
    seeds = tf.random.experimental.stateless_split(seed, 5)
    shift_z = tf.random.stateless_uniform([], seeds[0], bend, 2 * margin - bend + 1, dtype=tf.int32)
    free = margin - reach - bend
    shift_yx = tf.random.stateless_uniform([2], seeds[1], -free, free + 1, dtype=tf.int32)
    angle = tf.constant(0.0)
    if max_rotation_deg > 0:
        angle = tf.random.stateless_uniform([], seeds[2], -1.0, 1.0) * math.radians(max_rotation_deg)
    center = tf.cast(shift_yx, tf.float32) + (size - 1) / 2.0
    if elastic_voxels > 0:
        field_seed = tf.random.experimental.stateless_fold_in(seed, _ELASTIC_FOLD)
        field = elastic_field(field_seed, block, elastic_voxels)
        out = _crop_deformed(stored, shift_z, center, angle, field, block, elastic_sampling)
    elif max_rotation_deg > 0:
        out = _crop_rotated(stored, shift_z, center, angle, block)
    else:
        y0, x0 = margin + shift_yx[0], margin + shift_yx[1]
        out = tf.cast(stored[shift_z : shift_z + block, y0 : y0 + block, x0 : x0 + block], tf.float32)
    if quarter_turns:
        turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
        out = tf.image.rot90(out[..., None], turns)[..., 0]  # z acts as the batch: turns in (y, x)
    flips = tf.random.stateless_uniform([3], seeds[4], 0, 2, dtype=tf.int32)
    for axis in mirror_axes:
        out = tf.cond(flips[axis] > 0, lambda o=out, a=axis: tf.reverse(o, [a]), lambda o=out: o)
    return tf.ensure_shape(out, [block, block, block])
