"""cgan-ct-demo --smoke: every stage runs, the report holds numbers, a second run resumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cgan_ct import read_volume
from cgan_ct.demo import DemoSettings, _State
from cgan_ct.errors import VolumeError
from tests.conftest import REPO


@pytest.mark.slow
def test_smoke_demo_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pipelines.demo", "--output_dir", str(out), "--smoke"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "done in" in first.stdout and "report" in first.stdout
    for bar in ("autoencode (seconds) [", "depixelate (seconds) [", "evaluation (scans x tasks) ["):
        assert bar in first.stderr  # progress bars throughout
    state = json.loads((out / "demo.json").read_text())
    assert state["done"][:2] == ["cohort", "dataset"] and "evaluate" in state["done"]
    report = (out / "report" / "report.md").read_text()
    for task in ("autoencode", "denoise", "depixelate"):
        assert f"| {task} | model | 1 |" in report
        assert (out / "models" / task / "saved_model.pb").exists()
        generated = read_volume(out / "volumes" / task / "generated_dicom")
        assert generated.shape == read_volume(out / "volumes" / task / "generated.nii.gz").shape
    assert "| denoise | non_local_means |" in report and "| depixelate | trilinear |" in report
    assert len(list((out / "report" / "figures").glob("*.png"))) == 6
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "cgan-ct-demo: training" not in again.stdout  # every stage was done


def test_a_folder_with_other_settings_or_files_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    _State(tmp_path / "a", DemoSettings.smoke(), None)
    with pytest.raises(VolumeError, match="other settings"):
        _State(tmp_path / "a", DemoSettings(), None)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.txt").write_text("x")
    with pytest.raises(VolumeError, match="did not make"):
        _State(tmp_path / "b", DemoSettings(), None)
