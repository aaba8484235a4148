"""cgan-ct-info: a summary on good input, one line and exit status 2 on bad input."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

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


def test_every_output_is_checked_before_any_is_written(tmp_path):
    write_ct_series(tmp_path / "s", random_hu((2, 4, 4)))
    result = _info(tmp_path / "s", "--write_dicom", tmp_path / "ok", "--write_nifti", tmp_path / "missing" / "a.nii.gz")
    assert result.returncode == 2 and "missing: output folder does not exist" in result.stderr
    assert not (tmp_path / "ok").exists()  # the DICOM copy was not written before the NIfTI path failed
    assert result.stdout == ""  # refused before reading


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="needs a folder no one can write: Linux /proc")
@pytest.mark.parametrize("flag", ["--write_nifti", "--write_dicom"])
def test_an_unwritable_output_is_one_line(tmp_path, flag):
    write_ct_series(tmp_path / "s", random_hu((2, 4, 4)))
    target = "/proc/x.nii.gz" if flag == "--write_nifti" else "/proc/xdir"
    result = _info(tmp_path / "s", flag, target)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cgan-ct-info: error: /proc: cannot write in this folder (No such file or directory)"
    ]


def test_a_spacing_that_would_exhaust_memory_is_refused(tmp_path):
    write_ct_series(tmp_path / "s", random_hu((2, 4, 4)))
    result = _info(tmp_path / "s", "--spacing_mm", "0.0001")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 's'}: resampling to (0.0001, 0.0001, 0.0001) mm would be" in result.stderr
    assert "voxels (limit 2.15e+09)" in result.stderr


def test_nonfinite_flag(tmp_path):
    values = np.zeros((3, 4, 5), np.float32)
    values[1, 1, 1] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "v.nii.gz"))
    refused = _info(tmp_path / "v.nii.gz")
    assert refused.returncode == 2 and "1 of 60 voxels are NaN or infinite" in refused.stderr
    air = _info(tmp_path / "v.nii.gz", "--nonfinite", "air")
    assert air.returncode == 0 and "1 NaN or infinite voxels set to air" in air.stdout
    assert "min -1024" in air.stdout
