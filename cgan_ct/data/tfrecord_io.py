"""TFRecord files written and read without TensorFlow, atomically.

The format: for each record, uint64 length, uint32 masked CRC-32C of the
length, the data, uint32 masked CRC-32C of the data (all little-endian).
Writing it here keeps the conversion workers free of TensorFlow, and lets the
writer checksum the whole shard as it goes. The shard checksum is CRC-32C of
the file (hex), as cloud object stores use: it detects corrupted transfers at
~10 GB/s, where SHA-256 ran at 1.7 GB/s and cost 11 % of a conversion.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import struct
from collections.abc import Iterator

import google_crc32c

from cgan_ct.io.atomic_files import TMP_PREFIX, discard, failure_reason, move_into_place, sync_checked, write_failed

_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


class ShardWriter:
    """Writes records to ``path`` atomically.

    Records go to a hidden temporary file in the same folder; ``commit()``
    flushes it to disk, checks that it holds every byte written and renames it
    to ``path``. A failed write (a full disk) raises InputError naming
    ``path``. Leaving the ``with`` block without committing (an exception)
    deletes the temporary file, and a process killed midway leaves only the
    temporary file, never a partial file under the final name.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.tmp_path = self.path.with_name(f"{TMP_PREFIX}{self.path.name}.{os.getpid()}")
        self.records = 0
        self.bytes = 0
        self._checksum = google_crc32c.Checksum()
        self._file = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        frame = b"".join((length, _masked_crc(length), record, _masked_crc(record)))
        try:
            self._file.write(frame)
        except OSError as exc:
            raise write_failed(self.path, failure_reason(exc)) from None
        self._checksum.update(frame)
        self.records += 1
        self.bytes += len(frame)

    @property
    def crc32c(self) -> str:
        """CRC-32C of everything written so far, as 8 hex digits."""
        return self._checksum.digest().hex()

    def commit(self) -> None:
        try:
            sync_checked(self._file, self.path)
            self._file.close()
            move_into_place(self.tmp_path, self.path)
        except OSError as exc:
            self.abort()
            raise write_failed(self.path, failure_reason(exc)) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        # Closing flushes what is buffered, which fails again on a full disk: the file goes all the same.
        with contextlib.suppress(OSError):
            self._file.close()
        discard(self.tmp_path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._file.closed:
            self.abort()


def iter_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Yields the records of a TFRecord file, checking every CRC.

    Raises ValueError naming the file on a truncated or corrupt record.
    """
    with open(path, "rb") as f:
        index = 0
        while header := f.read(12):
            if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
                raise ValueError(f"{path}: record {index} has a corrupt or truncated header")
            (length,) = struct.unpack("<Q", header[:8])
            data, crc = f.read(length), f.read(4)
            if len(data) < length or _masked_crc(data) != crc:
                raise ValueError(f"{path}: record {index} is corrupt or truncated")
            yield data
            index += 1


def file_crc32c(path: str | os.PathLike) -> str:
    """CRC-32C of a file's bytes, as 8 hex digits."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            checksum.update(chunk)
    return checksum.digest().hex()
