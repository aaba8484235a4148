"""The commands that read patients' scans key their pseudonyms with the user's secret: made once, with one
line saying where; --salt_file is the key where given; a bad key is one error line before any work.
--bm3d without the bm3d package is one line before any work."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cgan_ct import read_volume
from cgan_ct.inference import evaluation
from cgan_ct.inference.baselines import BM3D_MISSING, check_available
from tests.conftest import REPO

NOTICE = "made a secret key for the pseudonyms in"


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "scan.nii.gz"
    image = sitk.GetImageFromArray(np.full((8, 16, 16), 40, np.int16))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def new_user(tmp_path):
    """The environment of a user without $CGAN_CT_SALT whose config folder is in tmp_path (not ~/.config)."""
    env = {k: v for k, v in os.environ.items() if k != "CGAN_CT_SALT"}
    return {**env, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}


def _info(path, env, *flags):
    command = [sys.executable, "-m", "pipelines.info", str(path), *map(str, flags)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def _patient_key(result) -> str:
    assert result.returncode == 0, result.stderr[-2000:]
    return re.search(r"patient key (pat-[0-9a-f]+)", result.stdout).group(1)


def test_the_first_command_makes_the_secret_and_says_so_once(small_volume, new_user, tmp_path):
    secret = tmp_path / "config" / "cgan-ct" / "salt"
    first = _info(small_volume, new_user)
    notices = [line for line in first.stderr.splitlines() if NOTICE in line]
    assert notices == [f"cgan-ct-info: {NOTICE} {secret} (readable by you only); {notices[0].split('; ', 1)[1]}"]
    assert "back it up" in notices[0] and "CGAN_CT_SALT" in notices[0]
    again = _info(small_volume, new_user)
    assert NOTICE not in again.stderr and _patient_key(again) == _patient_key(first)
    assert _patient_key(first) == read_volume(small_volume, salt=secret.read_text().strip()).patient_key


def test_salt_file_is_the_key_before_the_environment(small_volume, new_user, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("my own secret\n")
    key_file.chmod(0o600)
    result = _info(small_volume, {**new_user, "CGAN_CT_SALT": "another"}, "--salt_file", key_file)
    assert _patient_key(result) == read_volume(small_volume, salt="my own secret").patient_key
    assert NOTICE not in result.stderr and not (tmp_path / "config").exists()


@pytest.mark.parametrize(
    ("env", "flags", "error"),
    [
        ({"CGAN_CT_SALT": ""}, (), "CGAN_CT_SALT is set but empty; set it to a secret of your own"),
        ({}, ("--salt_file", "{key}"), "{key}: the pseudonym key file is open to other users (mode 0644); chmod"),
        ({}, ("--salt_file=",), "--salt_file is empty"),
    ],
)
def test_a_bad_key_is_one_error_line(small_volume, new_user, tmp_path, env, flags, error):
    key_file = tmp_path / "key"
    key_file.write_text("readable by all")
    key_file.chmod(0o644)
    result = _info(small_volume, {**new_user, **env}, *(f.format(key=key_file) for f in flags))
    assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cgan-ct-info: error: {error.format(key=key_file)}")
    assert not (tmp_path / "config").exists()


def test_a_key_on_the_command_line_is_no_option(small_volume, new_user):
    result = _info(small_volume, new_user, "--salt", "my own secret")
    assert result.returncode == 1 and "Unknown command line flag 'salt'" in result.stderr


def test_bm3d_missing_is_one_clear_error_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bm3d" else real(name, *a))
    out = tmp_path / "report"
    with pytest.raises(ValueError, match=r"pip install 'cgan-ct\[bm3d\]'"):
        evaluation.evaluate_inputs([tmp_path / "no-such-scan"], {}, out, skip_baselines=())
    assert not out.exists()
    check_available()  # skipped by default: nothing needed


def test_the_evaluate_command_says_so_in_one_line(tmp_path, small_volume):
    code = (
        "import sys; sys.modules['bm3d'] = None\n"  # as where the package is not installed
        "from pipelines.evaluate import run\n"
        f"sys.argv = ['cgan-ct-evaluate', '--model', 'pretrained:denoise', '--input', {str(small_volume)!r},"
        f" '--output_dir', {str(tmp_path / 'r')!r}, '--bm3d']\n"
        "run()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"cgan-ct-evaluate: error: {BM3D_MISSING}"
    assert not (tmp_path / "r").exists()
