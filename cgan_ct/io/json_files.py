"""JSON files that appear complete or not at all (manifests, receipts, run and demo state),
and the checks every typed record (Manifest, RunRecord, ModelInfo, CascadeSpec) makes on reading one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import atomic_file

FORMAT_VERSION_KEY = "format_version"


def write_json_atomic(path, data) -> pathlib.Path:
    """Writes ``data`` as JSON to a hidden temporary file beside ``path``, checks it reached the disk, renames it.

    A failed write (a full disk) raises InputError naming ``path`` and leaves a file there as it was.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(json.dumps(data, indent=1).encode())
    return path


def read_json_object(path, what: str) -> dict:
    """The JSON object in ``path``; InputError naming the file if it is missing, not JSON or not an object."""
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(path, f"no {what} here")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"{what} is not a JSON object")
    return data


def check_format_version(path, data: dict, what: str, supported: int, key: str = FORMAT_VERSION_KEY) -> int:
    """The record's format version (1 where the record predates the field); refuses versions this code cannot read."""
    version = data.get(key, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(path, f"{what} has an invalid {key} {version!r}")
    if version > supported:
        raise InputError(
            path, f"{what} has {key} {version}; this cgan-ct reads up to {supported}: upgrade cgan-ct to read it"
        )
    return version


def record_fields(cls, data: dict, path, what: str) -> dict:
    """``data``'s values for the fields of dataclass ``cls``; InputError naming a missing field."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise InputError(path, f"{what} lacks {', '.join(missing)}")
    return {name: data[name] for name in fields if name in data}


def versioned_fields(cls, data: dict, path, what: str, supported: int) -> dict:
    """``record_fields`` of a record with a format version, the version checked and filled in (1 if absent)."""
    version = check_format_version(path, data, what, supported)
    return {**record_fields(cls, data, path, what), FORMAT_VERSION_KEY: version}
