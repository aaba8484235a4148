"""The coarse generator's intensities, calibrated to its training volumes' (issue 33: tissue medians).

Measured on the cohort (BUILD_NOTES "Calibrated coarse intensities"): at the coarse level the GAN's draws
have grey lungs (median -554 to -808 HU against -686 to -865 in the training volumes at that level), bright
soft tissue (51-61 against 34-41 HU) and three times the bone fraction. The x2 stages keep each coarse
cell's mean (mean pyramid), so what the coarse level gets wrong in HU reaches the full-resolution volume.

``fit_calibration`` measures that bias and ``Calibration`` undoes it: a monotone piecewise-linear HU -> HU map
taking the draws' quantile function to the training volumes'. Each quantile function is of one volume's body
voxels (``ops.body_mask``), averaged over volumes (each weighs the same, whatever its size: the 1-D
Wasserstein barycentre). One map serves every draw, so draws keep their differences from each other (a
per-draw histogram match would give every body the same histogram). Air stays air: AIR_HU is a fixed knot,
and beyond the fitted range the map has slope 1 (values move by the end knot's offset).

The same map serves the cascade's full-resolution output (``splits_hu``: bands of HU matched apart, so
each keeps the generator's amount; BUILD_NOTES "Calibrated output intensities").

Numpy (``apply``) and TensorFlow (``apply_tf``: inside the coarse SavedModel's signature, so TF Serving
gets calibrated draws) give the same values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from cgan_ct.constants import AIR_HU
from cgan_ct.ops.intensity import interp_tf

QUANTILES = np.linspace(0.0, 1.0, 257)[1:-1]  # 255 interior probabilities: 1/256 .. 255/256


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A monotone HU -> HU map: linear between knots, slope 1 outside them.

    ``source_hu`` strictly increasing, ``target_hu`` non-decreasing, of equal length >= 2; ``draws`` and
    ``volumes``: how many generated and real volumes the fit used, ``splits_hu``: the HU between which the
    fit matched the bands apart (``fit_calibration``; empty: one match); records, not used by the map.
    """

    source_hu: tuple[float, ...]
    target_hu: tuple[float, ...]
    draws: int = 0
    volumes: int = 0
    splits_hu: tuple[float, ...] = ()

    def __post_init__(self):
        source, target = np.asarray(self.source_hu, np.float64), np.asarray(self.target_hu, np.float64)
        if source.ndim != 1 or source.shape != target.shape or source.size < 2:
            raise ValueError(f"a calibration needs >= 2 knots on each side, got {source.shape} and {target.shape}")
        if not (np.isfinite(source).all() and np.isfinite(target).all()):
            raise ValueError("a calibration's knots must be finite")
        if (np.diff(source) <= 0).any() or (np.diff(target) < 0).any():
            raise ValueError("a calibration's source knots must increase strictly and its target knots never fall")

    def apply(self, volume_hu: np.ndarray) -> np.ndarray:
        """HU (any shape) -> calibrated float32 HU."""
        volume_hu = np.asarray(volume_hu, np.float64)
        inside = np.clip(volume_hu, self.source_hu[0], self.source_hu[-1])
        return (np.interp(inside, self.source_hu, self.target_hu) + (volume_hu - inside)).astype(np.float32)

    def apply_tf(self, volume_hu):
        """``apply`` in TensorFlow: any-shape float tensor of HU -> float32 HU."""
        import tensorflow as tf

        volume_hu = tf.cast(volume_hu, tf.float32)
        inside = tf.clip_by_value(volume_hu, float(self.source_hu[0]), float(self.source_hu[-1]))
        return interp_tf(inside, self.source_hu, self.target_hu) + (volume_hu - inside)

    def to_json(self) -> dict:
        return {
            "source_hu": [float(v) for v in self.source_hu],
            "target_hu": [float(v) for v in self.target_hu],
            "draws": self.draws,
            "volumes": self.volumes,
            "splits_hu": [float(v) for v in self.splits_hu],
        }

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        return cls(
            tuple(data["source_hu"]),
            tuple(data["target_hu"]),
            int(data["draws"]),
            int(data["volumes"]),
            tuple(float(v) for v in data.get("splits_hu", ())),  # absent before 2026-12-06: no split
        )


def band_quantiles(
    volume_hu: np.ndarray, splits_hu: Sequence[float] = (), quantiles: np.ndarray = QUANTILES
) -> tuple[np.ndarray | None, ...]:
    """One volume's body-voxel quantiles at ``quantiles`` in each band the increasing ``splits_hu`` cut HU into
    (below the first, between each two, at or above the last; one band without splits); None for a band
    without voxels."""
    from cgan_ct.ops.body_mask import body_mask  # the fit's only (scipy): serving a calibration needs numpy and TF

    volume_hu = np.asarray(volume_hu)
    values = volume_hu[body_mask(volume_hu)].astype(np.float64)
    edges = [-np.inf, *splits_hu, np.inf]
    bands = [values[(values >= low) & (values < high)] for low, high in zip(edges[:-1], edges[1:], strict=True)]
    return tuple(np.quantile(band, quantiles) if band.size else None for band in bands)


def fit_calibration(
    draws_hu: Sequence[np.ndarray],
    volumes_hu: Sequence[np.ndarray],
    quantiles: np.ndarray = QUANTILES,
    splits_hu: Sequence[float] = (),
) -> Calibration:
    """The map taking the draws' body intensities to the real volumes' (both [D, H, W] HU, any depths).

    Knots at AIR_HU (fixed) and at each quantile above it; where several quantiles of the draws share one
    value (a clipped tail), their targets are averaged into one knot.

    ``splits_hu`` (increasing, above AIR_HU): the bands between them are matched apart, joined at fixed knots
    at the splits. How many voxels lie in each band stays the draws' (one map over the body trades one tissue
    for another: a draw with more lung than real gets denser lungs, not fewer); only the HU in each band move.
    """
    draws = [band_quantiles(d, splits_hu, quantiles) for d in draws_hu]
    return fit_band_quantiles(draws, [band_quantiles(v, splits_hu, quantiles) for v in volumes_hu], splits_hu)


def fit_band_quantiles(
    draws: Sequence[tuple], volumes: Sequence[tuple], splits_hu: Sequence[float] = ()
) -> Calibration:
    """``fit_calibration`` from each volume's ``band_quantiles`` (the same ``splits_hu`` and quantiles): the
    real volumes' can be measured one at a time as they are read."""
    splits = tuple(float(v) for v in splits_hu)
    if splits and (splits[0] <= AIR_HU or (np.diff(splits) <= 0).any()):
        raise ValueError(f"splits_hu must increase and lie above air ({AIR_HU} HU), got {list(splits)}")
    edges = [float(AIR_HU), *splits, np.inf]
    source, target = [float(AIR_HU)], [float(AIR_HU)]
    for band, (above, below) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        draws_q, volumes_q = _mean_rows(draws, band, "draw", edges), _mean_rows(volumes, band, "volume", edges)
        values, means = _knots(draws_q, volumes_q, above, below)
        source += list(values)
        target += list(means)
        if below < np.inf:  # a split: a fixed knot between two bands
            source.append(below)
            target.append(below)
    return Calibration(tuple(source), tuple(np.maximum.accumulate(target)), _count(draws), _count(volumes), splits)


def _count(rows: Sequence[tuple]) -> int:
    """How many volumes had voxels in every band."""
    return sum(all(band is not None for band in row) for row in rows)


def _mean_rows(rows: Sequence[tuple], band: int, what: str, edges: list[float]) -> np.ndarray:
    """The mean over volumes of one band's quantiles (1-D Wasserstein barycentre), volumes without it left out."""
    present = [row[band] for row in rows if row[band] is not None]
    if present:
        return np.mean(present, axis=0)
    if len(edges) == 2:
        raise ValueError(f"no {what} has a body (nothing above -500 HU): nothing to calibrate against")
    low, high = ("" if band == 0 else f"{edges[band]:g}"), ("" if band == len(edges) - 2 else f"{edges[band + 1]:g}")
    where = f"below {high} HU" if not low else f"at or above {low} HU" if not high else f"in [{low}, {high}) HU"
    raise ValueError(f"no {what} has body voxels {where}: nothing to calibrate against")


def _knots(source: np.ndarray, target: np.ndarray, above: float, below: float) -> tuple[np.ndarray, np.ndarray]:
    """The quantile pairs strictly inside (above, below) on both sides, ties in ``source`` averaged."""
    keep = (source > above) & (source < below) & (target > above) & (target < below)
    values, group = np.unique(source[keep], return_inverse=True)
    if not values.size:
        return values, values
    return values, np.bincount(group, weights=target[keep]) / np.bincount(group)
