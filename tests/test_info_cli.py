"""cgan-ct-info: a summary on good input, one line and exit status 2 on bad input."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tests.dicom_factory import random_hu, write_ct_series


def _info(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.info", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def test_summary(tmp_path):
    write_ct_series(tmp_path / "s", random_hu((4, 6, 7)), spacing_z=3.0, tags={"Manufacturer": "ACME"})
    result = _info(tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert "shape (z,y,x) 4 x 6 x 7" in result.stdout
    assert "spacing mm    3, 0.8, 0.8" in result.stdout
    assert "manufacturer ACME" in result.stdout


def test_bad_path_is_one_line_and_status_2(tmp_path):
    result = _info(tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"cgan-ct-info: error: {tmp_path / 'missing'}: no such file or folder"
    ]
    assert "Traceback" not in result.stderr


def test_bad_dicom_is_one_line(tmp_path):
    write_ct_series(tmp_path, random_hu((2, 4, 4)), tags={"Modality": "MR"})
    result = _info(tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not CT" in result.stderr


def test_refuses_to_overwrite_output(tmp_path):
    write_ct_series(tmp_path / "s", random_hu((2, 4, 4)))
    (tmp_path / "out.nii.gz").write_bytes(b"keep")
    result = _info(tmp_path / "s", "--write_nifti", tmp_path / "out.nii.gz")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (tmp_path / "out.nii.gz").read_bytes() == b"keep"
