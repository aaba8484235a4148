"""The synthesis cascade's inference: x2 depixelation block by block, streamed in z.

A stage takes the coarser level as z slabs, up-samples them by nearest
neighbour (the depixelate condition, cgan_ct.ops.corruption), predicts blocks
with a depixelation model, blends overlapping blocks with a window (as
cgan_ct.ops.blocks.predict_volume does for a whole volume) and yields finished
slabs of the finer level as soon as no later block can touch them.

Memory: a stage holds about one block's depth plus two strides of rows of its
own level (the condition it is reading and the sums it is blending), whatever
the number of slices; stages chain lazily, so a whole cascade holds a few
full-resolution slabs, never a full-resolution volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from cgan_ct.constants import AIR_HU
from cgan_ct.ops.blocks import blend_window, predict_sums, sliding_origins, tile_stride
from cgan_ct.ops.pyramid import upsample_nearest

Predictor = Callable[[np.ndarray], np.ndarray]


def refine_stream(
    slabs: Iterable[np.ndarray],
    out_shape,
    predictor: Predictor,
    block: int,
    overlap: float = 0.25,
    window: str = "gaussian",
    batch_size: int = 16,
    pad_value: float = AIR_HU,
    progress=None,
) -> Iterator[np.ndarray]:
    """Yields the level below ``slabs`` (twice the resolution), in z order.

    Args:
      slabs: float32 HU arrays [dz, h, w] of the coarser level, in z order;
        together ceil(depth / 2) rows of h = ceil(height / 2), w = ceil(width / 2).
      out_shape: (depth, height, width) of the finer level.
      predictor: HU blocks [B, N, N, N, 1] -> HU blocks (a depixelation model).
      block: the model's block edge N.
      overlap, window, batch_size: as cgan_ct.ops.blocks.predict_volume (the
        result equals predict_volume on the whole up-sampled volume).
      pad_value: fills axes shorter than a block.
      progress: called as ``progress(blocks_done, blocks_total)``.

    Yields:
      float32 HU slabs [rows, height, width]; ``depth`` rows in all.
    """
    depth, height, width = (int(n) for n in out_shape)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    h, w = -(-height // 2), -(-width // 2)
    grid = (max(depth, block), max(height, block), max(width, block))  # at least one block per axis
    stride = tile_stride(block, overlap)
    z_origins = sliding_origins(grid[0], block, stride)
    plane = [
        (0, y, x) for y in sliding_origins(grid[1], block, stride) for x in sliding_origins(grid[2], block, stride)
    ]
    weights = blend_window(block, window)
    total_blocks, done = len(z_origins) * len(plane), 0
    source = iter(slabs)
    condition = np.empty((0, *grid[1:]), np.float32)  # up-sampled rows [condition_start, ...)
    condition_start = 0
    sums = np.zeros((0, *grid[1:]), np.float32)  # blending sums for rows [sums_start, ...)
    norms = np.zeros_like(sums)
    sums_start = 0
    rows_read = 0
    for index, origin in enumerate(z_origins):
        while condition_start + len(condition) < origin + block:
            rows = next(source, None)
            if rows is None:
                rows_up = np.full((origin + block - condition_start - len(condition), *grid[1:]), pad_value, np.float32)
            else:
                rows = np.asarray(rows, np.float32)
                if rows.ndim != 3 or rows.shape[1:] != (h, w):
                    raise ValueError(f"coarse slab has shape {rows.shape}; expected [rows, {h}, {w}]")
                rows_read += len(rows)
                rows_up = _pad_plane(upsample_nearest(rows, 2, (2 * len(rows), height, width)), grid, pad_value)
                beyond = condition_start + len(condition) + len(rows_up) - depth
                if beyond > 0:  # the last coarse row may cover one finer row past the end
                    rows_up[len(rows_up) - beyond :] = pad_value
            condition = np.concatenate([condition, rows_up])
        tile = condition[origin - condition_start : origin - condition_start + block]
        tile_sums, tile_norms = predict_sums(tile, predictor, block, plane, weights, batch_size)
        grow = origin + block - sums_start - len(sums)
        if grow > 0:
            sums = np.concatenate([sums, np.zeros((grow, *grid[1:]), np.float32)])
            norms = np.concatenate([norms, np.zeros((grow, *grid[1:]), np.float32)])
        sums[origin - sums_start : origin - sums_start + block] += tile_sums
        norms[origin - sums_start : origin - sums_start + block] += tile_norms
        done += len(plane)
        if progress:
            progress(done, total_blocks)
        finished = z_origins[index + 1] if index + 1 < len(z_origins) else grid[0]
        count = finished - sums_start
        out = sums[:count] / norms[:count]
        out = out[: max(0, depth - sums_start), :height, :width]
        sums, norms, sums_start = sums[count:], norms[count:], finished
        condition = condition[max(0, finished - condition_start) :]
        condition_start = max(condition_start, finished)
        if len(out):
            yield out
    if next(source, None) is not None or rows_read != -(-depth // 2):
        raise ValueError(f"the coarse level has {rows_read} or more rows; a depth of {depth} needs {-(-depth // 2)}")


def _pad_plane(rows: np.ndarray, grid, pad_value: float) -> np.ndarray:
    pad_y, pad_x = grid[1] - rows.shape[1], grid[2] - rows.shape[2]
    if pad_y or pad_x:
        rows = np.pad(rows, [(0, 0), (0, pad_y), (0, pad_x)], constant_values=pad_value)
    return rows


def cascade_stream(
    coarse_hu: np.ndarray,
    stages: list[tuple[Predictor, int]],
    level_shapes: list,
    overlap: float = 0.25,
    window: str = "gaussian",
    batch_size: int = 16,
    slab_rows: int = 8,
    progress=None,
) -> Iterator[np.ndarray]:
    """Runs ``stages`` (predictor, block), coarsest first, from ``coarse_hu``.

    ``level_shapes[i]`` is the shape stage i produces (the last one the final
    volume's). Yields the final level's slabs in z order. ``progress`` is
    called as ``progress(stage_index, blocks_done, blocks_total)``.
    """
    if len(stages) != len(level_shapes):
        raise ValueError(f"{len(stages)} stages but {len(level_shapes)} level shapes")
    coarse = np.asarray(coarse_hu, np.float32)
    stream: Iterable[np.ndarray] = (coarse[z : z + slab_rows] for z in range(0, len(coarse), slab_rows))
    for index, ((predictor, block), shape) in enumerate(zip(stages, level_shapes, strict=True)):
        report = None if progress is None else (lambda d, t, i=index: progress(i, d, t))
        stream = refine_stream(stream, shape, predictor, block, overlap, window, batch_size, progress=report)
    return iter(stream)
