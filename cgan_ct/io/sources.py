"""Finding the CT volumes under the inputs of a conversion.

An input is a DICOM folder, a volume file, or a root folder holding any number
of both; every DICOM series and every volume file found is one volume. What
cannot be used is reported as a skipped input with a reason from which file
and folder names have been removed (names often hold patient names).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import SimpleITK as sitk

from cgan_ct.errors import VolumeError
from cgan_ct.io import dicom_io, volume_files
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.sitk_bridge import resample
from cgan_ct.io.volume import Volume


@dataclasses.dataclass(frozen=True)
class VolumeSource:
    """One volume to convert: a DICOM series or a volume file."""

    volume_id: str
    patient_key: str
    estimated_voxels: int
    series: dicom_io.SeriesRef | None = None
    file: pathlib.Path | None = None
    paired: VolumeSource | None = None  # the same patient's condition series (paired conversion)

    def read(self, salt: str | None, spacing_mm=None) -> Volume:
        if self.series is not None:
            volume = dicom_io.read_series_ref(self.series, salt=salt)
        else:
            volume = volume_files.read_volume_file(self.file, salt=salt)
        if spacing_mm is not None and tuple(volume.spacing_mm) != tuple(spacing_mm):
            volume = resample(volume, spacing_mm)
        return volume

    @property
    def location(self) -> pathlib.Path:
        """Where it is on disk (for the console only; never written to outputs)."""
        return self.file if self.file is not None else self.series.files[0].parent


@dataclasses.dataclass(frozen=True)
class SkippedInput:
    """An input left out. ``source`` is a pseudonym; ``path`` is for the console only."""

    source: str
    reason: str
    path: str

    def to_json(self) -> dict:
        return {"source": self.source, "reason": self.reason}


_FILE_NAME = re.compile(r"[\w.+-]+\.(dcm|dicom|ima|img|nii|nii\.gz|gz|mha|mhd|nrrd|nhdr|raw)\b", re.IGNORECASE)


def redact(text: str, path: str | os.PathLike | None) -> str:
    """``text`` with every file and folder name of ``path``, and anything that
    looks like a file name, replaced by '<name>'."""
    text = _FILE_NAME.sub("<name>", text)
    if path is None:
        return text
    parts = sorted((p for p in pathlib.Path(path).parts if len(p) >= 3 and p != os.sep), key=len, reverse=True)
    for part in parts:
        text = text.replace(part, "<name>")
    return text


def skipped_from_error(error: VolumeError, salt: str | None, source_id: str | None = None) -> SkippedInput:
    path = error.source or ""
    problem = redact(error.problem, path)
    return SkippedInput(source_id or pseudonym("src", path, salt), problem, path)


def _file_source(path: pathlib.Path, salt: str | None) -> VolumeSource:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise VolumeError(path, "cannot read the volume file's header") from None
    digest = volume_files.content_digest(path)
    size = reader.GetSize()
    voxels = int(size[0]) * int(size[1]) * int(size[2] if len(size) > 2 else 1)
    return VolumeSource(
        volume_id=pseudonym("vol", "file:" + digest, salt),
        patient_key=pseudonym("pat", "file:" + digest, salt),
        estimated_voxels=voxels,
        file=path,
    )


def _volume_files_under(root: pathlib.Path) -> list[pathlib.Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [pathlib.Path(folder, n) for n in sorted(names) if volume_files.volume_format(n)]
    return found


def discover(inputs, salt: str | None = None) -> tuple[list[VolumeSource], list[SkippedInput]]:
    """Every volume under ``inputs``, sorted by volume id, and what was skipped.

    The same volume given twice (e.g. a folder and its parent) counts once.
    """
    sources: dict[str, VolumeSource] = {}
    skipped: list[SkippedInput] = []
    for item in map(pathlib.Path, inputs):
        if not item.exists():
            skipped.append(skipped_from_error(VolumeError(item, "no such file or folder"), salt))
            continue
        before = (len(sources), len(skipped))
        files = _volume_files_under(item) if item.is_dir() else [item]
        for path in files:
            try:
                source = _file_source(path, salt)
                sources.setdefault(source.volume_id, source)
            except VolumeError as exc:
                skipped.append(skipped_from_error(exc, salt))
        if item.is_dir():
            on_error = lambda exc: skipped.append(skipped_from_error(exc, salt))  # noqa: E731
            for ref in dicom_io.find_series(item, salt, on_error=on_error):
                source = VolumeSource(ref.volume_id, ref.patient_key, ref.estimated_voxels, series=ref)
                sources.setdefault(ref.volume_id, source)
        elif volume_files.volume_format(item) is None:
            skipped.append(skipped_from_error(VolumeError(item, "not a folder or a volume file"), salt))
        if (len(sources), len(skipped)) == before:
            skipped.append(skipped_from_error(VolumeError(item, "no DICOM series or volume file found"), salt))
    return sorted(sources.values(), key=lambda s: s.volume_id), skipped
