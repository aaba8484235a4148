"""A job's outputs in one folder: checked before any compute, each moved into place whole, resumed after a kill.

cgan-ct-infer writes several outputs (condition and generated, as NIfTI and/or a DICOM series) into one
folder. So that neither a rerun nor a kill -9 leaves a folder that needs cleaning by hand:

- ``OutputSet.plan`` runs before the job loads a model or reads a scan. It sorts the outputs already in
  the folder into those an earlier run of the *same request* left there (kept: the record ``<job>.json``
  lists them under the request's fingerprint) and the others (foreign: the job refuses them, or replaces
  them when asked to); when all are kept there is nothing left to do.
- The job writes into a hidden staging folder ``.tmp-<job>-<pid>-<8 hex>/`` beside the outputs, and
  ``place`` moves each output from there into place once it is complete, then records it: nothing
  half-written ever carries a final name. What an output replaces is moved into the staging folder and
  removed with it.
- A staging folder whose process is gone (kill -9, a power cut) is removed by the next ``plan``; so are
  the hidden series folders that versions before the staging folder left beside a DICOM output
  (``.<name>.tmp-*``, ``.<name>.old-*``). One whose process still runs is another job writing into the
  same folder: refused.

The record holds a keyed fingerprint of the request (``cgan_ct.io.fingerprint.request_key``), never its
paths, which can name a patient.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence

from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import process_alive
from cgan_ct.io.json_files import read_json_object, write_json_atomic

RECORD_VERSION = 1
_STAGING = re.compile(r"^\.tmp-(?P<job>[a-z0-9_-]+?)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _process_alive(pid: int) -> bool:
    # this process has not staged yet: a folder with its pid is stale
    return pid != os.getpid() and process_alive(pid)
    return True


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class OutputSet:
    """The outputs ``names`` (files or folders) a job run writes into ``folder``, for the request ``request``.

    Use: ``plan()`` before any compute; then, inside ``with outputs.staging() as tmp:``, write each output to
    ``tmp / name`` and call ``place(name)``.
    """

    def __init__(self, folder: str | os.PathLike, job: str, names: Sequence[str], request: str):
        self.folder = pathlib.Path(folder)
        self.job, self.names, self.request = job, tuple(names), request
        self.record_path = self.folder / f"{job}.json"
        self.kept: tuple[str, ...] = ()
        self.foreign: tuple[str, ...] = ()
        self._staging: pathlib.Path | None = None
        self._placed: list[str] | None = None
        self._keep: list[str] = []

    def plan(self) -> tuple[str, ...]:
        """Removes stale staging, sets ``kept`` and ``foreign``; returns the outputs missing from the folder.

        Raises InputError when ``folder`` is not a folder or another running job is writing into it.
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(self.folder, "exists and is not a folder")
        if not self.folder.is_dir():
            return self.names
        self._remove_stale()
        present = [n for n in self.names if os.path.lexists(self.folder / n)]
        recorded = self._recorded()
        self.kept = tuple(n for n in present if n in recorded)
        self.foreign = tuple(n for n in present if n not in recorded)
        return tuple(n for n in self.names if n not in present)

    def _recorded(self) -> list[str]:
        """The outputs the record lists for this request ([] for no record, another request or a bad record)."""
        if not self.record_path.is_file():
            return []
        try:
            data = read_json_object(self.record_path, f"{self.job} record")
        except InputError:
            return []
        outputs = data.get("outputs")
        return list(outputs) if data.get("request") == self.request and isinstance(outputs, list) else []

    def _remove_stale(self) -> None:
        legacy = tuple(f".{name}.{kind}-" for name in self.names for kind in ("tmp", "old"))
        for entry in sorted(self.folder.iterdir()):
            match = _STAGING.match(entry.name)
            if match and match["job"] == self.job:
                pid = int(match["pid"])
                if _process_alive(pid):
                    raise InputError(
                        self.folder,
                        f"another cgan-ct-{self.job} (pid {pid}) is writing into this folder ({entry.name}); "
                        "wait for it to end or choose another folder",
                    )
                _remove(entry)
            elif entry.name.startswith(legacy):
                _remove(entry)

    @contextlib.contextmanager
    def staging(self, keep: Iterable[str] = ()) -> Iterator[pathlib.Path]:
        """A fresh staging folder of this process (``folder`` made if absent), removed on leaving, error or not.

        ``keep``: the outputs of an earlier run of this request that stay (``kept``, or none when replacing).
        The record is rewritten, before the first output moves, to list only them.
        """
        made = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = self.folder / f".tmp-{self.job}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
        except OSError as exc:
            raise InputError(
                self.folder, f"cannot write in this folder ({exc.strerror or type(exc).__name__})"
            ) from None
        self._staging, self._placed, self._keep = staging, None, list(keep)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self._staging = None
            if made and not any(self.folder.iterdir()):
                self.folder.rmdir()

    def place(self, name: str) -> pathlib.Path:
        """Moves the complete ``name`` from the staging folder into place, replacing what is there; records it."""
        if self._staging is None or name not in self.names:
            raise ValueError(f"place({name!r}) outside staging() or not one of {self.names}")
        if self._placed is None:  # first move: the record stops claiming anything this run replaces
            self._placed = [n for n in self._keep if n != name]
            self._write_record()
        target = self.folder / name
        if os.path.lexists(target):
            os.rename(target, self._staging / f".replaced-{uuid.uuid4().hex[:8]}")
        os.rename(self._staging / name, target)
        self._placed.append(name)
        self._write_record()
        return target

    def _write_record(self) -> None:
        data = {"format_version": RECORD_VERSION, "request": self.request, "outputs": self._placed}
        staged = write_json_atomic(self._staging / self.record_path.name, data)  # its temporary stays in staging
        os.replace(staged, self.record_path)
