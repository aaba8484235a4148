"""The memorization check that looks where copies would be: at every shift, with a positive control.

``memorization_report`` cuts query blocks on a grid from the synthetic, held-out and control volumes and finds
each one's nearest training block at every integer origin (``memorization_search``). Held-out patients give the
threshold: ``threshold_factor`` (default 0.5) x their minimum distance. Held-out blocks are novel by construction,
so their minimum is the nearest that unseen anatomy came to the training set in this sample; a synthetic block at
half that is nearer than any new patient got, by a clear margin (the factor absorbs the minimum's sampling
spread). A positive control (``positive_control``: a training crop off every grid, mirrored and noised) shows that
the check can see a copy, and the report says "the check is blind" when it does not. ``coarse_memorization_report``
runs the same check on the cascade's coarse level (every 8th voxel), exhaustively.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cgan_ct.ops.pyramid import subsample, upsample_nearest
from cgan_ct.realism.memorization_search import (
    DEFAULT_MIN_STD_HU,
    NORM_SCALE_HU,
    TRAINING_FILTER_SHARE,
    QueryBlocks,
    ShiftSearch,
    block_shape_of,
    grid_blocks,
    nearest_at_every_shift,
)

QUANTILES = {"min": 0.0, "q01": 0.01, "q05": 0.05, "median": 0.5}
COARSE_BLOCK = (4, 16, 16)  # level-3 voxels: 32 x 128 x 128 full-resolution voxels, see coarse_memorization_report


@dataclasses.dataclass(frozen=True)
class ControlResult:
    """The check run on one positive-control volume (a copy of training data): it must be flagged."""

    volume: int
    blocks: int
    flagged: int
    min_distance: float
    median_distance: float
    threshold: float

    @property
    def detected(self) -> bool:
        return self.flagged > 0

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "detected": self.detected}


@dataclasses.dataclass(frozen=True)
class SearchSummary:
    """How the search ran and what it cost."""

    level: int
    block_zyx: tuple[int, int, int]
    pool: int
    flips: tuple[tuple[int, ...], ...]
    training_volumes: int
    positions: int  # training block origins searched (after the filter)
    positions_total: int
    query_blocks: dict  # {"synthetic" | "heldout" | "control": count}
    bound_evaluations: int  # query blocks x flips x positions
    verified: int  # exact block distances computed
    exact: dict  # {"synthetic" | "heldout": blocks whose distance is the true nearest}
    certain_not_flagged: int  # synthetic blocks that no unverified position could bring below the threshold
    seconds: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def markdown_lines(self, control: Sequence[ControlResult]) -> list[str]:
        where = "full resolution" if self.level == 0 else f"level {self.level} (1 in {2**self.level} voxels per axis)"
        bound = "exhaustive exact search" if self.pool == 1 else f"lower bound from {self.pool}^3-voxel cell means"
        lines = [
            f"Search at {where}: blocks {self.block_zyx} (z, y, x) at every integer shift of "
            f"{self.training_volumes} training volumes, {self.positions:,} block origins (of {self.positions_total:,};"
            f" the rest fail the body/spread filter), mirrors {[list(f) for f in self.flips]}; {bound}.",
            f"Distances are exact for {self.exact['synthetic']} of {self.query_blocks['synthetic']} synthetic and "
            f"{self.exact['heldout']} of {self.query_blocks['heldout']} held-out blocks (upper bounds otherwise); "
            f"'not flagged' is certain for {self.certain_not_flagged} of {self.query_blocks['synthetic']} synthetic "
            "blocks.",
            f"Cost: {self.seconds:.1f} s, {self.bound_evaluations:.3g} bound evaluations, {self.verified:,} exact "
            "block distances.",
            "",
        ]
        if not control:
            return lines + ["No positive control was given: nothing here shows that the check would see a copy."]
        for c in control:
            seen = (
                "the check sees this off-grid copy."
                if c.detected
                else "**the check is blind**: a copy of a training volume went unflagged."
            )
            lines.append(
                f"Positive control {c.volume}: {c.flagged} of {c.blocks} blocks flagged, nearest {c.min_distance:.4f} "
                f"({c.min_distance * NORM_SCALE_HU:.1f} HU), median {c.median_distance:.4f}, threshold "
                f"{c.threshold:.4f}: {seen}"
            )
        if not all(c.detected for c in control):
            lines.append("**The check is blind** to at least one positive control: its 'Flagged' count proves nothing.")
        return lines


@dataclasses.dataclass(frozen=True)
class FlaggedBlock:
    """A synthetic block nearer to a training block than the threshold (distance in normalized RMS units)."""

    synthetic_index: int
    synthetic_volume: int
    synthetic_origin_zyx: tuple[int, int, int]
    distance: float
    training_index: int
    training_volume: int
    training_origin_zyx: tuple[int, int, int]
    flip_axes: tuple[int, ...]  # block axes (z, y, x) = (0, 1, 2) mirrored to match; () for a direct match


@dataclasses.dataclass(frozen=True, eq=False)
class MemorizationReport:
    """Nearest-training-block distances of synthetic and held-out blocks, and the flagged synthetic blocks.

    Attributes:
      synthetic_distance: float64 (n_synthetic,), RMS distance (normalized units) to the nearest training block.
      synthetic_match: int64 (n_synthetic,), index of that training block.
      heldout_distance: float64 (n_heldout,), the same for held-out blocks.
      threshold: synthetic blocks with a distance strictly below it are flagged.
      rule: how the threshold was derived, in words.
      flagged: the flagged blocks, nearest first.
      control: one result per positive-control volume; () where none was given.
      search: how the search ran and what it cost; None for the grid check (benchmarks/memorization_grid.py).
    """

    synthetic_distance: np.ndarray
    synthetic_match: np.ndarray
    heldout_distance: np.ndarray
    threshold: float
    rule: str
    flagged: tuple[FlaggedBlock, ...]
    control: tuple[ControlResult, ...] = ()
    search: SearchSummary | None = None

    def quantiles(self) -> dict[str, dict[str, float]]:
        """{"synthetic" | "heldout": {"min", "q01", "q05", "median": distance}}, normalized RMS units."""
        return {
            name: {key: float(np.quantile(values, q)) for key, q in QUANTILES.items()}
            for name, values in (("synthetic", self.synthetic_distance), ("heldout", self.heldout_distance))
        }

    def share_below_heldout(self, quantile: float = 0.05) -> float:
        """Fraction of synthetic blocks nearer than the held-out ``quantile``: about ``quantile`` if none memorized."""
        return float(np.mean(self.synthetic_distance < np.quantile(self.heldout_distance, quantile)))

    def markdown(self, max_rows: int = 20) -> str:
        """The two distance distributions, the threshold and the flagged blocks (at most ``max_rows``) as Markdown."""
        quantiles = self.quantiles()
        counts = {"synthetic": self.synthetic_distance.size, "heldout": self.heldout_distance.size}
        lines = [
            "| blocks | count | " + " | ".join(QUANTILES) + " |",
            "|---|---:|" + "---:|" * len(QUANTILES),
        ]
        for name, values in quantiles.items():
            cells = " | ".join(f"{v:.4f} ({v * NORM_SCALE_HU:.0f} HU)" for v in values.values())
            lines.append(f"| {name} -> training | {counts[name]} | {cells} |")
        lines += [
            "",
            "Distances: RMS difference per voxel to the nearest training block, HU clipped to [-1024, 1024] / 1024.",
            f"Threshold {self.threshold:.4f} ({self.threshold * NORM_SCALE_HU:.1f} HU): {self.rule}.",
            f"Synthetic blocks nearer than the held-out 5 % quantile: {100 * self.share_below_heldout(0.05):.1f} % "
            "(about 5 % expected without memorization).",
            f"**Flagged: {len(self.flagged)} of {counts['synthetic']} synthetic blocks.**",
        ]
        if self.threshold <= 0:
            lines.append(
                "A held-out block is identical to a training block (a split leak, or uniform blocks kept): "
                "the threshold is 0 and nothing can be flagged."
            )
        if self.flagged:
            lines += [
                "",
                "| synthetic block | volume | origin (z, y, x) | distance | training block | volume | origin | flip |",
                "|---:|---:|---|---:|---:|---:|---|---|",
            ]
            for f in self.flagged[:max_rows]:
                lines.append(
                    f"| {f.synthetic_index} | {f.synthetic_volume} | {f.synthetic_origin_zyx} | {f.distance:.4f} "
                    f"| {f.training_index if f.training_index >= 0 else '-'} | {f.training_volume} "
                    f"| {f.training_origin_zyx} | {f.flip_axes or '-'} |"
                )
            if len(self.flagged) > max_rows:
                lines.append(f"\n({len(self.flagged) - max_rows} more not shown.)")
        if self.search is not None:
            lines += ["", *self.search.markdown_lines(self.control)]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """A JSON-ready dict: counts, quantiles, threshold, flagged blocks (indices and origins), control, cost."""
        flagged = [
            {
                "synthetic_index": f.synthetic_index,
                "synthetic_volume": f.synthetic_volume,
                "origin_zyx": list(f.synthetic_origin_zyx),
                "distance": f.distance,
                "training_volume": f.training_volume,
                "training_origin_zyx": list(f.training_origin_zyx),
                "flip_axes": list(f.flip_axes),
            }
            for f in self.flagged
        ]
        return {
            "synthetic_blocks": int(self.synthetic_distance.size),
            "heldout_blocks": int(self.heldout_distance.size),
            "threshold": float(self.threshold),
            "rule": self.rule,
            "quantiles": self.quantiles(),
            "flagged_blocks": len(self.flagged),
            "flagged": flagged,
            "control": [c.to_json() for c in self.control],
            "search": None if self.search is None else self.search.to_json(),
        }


def memorization_report(
    synthetic: Sequence[np.ndarray],
    training: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray],
    control: Sequence[np.ndarray] = (),
    block: int | Sequence[int] = 32,
    flip_axes: tuple[int, ...] = (2,),
    pool: int | None = None,
    candidates: int = 16,
    threshold_factor: float = 0.5,
    min_body_fraction: float = 0.5,
    min_std_hu: float = DEFAULT_MIN_STD_HU,
    level: int = 0,
) -> MemorizationReport:
    """Flags synthetic blocks much nearer to a training block, at any shift or mirror, than held-out patients come.

    Args:
      synthetic, training, heldout, control: HU volumes (z, y, x), int16 or float, one voxel spacing; held-out
        volumes must be patients outside training; control volumes are copies of training data
        (``positive_control``), searched like synthetic ones but counted apart.
      block: query block edge, or edges (z, y, x).
      flip_axes: block axes mirrored in every combination (default left-right, as training augments).
      pool, candidates: see ``memorization_search.nearest_at_every_shift``.
      threshold_factor: in (0, 1]: the threshold is this times the smallest held-out distance.
      min_body_fraction, min_std_hu: the filter of query blocks (training origins pass with half of each).
      level: the pyramid level the volumes are at (0: full resolution); only reported.

    Returns:
      A ``MemorizationReport`` with ``control`` and ``search`` filled in (``synthetic_match`` is -1: training
      blocks are named by volume and origin in ``flagged``).
    """
    if not 0 < threshold_factor <= 1:
        raise ValueError(f"threshold_factor must be in (0, 1], got {threshold_factor}")
    for name, volumes in (("synthetic", synthetic), ("training", training), ("heldout", heldout)):
        if len(volumes) == 0:
            raise ValueError(f"{name} has no volumes")
    _refuse_training_in_heldout(training, heldout)
    shape = block_shape_of(block)
    sets = {
        name: grid_blocks(volumes, shape, name, min_body_fraction, min_std_hu)
        for name, volumes in (("synthetic", synthetic), ("heldout", heldout), ("control", control))
    }
    for name in ("synthetic", "heldout"):
        if len(sets[name]) == 0:
            raise ValueError(f"{name} has no blocks (all skipped as background or uniform?)")
    for i in range(len(control)):
        if not np.any(sets["control"].volume_index == i):
            raise ValueError(
                f"control[{i}] has no blocks passing the body/spread filter, so it can show nothing: "
                "take a larger crop, inside the body"
            )
    found = nearest_at_every_shift(
        _concatenate(sets.values()),
        training,
        flip_axes,
        pool,
        candidates,
        min_body_fraction * TRAINING_FILTER_SHARE,
        min_std_hu * TRAINING_FILTER_SHARE,
    )
    bounds = np.cumsum([0] + [len(s) for s in sets.values()])
    part = {name: slice(bounds[k], bounds[k + 1]) for k, name in enumerate(sets)}
    held = found.distance[part["heldout"]]
    threshold = threshold_factor * float(held.min())
    rule = f"{threshold_factor:g} x the minimum of held-out distances (searched at every shift)"
    syn = part["synthetic"]
    summary = SearchSummary(
        level=level,
        block_zyx=shape,
        pool=max(1, min(shape) // 4) if pool is None else int(pool),
        flips=found.flips,
        training_volumes=len(training),
        positions=found.positions,
        positions_total=found.positions_total,
        query_blocks={name: len(s) for name, s in sets.items()},
        bound_evaluations=sum(len(s) for s in sets.values()) * len(found.flips) * found.positions,
        verified=found.verified,
        exact={name: int(found.exact[part[name]].sum()) for name in ("synthetic", "heldout")},
        certain_not_flagged=int(
            np.sum((found.distance[syn] >= threshold) & (found.unverified_bound[syn] >= threshold))
        ),
        seconds=found.seconds,
    )
    return MemorizationReport(
        synthetic_distance=found.distance[syn],
        synthetic_match=np.full(len(sets["synthetic"]), -1, np.int64),
        heldout_distance=held,
        threshold=threshold,
        rule=rule,
        flagged=_flagged(sets["synthetic"], found, syn, threshold),
        control=_control_results(sets["control"], found.distance[part["control"]], len(control), threshold),
        search=summary,
    )


def coarse_memorization_report(
    synthetic: Sequence[np.ndarray],
    training: Sequence[np.ndarray],
    heldout: Sequence[np.ndarray],
    control: Sequence[np.ndarray] = (),
    levels: int = 3,
    block: int | Sequence[int] = COARSE_BLOCK,
    flip_axes: tuple[int, ...] = (2,),
    threshold_factor: float = 0.5,
    min_body_fraction: float = 0.5,
    min_std_hu: float = DEFAULT_MIN_STD_HU,
) -> MemorizationReport:
    """``memorization_report`` on every (2**levels)-th voxel (``pyramid.subsample``), where the coarse generator
    works: all four inputs are full-resolution HU volumes, subsampled here; origins in the report are in
    level voxels. Build the control with ``positive_control(..., block=COARSE_BLOCK, grid=2**levels)``.

    Block (4, 16, 16) by default: a 512 x 512 x 64-100 volume is 64 x 64 x 8-13 at level 3, so 4 slices leave
    2-3 grid rows in z and 16 x 16 in-plane (a quarter of the field, 10-12 cm) holds an arrangement of organs,
    not one texture, while giving 16 blocks per slab. The search is exhaustive and exact (pool 1, float64): about
    10 x 49 x 49 origins per training volume. The filter keeps its full-resolution meaning: the body fraction is
    measured on the subsampled mask, the HU spread on subsampled voxels (larger than at full resolution, since
    a coarse block spans organs).
    """
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    factor = 2**levels

    def coarse(volumes: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [subsample(np.asarray(v), factor) for v in volumes]

    return memorization_report(
        coarse(synthetic),
        coarse(training),
        coarse(heldout),
        coarse(control),
        block=block,
        flip_axes=flip_axes,
        pool=1,
        candidates=4,
        threshold_factor=threshold_factor,
        min_body_fraction=min_body_fraction,
        min_std_hu=min_std_hu,
        level=levels,
    )


def positive_control(
    training: Sequence[np.ndarray],
    seed: int = 0,
    offset: Sequence[int] = (3, 5, 7),
    noise_hu: float = 15.0,
    block: int | Sequence[int] = 32,
    blocks_per_axis: int = 3,
    mirror_axes: Sequence[int] = (2,),
    volume_index: int | None = None,
    grid: int = 1,
) -> np.ndarray:
    """A copy of training data that a working check must flag: a crop of one training volume whose origin is off
    the block grid (``offset`` modulo the block, odd by default so off every pooling phase too), ``blocks_per_axis``
    blocks long per axis (the rest of the axis where shorter), centred in the volume, mirrored along
    ``mirror_axes`` and with Gaussian noise of ``noise_hu`` HU.

    Args:
      training: HU volumes (z, y, x); the volume is ``volume_index`` or, when None, drawn with ``seed``.
      grid: for the coarse check, the crop is made on every ``grid``-th voxel (offset and block in those voxels)
        and each voxel repeated ``grid`` times per axis, so that ``subsample(control, grid)`` is the coarse copy.

    Returns:
      HU (z, y, x): int16 where the training volume is of an integer type (noise rounded), else float32.
    """
    if len(training) == 0:
        raise ValueError("training has no volumes to copy")
    shape = block_shape_of(block)
    offset = tuple(int(o) for o in offset)
    if len(offset) != 3 or any(o <= 0 or o % b == 0 for o, b in zip(offset, shape, strict=True)):
        raise ValueError(f"offset must be 3 positive values, none a multiple of the block {shape}, got {offset}")
    if blocks_per_axis < 2 or noise_hu < 0 or grid < 1:
        raise ValueError(
            f"need blocks_per_axis >= 2, noise_hu >= 0, grid >= 1; got {blocks_per_axis}, {noise_hu}, {grid}"
        )
    rng = np.random.default_rng(seed)
    index = int(rng.integers(len(training))) if volume_index is None else int(volume_index)
    if not 0 <= index < len(training):
        raise ValueError(f"volume_index {index} is outside the {len(training)} training volumes")
    hu = subsample(np.asarray(training[index]), grid)
    window = []
    for axis, (n, b, o) in enumerate(zip(hu.shape, shape, offset, strict=True)):
        size = min(blocks_per_axis * b, n - o)
        if size < b:
            raise ValueError(f"training[{index}] axis {axis} ({n} voxels) is too short for a block of {b} after {o}")
        start = o + b * ((n - o - size) // 2 // b)  # centred, still offset modulo the block
        window.append(slice(start, start + size))
    crop = np.flip(hu[tuple(window)], [int(a) for a in mirror_axes]).astype(np.float32)
    crop += rng.normal(0.0, noise_hu, crop.shape).astype(np.float32)
    if np.issubdtype(hu.dtype, np.integer):
        crop = np.clip(np.rint(crop), -32768, 32767).astype(np.int16)
    return upsample_nearest(crop, grid) if grid > 1 else crop


def _concatenate(sets) -> QueryBlocks:
    sets = list(sets)
    return QueryBlocks(
        np.concatenate([s.blocks for s in sets]),
        np.concatenate([s.volume_index for s in sets]),
        np.concatenate([s.origins_zyx for s in sets]),
    )


def _flagged(queries: QueryBlocks, found: ShiftSearch, part: slice, threshold: float) -> tuple[FlaggedBlock, ...]:
    distance = found.distance[part]
    flagged = []
    for i in np.argsort(distance, kind="stable"):
        if distance[i] >= threshold:
            break
        k = part.start + int(i)
        flagged.append(
            FlaggedBlock(
                synthetic_index=int(i),
                synthetic_volume=int(queries.volume_index[i]),
                synthetic_origin_zyx=tuple(int(v) for v in queries.origins_zyx[i]),
                distance=float(distance[i]),
                training_index=-1,
                training_volume=int(found.training_volume[k]),
                training_origin_zyx=tuple(int(v) for v in found.training_origin_zyx[k]),
                flip_axes=found.flips[found.flip[k]],
            )
        )
    return tuple(flagged)


def _control_results(queries: QueryBlocks, distance: np.ndarray, volumes: int, threshold: float):
    results = []
    for v in range(volumes):
        mine = distance[queries.volume_index == v]
        results.append(
            ControlResult(
                volume=v,
                blocks=int(mine.size),
                flagged=int(np.sum(mine < threshold)),
                min_distance=float(mine.min()),
                median_distance=float(np.median(mine)),
                threshold=threshold,
            )
        )
    return tuple(results)


def _refuse_training_in_heldout(training: Sequence[np.ndarray], heldout: Sequence[np.ndarray]) -> None:
    """A held-out volume that is a training volume makes the threshold 0 and the check meaningless."""
    for i, h in enumerate(heldout):
        h = np.asarray(h)
        for j, t in enumerate(training):
            t = np.asarray(t)
            if h.shape == t.shape and np.array_equal(h, t):
                raise ValueError(f"heldout[{i}] is training[{j}]: held-out volumes must be patients outside training")
