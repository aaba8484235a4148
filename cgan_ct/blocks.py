"""Cutting volumes into cubic blocks (and, later, stitching them back)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np


def block_counts(shape_zyx, block_size: int) -> tuple[int, int, int]:
    """Blocks per axis: the volume is covered, the last block padded past the edge."""
    return tuple(-(-int(n) // block_size) for n in shape_zyx)


def block_origins(shape_zyx, block_size: int) -> list[tuple[int, int, int]]:
    """Origins (z, y, x) of non-overlapping blocks covering the volume, z-major."""
    ranges = (range(0, n * block_size, block_size) for n in block_counts(shape_zyx, block_size))
    return [tuple(o) for o in itertools.product(*ranges)]


def padding_voxels(shape_zyx, origin_zyx, block_size: int) -> int:
    """How many voxels of the block at ``origin_zyx`` lie beyond the volume."""
    inside = np.prod([max(0, min(block_size, n - o)) for n, o in zip(shape_zyx, origin_zyx, strict=True)])
    return int(block_size**3 - inside)


def iter_blocks_with_margin(
    hu: np.ndarray, block_size: int, margin: int, pad_value: int
) -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
    """Yields (origin_zyx, block) for every block, block with its margin.

    Each block is ``hu[o - margin : o + block_size + margin]`` along every
    axis, with voxels beyond the volume set to ``pad_value``; shape
    (block_size + 2 * margin,) * 3, dtype of ``hu``. The volume is padded once,
    and blocks are views into that copy.
    """
    counts = block_counts(hu.shape, block_size)
    pad = [(margin, c * block_size - n + margin) for c, n in zip(counts, hu.shape, strict=True)]
    padded = np.pad(hu, pad, mode="constant", constant_values=pad_value)
    size = block_size + 2 * margin
    for z, y, x in block_origins(hu.shape, block_size):
        yield (z, y, x), padded[z : z + size, y : y + size, x : x + size]
