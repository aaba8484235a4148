"""Finding the CT volumes under the inputs of a conversion.

An input is a DICOM folder, a volume file, or a root folder holding any number
of both; every DICOM series and every volume file found is one volume. What
cannot be used is reported as a skipped input with a reason from which file
and folder names have been removed (names often hold patient names).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re

import SimpleITK as sitk

from cgan_ct.errors import InputError
from cgan_ct.io import dicom_reader, folder_walk, image_files
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.sitk_bridge import resample
from cgan_ct.io.volume import Volume
from cgan_ct.io.volume_reader import check_exists


@dataclasses.dataclass(frozen=True)
class VolumeSource:
    """One volume to convert: a DICOM series or a volume file."""

    volume_id: str
    patient_key: str
    estimated_voxels: int
    series: dicom_reader.SeriesRef | None = None
    file: pathlib.Path | None = None
    paired: VolumeSource | None = None  # the same patient's condition series (paired conversion)

    patient: str | None = None  # a volume file's patient id from a --patients table (never written out)

    def read(self, salt: str | None, spacing_mm=None, nonfinite: str = "error") -> Volume:
        if self.series is not None:
            volume = dicom_reader.read_series_ref(self.series, salt=salt)
        else:
            volume = image_files.read_volume_file(self.file, salt=salt, patient=self.patient, nonfinite=nonfinite)
        if spacing_mm is not None and tuple(volume.spacing_mm) != tuple(spacing_mm):
            volume = resample(volume, spacing_mm, source=self.location)
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


_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")  # DICOM UIDs (SOP instance, series, study): dotted digits
_FILE_NAME = re.compile(r"[\w.+-]+\.(dcm|dicom|ima|img|nii|nii\.gz|gz|mha|mhd|nrrd|nhdr|raw)\b", re.IGNORECASE)


def redact(text: str, path: str | os.PathLike | None) -> str:
    """``text`` with every file and folder name of ``path``, and anything that
    looks like a file name, replaced by '<name>', and DICOM UIDs by '<uid>'."""
    text = _UID.sub("<uid>", _FILE_NAME.sub("<name>", text))
    if path is None:
        return text
    parts = sorted((p for p in pathlib.Path(path).parts if len(p) >= 3 and p != os.sep), key=len, reverse=True)
    for part in parts:
        text = text.replace(part, "<name>")
    return text


def skipped_from_error(error: InputError, salt: str | None, source_id: str | None = None) -> SkippedInput:
    path = error.source or ""
    problem = redact(error.problem, path)
    return SkippedInput(source_id or pseudonym("src", path, salt), problem, path)


def read_patients_table(path: str | os.PathLike) -> dict[str, str]:
    """A CSV of ``file,patient`` rows (a header row ``file,patient`` is allowed) -> {resolved file path: patient id}.

    Relative file paths are taken from the table's folder. The patient ids are
    only hashed into patient keys (so two files of one patient fall into the
    same split); they are never written out.
    """
    path = pathlib.Path(path)
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise InputError(path, f"cannot read the patients table ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a CSV patients table ({exc})") from None
    if rows and [cell.strip().lower() for cell in rows[0]] == ["file", "patient"]:
        rows = rows[1:]
    table = {}
    for number, row in enumerate(rows, 1):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(path, f"data row {number} is not 'file,patient' ({len(row)} fields)")
        file = pathlib.Path(row[0].strip())
        file = (file if file.is_absolute() else path.parent / file).resolve()
        if table.setdefault(str(file), row[1].strip()) != row[1].strip():
            raise InputError(path, f"data row {number}: the file is listed twice, for two patients")
    if not table:
        raise InputError(path, "the patients table has no rows")
    return table


def _file_source(path: pathlib.Path, salt: str | None, patients: dict[str, str] | None) -> VolumeSource:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(path, "cannot read the volume file's header") from None
    digest = image_files.content_digest(path)
    size = reader.GetSize()
    voxels = int(size[0]) * int(size[1]) * int(size[2] if len(size) > 2 else 1)
    patient = (patients or {}).get(str(path.resolve()))
    return VolumeSource(
        volume_id=pseudonym("vol", "file:" + digest, salt),
        patient_key=image_files.file_patient_key(digest, patient, salt),
        estimated_voxels=voxels,
        file=path,
        patient=patient,
    )


def _volume_files_under(root: pathlib.Path, on_error) -> list[pathlib.Path]:
    found = []
    for folder, names in folder_walk.walk(root, on_error):
        found += [folder / n for n in names if image_files.volume_format(n)]
    return found


def discover(
    inputs, salt: str | None = None, patients: dict[str, str] | None = None
) -> tuple[list[VolumeSource], list[SkippedInput]]:
    """Every volume under ``inputs`` (paths, or one path), sorted by volume id, and what was skipped.

    The same volume given twice (e.g. a folder and its parent) counts once.
    ``patients`` (read_patients_table) gives volume files their patient.
    """
    if isinstance(inputs, (str, os.PathLike)):  # one path, not its characters ("/" would walk the disk)
        inputs = [inputs]
    sources: dict[str, VolumeSource] = {}
    skipped: list[SkippedInput] = []
    for item in map(pathlib.Path, inputs):
        try:
            check_exists(item)
        except InputError as exc:
            skipped.append(skipped_from_error(exc, salt))
            continue
        before = (len(sources), len(skipped))
        # an unreadable folder is listed once, by the DICOM search below, which walks the same folders
        files = _volume_files_under(item, lambda exc: None) if item.is_dir() else [item]
        for path in files:
            try:
                source = _file_source(path, salt, patients)
                sources.setdefault(source.volume_id, source)
            except InputError as exc:
                skipped.append(skipped_from_error(exc, salt))
        if item.is_dir():
            on_error = lambda exc, volume_id: skipped.append(skipped_from_error(exc, salt, volume_id))  # noqa: E731
            for ref in dicom_reader.find_series(item, salt, on_error=on_error):
                source = VolumeSource(ref.volume_id, ref.patient_key, ref.estimated_voxels, series=ref)
                sources.setdefault(ref.volume_id, source)
        elif image_files.volume_format(item) is None:
            skipped.append(skipped_from_error(InputError(item, "not a folder or a volume file"), salt))
        if (len(sources), len(skipped)) == before:
            skipped.append(skipped_from_error(InputError(item, "no DICOM series or volume file found"), salt))
    return sorted(sources.values(), key=lambda s: s.volume_id), skipped
