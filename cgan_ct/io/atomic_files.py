"""Output files that appear complete or not at all, in the user's file mode.

Every writer (NIfTI, DICOM, TFRecord shards, JSON records, the SavedModel
export) writes under a temporary name beside its output, checks that what
reached the disk is complete, and only then renames it into place. A full disk
is not always an exception: ITK's NIfTI writer prints "wrote only 0 of N bytes"
and returns, so the check is of the file itself. A failed write raises
InputError naming the output, on one line, and leaves nothing under its name
(a file there before stays as it was).

Outputs take the mode ``open`` gives a new file, 0666 less the user's umask,
also those that ``tempfile.mkstemp`` (0600) or another library made.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import BinaryIO

from cgan_ct.errors import InputError

TMP_PREFIX = ".tmp-"


def user_umask() -> int:
    """The process's umask: from /proc where Linux tells it, since reading it with os.umask sets it for every thread."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o077)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode of every output file: 0666 less the user's umask (0644 under umask 022)."""
    return 0o666 & ~user_umask()


def failure_reason(exc: BaseException) -> str:
    """The errno text ("No space left on device", "File too large") of ``exc`` or of what it wraps, else its first line.

    pydicom re-raises a failed write as a new error holding a traceback; the cause keeps the errno.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def write_failed(path: str | os.PathLike, reason: str) -> InputError:
    """The error of a write that did not complete: names the output, which holds nothing new."""
    return InputError(path, f"writing failed ({reason}); nothing was written under this name")


def sync_checked(f: BinaryIO, path: str | os.PathLike) -> None:
    """Flushes the open file ``f`` to disk; InputError naming ``path`` unless it holds every byte written to it."""
    try:
        f.flush()
        os.fsync(f.fileno())
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise write_failed(path, failure_reason(exc)) from None
    if size != f.tell():
        raise write_failed(path, f"{size} of {f.tell()} bytes reached the disk")


def sync_path(path: str | os.PathLike) -> None:
    """Flushes a file another library wrote (and closed) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into_place(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Gives the complete file ``tmp`` the user's file mode and renames it to ``path`` (replacing a file there)."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


def discard(tmp: str | os.PathLike) -> None:
    """Removes a temporary file, if it is there; on the way out of an error, so never raises."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` when the block ends, once it is on disk and complete.

    An error in the block or in writing removes the temporary file; an OSError (a full disk) becomes
    InputError naming ``path``.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            sync_checked(f, path)
        move_into_place(tmp, path)
    except OSError as exc:
        discard(tmp)
        raise write_failed(path, failure_reason(exc)) from None
    except BaseException:
        discard(tmp)
        raise


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, job: str) -> Iterator[None]:
    """Holds ``folder/.cgan-ct-<job>.lock`` (the holder's pid) while the block runs.

    A second ``job`` into the same folder at once is an InputError naming the holder, before it touches
    anything: two conversions into one folder deleted each other's temporaries. A lock left by a process
    that is gone (kill -9) is taken over. The folder must exist.
    """
    path = pathlib.Path(folder) / f".cgan-ct-{job}.lock"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0  # being written, or damaged: look again
            if holder and process_alive(holder):
                raise InputError(
                    folder, f"another cgan-ct {job} (process {holder}) is writing into this folder; wait for it"
                ) from None
            if holder:
                path.unlink(missing_ok=True)  # its holder is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise InputError(path, "could not take the folder's lock (held and released while we looked); run again")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
