"""Reading a CT volume from a folder of DICOM files.

The folder is searched recursively; files that are not DICOM (no "DICM"
marker) are ignored, while a DICOM file that cannot be parsed is an error.
Files are grouped into series by SeriesInstanceUID; localizer images are left
out. Pixel data is read only for the chosen series.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from cgan_ct.constants import AIR_HU
from cgan_ct.errors import InputError
from cgan_ct.io import folder_walk, jpeg_check, slice_geometry
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.volume import AcquisitionInfo, Volume, below_air_to_air, hu_to_int16, to_canonical

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# CT, Enhanced CT, Legacy Converted Enhanced CT, MR, Secondary Capture: classes whose files must hold pixel data.
_IMAGE_STORAGE_CLASSES = {
    CT_IMAGE_STORAGE,
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.2.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.7",
}
_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_MAX_SIDE = 16384  # rows or columns beyond this are a corrupt header, not a CT image
_DEFER_BYTES = 1024  # headers now, pixel data only when used
_IOP_TOLERANCE = 1e-3
_SPACING_TOLERANCE = 1e-3


@dataclasses.dataclass
class _Series:
    uid: str
    files: list[tuple[pathlib.Path, pydicom.Dataset]]

    @property
    def first(self) -> pydicom.Dataset:
        return self.files[0][1]

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "?")

    def label(self, salt: str | None) -> str:
        """Number, modality, size and pseudonym; not the free-text SeriesDescription (it can hold a name)."""
        ds = self.first
        number = ds.get("SeriesNumber", "?")
        size = f"{ds.get('Rows', '?')} x {ds.get('Columns', '?')}"
        vol_id = pseudonym("vol", self.uid, salt)
        return f"series {number} ({self.modality}, {size}): {len(self.files)} slices (series='{number}' or '{vol_id}')"


def _is_dicom_file(path: pathlib.Path) -> bool:
    """Whether ``path`` carries the DICM marker; a file that cannot be opened is an error, not "no"."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    return len(head) == 132 and head[128:] == b"DICM"


def _series_key(ds: pydicom.Dataset, path: pathlib.Path) -> str:
    """What groups a file into a series, and what its volume id is made from: the SeriesInstanceUID, or for a
    file without one its folder (resolved: the same series gets the same id however its path was spelled)."""
    return str(ds.get("SeriesInstanceUID", "") or f"(no SeriesInstanceUID) {path.parent.resolve()}")


def _name_shape(name: str) -> str:
    """A file name with its digit runs as '#': the slices of one series share it (``IM#``, ``#-#.dcm``)."""
    return re.sub(r"\d+", "#", name.lower())


def _not_dicom_reason(path: pathlib.Path) -> str:
    size = path.stat().st_size
    if size == 0:
        return "an empty file"
    return f"cut at {size} bytes" if size < 132 else "no DICM marker"


def _read_header(path: pathlib.Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise InputError(path, f"corrupt or truncated DICOM file ({exc})") from None
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        raise InputError(path, "corrupt DICOM file (the DICM marker is not followed by file meta information)")
    _check_complete(path, ds)
    return ds


def _check_complete(path: pathlib.Path, ds: pydicom.Dataset) -> None:
    """An image file must hold all of its pixel data: pydicom stops quietly where a file ends early."""
    sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", "") or "")
    if "PixelData" not in ds:
        if sop_class in _IMAGE_STORAGE_CLASSES:
            raise InputError(path, "truncated DICOM file: an image file that ends before its pixel data")
        return
    raw = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    length = getattr(raw, "length", None)
    start = getattr(raw, "value_tell", None)
    if length is None or start is None or length == _UNDEFINED_LENGTH:
        return
    size = path.stat().st_size
    if start + length > size:
        raise InputError(
            path, f"truncated DICOM file: its pixel data needs {length} bytes, the file ends after {size - start}"
        )


def scan_series(folder: pathlib.Path, on_error=None) -> dict[str, _Series]:
    """All image series under ``folder``, keyed by SeriesInstanceUID.

    A DICOM file that cannot be read (corrupt, truncated, unreadable) raises
    InputError; with ``on_error``, it is passed to ``on_error(error,
    position)`` instead (``position``: "file k of n" in the name order of its
    folder; None for a folder that cannot be read) and left out, and the caller decides what it spoils.
    Symbolic links to folders are followed, each real folder once (cgan_ct.io.folder_walk).
    """
    series: dict[str, _Series] = {}

    def failed(exc: InputError, k: int, names: list) -> None:
        if on_error is None:
            raise exc
        on_error(exc, f"file {k + 1} of {len(names)}")

    def unreadable(exc: InputError) -> None:
        if on_error is None:
            raise exc
        on_error(exc, None)  # a folder, not a file among a series' files

    for root, names in folder_walk.walk(folder, unreadable):
        others, shapes = [], set()  # files without the DICM marker; name shapes of the DICOM files
        for k, name in enumerate(names):
            path = pathlib.Path(root, name)
            try:
                if not _is_dicom_file(path):
                    others.append(k)
                    continue
                shapes.add(_name_shape(name))
                ds = _read_header(path)
            except InputError as exc:
                failed(exc, k, names)
                continue
            if "PixelData" not in ds or "LOCALIZER" in [str(t).upper() for t in ds.get("ImageType", [])]:
                continue
            uid = _series_key(ds, path)
            series.setdefault(uid, _Series(uid, [])).files.append((path, ds))
        # A file named like the DICOM files beside it but not DICOM (empty, cut short) is a lost slice, maybe
        # the first or the last, never to be left out quietly; other files (a DICOMDIR, notes) are not the series'.
        for k in others:
            path = pathlib.Path(root, names[k])
            if _name_shape(names[k]) in shapes and names[k].upper() != "DICOMDIR":
                reason = _not_dicom_reason(path)
                failed(InputError(path, f"not readable DICOM ({reason}), among the series' files"), k, names)
    return series


def _choose_series(folder: pathlib.Path, found: dict[str, _Series], choice: str | None, salt) -> _Series:
    if not found:
        raise InputError(folder, "no DICOM image files found")
    if choice is None and len(found) == 1:
        return next(iter(found.values()))
    ct = [series for series in found.values() if series.modality == "CT"]
    if choice is None and len(ct) == 1:  # beside a segmentation or a dose screenshot: the one CT image series
        return ct[0]
    if choice is not None:
        matches = [
            s
            for s in found.values()
            if choice in (s.uid, str(s.first.get("SeriesNumber", "")), pseudonym("vol", s.uid, salt))
        ]
        if len(matches) == 1:
            return matches[0]
        problem = f"series '{choice}' " + ("is ambiguous" if matches else "not found")
    else:
        problem = f"{len(found)} series found; choose one with series="
    listing = "; ".join(s.label(salt) for s in found.values())
    raise InputError(folder, f"{problem}: {listing}")


def _numbers(path: pathlib.Path, ds: pydicom.Dataset, key: str, count: int) -> np.ndarray:
    """``count`` finite numbers from attribute ``key``, or an InputError naming the file and the attribute."""
    value = ds.get(key)
    if value is None or value == "":
        raise InputError(path, f"missing {key}; cannot place the slice in space")
    try:
        values = np.asarray(value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value], float)
    except (TypeError, ValueError):
        raise InputError(path, f"{key} is not numeric ({value!r})") from None
    if values.shape != (count,) or not np.isfinite(values).all():
        raise InputError(path, f"{key} must be {count} finite numbers, got {list(np.atleast_1d(values))}")
    return values


def _check_slice(path: pathlib.Path, ds: pydicom.Dataset) -> None:
    """One slice's header: a single-frame CT image whose geometry and scaling make sense."""
    modality = str(ds.get("Modality", "") or "")
    if modality != "CT":
        raise InputError(path, f"modality is '{modality or 'missing'}', not CT")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(path, "multi-frame (Enhanced CT) images are not supported; export single-frame slices")
    for key in ("Rows", "Columns"):
        side = ds.get(key)
        if side is None:
            raise InputError(path, f"missing {key}; cannot place the slice in space")
        if not 1 <= int(side) <= _MAX_SIDE:
            raise InputError(path, f"{key} is {int(side)}: not an image size (1 to {_MAX_SIDE})")
    _numbers(path, ds, "ImagePositionPatient", 3)
    spacing = _numbers(path, ds, "PixelSpacing", 2)
    if spacing.min() <= 0:
        raise InputError(path, f"PixelSpacing must be positive, got {list(spacing)}")
    row, col = np.split(_numbers(path, ds, "ImageOrientationPatient", 6), 2)
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise InputError(path, f"ImageOrientationPatient {list(np.r_[row, col])} is not two perpendicular unit vectors")
    for key in ("RescaleSlope", "RescaleIntercept"):
        if ds.get(key) not in (None, ""):
            value = float(_numbers(path, ds, key, 1)[0])
            if key == "RescaleSlope" and value == 0:
                raise InputError(path, "RescaleSlope is 0: every pixel would be the same HU")
    _check_pixel_length(path, ds)


def _check_pixel_length(path: pathlib.Path, ds: pydicom.Dataset) -> None:
    """Uncompressed pixel data must hold Rows x Columns pixels (checked before decoding allocates them)."""
    if str(ds.file_meta.get("TransferSyntaxUID", "")) not in _NATIVE_SYNTAXES:
        return
    element = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    length = getattr(element, "length", None)  # a deferred value: its declared length
    if length is None and isinstance(getattr(element, "value", None), bytes):
        length = len(element.value)  # a value pydicom read (a short one at the file's end: what was there)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8
    if length is not None and length != _UNDEFINED_LENGTH and length < needed:
        raise InputError(
            path,
            f"pixel data holds {length} bytes, but {int(ds.Rows)} x {int(ds.Columns)} pixels of {bits} bits "
            f"need {needed}: the file is truncated or its header's image size is wrong",
        )


def _check_consistent(series: _Series) -> None:
    """Every slice a valid single-frame CT image with the same size and geometry as the first."""
    _, first = series.files[0]
    for path, ds in series.files:
        _check_slice(path, ds)
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(
                path,
                f"{ds.Rows}x{ds.Columns} pixels, but the series' first file has "
                f"{first.Rows}x{first.Columns}: inconsistent rows/columns in one series",
            )
        if not np.allclose(
            np.asarray(ds.PixelSpacing, float), np.asarray(first.PixelSpacing, float), atol=_SPACING_TOLERANCE
        ):
            raise InputError(
                path,
                f"pixel spacing {list(ds.PixelSpacing)} differs from {list(first.PixelSpacing)} in one series",
            )
        if not np.allclose(
            np.asarray(ds.ImageOrientationPatient, float),
            np.asarray(first.ImageOrientationPatient, float),
            atol=_IOP_TOLERANCE,
        ):
            raise InputError(path, "image orientation differs from the rest of the series")


def _check_frames(path: pathlib.Path, ds: pydicom.Dataset, syntax) -> None:
    """InputError if a JPEG / JPEG-LS / JPEG 2000 frame is not whole (cgan_ct.io.jpeg_check): their decoders
    stop at a stray end marker without an error and leave the rest of the slice wrong."""
    if str(syntax) not in jpeg_check.JPEG_SYNTAXES | jpeg_check.JPEG2000_SYNTAXES:
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        for frame in pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=frames):
            problem = jpeg_check.frame_problem(str(syntax), frame)
            if problem:
                raise InputError(path, f"corrupt compressed pixel data ({syntax.name}): {problem}")
    except (ValueError, KeyError, TypeError) as exc:  # pydicom's errors for a broken encapsulation
        raise InputError(path, f"broken encapsulated pixel data ({syntax.name}): {exc}") from None


def _decode(path: pathlib.Path, ds: pydicom.Dataset) -> np.ndarray:
    """The stored pixel values of one slice; the dataset lets go of its bytes."""
    syntax = ds.file_meta.get("TransferSyntaxUID", None)
    _check_frames(path, ds, syntax)
    try:
        pixels = pydicom.pixels.pixel_array(ds)
    except Exception as exc:  # pydicom raises many types; all mean "cannot decode"
        name = getattr(syntax, "name", None) or "unknown"
        reason = " ".join(str(exc).split())  # pydicom lists the missing decoder plugins one per line
        raise InputError(path, f"cannot decode pixel data (transfer syntax {name}, {syntax}): {reason}") from None
    del ds.PixelData  # keep one copy of the series in memory, not two
    if pixels.shape != (ds.Rows, ds.Columns):
        raise InputError(path, f"pixel data has shape {pixels.shape}, expected ({ds.Rows}, {ds.Columns})")
    return pixels


def _store_slice_hu(path: pathlib.Path, ds: pydicom.Dataset, out: np.ndarray) -> tuple[float, float]:
    """Writes one slice in HU into ``out`` (int16 or float32), padding set to air.

    Returns the HU range before any clipping to ``out``'s type.
    """
    pixels = _decode(path, ds)
    slope = 1.0 if ds.get("RescaleSlope") in (None, "") else float(ds.RescaleSlope)  # 0 refused by _check_slice
    intercept = 0.0 if ds.get("RescaleIntercept") in (None, "") else float(ds.RescaleIntercept)
    low, high = float(pixels.min()) * slope + intercept, float(pixels.max()) * slope + intercept
    low, high = min(low, high), max(low, high)
    limits = np.iinfo(out.dtype) if out.dtype.kind == "i" else np.finfo(out.dtype)
    if slope == 1 and intercept.is_integer() and limits.min <= low and high <= limits.max:
        np.add(pixels, np.int32(intercept), out=out, casting="unsafe")  # one pass, exact
    else:
        hu = pixels.astype(np.float32) * slope + intercept
        if out.dtype.kind == "i":
            hu = np.clip(np.rint(hu), limits.min, limits.max)
        out[:] = hu
    padding = _padding_mask(ds, pixels)
    if padding is not None:
        out[padding] = AIR_HU
    return low, high


def _read_stack(files, dtype) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sorted slices as one [N, rows, cols] array of HU, allocated once."""
    _, first = files[0]
    stack = np.empty((len(files), first.Rows, first.Columns), dtype)
    low, high = np.inf, -np.inf
    for k, (path, ds) in enumerate(files):
        slice_low, slice_high = _store_slice_hu(path, ds, stack[k])
        low, high = min(low, slice_low), max(high, slice_high)
    warnings = below_air_to_air(stack)
    if dtype == np.int16 and high > 32767:
        warnings += (f"HU range {low:.0f}..{high:.0f} clipped to int16",)
    return stack, warnings


def _padding_mask(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray | None:
    """Pixels marked as padding (outside the field of view), or None."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return pixels == value
    low, high = sorted((int(value), int(limit)))
    return (pixels >= low) & (pixels <= high)


def _acquisition(ds: pydicom.Dataset) -> AcquisitionInfo:
    def text(key):
        value = ds.get(key)
        if value is None or value == "":
            return None
        return "\\".join(str(v) for v in value) if isinstance(value, pydicom.multival.MultiValue) else str(value)

    def number(key):
        value = ds.get(key)
        try:
            return float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    series_number = number("SeriesNumber")
    return AcquisitionInfo(
        source_format="DICOM",
        manufacturer=text("Manufacturer"),
        model=text("ManufacturerModelName"),
        kernel=text("ConvolutionKernel"),
        slice_thickness_mm=number("SliceThickness"),
        kvp=number("KVP"),
        series_number=None if series_number is None else int(series_number),
    )


def _patient_key(ds: pydicom.Dataset, series_uid: str, salt) -> str:
    """Pseudonym of the patient: PatientID, else name and birth date, else the study."""
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        return pseudonym("pat", "id:" + patient_id, salt)
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name:
        return pseudonym("pat", f"name:{name}|{birth}", salt)
    study = str(ds.get("StudyInstanceUID", "") or series_uid)
    return pseudonym("pat", "study:" + study, salt)


@dataclasses.dataclass(frozen=True)
class SeriesRef:
    """One DICOM series found on disk: its files and pseudonymous identity."""

    files: tuple[pathlib.Path, ...]
    volume_id: str
    patient_key: str
    rows: int
    columns: int

    @property
    def estimated_voxels(self) -> int:
        return self.rows * self.columns * len(self.files)


def find_series(root: pathlib.Path, salt: str | None = None, on_error=None) -> list[SeriesRef]:
    """Every CT image series under ``root`` (headers only), sorted by volume id.

    With ``on_error``, a file that cannot be read is reported as
    ``on_error(error, volume_id)``: a file in a folder that holds a series
    spoils that series (it may be one of its slices: a truncated first or last
    slice leaves no gap), which is reported under the series' volume id and
    left out; any other under ``volume_id=None``.
    """
    problems: list[tuple[InputError, str]] = []
    found = scan_series(root, None if on_error is None else lambda exc, where: problems.append((exc, where)))
    refs = []
    for uid, series in found.items():
        first = series.first
        volume_id = pseudonym("vol", uid, salt)
        folders = {path.parent for path, _ in series.files}
        spoiled = [(e, where) for e, where in problems if where and pathlib.Path(e.source).parent in folders]
        if spoiled:
            exc, where = spoiled[0]
            on_error(InputError(exc.source, f"{where} of the series' folder: {exc.problem}"), volume_id)
            continue
        refs.append(
            SeriesRef(
                files=tuple(path for path, _ in series.files),
                volume_id=volume_id,
                patient_key=_patient_key(first, uid, salt),
                rows=int(first.get("Rows", 0) or 0),
                columns=int(first.get("Columns", 0) or 0),
            )
        )
    series_folders = {path.parent for series in found.values() for path, _ in series.files}
    for exc, where in problems:
        if where is None:  # a folder that could not be read
            on_error(exc, None)
        elif pathlib.Path(exc.source).parent not in series_folders:
            on_error(InputError(exc.source, f"{where} of its folder: {exc.problem}"), None)
    return sorted(refs, key=lambda r: r.volume_id)


def read_dicom_series(
    folder: pathlib.Path,
    series: str | None = None,
    salt: str | None = None,
    slice_spacing_mm: float | None = None,
) -> Volume:
    """Reads one CT series under ``folder`` into a canonical Volume.

    Args:
      folder: folder searched recursively for DICOM files.
      series: SeriesNumber, SeriesInstanceUID or pseudonymous volume id of the
        series to read; required when the folder holds several.
      salt: salt of the pseudonymous ids (see cgan_ct.io.pseudonym).
      slice_spacing_mm: spacing of the regular grid used when the series is
        tilted or unevenly spaced (default: its finest typical gap).

    Raises:
      InputError: naming the file or folder and the problem.
    """
    chosen = _choose_series(folder, scan_series(folder), series, salt)
    return _read_chosen(chosen, folder, salt, slice_spacing_mm)


def read_series_ref(ref: SeriesRef, salt: str | None = None, slice_spacing_mm: float | None = None) -> Volume:
    """Reads a series that find_series found (its headers are read again)."""
    series = _Series("", [(path, _read_header(path)) for path in ref.files])
    uids = {_series_key(ds, path) for path, ds in series.files}
    if len(uids) != 1:
        raise InputError(ref.files[0].parent, "the series' files changed since they were found")
    series.uid = uids.pop()
    return _read_chosen(series, ref.files[0].parent, salt, slice_spacing_mm)


def _read_chosen(chosen: _Series, folder: pathlib.Path, salt, slice_spacing_mm) -> Volume:
    _check_consistent(chosen)
    first = chosen.first
    geometry = slice_geometry.make_geometry(
        np.asarray(first.ImageOrientationPatient, float),
        np.asarray(first.PixelSpacing, float),
        np.asarray([ds.ImagePositionPatient for _, ds in chosen.files], float),
    )
    files = [chosen.files[i] for i in geometry.order]
    numbers = [ds.get("InstanceNumber") for _, ds in files]
    problem = slice_geometry.find_stack_problem(geometry, [None if n is None else int(n) for n in numbers])
    if problem:
        raise InputError(folder, problem)
    hu, origin, direction, spacing, warnings = _assemble(files, geometry, slice_spacing_mm)
    volume = Volume(
        hu=hu,
        spacing_mm=spacing,
        origin_mm=tuple(float(v) for v in origin),
        direction=direction,
        volume_id=pseudonym("vol", chosen.uid, salt),
        patient_key=_patient_key(first, chosen.uid, salt),
        acquisition=_acquisition(first),
        warnings=warnings,
    )
    return to_canonical(volume)


def _assemble(files, geometry: slice_geometry.StackGeometry, slice_spacing_mm):
    """Reads the sorted slices: stacked as they are, or regularized if tilted / uneven.

    Returns (hu int16 [z, y, x], origin_mm, direction, spacing_mm, warnings).
    """
    dy, dx = geometry.pixel_spacing_mm
    direction = np.stack([geometry.normal, geometry.col_dir, geometry.row_dir], axis=1)
    gaps = geometry.gaps_mm
    if not geometry.is_tilted and not geometry.is_uneven:
        # A single slice has no gap; its thickness (or 1 mm) stands in.
        first = files[0][1]
        dz = float(np.mean(gaps)) if len(gaps) else float(first.get("SliceThickness", 0) or 0) or 1.0
        hu, warnings = _read_stack(files, np.int16)
        return hu, geometry.positions_mm[0], direction, (dz, dy, dx), warnings
    warnings = []
    if geometry.is_tilted:
        warnings.append(f"gantry tilt of {geometry.tilt_deg:.1f} degrees corrected by resampling")
    if geometry.is_uneven:
        warnings.append(f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm) resampled to a regular grid")
    dz = float(slice_spacing_mm) if slice_spacing_mm else geometry.default_slice_spacing_mm()
    stack, stack_warnings = _read_stack(files, np.float32)
    warnings += stack_warnings
    volume, origin, direction = slice_geometry.regularize(stack, geometry, dz, AIR_HU, files[0][0].parent)
    del stack
    hu, clip_warnings = hu_to_int16(volume, str(files[0][0].parent))
    return hu, origin, direction, (dz, dy, dx), tuple(warnings) + clip_warnings
