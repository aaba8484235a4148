"""Keyed fingerprints of a job's request: what makes its outputs, so a rerun can tell its own outputs apart."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable

from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.version import __version__


def path_stamp(path: str | os.PathLike) -> list:
    """What changes when a file or folder is rewritten: a file's size and mtime, a folder's entries and their
    mtimes (a new version folder, a replaced checkpoint, a slice added); None where the path does not exist."""
    path = pathlib.Path(path)
    try:
        if not path.is_dir():
            stat = path.stat()
            return [stat.st_size, stat.st_mtime_ns]
        return sorted([entry.name, entry.stat().st_mtime_ns] for entry in os.scandir(path))
    except OSError:
        return None


def request_key(settings: dict, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """A keyed fingerprint of what makes a job's outputs: its ``settings`` (JSON values), the ``inputs`` it
    reads (their absolute paths and ``path_stamp``) and the cgan-ct version. Equal requests, equal keys."""
    stamps = [[os.path.abspath(p), path_stamp(p)] for p in inputs]
    text = json.dumps([settings, stamps, __version__], sort_keys=True, default=str)
    return pseudonym("req", text)
