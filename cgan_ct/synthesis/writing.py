"""Synthetic volumes drawn from a cascade and written to a folder, each complete or not at all; a rerun resumes.

Volume i is drawn from ``seed + i`` and written to ``synthetic_<i>/`` (``volume.nii.gz``
and/or a DICOM series ``dicom/`` marked as synthetic) by way of a hidden
``.tmp-synthetic_<i>/``, emptied first and renamed into place when complete. ``synthesis.json``
records the request (cascade, first seed, slices, formats, whether the cascade's output grain and its
training placements are applied),
written before anything is drawn,
and, per volume in place, its folder, seed and seconds.

Everything is checked before the first volume is drawn. A rerun of the same request resumes
(after a kill, or with a larger count): a ``synthetic_<i>`` it wrote, listed in the record (or
not yet, where the kill came between the rename and the record), that holds exactly the files of
a complete volume, is kept untouched; the others are drawn. A ``synthetic_<i>`` of another request
(no record, or one of another cascade, seed, slice count, formats, grain or placement), or one holding anything
else, is refused, naming it. Hidden temporaries of a killed run (``.tmp-synthetic_*``, the
record's own) are removed. Never prints: the caller reports progress through callbacks.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import time
from collections.abc import Callable, Iterable

from cgan_ct.constants import VOLUME_FORMATS
from cgan_ct.errors import InputError
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.image_files import write_nifti
from cgan_ct.io.json_files import read_json_object, write_json_atomic

FORMATS = VOLUME_FORMATS
RECORD_FILE = "synthesis.json"
NIFTI_FILE = "volume.nii.gz"
DICOM_FOLDER = "dicom"
DICOM_DESCRIPTION = "cgan-ct synthetic CT"
_REQUEST_KEYS = ("cascade_id", "seed", "slices", "formats", "grain", "placement")
_RECORDED_BEFORE = {"grain": False, "placement": False}  # a record written before the key existed: what its volumes had
_VOLUME_FOLDER = re.compile(r"^synthetic_\d+$")
_STALE = re.compile(rf"^\.tmp-(synthetic_\d+|{re.escape(RECORD_FILE)}\..*)$")


@dataclasses.dataclass(frozen=True)
class WrittenVolume:
    """One synthetic volume on disk: its folder, its seed, the seconds drawing it took (writing not counted;
    None where not recorded), and whether an earlier run of the same request had written it (``kept``)."""

    folder: pathlib.Path
    seed: int
    seconds: float | None
    kept: bool = False


def volume_folder(output_dir: str | os.PathLike, index: int) -> pathlib.Path:
    """Where volume ``index`` is written: ``output_dir/synthetic_<index, 3 digits>``."""
    return pathlib.Path(output_dir) / f"synthetic_{index:03d}"


def write_synthetic_volumes(
    cascade,
    output_dir: str | os.PathLike,
    count: int = 1,
    seed: int = 0,
    slices: int | None = None,
    formats: Iterable[str] = FORMATS,
    overlap: float = 0.25,
    batch_size: int = 16,
    progress: Callable[[int], Callable[[int, int, int], None] | None] | None = None,
    on_volume: Callable[[pathlib.Path, float], None] | None = None,
    on_kept: Callable[[pathlib.Path], None] | None = None,
) -> list[WrittenVolume]:
    """Draws ``count`` volumes from ``cascade`` (a ``Cascade``) into ``output_dir``; returns them in order.

    Args:
      cascade: the cascade to draw from (``cgan_ct.synthesis.synthesis.Cascade``).
      output_dir: made if absent. Before any volume is drawn, a ``synthetic_<i>`` folder there that an
        earlier run of this same request left complete is kept; any other one is refused (InputError).
      count: volumes to draw (at least 1); volume i uses ``seed + i``.
      slices: slices per volume (default: the cascade's ``default_slices``).
      formats: ``nifti`` and/or ``dicom``.
      overlap, batch_size: tiling and prediction batch of the depixelation stages.
      progress: called with volume i before it is drawn; may return the
        callback ``(stage_index, blocks_done, blocks_total)`` for that volume.
      on_volume: called with (folder, seconds) once volume i is in place and recorded.
      on_kept: called with the folder of each volume kept from an earlier run.
    """
    formats = {f.strip().lower() for f in formats}
    if not formats or formats - set(FORMATS):
        raise ValueError(f"formats must be nifti and/or dicom, got {sorted(formats)}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = pathlib.Path(output_dir)
    slices = slices or int(cascade.info.default_slices)
    request = {
        "cascade_id": cascade.info.cascade_id,
        "seed": seed,
        "slices": slices,
        "formats": sorted(formats),
        "grain": cascade.grain is not None,
        "placement": cascade.placements is not None,
    }
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    kept = _kept_volumes(out, request, count)
    record = {**request, "volumes": sorted(kept.values(), key=_in_order)}
    write_json_atomic(out / RECORD_FILE, record)
    written = []
    for i in range(count):
        folder = volume_folder(out, i)
        if folder.name in kept:
            written.append(WrittenVolume(folder, seed + i, kept[folder.name]["seconds"], kept=True))
            if on_kept:
                on_kept(folder)
            continue
        seconds = _write_volume(cascade, out, i, request, overlap, batch_size, progress(i) if progress else None)
        record["volumes"].append({"folder": folder.name, "seed": seed + i, "seconds": round(seconds, 2)})
        record["volumes"].sort(key=_in_order)
        write_json_atomic(out / RECORD_FILE, record)
        written.append(WrittenVolume(folder, seed + i, seconds))
        if on_volume:
            on_volume(folder, seconds)
    return written


def _in_order(entry: dict) -> tuple[int, str]:
    return len(entry["folder"]), entry["folder"]  # synthetic_999 before synthetic_1000


def _write_volume(cascade, out: pathlib.Path, i: int, request: dict, overlap, batch_size, report) -> float:
    """Draws volume ``i``, moves it into place through an emptied ``.tmp-synthetic_<i>``; the drawing's seconds."""
    folder = volume_folder(out, i)
    start = time.monotonic()
    volume = cascade.synthesize(request["seed"] + i, request["slices"], overlap, batch_size, report)
    seconds = time.monotonic() - start
    tmp = out / f".tmp-{folder.name}"
    _remove(tmp)  # what a killed run left there must not ride along into the final folder
    tmp.mkdir()
    if "nifti" in request["formats"]:
        write_nifti(volume, tmp / NIFTI_FILE)
    if "dicom" in request["formats"]:
        write_dicom_series(volume, tmp / DICOM_FOLDER, DICOM_DESCRIPTION, synthetic=True)
    tmp.rename(folder)
    return seconds


def _kept_volumes(out: pathlib.Path, request: dict, count: int) -> dict[str, dict]:
    """folder name -> record entry of each volume in place from an earlier run of ``request``.

    Raises InputError naming the first ``synthetic_<i>`` in the way: any, where the record is of another
    request (or absent); one (i < count) that is not exactly a complete volume's files otherwise.
    """
    previous = _read_record(out)
    differs = [key for key in _REQUEST_KEYS if previous.get(key, _RECORDED_BEFORE.get(key)) != request[key]]
    if not differs:
        entries = {
            entry["folder"]: entry
            for entry in previous.get("volumes", [])
            if isinstance(entry, dict) and isinstance(entry.get("folder"), str) and (out / entry["folder"]).is_dir()
        }
    else:  # any volume folder here, in range or not, is another request's: none may pass for this one's
        entries = {}
        folders = sorted(p for p in out.iterdir() if _VOLUME_FOLDER.match(p.name))
        if folders:
            why = f"{RECORD_FILE} differs in {', '.join(differs)}" if previous else f"there is no {RECORD_FILE}"
            raise InputError(
                folders[0],
                f"exists, not from a run with these settings ({why}); choose another output folder or remove it",
            )
    for i in range(count):
        folder = volume_folder(out, i)
        if not os.path.lexists(folder):
            continue
        problem = _incomplete(folder, request["slices"], request["formats"])
        if problem:
            raise InputError(folder, f"exists but is not a complete volume ({problem}); remove it to draw it again")
        entries.setdefault(folder.name, {"folder": folder.name, "seed": request["seed"] + i, "seconds": None})
    return entries


def _incomplete(folder: pathlib.Path, slices: int, formats: Iterable[str]) -> str | None:
    """What keeps ``folder`` from being exactly a complete volume's files, or None."""
    expected = {NIFTI_FILE} if "nifti" in formats else set()
    expected |= {DICOM_FOLDER} if "dicom" in formats else set()
    if not folder.is_dir():
        return "not a folder"
    found = set(os.listdir(folder))
    if found != expected:
        return f"holds {sorted(found)}, expected {sorted(expected)}"
    if NIFTI_FILE in expected and (not (folder / NIFTI_FILE).is_file() or (folder / NIFTI_FILE).stat().st_size == 0):
        return f"{NIFTI_FILE} is empty or not a file"
    if DICOM_FOLDER in expected:
        series = folder / DICOM_FOLDER
        files = set(os.listdir(series)) if series.is_dir() else set()
        if files != {f"IM{k:05d}.dcm" for k in range(1, slices + 1)}:
            return f"{DICOM_FOLDER}/ holds {len(files)} files, not the {slices} slices IM00001.dcm..."
        if any((series / name).stat().st_size == 0 for name in files):
            return f"{DICOM_FOLDER}/ holds an empty file"
    return None


def _read_record(out: pathlib.Path) -> dict:
    """The record of an earlier run ({} for none, or one that cannot be read)."""
    if not (out / RECORD_FILE).is_file():
        return {}
    try:
        return read_json_object(out / RECORD_FILE, "synthesis record")
    except InputError:
        return {}


def _remove_stale(out: pathlib.Path) -> None:
    """Removes the hidden temporaries a killed run leaves (``.tmp-synthetic_<i>``, the record's), by their names."""
    for entry in out.iterdir():
        if _STALE.match(entry.name):
            _remove(entry)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
