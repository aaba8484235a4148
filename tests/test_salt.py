"""Pseudonyms are keyed by a secret of the user's: never by a public key written in the source, never by
an empty one. Every test here runs as a user with an empty config folder inside tmp_path."""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import stat
import subprocess
import sys
import warnings

import pytest

from cgan_ct import read_volume
from cgan_ct.errors import InputError
from cgan_ct.io.pseudonym import SecretCreatedWarning, pseudonym, resolve_salt, secret_path
from tests.conftest import REPO
from tests.dicom_factory import random_hu, write_ct_series

# The key every install used before (issue 30), public in the source code: the attack below shows why.
OLD_PUBLIC_SALT = "cgan-ct-public-default-salt"
PLANTED_MRN = "40718265"  # a hospital record number: 8 digits


@pytest.fixture
def secret_file(tmp_path, monkeypatch) -> pathlib.Path:
    """Where a user without $CGAN_CT_SALT gets the secret; the config folder is in tmp_path, never ~/.config."""
    monkeypatch.delenv("CGAN_CT_SALT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = secret_path()
    assert path == tmp_path / "config" / "cgan-ct" / "salt"
    return path


def _dictionary_attack(patient_key: str, guessed_key: str, around: int, count: int = 100_000) -> str | None:
    """The record number whose patient pseudonym under ``guessed_key`` is ``patient_key``, trying ``count``
    8-digit numbers around ``around`` as an attacker would (all 10^8 take minutes); None if none matches."""
    key = guessed_key.encode()
    digest = patient_key.removeprefix("pat-")
    for n in range(around - count // 2, around + count // 2):
        mrn = f"{n:08d}"
        if hmac.new(key, f"pat\x00id:{mrn}".encode(), hashlib.sha256).hexdigest()[: len(digest)] == digest:
            return mrn
    return None


def test_a_planted_mrn_is_found_under_the_old_public_salt_and_not_under_the_new_default(tmp_path, secret_file):
    write_ct_series(tmp_path / "scan", random_hu((2, 8, 8)), tags={"PatientID": PLANTED_MRN})
    around = int(PLANTED_MRN) + 12_345  # the attacker knows the range of record numbers, not the number

    old_key = read_volume(tmp_path / "scan", salt=OLD_PUBLIC_SALT).patient_key
    assert _dictionary_attack(old_key, OLD_PUBLIC_SALT, around) == PLANTED_MRN

    with pytest.warns(SecretCreatedWarning):
        new_key = read_volume(tmp_path / "scan").patient_key  # today's default: the secret made for this user
    for guess in (OLD_PUBLIC_SALT, ""):
        assert _dictionary_attack(new_key, guess, around) is None
    # the same search with the secret finds it: the secret, and only the secret, protects the number
    assert _dictionary_attack(new_key, secret_file.read_text().strip(), around) == PLANTED_MRN


def test_the_secret_is_made_once_private_and_stable(secret_file):
    with pytest.warns(SecretCreatedWarning, match=str(secret_file)) as made:
        first = pseudonym("pat", "id:12345678")
    assert len(made) == 1 and "back it up" in str(made[0].message)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    secret = secret_file.read_text()
    assert len(secret.strip()) == 64 and int(secret, 16)  # 32 random bytes, hex
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later uses are silent
        assert pseudonym("pat", "id:12345678") == first
        assert resolve_salt() == secret.strip()
    assert secret_file.read_text() == secret
    assert [p.name for p in secret_file.parent.iterdir()] == ["salt"]  # no temporary left


def test_processes_starting_at_once_share_one_secret_and_one_notice(secret_file):
    code = "from cgan_ct.io.pseudonym import pseudonym; print(pseudonym('pat', 'id:12345678'))"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), results
    assert len({out for out, _ in results}) == 1
    notices = [err for _, err in results if err]
    assert len(notices) == 1 and "SecretCreatedWarning" in notices[0] and str(secret_file) in notices[0]
    again = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (again.stdout, again.stderr) == (results[0][0], "")


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_key_is_refused(secret_file, monkeypatch, value):
    monkeypatch.setenv("CGAN_CT_SALT", value)
    with pytest.raises(InputError, match="CGAN_CT_SALT is set but empty"):
        pseudonym("pat", "id:1")
    monkeypatch.delenv("CGAN_CT_SALT")
    with pytest.raises(InputError, match="key is empty"):
        pseudonym("pat", "id:1", salt=value)
    assert not secret_file.exists()


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        ("", 0o600, "is empty"),
        ("\n  \n", 0o600, "is empty"),
        ("a secret", 0o644, r"open to other users \(mode 0644\); chmod 600"),
        ("a secret", 0o640, r"open to other users \(mode 0640\)"),
        ("a secret", 0o000, "cannot be read"),
    ],
)
def test_a_bad_secret_file_is_refused_with_its_path_and_never_replaced(secret_file, text, mode, problem):
    if mode == 0o000 and os.geteuid() == 0:
        pytest.skip("root reads any file")
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text(text)
    secret_file.chmod(mode)
    with pytest.raises(InputError, match=problem) as refused:
        pseudonym("pat", "id:1")
    assert str(refused.value).startswith(f"{secret_file}: ") and "\n" not in str(refused.value)
    secret_file.chmod(0o600)
    assert secret_file.read_text() == text  # not made anew: that would change every pseudonym


def test_the_key_comes_from_the_argument_then_the_environment_then_the_secret(secret_file, monkeypatch, tmp_path):
    with pytest.warns(SecretCreatedWarning):
        assert resolve_salt() == secret_file.read_text().strip()
    monkeypatch.setenv("CGAN_CT_SALT", "from the environment")
    assert resolve_salt() == "from the environment"
    assert resolve_salt("given") == "given"
    assert pseudonym("pat", "id:1") == pseudonym("pat", "id:1", "from the environment")


def test_no_source_holds_a_public_key_or_a_salt_flag():
    for folder in ("cgan_ct", "pipelines", "tfrecords_tools"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            assert OLD_PUBLIC_SALT not in text, path
            assert 'DEFINE_string("salt"' not in text, f"{path}: a key on the command line shows in ps"
