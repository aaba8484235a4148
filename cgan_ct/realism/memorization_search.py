"""Nearest training block at every shift: the search behind ``memorization_report``.

A copy of a training volume need not sit on any block grid: shifted by 3 slices and 5 columns it shares no
grid-aligned block with its source, and a grid-against-grid search misses it. Here each query block (cut on a
grid from a synthetic or held-out volume) is compared with the training block at EVERY integer position
(stride 1 in z, y and x) of every training volume, and with its mirror images.

Exhaustive exact search costs (positions x queries x block voxels); at full resolution that is too much, so the
search runs in two steps:

1. A lower bound at every position. With the block cut into cells of ``pool``**3 voxels, Jensen's inequality
   gives ||q - t||^2 >= pool**3 ||mean_pool(q) - mean_pool(t)||^2 for cells aligned with the block. The training
   volume is box-filtered once at stride 1 (a ``pool``**3 mean at every voxel), so the cell means of the block
   at ANY origin are samples of that one array and the bound holds at every shift. It is evaluated for all
   positions at once by matrix products (cells x positions), and the ``candidates`` smallest bounds per query
   and flip are kept.
2. Exact verification: the full-resolution distance of those candidates, smallest bound first, stopping once
   the next bound exceeds the best distance found.

The distance reported is exact for the verified positions, so it is an upper bound of the true nearest distance;
it IS the true nearest (``exact``) when it does not exceed the smallest bound left unverified. A copy ranks first:
at its source position the bound is at most the copy's own small distance (noise), while elsewhere the bound
measures a real anatomical difference, so the source is among the candidates and verified. Were it ever crowded
out, that block's smallest unverified bound would lie below the threshold, so it would not count among the blocks
whose "not flagged" is certain, which the report states. What can be loose is the distance of novel blocks: for
held-out blocks that only raises the threshold (more flags, never fewer). With ``pool`` = 1 the bound is the
distance itself and the search is exhaustive and exact (the coarse level).

Training positions are restricted to blocks passing a body/spread filter with half the query thresholds
(``TRAINING_FILTER_SHARE``): it halves the cost (air and table positions go) while the source of any query that
passed the query filter still passes, though the copy is noised and its body mask was computed on another crop.

HU is compared in one scale: blocks are cubes cut on a grid from canonical volumes (z, y, x), HU clipped to
[-1024, 1024] and divided by 1024, raveled in C order into rows of length
``block**3`` (float32). Distances are the RMS difference per voxel in that
scale: 0.01 is about 10 HU RMS. Blocks that are mostly outside the body or nearly
uniform are not searched (any two such blocks are alike and say nothing about memorization).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence

import numpy as np

from cgan_ct.ops.blocks import sliding_origins
from cgan_ct.ops.body_mask import body_mask

NORM_CLIP_HU = (-1024.0, 1024.0)
NORM_SCALE_HU = 1024.0  # one normalized unit
# Above the noise of uniform tissue on chest CT (about 10-30 HU at standard dose), below the spread of any
# block holding an edge between two tissues (fat / muscle differ by ~150 HU, lung / vessel by ~900 HU).
DEFAULT_MIN_STD_HU = 40.0
TRAINING_FILTER_SHARE = 0.5  # training positions pass with this share of the query filter's thresholds
_FLOAT32_EPS = float(np.finfo(np.float32).eps)
_CHUNK_VALUES = 2**23  # bound matrix entries per product (32 MiB in float32)
_VERIFY_BATCH = 8


@dataclasses.dataclass(frozen=True, eq=False)
class QueryBlocks:
    """Blocks cut on a grid from some volumes: float32 (n, bz, by, bx) normalized HU, their volume and origin."""

    blocks: np.ndarray
    volume_index: np.ndarray  # int64 (n,)
    origins_zyx: np.ndarray  # int64 (n, 3)

    def __len__(self) -> int:
        return int(self.blocks.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class ShiftSearch:
    """Nearest training position of each query block, over every shift and the mirror images searched.

    Attributes:
      distance: float64 (n,), RMS distance (normalized units) to the best verified training block: exact for that
        block, an upper bound of the true nearest.
      training_volume, training_origin_zyx: int64 (n,), (n, 3): where that block starts.
      flip: int64 (n,), index into ``flips`` of the mirror image that matched.
      unverified_bound: float64 (n,), a lower bound (RMS) of the distance to every training position not
        verified, float32 rounding already taken off.
      flips: the mirror images searched, as tuples of block axes.
      positions, positions_total: training block origins searched (after the filter) and in all.
      verified: exact block distances computed.
      seconds: wall time of the search.
    """

    distance: np.ndarray
    training_volume: np.ndarray
    training_origin_zyx: np.ndarray
    flip: np.ndarray
    unverified_bound: np.ndarray
    flips: tuple[tuple[int, ...], ...]
    positions: int
    positions_total: int
    verified: int
    seconds: float

    @property
    def exact(self) -> np.ndarray:
        """bool (n,): the distance is the true nearest over all positions (no unverified block can be nearer)."""
        return self.distance <= self.unverified_bound


def normalize_hu(hu: np.ndarray) -> np.ndarray:
    """HU (any shape) -> float32, clipped to [-1024, 1024] then divided by 1024 (so in [-1, 1])."""
    return (np.clip(np.asarray(hu, np.float32), *NORM_CLIP_HU) / NORM_SCALE_HU).astype(np.float32)


def block_shape_of(block: int | Sequence[int]) -> tuple[int, int, int]:
    shape = (int(block),) * 3 if np.isscalar(block) else tuple(int(b) for b in block)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"block must be an edge >= 2 or three edges (z, y, x) >= 2, got {block}")
    return shape


def grid_blocks(
    volumes: Sequence[np.ndarray],
    block: int | Sequence[int],
    name: str,
    min_body_fraction: float = 0.5,
    min_std_hu: float = DEFAULT_MIN_STD_HU,
) -> QueryBlocks:
    """Blocks cut on a grid (stride = block, the last flush with the end) from HU volumes (z, y, x), keeping those
    at least ``min_body_fraction`` inside ``body_mask`` with a clipped-HU spread of at least ``min_std_hu``."""
    shape = block_shape_of(block)
    cubes, indices, origins = [], [], []
    for i, hu in enumerate(volumes):
        hu = _check_volume(hu, shape, f"{name}[{i}]")
        body = body_mask(hu)
        for z, y, x in itertools.product(*(sliding_origins(n, b, b) for n, b in zip(hu.shape, shape, strict=True))):
            window = np.s_[z : z + shape[0], y : y + shape[1], x : x + shape[2]]
            if body[window].mean() < min_body_fraction:
                continue
            cube = normalize_hu(hu[window])
            if float(cube.std(dtype=np.float64)) * NORM_SCALE_HU < min_std_hu:
                continue
            cubes.append(cube)
            indices.append(i)
            origins.append((z, y, x))
    if not cubes:
        return QueryBlocks(np.zeros((0, *shape), np.float32), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    return QueryBlocks(np.stack(cubes), np.asarray(indices, np.int64), np.asarray(origins, np.int64))


def position_mask(
    hu: np.ndarray, block: int | Sequence[int], min_body_fraction: float, min_std_hu: float
) -> np.ndarray:
    """bool (Z - bz + 1, Y - by + 1, X - bx + 1): block origins whose block passes the body/spread filter."""
    shape = block_shape_of(block)
    voxels = float(np.prod(shape))
    inside = _box_sum(body_mask(hu), shape) >= min_body_fraction * voxels - 1e-6
    norm = normalize_hu(hu).astype(np.float64)
    mean = _box_sum(norm, shape) / voxels
    variance = _box_sum(norm * norm, shape) / voxels - mean * mean
    return inside & (variance >= (min_std_hu / NORM_SCALE_HU) ** 2 - 1e-9)


def nearest_at_every_shift(
    queries: QueryBlocks,
    training: Sequence[np.ndarray],
    flip_axes: tuple[int, ...] = (2,),
    pool: int | None = None,
    candidates: int = 16,
    min_body_fraction: float = 0.5 * TRAINING_FILTER_SHARE,
    min_std_hu: float = DEFAULT_MIN_STD_HU * TRAINING_FILTER_SHARE,
) -> ShiftSearch:
    """Each query block's nearest training block over every integer origin of every training volume and over the
    mirror images of the query (every combination of ``flip_axes``, block axes 0 = z, 1 = y, 2 = x).

    Args:
      queries: from ``grid_blocks``; the block shape is taken from them.
      training: HU volumes (z, y, x), int16 or float, one voxel spacing.
      pool: cell edge of the lower bound (default: a quarter of the smallest block edge, at least 1); 1 searches
        exhaustively and exactly, in float64.
      candidates: positions verified per query and flip, at most.
      min_body_fraction, min_std_hu: the filter of training positions (see the module docstring).

    Returns:
      A ``ShiftSearch``; see the module docstring for what is exact.
    """
    start = time.perf_counter()
    shape = tuple(int(s) for s in queries.blocks.shape[1:])
    pool = max(1, min(shape) // 4) if pool is None else int(pool)
    if len(queries) == 0:
        raise ValueError("no query blocks to search for")
    if not 1 <= pool <= min(shape):
        raise ValueError(f"pool must be in [1, {min(shape)}] for blocks of {shape}, got {pool}")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if len(training) == 0:
        raise ValueError("training has no volumes")
    flips = flip_combinations(flip_axes)
    dtype = np.float64 if pool == 1 else np.float32
    rows = np.concatenate([_flipped(queries.blocks, axes) for axes in flips])  # flip-major
    query_cells = _pool_blocks(rows, pool).astype(dtype)
    top = _TopK(len(rows), candidates)
    volumes, masks, offset = [], [], 0
    for i, hu in enumerate(training):
        hu = _check_volume(hu, shape, f"training[{i}]")
        mask = position_mask(hu, shape, min_body_fraction, min_std_hu)
        norm = normalize_hu(hu)
        pooled = (_box_sum(norm, (pool,) * 3) / pool**3).astype(dtype)
        _bound_scan(pooled, mask, query_cells, shape, pool, offset, top)
        del pooled
        volumes.append(norm)
        masks.append(mask)
        offset += mask.size
    positions = int(sum(int(m.sum()) for m in masks))
    if positions == 0:
        raise ValueError("training has no block positions passing the body/spread filter")
    best, where, bound, verified = _verify(rows, top, volumes, masks, shape, pool, dtype)
    n = len(queries)
    per_flip = best.reshape(len(flips), n)
    flip = per_flip.argmin(axis=0)
    pick = flip * n + np.arange(n)
    voxels = float(np.prod(shape))
    return ShiftSearch(
        distance=np.sqrt(best[pick] / voxels),
        training_volume=where[pick, 0],
        training_origin_zyx=where[pick, 1:],
        flip=flip.astype(np.int64),
        unverified_bound=np.sqrt(np.maximum(bound.reshape(len(flips), n).min(axis=0), 0) / voxels),
        flips=tuple(flips),
        positions=positions,
        positions_total=int(sum(m.size for m in masks)),
        verified=verified,
        seconds=time.perf_counter() - start,
    )


def flip_combinations(flip_axes: Sequence[int]) -> list[tuple[int, ...]]:
    axes = tuple(sorted(set(int(a) for a in flip_axes)))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"flip_axes must be block axes 0 (z), 1 (y) or 2 (x), got {tuple(flip_axes)}")
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


class _TopK:
    """The ``k`` smallest bounds seen per query row, and the global position ids they belong to."""

    def __init__(self, rows: int, k: int):
        self.value = np.full((rows, k), np.inf)
        self.ident = np.full((rows, k), -1, np.int64)
        self.worst = np.full(rows, np.inf)

    def update(self, partial: np.ndarray, ident: np.ndarray, offset: np.ndarray, scale: float) -> None:
        """Bounds ``(partial + offset[:, None]) * scale`` (rows, n) of the positions ``ident`` (n,)."""
        below = partial < (self.worst / scale - offset)[:, None]
        k = self.value.shape[1]
        for r in np.flatnonzero(below.any(axis=1)):
            cols = np.flatnonzero(below[r])
            value = np.concatenate([self.value[r], (partial[r, cols] + offset[r]) * scale])
            idents = np.concatenate([self.ident[r], ident[cols]])
            keep = np.argpartition(value, k - 1)[:k] if value.size > k else slice(None)
            self.value[r], self.ident[r] = value[keep], idents[keep]
            self.worst[r] = self.value[r].max()


def _bound_scan(pooled, mask, query_cells, shape, pool, offset, top: _TopK) -> None:
    """Updates ``top`` with pool**3 x ||cells(q) - cells(t)||^2 at every kept origin of one training volume.

    One product per chunk: [-2 q, 1] . [g, |g|^2] = ||q - g||^2 - |q|^2, so |q|^2 moves into the comparison."""
    cells = [range(0, (b // pool) * pool, pool) for b in shape]
    steps = list(itertools.product(*cells))
    scale = float(pool**3)
    query_sq = np.einsum("ij,ij->i", query_cells, query_cells)
    weights = np.concatenate([-2.0 * query_cells, np.ones((len(query_cells), 1), query_cells.dtype)], axis=1)
    chunk = int(np.clip(_CHUNK_VALUES // max(len(query_cells), len(steps)), 256, 65536))
    plane = mask.shape[1] * mask.shape[2]
    width = pooled.shape[2]
    for z in range(mask.shape[0]):
        ys, xs = np.nonzero(mask[z])
        for s in range(0, ys.size, chunk):
            y, x = ys[s : s + chunk], xs[s : s + chunk]
            flat = y * width + x
            gathered = np.empty((len(steps) + 1, y.size), pooled.dtype)
            for c, (dz, dy, dx) in enumerate(steps):
                np.take(pooled[z + dz].reshape(-1), flat + (dy * width + dx), out=gathered[c])
            gathered[-1] = np.einsum("ij,ij->j", gathered[:-1], gathered[:-1])
            # (rows, n): bound / scale - |q|^2; a (n, cells) operand is the layout BLAS runs fastest here
            partial = weights @ np.ascontiguousarray(gathered.T).T
            top.update(partial, offset + z * plane + y * mask.shape[2] + x, query_sq, scale)


def _verify(rows, top: _TopK, volumes, masks, shape, pool, dtype):
    """Exact squared distances of the candidates, smallest bound first; stops when the next bound is larger than
    the best found. Returns (best squared distance, (volume, z, y, x), smallest unverified bound, count)."""
    starts = np.cumsum([0] + [m.size for m in masks])
    margin = _rounding_margin(rows[0].size, shape, pool, dtype)
    best = np.full(len(rows), np.inf)
    where = np.full((len(rows), 4), -1, np.int64)
    unverified = np.empty(len(rows))
    verified = 0
    for r, query in enumerate(rows.astype(np.float64)):
        order = np.argsort(top.value[r], kind="stable")
        value, ident = top.value[r][order], top.ident[r][order]
        unverified[r] = top.worst[r] - margin  # everything outside the candidates
        for s in range(0, len(order), _VERIFY_BATCH):
            if value[s] - margin > best[r] or ident[s] < 0:
                unverified[r] = value[s] - margin
                break
            batch = ident[s : s + _VERIFY_BATCH]
            batch = batch[batch >= 0]
            origins = [_decode(i, starts, masks) for i in batch]
            cubes = np.stack([_cut(volumes[v], o, shape) for v, o in origins]).astype(np.float64)
            squared = np.square(cubes - query).reshape(len(batch), -1).sum(axis=1)
            verified += len(batch)
            j = int(squared.argmin())
            if squared[j] < best[r]:
                best[r] = float(squared[j])
                where[r] = (origins[j][0], *origins[j][1])
    return best, where, unverified, verified


def _rounding_margin(voxels: int, shape, pool: int, dtype) -> float:
    """Worst-case float rounding of a bound (values in [-1, 1]): |error| <= 4 n eps n per cell sum, times pool**3."""
    cells = int(np.prod([b // pool for b in shape]))
    eps = float(np.finfo(dtype).eps)
    return 4.0 * cells * cells * eps * pool**3


def _decode(ident: int, starts: np.ndarray, masks) -> tuple[int, tuple[int, int, int]]:
    volume = int(np.searchsorted(starts, ident, side="right") - 1)
    origin = np.unravel_index(int(ident - starts[volume]), masks[volume].shape)
    return volume, tuple(int(v) for v in origin)


def _cut(volume: np.ndarray, origin, shape) -> np.ndarray:
    z, y, x = origin
    return volume[z : z + shape[0], y : y + shape[1], x : x + shape[2]]


def _flipped(blocks: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.flip(blocks, [1 + a for a in axes])) if axes else blocks


def _pool_blocks(blocks: np.ndarray, pool: int) -> np.ndarray:
    """(n, bz, by, bx) -> (n, cells): means of pool**3 cells from each block's first voxel (a partial cell at the
    far end is left out, which keeps the bound a bound)."""
    n = blocks.shape[0]
    cz, cy, cx = (b // pool for b in blocks.shape[1:])
    cut = blocks[:, : cz * pool, : cy * pool, : cx * pool].astype(np.float64)
    return cut.reshape(n, cz, pool, cy, pool, cx, pool).mean(axis=(2, 4, 6)).reshape(n, -1)


def _box_sum(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """float64 sums over every window of ``size`` (z, y, x) at stride 1, valid origins only."""
    out = np.asarray(values, np.float64)
    for axis, s in enumerate(size):
        total = np.cumsum(out, axis=axis)
        lead = [slice(None)] * 3
        lead[axis] = slice(s - 1, None)
        tail = [slice(None)] * 3
        tail[axis] = slice(0, -s) if s < out.shape[axis] else slice(0, 0)
        upper = total[tuple(lead)].copy()
        lagged = total[tuple(tail)]
        ahead = [slice(None)] * 3
        ahead[axis] = slice(1, None)
        upper[tuple(ahead)] -= lagged
        out = upper
    return out


def _check_volume(hu, shape, name: str) -> np.ndarray:
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"{name} must be a 3-D HU array (z, y, x), got shape {hu.shape}")
    if any(n < b for n, b in zip(hu.shape, shape, strict=True)):
        raise ValueError(f"{name} of shape {hu.shape} is smaller than a block of {shape} along some axis")
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real HU numbers, got dtype {hu.dtype}")
    return hu
