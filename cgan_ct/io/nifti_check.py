"""What ITK's NIfTI reader lets pass: a short file, a cut gzip stream, NaN voxels, a voxel size of 0.

ITK reads a .nii.gz whose gzip stream ends early as if the missing part were
zeros, reads NaN voxels as 0 and takes a voxel size of 0 (or less) as 1 mm.
``check_nifti`` reads the file once, as a stream, before ITK does: the header
(NIfTI-1 or NIfTI-2, either byte order), the data's length against it, the
gzip stream to its end, and, for floating-point data, which voxels are not
finite.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import struct
import zlib

import numpy as np

from cgan_ct.errors import InputError

_CHUNK = 1 << 22
_HEADER_BYTES = 544
# sizeof_hdr -> (dim type, dim offset, datatype offset, bitpix offset, pixdim type, pixdim offset,
#                vox_offset type, vox_offset offset)
_LAYOUTS = {
    348: ("h", 40, 70, 72, "f", 76, "f", 108),
    540: ("q", 16, 12, 14, "d", 104, "q", 168),
}
_SCALING = {348: ("f", 112), 540: ("d", 176)}  # scl_slope, then scl_inter: (type, offset of scl_slope)
_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


@dataclasses.dataclass(frozen=True)
class NiftiHeader:
    shape_zyx: tuple[int, ...]  # numpy order of the data: the last NIfTI dimension first
    dtype: np.dtype | None  # set for floating-point data only
    vox_offset: int
    needed_bytes: int
    # scl_inter where the standard says no scaling applies (scl_slope 0 or not finite): ITK adds it anyway
    unapplied_intercept: float = 0.0


@dataclasses.dataclass(frozen=True)
class NiftiCheck:
    nonfinite: np.ndarray | None  # bool mask in the array order ITK returns (z, y, x), or None if all finite
    itk_offset: float = 0.0  # what ITK adds to every voxel against the standard: subtract it (scl_slope 0 / NaN)


def parse_header(path: pathlib.Path, head: bytes) -> NiftiHeader:
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size in _LAYOUTS and len(head) >= size:
            dim_t, dim_at, type_at, bitpix_at, pix_t, pix_at, off_t, off_at = _LAYOUTS[size]
            break
    else:
        raise InputError(path, "corrupt NIfTI file: no NIfTI-1 or NIfTI-2 header")
    dims = struct.unpack_from(order + 8 * dim_t, head, dim_at)
    datatype = struct.unpack_from(order + "h", head, type_at)[0]
    bitpix = struct.unpack_from(order + "h", head, bitpix_at)[0]
    pixdim = struct.unpack_from(order + 8 * pix_t, head, pix_at)
    vox_offset = int(struct.unpack_from(order + off_t, head, off_at)[0])
    ndim = dims[0]
    if not 1 <= ndim <= 7 or min(dims[1 : ndim + 1]) < 1 or bitpix <= 0 or vox_offset < 0:
        raise InputError(path, f"corrupt NIfTI header: dimensions {list(dims[: ndim + 1])}, {bitpix} bits a voxel")
    spatial = [float(v) for v in pixdim[1 : min(ndim, 3) + 1]]
    if not all(0 < v < float("inf") for v in spatial):
        raise InputError(path, f"NIfTI voxel size (pixdim) {spatial} is not positive; refusing to guess 1 mm")
    shape = tuple(int(d) for d in dims[1 : ndim + 1])[::-1]
    dtype = np.dtype(order + _FLOAT_TYPES[datatype]) if datatype in _FLOAT_TYPES else None
    needed = vox_offset + int(np.prod(shape, dtype=np.int64)) * bitpix // 8
    scale_t, scale_at = _SCALING[size]
    slope, intercept = struct.unpack_from(order + 2 * scale_t, head, scale_at)
    unapplied = intercept if (slope == 0 or not np.isfinite(slope)) and np.isfinite(intercept) else 0.0
    return NiftiHeader(shape, dtype, vox_offset, needed, float(unapplied))


def _chunks(path: pathlib.Path):
    """The file's content (decompressed for .gz), chunk by chunk, to the end of the stream."""
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
        return
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except EOFError:
        raise InputError(path, "truncated NIfTI file: the gzip stream ends early (an incomplete copy?)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(path, f"corrupt NIfTI file: not a valid gzip stream ({exc})") from None


class _FiniteScan:
    """Marks the non-finite voxels of floating-point data fed to it as consecutive pieces of the content."""

    def __init__(self, header: NiftiHeader):
        self.header = header
        self.size = int(np.prod(header.shape_zyx, dtype=np.int64))
        self.bad: list[np.ndarray] = []  # flat indices of non-finite voxels: nothing sized by the header's claim
        self.done = 0  # voxels checked
        self.carry = b""  # the start of a voxel split between two pieces
        self.end = header.vox_offset + self.size * header.dtype.itemsize

    def mask(self) -> np.ndarray | None:
        """Where the voxels are not finite, shaped (z, y, x); None when all are (call once the length is checked)."""
        if not self.bad:
            return None
        mask = np.zeros(self.size, bool)
        mask[np.concatenate(self.bad)] = True
        return mask.reshape(self.header.shape_zyx)

    def feed(self, piece: bytes, at: int) -> None:
        low, high = max(at, self.header.vox_offset), min(at + len(piece), self.end)
        if low >= high:
            return
        data = self.carry + piece[low - at : high - at]
        whole = len(data) // self.header.dtype.itemsize
        bad = np.flatnonzero(~np.isfinite(np.frombuffer(data, self.header.dtype, count=whole)))
        if bad.size:
            self.bad.append(bad + self.done)
        self.done += whole
        self.carry = data[whole * self.header.dtype.itemsize :]


def check_nifti(path: pathlib.Path) -> NiftiCheck:
    """Reads ``path`` through once; raises InputError for a short, cut or nonsensical file.

    Returns where floating-point data is NaN or infinite (ITK reads those voxels as 0).
    """
    head, header, scan, total = b"", None, None, 0
    for chunk in _chunks(path):
        at, total = total, total + len(chunk)
        if header is None:
            head += chunk
            if len(head) < _HEADER_BYTES:
                continue
            header = parse_header(path, head)
            scan = _FiniteScan(header) if header.dtype is not None else None
            chunk, at = head, 0
        if scan is not None:
            scan.feed(chunk, at)
    if header is None:  # a file shorter than the header buffer: a small image, or a broken one
        header = parse_header(path, head)
        scan = _FiniteScan(header) if header.dtype is not None else None
        if scan is not None:
            scan.feed(head, 0)
    if total < header.needed_bytes:
        raise InputError(path, f"truncated NIfTI file: its header needs {header.needed_bytes} bytes, it holds {total}")
    return NiftiCheck(None if scan is None else scan.mask(), header.unapplied_intercept)
