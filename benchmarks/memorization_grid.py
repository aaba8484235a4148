"""The grid search of the memorization check: the reference ``benchmarks/memorization_bench.py`` compares with.

The library's check (``cgan_ct.realism.memorization_report``) searches every training block at EVERY integer
shift; this one, the first version, compares blocks cut on one grid with blocks cut on another, exactly
(``nearest_distances``), so a copy shifted off the grid escapes it. The benchmark keeps it to show that
(the shifted-copy experiment) and as an exact nearest-neighbour reference; no job uses it.

Blocks are cubes cut on a grid from canonical volumes (z, y, x), HU clipped to
[-1024, 1024] and divided by 1024, raveled in C order into rows of length
``block**3`` (float32). Distances are the RMS difference per voxel in that
scale: 0.01 is about 10 HU RMS.

Threshold: ``threshold_factor`` x a quantile of the held-out distances, as in the library's report.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from cgan_ct.io.volume import Volume
from cgan_ct.ops.blocks import sliding_origins
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.memorization_report import FlaggedBlock, MemorizationReport
from cgan_ct.realism.memorization_search import DEFAULT_MIN_STD_HU, NORM_SCALE_HU, normalize_hu

_RECHECK_ROWS = 64  # rows per float64 recomputation: 64 x 32**3 x 8 bytes = 16 MiB


@dataclasses.dataclass(frozen=True, eq=False)
class BlockSet:
    """Blocks cut from one or more volumes, with where each came from.

    Attributes:
      blocks: float32 (n, block**3), normalized scale (see module docstring), each row a (z, y, x) cube in C order.
      volume_index: int64 (n,), position of the source volume in the list given; -1 where unknown.
      origins_zyx: int64 (n, 3), voxel index (z, y, x) of each block's first voxel; -1 where unknown.
      block: edge of the cubes in voxels.
    """

    blocks: np.ndarray
    volume_index: np.ndarray
    origins_zyx: np.ndarray
    block: int

    def __len__(self) -> int:
        return int(self.blocks.shape[0])


def extract_blocks(
    hu: np.ndarray,
    block: int = 32,
    stride: int | None = None,
    min_body_fraction: float = 0.5,
    min_std_hu: float = DEFAULT_MIN_STD_HU,
) -> tuple[np.ndarray, np.ndarray]:
    """Cubes cut on a grid from one volume, skipping background and near-uniform blocks.

    Args:
      hu: HU array (z, y, x), every axis at least ``block`` long.
      block: cube edge in voxels.
      stride: grid step in voxels (default ``block``: non-overlapping); the last block along an axis ends flush
        with the volume (``blocks.sliding_origins``). A training set cut with a smaller stride also catches copies
        that sit off the grid, at (block / stride)**3 times the search cost.
      min_body_fraction: a block is kept only if at least this fraction of its voxels is inside ``body_mask``
        (lungs count as body): drops air and the table, which look alike in every scan.
      min_std_hu: a block is kept only if the standard deviation of its clipped HU is at least this: drops blocks
        of one uniform tissue, which differ only by noise and carry no anatomy to memorize.

    Returns:
      (blocks, origins): float32 (n, block**3) in the normalized scale, and int64 (n, 3) origins (z, y, x).
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3-D array (z, y, x), got shape {hu.shape}")
    stride = block if stride is None else stride
    if block < 2 or stride < 1:
        raise ValueError(f"block must be >= 2 and stride >= 1, got block={block}, stride={stride}")
    if min(hu.shape) < block:
        raise ValueError(f"volume of shape {hu.shape} is smaller than a block of {block} along some axis")
    body = body_mask(hu)
    starts = [sliding_origins(n, block, stride) for n in hu.shape]
    kept, origins = [], []
    for z, y, x in itertools.product(*starts):
        window = np.s_[z : z + block, y : y + block, x : x + block]
        if body[window].mean() < min_body_fraction:
            continue
        cube = normalize_hu(hu[window])
        if float(cube.std(dtype=np.float64)) * NORM_SCALE_HU < min_std_hu:
            continue
        kept.append(cube.ravel())
        origins.append((z, y, x))
    if not kept:
        return np.zeros((0, block**3), np.float32), np.zeros((0, 3), np.int64)
    return np.stack(kept), np.asarray(origins, np.int64)


def blocks_from_volumes(
    volumes: Sequence[Volume | np.ndarray],
    block: int = 32,
    stride: int | None = None,
    min_body_fraction: float = 0.5,
    min_std_hu: float = DEFAULT_MIN_STD_HU,
) -> BlockSet:
    """``extract_blocks`` over several volumes (``Volume`` or HU arrays (z, y, x)), keeping each block's source.

    The volumes should share one voxel spacing: blocks are compared voxel by voxel, not in millimetres.
    """
    parts, indices, origins = [], [], []
    for i, volume in enumerate(volumes):
        hu = volume.hu if isinstance(volume, Volume) else volume
        blocks, where = extract_blocks(hu, block, stride, min_body_fraction, min_std_hu)
        parts.append(blocks)
        indices.append(np.full(len(blocks), i, np.int64))
        origins.append(where)
    if not parts:
        raise ValueError("no volumes given")
    return BlockSet(np.concatenate(parts), np.concatenate(indices), np.concatenate(origins), block)


def nearest_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbour of each query row among the reference rows (Euclidean).

    Candidates come from chunked float32 matrix products (|q|^2 + |r|^2 - 2 q.r, squared norms in float64,
    clamped at 0), so memory stays a few chunk x d arrays whatever n and m; the distance to the chosen
    neighbour is then recomputed exactly in float64 from the difference, so an exact copy reads 0.

    Args:
      query: (n, d) array.
      reference: (m, d) array, m >= 1.
      chunk: rows of query and of reference per matrix product.

    Returns:
      (distance, index): float64 (n,) RMS difference per coordinate (Euclidean distance / sqrt(d)), and
      int64 (n,) index of the nearest reference row (the first one on exact ties).
    """
    query, reference = _check_pair(query, reference, "query", "reference")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _nearest(query, reference, _squared_norms(reference), chunk)


def memorization_check(
    synthetic: BlockSet | np.ndarray,
    training: BlockSet | np.ndarray,
    heldout: BlockSet | np.ndarray,
    flip_axes: tuple[int, ...] = (2,),
    threshold_factor: float = 0.5,
    threshold_quantile: float = 0.0,
    chunk: int = 256,
) -> MemorizationReport:
    """Flags synthetic blocks much nearer to a training block than real held-out blocks come.

    All three sets must be cut the same way (block, stride, filters, voxel spacing); held-out blocks must come
    from patients outside the training set. Arrays are (n, block**3) rows as in ``BlockSet.blocks``.

    Threshold: ``threshold_factor`` x the ``threshold_quantile`` of the held-out distances; by default half the
    smallest held-out distance. Held-out blocks are novel by construction, so their minimum is the nearest that
    unseen anatomy came to the training set in this sample; a synthetic block at half that is nearer than any new
    patient got, by a clear margin. A low quantile (say 1 %) instead would flag about that share of perfectly
    novel blocks by design. The factor < 1 absorbs the minimum's sampling spread: with many more synthetic than
    held-out blocks, the smallest synthetic distance falls somewhat below the held-out one by chance alone.

    Args:
      synthetic, training, heldout: ``BlockSet`` or float array (n, block**3) in the normalized scale.
      flip_axes: block axes (z, y, x) = (0, 1, 2) whose mirror images are searched too, every combination of
        them (2**len(flip_axes) searches, for synthetic and held-out alike, so the two stay comparable).
        Default (2,): left-right, since training mirrors blocks and a chest is nearly symmetric; (0, 1, 2)
        covers every flip that augmentation applies, at 8 times the cost; () searches unflipped only.
      threshold_factor: in (0, 1].
      threshold_quantile: in [0, 1); 0 is the minimum.
      chunk: rows per matrix product (see ``nearest_distances``).

    Returns:
      A ``MemorizationReport``.
    """
    sets = {name: _as_block_set(value, name) for name, value in (("synthetic", synthetic), ("training", training))}
    sets["heldout"] = _as_block_set(heldout, "heldout")
    for name, blocks in sets.items():
        if len(blocks) == 0:
            raise ValueError(f"{name} has no blocks (all skipped as background or uniform?)")
    _check_pair(sets["synthetic"].blocks, sets["training"].blocks, "synthetic", "training")
    _check_pair(sets["heldout"].blocks, sets["training"].blocks, "heldout", "training")
    if not 0 < threshold_factor <= 1 or not 0 <= threshold_quantile < 1:
        raise ValueError(
            f"need 0 < threshold_factor <= 1 and 0 <= threshold_quantile < 1, got "
            f"{threshold_factor}, {threshold_quantile}"
        )
    flips = _flip_combinations(flip_axes, sets["training"].blocks.shape[1])
    training = sets["training"]
    reference_sq = _squared_norms(training.blocks)
    syn_distance, syn_match, syn_flip = _nearest_over_flips(
        sets["synthetic"].blocks, training, reference_sq, flips, chunk
    )
    held_distance, _, _ = _nearest_over_flips(sets["heldout"].blocks, training, reference_sq, flips, chunk)
    threshold = threshold_factor * float(np.quantile(held_distance, threshold_quantile))
    where = "minimum" if threshold_quantile == 0 else f"{100 * threshold_quantile:g} % quantile"
    rule = f"{threshold_factor:g} x the {where} of held-out distances"
    synthetic = sets["synthetic"]
    flagged = []
    for i in np.argsort(syn_distance, kind="stable"):
        if syn_distance[i] >= threshold:
            break
        j = int(syn_match[i])
        flagged.append(
            FlaggedBlock(
                synthetic_index=int(i),
                synthetic_volume=int(synthetic.volume_index[i]),
                synthetic_origin_zyx=tuple(int(v) for v in synthetic.origins_zyx[i]),
                distance=float(syn_distance[i]),
                training_index=j,
                training_volume=int(training.volume_index[j]),
                training_origin_zyx=tuple(int(v) for v in training.origins_zyx[j]),
                flip_axes=flips[syn_flip[i]],
            )
        )
    return MemorizationReport(syn_distance, syn_match, held_distance, threshold, rule, tuple(flagged))


def _as_block_set(value: BlockSet | np.ndarray, name: str) -> BlockSet:
    if isinstance(value, BlockSet):
        return value
    blocks = np.asarray(value, np.float32)
    if blocks.ndim != 2:
        raise ValueError(f"{name} must be a BlockSet or an (n, block**3) array, got shape {blocks.shape}")
    edge = round(blocks.shape[1] ** (1 / 3))
    unknown = np.full(len(blocks), -1, np.int64)
    return BlockSet(blocks, unknown, np.full((len(blocks), 3), -1, np.int64), edge)


def _check_pair(query, reference, query_name: str, reference_name: str) -> tuple[np.ndarray, np.ndarray]:
    query = np.asarray(query, np.float32)
    reference = np.asarray(reference, np.float32)
    if query.ndim != 2 or reference.ndim != 2:
        raise ValueError(f"{query_name} and {reference_name} must be 2-D (n, d), got {query.shape}, {reference.shape}")
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"{query_name} rows have {query.shape[1]} values but {reference_name} rows have {reference.shape[1]}: "
            "blocks of different sizes"
        )
    if reference.shape[0] == 0:
        raise ValueError(f"{reference_name} is empty: no nearest neighbour to find")
    if query.shape[1] == 0:
        raise ValueError(f"{query_name} rows are empty (d = 0)")
    return query, reference


def _flip_combinations(flip_axes: tuple[int, ...], d: int) -> list[tuple[int, ...]]:
    axes = tuple(sorted(set(flip_axes)))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"flip_axes must be block axes 0 (z), 1 (y) or 2 (x), got {flip_axes}")
    if axes and round(d ** (1 / 3)) ** 3 != d:
        raise ValueError(f"flips need cubic blocks, but rows have {d} values, not an integer cubed")
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def _nearest_over_flips(query, training: BlockSet, reference_sq, flips, chunk):
    """Nearest training block of each query block over its mirror images: (distance, index, which flip)."""
    best = np.full(len(query), np.inf)
    index = np.zeros(len(query), np.int64)
    which = np.zeros(len(query), np.int64)
    edge = round(training.blocks.shape[1] ** (1 / 3))
    step = max(chunk, 1024)  # flipped copies are made this many rows at a time
    for start in range(0, len(query), step):
        rows = query[start : start + step]
        for k, axes in enumerate(flips):
            flipped = np.flip(rows.reshape(-1, edge, edge, edge), [1 + a for a in axes]) if axes else rows
            flipped = np.ascontiguousarray(flipped).reshape(len(rows), -1)
            distance, match = _nearest(flipped, training.blocks, reference_sq, chunk)
            better = distance < best[start : start + step]
            best[start : start + step][better] = distance[better]
            index[start : start + step][better] = match[better]
            which[start : start + step][better] = k
    return best, index, which


def _squared_norms(rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows))
    for start in range(0, len(rows), _RECHECK_ROWS):
        part = rows[start : start + _RECHECK_ROWS].astype(np.float64)
        out[start : start + _RECHECK_ROWS] = np.einsum("ij,ij->i", part, part)
    return out


def _nearest(query: np.ndarray, reference: np.ndarray, reference_sq: np.ndarray, chunk: int):
    n, d = query.shape
    best = np.full(n, np.inf)
    index = np.zeros(n, np.int64)
    query_sq = _squared_norms(query)
    for qs in range(0, n, chunk):
        q = query[qs : qs + chunk]
        for rs in range(0, len(reference), chunk):
            dot = q @ reference[rs : rs + chunk].T
            squared = query_sq[qs : qs + chunk, None] + reference_sq[None, rs : rs + chunk] - 2.0 * dot
            local = squared.argmin(axis=1)
            value = squared[np.arange(len(q)), local]
            better = value < best[qs : qs + chunk]
            best[qs : qs + chunk][better] = value[better]
            index[qs : qs + chunk][better] = rs + local[better]
    # exact distance to the chosen neighbour; the float32 products above only rank candidates
    distance = np.empty(n)
    for start in range(0, n, _RECHECK_ROWS):
        stop = min(start + _RECHECK_ROWS, n)
        diff = query[start:stop].astype(np.float64) - reference[index[start:stop]]
        distance[start:stop] = np.sqrt(np.einsum("ij,ij->i", diff, diff) / d)
    return distance, index
