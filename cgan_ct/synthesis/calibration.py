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
    ``volumes``: how many generated and real volumes the fit used (a record, not used by the map).
    """

    source_hu: tuple[float, ...]
    target_hu: tuple[float, ...]
    draws: int = 0
    volumes: int = 0

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
        }

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        return cls(tuple(data["source_hu"]), tuple(data["target_hu"]), int(data["draws"]), int(data["volumes"]))


def body_quantiles(volumes_hu: Sequence[np.ndarray], quantiles: np.ndarray = QUANTILES) -> tuple[np.ndarray, int]:
    """(the mean over volumes of each volume's body-voxel quantiles at ``quantiles``, how many volumes had a body)."""
    from cgan_ct.ops.body_mask import body_mask  # the fit's only (scipy): serving a calibration needs numpy and TF

    rows = []
    for volume_hu in volumes_hu:
        volume_hu = np.asarray(volume_hu)
        body = body_mask(volume_hu)
        if body.any():
            rows.append(np.quantile(volume_hu[body].astype(np.float64), quantiles))
    if not rows:
        raise ValueError("no volume has a body (nothing above -500 HU): nothing to calibrate against")
    return np.mean(rows, axis=0), len(rows)


def fit_calibration(
    draws_hu: Sequence[np.ndarray], volumes_hu: Sequence[np.ndarray], quantiles: np.ndarray = QUANTILES
) -> Calibration:
    """The map taking the draws' body intensities to the real volumes' (both [D, H, W] HU, any depths).

    Knots at AIR_HU (fixed) and at each quantile above it; where several quantiles of the draws share one
    value (a clipped tail), their targets are averaged into one knot.
    """
    source, draws = body_quantiles(draws_hu, quantiles)
    target, volumes = body_quantiles(volumes_hu, quantiles)
    keep = (source > AIR_HU) & (target > AIR_HU)
    source, target = source[keep], target[keep]
    values, group = np.unique(source, return_inverse=True)
    means = np.bincount(group, weights=target) / np.bincount(group)
    source = np.concatenate([[float(AIR_HU)], values])
    target = np.concatenate([[float(AIR_HU)], np.maximum.accumulate(means)])
    return Calibration(tuple(source), tuple(target), draws, volumes)
