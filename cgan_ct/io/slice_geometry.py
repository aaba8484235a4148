"""Geometry of a stack of parallel DICOM slices: order, gaps, tilt, regular grid.

A slice's place along the stack is its ImagePositionPatient projected on the
slice normal (row direction x column direction), never InstanceNumber or the
file name. Two irregularities of real series are handled here:

- uneven spacing between slices (e.g. 4 mm slices at the skull base, 7 mm
  above);
- gantry tilt: the image planes are tilted, so successive slices are offset
  within their plane as well as along the normal.

Both are corrected by resampling onto a regular grid whose axes are the
image rows, the image columns and the slice normal: each slice is shifted in
its plane by its offset (tilt), then values are interpolated linearly along
the normal (spacing). The grid is widened to hold every shifted slice.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from cgan_ct.io.volume import check_grid_size

_UNEVEN_TOLERANCE = 0.01  # relative spread of gaps still called even
_TILT_TOLERANCE_PX = 0.01  # in-plane drift (pixels) still called untilted
_MISSING_RATIO_TOLERANCE = 0.1


@dataclasses.dataclass(frozen=True)
class StackGeometry:
    """Positions of N parallel slices, sorted along the normal.

    Attributes:
      row_dir, col_dir, normal: LPS unit vectors (along a row = +x index,
        along a column = +y index, and their cross product).
      pixel_spacing_mm: (between rows, between columns) = (dy, dx).
      positions_mm: [N, 3] ImagePositionPatient of the sorted slices.
      order: indices that sort the input slices along the normal.
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    positions_mm: np.ndarray
    order: np.ndarray

    @property
    def along_normal_mm(self) -> np.ndarray:
        """Distance of each sorted slice from the first, along the normal."""
        return (self.positions_mm - self.positions_mm[0]) @ self.normal

    @property
    def gaps_mm(self) -> np.ndarray:
        return np.diff(self.along_normal_mm)

    @property
    def in_plane_offsets_mm(self) -> np.ndarray:
        """[N, 2] offset (along col_dir, along row_dir) of each slice from the first."""
        delta = self.positions_mm - self.positions_mm[0]
        return np.stack([delta @ self.col_dir, delta @ self.row_dir], axis=1)

    @property
    def tilt_deg(self) -> float:
        """Angle between the stacking direction and the slice normal."""
        if len(self.positions_mm) < 2:
            return 0.0
        drift = np.linalg.norm(self.in_plane_offsets_mm[-1])
        return float(np.degrees(np.arctan2(drift, self.along_normal_mm[-1])))

    @property
    def is_tilted(self) -> bool:
        drift_px = np.abs(self.in_plane_offsets_mm) / np.asarray(self.pixel_spacing_mm)
        return bool(drift_px.max(initial=0.0) > _TILT_TOLERANCE_PX)

    @property
    def is_uneven(self) -> bool:
        gaps = self.gaps_mm
        if len(gaps) < 2:
            return False
        return bool(np.ptp(gaps) > _UNEVEN_TOLERANCE * np.median(gaps))

    def default_slice_spacing_mm(self) -> float:
        """The regular spacing for an uneven stack: its finest typical gap.

        The smallest gap that is at least half the median gap, so that one
        odd short gap (e.g. where two acquisitions meet) does not set it.
        """
        gaps = self.gaps_mm
        return float(gaps[gaps >= 0.5 * np.median(gaps)].min())


def make_geometry(orientation: np.ndarray, pixel_spacing_mm, positions_mm: np.ndarray) -> StackGeometry:
    """Sorts slices along the normal of ``orientation`` (the six IOP values)."""
    row_dir = np.asarray(orientation[:3], float)
    col_dir = np.asarray(orientation[3:], float)
    row_dir /= np.linalg.norm(row_dir)
    col_dir /= np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    positions = np.asarray(positions_mm, float)
    order = np.argsort(positions @ normal, kind="stable")
    return StackGeometry(
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        pixel_spacing_mm=(float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])),
        positions_mm=positions[order],
        order=order,
    )


def find_stack_problem(geometry: StackGeometry, instance_numbers: list[int | None]) -> str | None:
    """Describes duplicate or missing slices, or returns None.

    ``instance_numbers`` are in sorted order. A gap is a missing slice when it
    is close to a whole multiple (>= 2) of the median gap and, where the
    slices have instance numbers, the numbers skip there too; otherwise a
    large gap is uneven spacing, which is resampled.
    """
    gaps = geometry.gaps_mm
    if len(gaps) == 0:
        return None
    median = float(np.median(gaps))
    duplicate = np.flatnonzero(gaps < 1e-3 * max(median, 1e-3))
    if duplicate.size:
        return f"two slices at the same position (sorted slices {duplicate[0]} and {duplicate[0] + 1})"
    numbers_known = all(n is not None for n in instance_numbers)
    for i, gap in enumerate(gaps):
        ratio = gap / median
        multiple = round(ratio)
        if multiple < 2 or abs(ratio - multiple) > _MISSING_RATIO_TOLERANCE:
            continue
        if numbers_known and abs(instance_numbers[i + 1] - instance_numbers[i]) == 1:
            continue
        return f"missing slice(s): a gap of {gap:.3g} mm after sorted slice {i} where slices are {median:.3g} mm apart"
    return None


def regularize(
    slices_hu: np.ndarray, geometry: StackGeometry, slice_spacing_mm: float, fill_hu: float, source=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resamples sorted slices [N, rows, cols] onto a regular, tilt-free grid.

    Returns (volume [K, rows', cols'] float32, origin_mm (x, y, z) LPS of the
    first voxel, direction with columns (normal, col_dir, row_dir)). Voxels no
    slice covers get ``fill_hu``. A grid over MAX_VOXELS (positions far
    apart: a corrupt header) is refused naming ``source``.
    """
    offsets = geometry.in_plane_offsets_mm  # [N, (along col_dir, along row_dir)]
    spacing = np.asarray(geometry.pixel_spacing_mm)
    low = offsets.min(axis=0)
    extra = np.ceil((offsets.max(axis=0) - low) / spacing - 1e-6).astype(np.int64)
    n, rows, cols = slices_hu.shape
    count = int(np.floor(geometry.along_normal_mm[-1] / slice_spacing_mm + 1e-6)) + 1
    check_grid_size((max(n, count), rows + extra[0], cols + extra[1]), source, "the regular grid of the slices")
    shifted = np.full((n, rows + extra[0], cols + extra[1]), fill_hu, np.float32)
    for i in range(n):
        shift_px = (offsets[i] - low) / spacing
        canvas = shifted[i]
        canvas[:rows, :cols] = slices_hu[i]
        if np.abs(shift_px).max() > _TILT_TOLERANCE_PX:
            canvas[:] = ndimage.shift(canvas, shift_px, order=1, mode="constant", cval=fill_hu)
    along = geometry.along_normal_mm
    targets = np.arange(count) * slice_spacing_mm
    lower = np.clip(np.searchsorted(along, targets, side="right") - 1, 0, max(n - 2, 0))
    if n == 1:
        volume = shifted
    else:
        weights = (targets - along[lower]) / (along[lower + 1] - along[lower])
        volume = np.empty((count,) + shifted.shape[1:], np.float32)
        for k, (i, w) in enumerate(zip(lower, weights, strict=True)):  # slice by slice: bounded memory
            volume[k] = (1 - w) * shifted[i] + w * shifted[i + 1]
    origin = geometry.positions_mm[0] + low[0] * geometry.col_dir + low[1] * geometry.row_dir
    direction = np.stack([geometry.normal, geometry.col_dir, geometry.row_dir], axis=1)
    return volume, origin, direction
