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


def sliding_origins(length: int, block: int, stride: int) -> list[int]:
    """Block starts along one axis of ``length`` (>= block): every ``stride``, the last flush with the end."""
    starts = list(range(0, length - block + 1, stride))
    if starts[-1] != length - block:
        starts.append(length - block)
    return starts


def tile_stride(block: int, overlap: float, grid: int = 1) -> int:
    """Voxels between tile starts for a fractional ``overlap`` of neighbouring tiles (a multiple of ``grid``)."""
    stride = max(1, int(round(block * (1 - overlap))))
    return max(grid, stride // grid * grid)


def tiled_length(length: int, block: int, grid: int = 1) -> int:
    """The length an axis is padded to for tiling: at least a block, and a multiple of ``grid``.

    With ``grid`` > 1 every tile start, the last (flush with the end) included,
    is a multiple of ``grid`` (the block is one too): a depixelation model sees
    the pixel cells of its condition where training showed them, starting at
    the block's first voxel, never shifted by one.
    """
    length = max(int(length), block)
    if block % grid:
        raise ValueError(f"the block ({block}) must be a multiple of the grid ({grid})")
    return -(-length // grid) * grid


def tile_origins(shape_zyx, block: int, overlap: float, grid: int = 1) -> list[tuple[int, int, int]]:
    """Tile starts covering a volume padded to ``tiled_length`` along each axis."""
    stride = tile_stride(block, overlap, grid)
    return list(itertools.product(*(sliding_origins(tiled_length(n, block, grid), block, stride) for n in shape_zyx)))


def tile_edges(length: int, block: int, overlap: float, grid: int = 1) -> list[int]:
    """Where stitched tiles meet along one axis of ``length`` voxels: sorted positions p in 1..length-1 at which
    a tile begins or ends, so that voxels p - 1 and p are covered by different tiles.

    These are the tiles of ``predict_volume`` (``tile_origins``); with overlap they are
    the planes where one tile's blend region begins and where another's ends, the only
    planes where the stitched weighted average can jump. A short axis (< block) is one
    padded tile: no edges.
    """
    starts = sliding_origins(tiled_length(length, block, grid), block, tile_stride(block, overlap, grid))
    edges = {s for s in starts} | {s + block for s in starts}
    return sorted(p for p in edges if 0 < p < length)


def blend_window(block: int, kind: str) -> np.ndarray:
    """Weights [block]^3 for overlapping tiles: "gaussian" (sigma = block / 8), "linear" (tent), or "none"."""
    centre = (block - 1) / 2
    position = np.arange(block) - centre
    if kind == "gaussian":
        profile = np.exp(-0.5 * (position / (block / 8)) ** 2)
    elif kind == "linear":
        profile = 1.0 - np.abs(position) / (centre + 1)
    elif kind == "none":
        profile = np.ones(block)
    else:
        raise ValueError(f"unknown blending window {kind!r}; choose gaussian, linear or none")
    profile = np.maximum(profile, 1e-3)  # every voxel keeps some weight: edges of the volume are covered once
    return (profile[:, None, None] * profile[None, :, None] * profile[None, None, :]).astype(np.float32)


def predict_volume(
    volume: np.ndarray,
    predictor,
    block: int,
    overlap: float = 0.25,
    batch_size: int = 16,
    window: str = "gaussian",
    pad_value: float = 0.0,
    progress=None,
    grid: int = 1,
) -> np.ndarray:
    """Runs ``predictor`` over blocks of ``volume`` and stitches the results.

    Args:
      volume: [z, y, x] array of any size.
      predictor: maps a float32 batch [B, block, block, block, 1] to one of the
        same shape.
      block: block edge.
      overlap: fraction of a block shared by neighbours (0: the paper's
        non-overlapping tiles, except the last one along an axis, which ends
        flush with the volume).
      batch_size: blocks per predictor call; memory stays a few volume-sized
        arrays whatever the volume's size.
      window: weights of overlapping predictions (see ``blend_window``).
      pad_value: fills axes shorter than a block.
      progress: called as ``progress(blocks_done, blocks_total)``.
      grid: tile starts are multiples of it (a depixelation model's factor;
        see ``tiled_length``); an axis whose last tile would start off the
        grid is padded by repeating its last plane, which completes its last
        pixel cell.

    Returns:
      float32 [z, y, x]: the weighted average of every prediction covering each voxel.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    shape = volume.shape
    pad = [(0, max(0, block - n)) for n in shape]
    # padded only where an axis is shorter than a block; blocks are cast to float32 a batch at a time
    padded = np.pad(volume, pad, constant_values=pad_value) if any(p for _, p in pad) else volume
    to_grid = [(0, tiled_length(n, block, grid) - n) for n in padded.shape]
    if any(p for _, p in to_grid):
        padded = np.pad(padded, to_grid, mode="edge")
    origins = tile_origins(padded.shape, block, overlap, grid)
    weights = blend_window(block, window)
    total, norm = predict_sums(padded, predictor, block, origins, weights, batch_size, progress)
    np.divide(total, norm, out=total)
    return total[: shape[0], : shape[1], : shape[2]]


def predict_sums(
    volume: np.ndarray, predictor, block: int, origins, weights: np.ndarray, batch_size: int = 16, progress=None
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of weighted predictions, sum of weights), float32 arrays shaped like ``volume``.

    ``origins`` (z, y, x) are block starts inside ``volume`` (no padding is
    done here); ``weights`` is a [block]^3 window. Dividing the first by the
    second gives the stitched prediction; keeping them apart lets a caller
    blend across separately predicted slabs (cgan_ct.synthesis.cascade).
    """
    total = np.zeros(volume.shape, np.float32)
    norm = np.zeros(volume.shape, np.float32)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        tiles = [volume[z : z + block, y : y + block, x : x + block] for z, y, x in chunk]
        batch = np.stack(tiles).astype(np.float32, copy=False)[..., None]
        predicted = np.asarray(predictor(batch), np.float32).reshape(len(chunk), block, block, block)
        for (z, y, x), values in zip(chunk, predicted, strict=True):
            total[z : z + block, y : y + block, x : x + block] += values * weights
            norm[z : z + block, y : y + block, x : x + block] += weights
        if progress:
            progress(start + len(chunk), len(origins))
    return total, norm
