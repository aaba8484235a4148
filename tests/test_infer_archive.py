"""cgan-ct-infer over many scans (issue 34): one model load, a folder per scan named by pseudonym, resumable
after kill -9, split across workers, on Beam's DirectRunner, derived DICOM that says what made it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cgan_ct.inference.archive import find_scans, part_of
from cgan_ct.io.dicom_writer import DCIODVFY_UNKNOWN_SYNTHETIC
from tests.conftest import REPO, require_tool
from tests.dicom_factory import write_ct_series
from tests.volume_factory import phantom_hu

MODEL = "pretrained:denoise"


def _nifti(path, hu, spacing=(0.7, 0.8, 2.5)):
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """An archive of three scans (two NIfTI files, a DICOM series of patient 'Jane Roe'), one NIfTI with a
    NaN voxel (found, fails when read), and a text file (not a scan)."""
    root = tmp_path_factory.mktemp("archive")
    (root / "patient-jane-roe").mkdir()
    _nifti(root / "patient-jane-roe" / "chest.nii.gz", phantom_hu(1)[:24, :48, :40].copy())
    _nifti(root / "abdomen.nii.gz", phantom_hu(2)[:16, :40, :44].copy())
    write_ct_series(
        root / "series-1.2.840.99",
        phantom_hu(3)[:12, :40, :36].astype(np.float64),
        tags={"PatientName": "Roe^Jane", "PatientID": "MRN-0042", "InstitutionName": "St Elsewhere"},
    )
    broken = phantom_hu(4)[:8, :32, :32].astype(np.float32)
    broken[3, 5, 5] = np.nan
    _nifti(root / "broken.nii.gz", broken)
    (root / "notes.txt").write_text("not a scan")
    return root


def _infer(*args, out, cwd=REPO, **kwargs):
    command = [sys.executable, "-m", "pipelines.infer", "--model", MODEL, "--output_dir", str(out), "--overlap", "0"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, cwd=cwd, **kwargs)


def _scan_folders(out):
    return sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stamps(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_part_of_is_stable_and_splits_every_scan_once():
    assert part_of("vol-0123456789abcdef", 7) == part_of("vol-0123456789abcdef", 7)
    assert part_of("vol-0123456789abcdef", 7) == int("c6cb384a124e934e", 16) % 7  # sha256's first 16 hex
    ids = [f"vol-{i:016x}" for i in range(200)]
    parts = [part_of(i, 4) for i in ids]
    assert set(parts) == {0, 1, 2, 3} and min(parts.count(k) for k in range(4)) > 30  # all four get a share
    with pytest.raises(ValueError):
        part_of("vol-1", 0)


def test_parts_of_an_archive_are_disjoint_and_cover_it(scans):
    everything, _ = find_scans([scans])
    parts = [find_scans([scans], num_parts=3, part_id=k)[0] for k in range(3)]
    assert sorted(s.volume_id for p in parts for s in p) == sorted(s.volume_id for s in everything)
    assert len(everything) == 4  # the NaN file is a scan until it is read


@pytest.mark.slow
def test_archive_run_writes_a_folder_per_scan_and_reports_the_failure(scans, tmp_path):
    out = tmp_path / "out"
    result = _infer("--input", scans, "--format", "nifti,dicom", out=out)
    assert result.returncode == 1, result.stderr[-3000:]  # one scan failed, the others are written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "kept": 0, "failed": 1, "not_scans": 0}
    assert summary["model"]["name"] == MODEL and summary["model"]["version"] >= 2
    failed = [r for r in summary["scans"] if r["status"] == "failed"]
    assert len(failed) == 1 and "NaN or infinite" in failed[0]["reason"]
    assert f"cgan-ct-infer: {failed[0]['scan']}: failed: " in result.stderr
    done = [r["scan"] for r in summary["scans"] if r["status"] == "done"]
    assert _scan_folders(out) == sorted(done) and all(s.startswith("vol-") for s in done)
    for scan in done:
        folder = out / scan
        assert {p.name for p in folder.iterdir()} == {
            "condition.nii.gz",
            "generated.nii.gz",
            "condition_dicom",
            "generated_dicom",
            "scan.json",
        }
        record = json.loads((folder / "scan.json").read_text())
        assert record["scan"] == scan and record["model"]["name"] == MODEL and record["model"]["precision"] == "float32"
        assert record["settings"]["overlap"] == 0 and record["seconds"] > 0
        assert set(record["noise_tissue_hu"]) == {"condition", "generated"}
    # nothing that names a patient, a file or a folder of the archive reaches what was written
    written = "".join(p.read_text() for p in out.rglob("*.json")) + result.stdout
    for secret in ("jane", "Roe", "MRN-0042", "Elsewhere", "chest", "abdomen", "broken", "1.2.840.99", str(scans)):
        assert secret not in written, secret
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_archive_dicom_says_which_model_made_it_and_passes_dciodvfy(scans, tmp_path):
    out = tmp_path / "out"
    result = _infer(
        "--input", scans / "series-1.2.840.99", "--input", scans / "abdomen.nii.gz", "--format", "dicom", out=out
    )
    assert result.returncode == 0, result.stderr[-3000:]
    source = pydicom.dcmread(next((scans / "series-1.2.840.99").iterdir()))
    scan = next(s for s in _scan_folders(out) if json.loads((out / s / "scan.json").read_text())["shape"][0] == 12)
    record = json.loads((out / scan / "scan.json").read_text())
    generated = sorted((out / scan / "generated_dicom").iterdir())
    first = pydicom.dcmread(generated[0])
    assert list(first.ImageType)[0] == "DERIVED" and first.SyntheticData == "YES"
    assert f"generated by {MODEL} version {record['model']['version']} (denoise)" in first.DerivationDescription
    assert first.PatientID == record["patient"] != source.PatientID and first.PatientName == ""
    uids = {first.SOPInstanceUID, first.SeriesInstanceUID, first.StudyInstanceUID, first.FrameOfReferenceUID}
    assert not uids & {source.SOPInstanceUID, source.SeriesInstanceUID, source.StudyInstanceUID}
    condition = pydicom.dcmread(next((out / scan / "condition_dicom").iterdir()))
    assert condition.SyntheticData == "YES" and "condition simulated" in condition.DerivationDescription
    dciodvfy = require_tool("dciodvfy")
    report = subprocess.run([dciodvfy, str(generated[0])], capture_output=True, text=True)
    text = report.stdout + report.stderr
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert "CTImage" in text and [e for e in errors if DCIODVFY_UNKNOWN_SYNTHETIC not in e] == [], text


@pytest.mark.slow
def test_archive_after_kill_9_finishes_the_rest_and_keeps_what_was_done(scans, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for seed in (5, 6, 7):
        _nifti(good / f"scan{seed}.nii.gz", np.tile(phantom_hu(seed)[:32], (1, 2, 2)).copy())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.infer", "--model", MODEL, "--output_dir", str(out)]
    job = subprocess.Popen(
        [*command, "--input", str(good), "--overlap", "0.5"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while job.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and _scan_folders(out) and list(out.glob(".partial-*")):
            break  # one scan finished, the next one half-written
        time.sleep(0.01)
    caught = job.poll() is None and bool(list(out.glob(".partial-*")))
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert caught, "the job ended before a second scan was under way"
    finished = _scan_folders(out)
    assert 1 <= len(finished) < 3 and all((out / s / "scan.json").is_file() for s in finished)
    before = {s: _stamps(out / s) for s in finished}

    again = subprocess.run(
        [*command, "--input", str(good), "--overlap", "0.5"], cwd=REPO, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["kept"] == len(finished) and summary["counts"]["done"] == 3 - len(finished)
    assert len(_scan_folders(out)) == 3 and not list(out.glob(".partial-*"))  # the half-written one is gone
    assert {s: _stamps(out / s) for s in finished} == before  # kept, not redone

    other = subprocess.run([*command, "--input", str(good), "--overlap", "0"], cwd=REPO, capture_output=True, text=True)
    assert other.returncode == 2 and "already exists (and 2 more)" in other.stderr and "--overwrite" in other.stderr


@pytest.mark.slow
def test_beam_engine_writes_what_the_local_loop_writes(scans, tmp_path):
    inputs = ["--input", scans / "patient-jane-roe", "--input", scans / "abdomen.nii.gz"]
    local = _infer(*inputs, out=tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    beam = _infer(*inputs, "--engine", "beam", "--", "--direct_num_workers=1", out=tmp_path / "beam")
    assert beam.returncode == 0, beam.stderr[-3000:]
    scans_local, scans_beam = _scan_folders(tmp_path / "local"), _scan_folders(tmp_path / "beam")
    assert scans_local == scans_beam and len(scans_local) == 2
    for scan in scans_local:
        for name in ("condition.nii.gz", "generated.nii.gz"):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "local" / scan / name)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "beam" / scan / name)))
            np.testing.assert_array_equal(a, b)
        records = [json.loads((tmp_path / run / scan / "scan.json").read_text()) for run in ("local", "beam")]
        assert records[0]["request"] == records[1]["request"]
    summary = json.loads((tmp_path / "beam" / "summary.json").read_text())
    assert summary["engine"] == "beam" and summary["counts"]["done"] == 2
    assert summary["model"]["name"] == MODEL and summary["model"]["precision"] == "float32"  # as the workers loaded it
    assert not [p for p in (tmp_path / "beam").iterdir() if p.name.startswith(".")]


def test_parts_inputs_from_and_device_errors(scans, tmp_path):
    listing = tmp_path / "scans.txt"
    listing.write_text(f"# the archive\n{scans}\n")
    wrong = _infer("--inputs_from", listing, "--device", "gpu:7", out=tmp_path / "out")
    assert wrong.returncode == 2 and "--device gpu:7: this machine has" in wrong.stderr, wrong.stderr[-2000:]
    bad = _infer("--inputs_from", listing, "--device", "tpu", out=tmp_path / "out")
    assert bad.returncode == 2 and "--device takes auto, cpu or gpu:N" in bad.stderr
    part = _infer("--input", scans, "--num_parts", "2", "--part_id", "2", out=tmp_path / "out")
    assert part.returncode == 1 and "--part_id 2 is not below --num_parts 2" in part.stderr
    missing = _infer("--inputs_from", tmp_path / "nothing.txt", out=tmp_path / "out")
    assert missing.returncode == 2 and "cannot read the list of inputs" in missing.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_parts_share_one_output_folder(scans, tmp_path):
    out = tmp_path / "out"
    inputs = [
        "--input",
        scans / "patient-jane-roe",
        "--input",
        scans / "abdomen.nii.gz",
        "--input",
        scans / "series-1.2.840.99",
    ]
    runs = [_infer(*inputs, "--num_parts", "2", "--part_id", k, out=out) for k in (0, 1)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    summaries = [json.loads((out / f"summary-part{k}-of-2.json").read_text()) for k in (0, 1)]
    mine = [[r["scan"] for r in s["scans"]] for s in summaries]
    assert sorted(mine[0] + mine[1]) == _scan_folders(out) and len(_scan_folders(out)) == 3
    assert all(part_of(s, 2) == k for k in (0, 1) for s in mine[k])
    assert os.path.exists(out / _scan_folders(out)[0] / "generated.nii.gz")
