"""Issue 30 item 3: linked patient folders are converted, unreadable ones are listed as skipped, links never loop."""

from __future__ import annotations

import os

import pytest

from cgan_ct.errors import InputError
from cgan_ct.io import folder_walk
from cgan_ct.io.sources import discover
from tests.dicom_factory import random_hu, write_ct_series

SHAPE = (4, 6, 7)


@pytest.fixture
def archive(tmp_path):
    """root/ holds patient A (a folder), patient B (a link to a folder elsewhere), patient C (a folder that
    the test makes unreadable) and a link back to root itself."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    write_ct_series(root / "A", random_hu(SHAPE, 1))
    write_ct_series(elsewhere / "B", random_hu(SHAPE, 2))
    write_ct_series(root / "C", random_hu(SHAPE, 3))
    (root / "B").symlink_to(elsewhere / "B", target_is_directory=True)
    (root / "A" / "loop").symlink_to(root, target_is_directory=True)
    return root


def _unreadable(monkeypatch, folder):
    """``folder`` cannot be listed (chmod 000 does not stop root, who runs CI: os.scandir raises instead)."""
    scandir = os.scandir

    def guarded(path="."):
        if os.fspath(path) == os.fspath(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)


def test_linked_folders_are_walked_once_and_an_unreadable_one_is_listed(archive, monkeypatch):
    _unreadable(monkeypatch, archive / "C")
    sources, skipped = discover([archive])
    assert len(sources) == 2  # A and the linked B, each once though root is reachable again through A/loop
    assert {s.series.files[0].parent.name for s in sources} == {"A", "B"}
    assert len(skipped) == 1 and skipped[0].path == str(archive / "C")
    assert "folder cannot be read (Permission denied)" in skipped[0].reason


def test_one_path_given_as_a_string_is_one_input(archive):
    """``discover("folder")`` reads that folder, not each of its characters as a path ("/" is the disk)."""
    expected = [s.volume_id for s in discover([archive])[0]]
    assert [s.volume_id for s in discover(str(archive))[0]] == expected
    assert [s.volume_id for s in discover(archive)[0]] == expected


def test_walk_raises_for_an_unreadable_folder_without_a_handler(archive, monkeypatch):
    _unreadable(monkeypatch, archive / "C")
    with pytest.raises(InputError, match="folder cannot be read"):
        list(folder_walk.walk(archive))
    folders = [folder.name for folder, _ in folder_walk.walk(archive, lambda exc: None)]
    assert folders == ["root", "A", "B"]  # sorted, each real folder once, the loop not followed
