"""Checks on where an output will go, made before anything is written.

A job that writes several outputs checks every location first, so that a bad
second path does not leave the first output written; and a folder that looks
writable but is not (read-only mounts, /proc, permissions) is found by
creating and removing a probe file in it, the only test that tells.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from cgan_ct.errors import InputError


def check_folder_writable(folder: pathlib.Path) -> None:
    """``folder`` exists and a file can be created in it."""
    if not folder.is_dir():
        raise InputError(folder, "output folder does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)
    except OSError as exc:
        raise InputError(folder, f"cannot write in this folder ({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: pathlib.Path, overwrite: bool = False) -> None:
    """``path`` can be written as a new file (or replaced, with ``overwrite``)."""
    if path.is_dir():
        raise InputError(path, "is a folder, not a file")
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; not overwriting")
    check_folder_writable(path.parent)


def check_output_folder(folder: pathlib.Path, overwrite: bool = False) -> None:
    """``folder`` can be written: absent, or an empty folder (or any folder, with ``overwrite``)."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(folder, "folder exists and is not empty; not overwriting")
    if not folder.parent.is_dir():
        raise InputError(folder.parent, "output parent folder does not exist")
    check_folder_writable(folder.parent)
