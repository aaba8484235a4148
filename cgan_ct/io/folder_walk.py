"""Walking an archive's folders: symbolic links followed once, unreadable folders reported, never dropped.

``os.walk`` alone skips both quietly: it does not follow a linked patient folder (``followlinks``
off) and ignores a folder it cannot list (no ``onerror``), so a conversion of three patients could
give two volumes and exit 0. Here a linked folder is walked like any other, each real folder once
(a link back to an ancestor, or two links to one folder, cannot loop or count a series twice), and
a folder that cannot be listed goes to ``on_error`` as an InputError naming it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator

from cgan_ct.errors import InputError


def walk(root, on_error: Callable[[InputError], None] | None = None) -> Iterator[tuple[pathlib.Path, list[str]]]:
    """(folder, file names) under ``root``, sorted, hidden entries left out, links followed once.

    A folder that cannot be listed raises InputError, or with ``on_error`` is passed to it and skipped.
    """

    def failed(exc: OSError) -> None:
        folder = pathlib.Path(exc.filename) if exc.filename else pathlib.Path(root)
        error = InputError(folder, f"folder cannot be read ({exc.strerror or exc}): its files are left out")
        if on_error is None:
            raise error
        on_error(error)

    seen: set[tuple[int, int]] = set()
    for folder, dirs, names in os.walk(root, onerror=failed, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as exc:
            failed(exc)
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:  # reached again through a link: walked already
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield pathlib.Path(folder), sorted(n for n in names if not n.startswith("."))
