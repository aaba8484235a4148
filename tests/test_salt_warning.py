"""The commands that read patients' scans warn when pseudonyms would be keyed by the public default salt;
--bm3d without the bm3d package is one line before any work."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cgan_ct.inference import evaluation
from cgan_ct.inference.baselines import BM3D_MISSING, check_available
from tests.conftest import REPO

WARNING = "CGAN_CT_SALT is not set"


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "scan.nii.gz"
    image = sitk.GetImageFromArray(np.full((8, 16, 16), 40, np.int16))
    sitk.WriteImage(image, str(path))
    return path


def _info(path, env, *flags):
    command = [sys.executable, "-m", "pipelines.info", str(path), *flags]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_reading_patients_without_a_key_warns_once(small_volume):
    env = {k: v for k, v in os.environ.items() if k != "CGAN_CT_SALT"}
    result = _info(small_volume, env)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if WARNING in line]
    assert warnings == [f"cgan-ct-info: warning: {warnings[0].split(': warning: ')[1]}"]
    assert "public default" in warnings[0]


def test_a_key_in_the_environment_or_a_flag_silences_it(small_volume):
    env = {k: v for k, v in os.environ.items() if k != "CGAN_CT_SALT"}
    assert WARNING not in _info(small_volume, env, "--salt", "my own secret").stderr
    assert WARNING not in _info(small_volume, {**env, "CGAN_CT_SALT": "my own secret"}).stderr


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
