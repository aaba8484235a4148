"""The in-memory CT volume and its geometry.

Axis convention, used everywhere in the project:

- ``hu`` is int16 Hounsfield units indexed ``hu[z, y, x]``;
- ``spacing_mm`` is ``(z, y, x)`` in millimetres, in the same order;
- ``direction[:, a]`` is the unit vector, in DICOM patient coordinates (LPS:
  +x to the patient's left, +y posterior, +z superior), along array axis ``a``
  (``a = 0`` for z, 1 for y, 2 for x);
- ``origin_mm`` is the LPS position ``(x, y, z)`` of the centre of
  ``hu[0, 0, 0]``.

So the LPS position of voxel index ``(k, j, i)`` is
``origin_mm + direction @ ((k, j, i) * spacing_mm)``. Readers return volumes
in the canonical orientation: each array axis is permuted and flipped (never
resampled) so that z runs toward superior, y toward posterior and x toward the
patient's left as nearly as the acquisition allows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cgan_ct.constants import AIR_HU
from cgan_ct.errors import InputError
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.ops.pyramid import downsample, subsample

HU_MIN = -32768
HU_MAX = 32767
# 2^31 voxels (4 GiB of int16, 8 GiB as float32 while resampling): beyond it a grid comes from a
# corrupt header or a mistyped spacing, not from a CT scan (a 1024 x 1024 x 2000 scan has 2.1e9).
MAX_VOXELS = 2**31


def check_grid_size(shape, source, what: str) -> None:
    """Refuses a grid of more than MAX_VOXELS voxels before anything allocates it."""
    voxels = int(np.prod([int(n) for n in shape], dtype=np.int64))
    if voxels > MAX_VOXELS:
        shape_text = " x ".join(str(int(n)) for n in shape)
        raise InputError(source, f"{what} would be {shape_text} = {voxels:.3g} voxels (limit {MAX_VOXELS:.3g})")


# Array axis a should point along LPS component _CANONICAL_LPS_AXIS[a].
_CANONICAL_LPS_AXIS = (2, 1, 0)


@dataclasses.dataclass(frozen=True)
class AcquisitionInfo:
    """Non-identifying acquisition metadata; fields are None where unknown."""

    source_format: str
    manufacturer: str | None = None
    model: str | None = None
    kernel: str | None = None
    slice_thickness_mm: float | None = None
    kvp: float | None = None
    series_number: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A CT volume in HU with its geometry and pseudonymous identity.

    Attributes:
      hu: int16 array (z, y, x), Hounsfield units.
      spacing_mm: voxel spacing (z, y, x) in mm.
      origin_mm: LPS position (x, y, z) in mm of the centre of hu[0, 0, 0].
      direction: 3x3 float array; column a is the LPS unit vector of array axis a.
      volume_id: pseudonymous id of this volume (salted hash), e.g. "vol-...".
      patient_key: pseudonymous id of the patient (salted hash), e.g. "pat-...".
      acquisition: non-identifying acquisition metadata.
      warnings: what the reader noticed and corrected (tilt, uneven spacing...).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    volume_id: str
    patient_key: str
    acquisition: AcquisitionInfo
    warnings: tuple[str, ...] = ()

    def __post_init__(self):
        if self.hu.ndim != 3 or self.hu.dtype != np.int16:
            raise InputError(
                self.volume_id,
                f"hu must be a 3-D int16 array, got {self.hu.ndim}-D {self.hu.dtype}",
            )
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise InputError(self.volume_id, f"spacing_mm must be 3 positive values, got {self.spacing_mm}")
        if np.asarray(self.direction).shape != (3, 3) or len(self.origin_mm) != 3:
            raise InputError(self.volume_id, "direction must be 3x3 and origin_mm 3 values")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape)

    def index_to_lps(self, index_zyx) -> np.ndarray:
        """LPS position (x, y, z) in mm of voxel index (k, j, i); index may be [N, 3]."""
        offset = np.asarray(index_zyx, float) * np.asarray(self.spacing_mm)
        return np.asarray(self.origin_mm) + offset @ np.asarray(self.direction).T

    def replace(self, **changes) -> Volume:
        return dataclasses.replace(self, **changes)


def hu_to_int16(values: np.ndarray, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Rounds HU to int16; values outside int16 are clipped, with a warning."""
    values = np.asarray(values)
    if values.dtype == np.int16:
        return values, ()
    low, high = float(values.min()), float(values.max())
    warnings = ()
    if low < HU_MIN or high > HU_MAX:
        warnings = (f"HU range {low:.0f}..{high:.0f} clipped to int16",)
    if np.issubdtype(values.dtype, np.floating):
        values = np.rint(values)
    return np.clip(values, HU_MIN, HU_MAX).astype(np.int16), warnings


def below_air_to_air(hu: np.ndarray) -> tuple[str, ...]:
    """Sets voxels below air (-1024 HU) to air, in place; returns a warning saying how many.

    Nothing real is less dense than air: such values are a scanner's marks for
    "outside the reconstruction circle" (-2048, -3024, ...) that no
    PixelPaddingValue declared, and are treated like padding.
    """
    below = hu < AIR_HU
    count = int(np.count_nonzero(below))
    if not count:
        return ()
    lowest = float(hu[below].min())
    hu[below] = AIR_HU
    return (f"{count} voxels below -1024 HU (down to {lowest:.0f}; outside the reconstruction circle?) set to air",)


def canonical_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Permutation and flips that bring ``direction`` nearest to canonical.

    Returns (perm, flip): new axis t is old axis perm[t], flipped if flip[t].
    """
    direction = np.asarray(direction, float)
    weights = np.abs(direction)  # weights[c, a]: LPS component c of axis a
    perm = [-1, -1, -1]
    taken = set()
    # Assign the most decisive axes first so 45-degree obliques stay stable.
    order = sorted(range(3), key=lambda a: -weights[:, a].max())
    for old_axis in order:
        for component in np.argsort(-weights[:, old_axis]):
            target = _CANONICAL_LPS_AXIS.index(int(component))
            if target not in taken:
                perm[target] = old_axis
                taken.add(target)
                break
    flip = tuple(bool(direction[_CANONICAL_LPS_AXIS[t], perm[t]] < 0) for t in range(3))
    return tuple(perm), flip


def to_canonical(volume: Volume) -> Volume:
    """Permutes and flips the array axes of ``volume`` into canonical order.

    No resampling: voxel values are unchanged and every voxel keeps its LPS
    position.
    """
    perm, flip = canonical_axes(volume.direction)
    if perm == (0, 1, 2) and not any(flip):
        return volume
    direction = np.asarray(volume.direction, float)
    origin = np.asarray(volume.origin_mm, float)
    hu = np.transpose(volume.hu, perm)
    spacing = tuple(float(volume.spacing_mm[a]) for a in perm)
    new_direction = direction[:, list(perm)].copy()
    for t in range(3):
        if flip[t]:
            origin = origin + new_direction[:, t] * spacing[t] * (hu.shape[t] - 1)
            new_direction[:, t] *= -1
            hu = np.flip(hu, axis=t)
    return volume.replace(
        hu=np.ascontiguousarray(hu),
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),
        direction=new_direction,
    )


def subsample_volume(volume: Volume, factor: int, pyramid: str = "subsample") -> Volume:
    """``volume`` at a level ``factor`` times coarser (cgan_ct.ops.pyramid): every ``factor``-th voxel (same
    first voxel and direction, spacing x factor), or with ``pyramid="mean"`` each cube's mean (the origin
    moved to the first cell's centre)."""
    if factor == 1:
        return volume
    spacing = tuple(float(s) * factor for s in volume.spacing_mm)
    if pyramid == "subsample":
        return volume.replace(
            hu=np.ascontiguousarray(subsample(volume.hu, factor)),
            spacing_mm=spacing,
            volume_id=pseudonym("vol", f"{volume.volume_id}:subsample:{factor}"),
        )
    half_cell = (factor - 1) / 2 * np.asarray(volume.spacing_mm, float)  # (z, y, x) in mm
    origin = np.asarray(volume.origin_mm, float) + np.asarray(volume.direction, float) @ half_cell
    return volume.replace(
        hu=np.rint(downsample(volume.hu, factor, pyramid)).astype(volume.hu.dtype),
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),
        volume_id=pseudonym("vol", f"{volume.volume_id}:{pyramid}:{factor}"),
    )
