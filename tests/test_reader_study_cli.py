"""The reader-study programs (cgan-ct-reader-study, cgan-ct-reader-study-score) as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from cgan_ct import write_nifti
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.study import reader_study as rs
from cgan_ct.study.reader_score import read_key
from tests.conftest import REPO
from tests.dicom_factory import write_ct_series
from tests.reader_helpers import answers_file


def _job(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_programs_build_and_score(reader_volumes, tmp_path):
    real, generated = reader_volumes
    out = tmp_path / "out"
    result = _job("pipelines.reader_study", "--real", real, "--generated", generated, "--output_dir", out,
                  "--pairs", 4, "--window", "mediastinum", "--seed", 11, "--size_px", 64)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"study: {out / 'study' / 'index.html'} (4 trials" in result.stdout
    key = read_key(out / "key.json")
    trials = list(key["trials"].values())
    first = answers_file(tmp_path, "R1", trials, lambda t: True, study_id=key["study_id"])
    second = answers_file(tmp_path, "R2", trials, lambda t: False, fmt="csv", study_id=key["study_id"])
    result = _job("pipelines.reader_study_score", "--key", out / "key.json", "--answers", first, second,
                  "--output", tmp_path / "table.md")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| R1 | mediastinum | 4 | 4 | 100.0% |" in result.stdout
    assert "| pooled | mediastinum | 8 | 4 | 50.0% |" in result.stdout
    assert (tmp_path / "table.md").read_text().strip() == result.stdout.strip()


def test_programs_report_bad_input_in_one_line(reader_volumes, tmp_path):
    result = _job("pipelines.reader_study", "--real", tmp_path / "nope", "--generated", reader_volumes[1],
                  "--output_dir", tmp_path / "out")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"cgan-ct-reader-study: error: {tmp_path / 'nope'}: no such file or folder"
    ]
    result = _job("pipelines.reader_study_score", "--key", tmp_path / "key.json", "--answers", tmp_path / "a.json")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"cgan-ct-reader-study-score: error: {tmp_path / 'key.json'}: no such file"
    ]


def test_no_input_path_or_name_in_any_study_output(tmp_path):
    """A folder named after the patient: neither its path nor its name reaches the key, the page or any file."""
    hu = make_phantom(5, 12, 64).hu
    real = tmp_path / "DOE^JOHN_12345"
    write_ct_series(real, hu, tags={"PatientName": "Doe^John", "PatientID": "12345"})
    generated = tmp_path / "DOE^JOHN_12345_synthetic.nii.gz"
    write_nifti(rs.read_volume(real), generated)
    out = tmp_path / "out"
    result = _job("pipelines.reader_study", "--real", real, "--generated", generated, "--output_dir", out,
                  "--pairs", 3, "--window", "both", "--size_px", 64)  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert out / "key.json" in written and out / "study" / "index.html" in written
    assert {p.suffix for p in written} == {".json", ".html", ".png"}
    for path in written:  # PNG bytes are compressed pixels (their text chunks are checked above): names only
        text = path.relative_to(out).as_posix().lower() + ("" if path.suffix == ".png" else path.read_text().lower())
        for secret in ("doe", "john", "12345", str(tmp_path).lower()):
            assert secret not in text, (path, secret)
    key = json.loads((out / "key.json").read_text())
    volume, copy = rs.read_volume(real), rs.read_volume(generated)
    assert key["volume_pairs"] == [
        {"volume_pair": 0, "real_volume_id": volume.volume_id, "real_patient_key": volume.patient_key,
         "generated_volume_id": copy.volume_id}
    ]  # fmt: skip
    assert {t["volume_pair"] for t in key["trials"]} == {0} and all("relative_z" in t for t in key["trials"])
