"""Jobs that write into an output folder after a kill or a second run (issue 30, items 10 and 11):
cgan-ct-infer checks its outputs before any compute, replaces them only with --overwrite, keeps what the same
request wrote and clears its own stale temporaries; cgan-ct-synthesize never moves a stale partial series into
place and resumes after a kill between volumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cgan_ct import read_volume
from cgan_ct.cli.output_set import OutputSet
from cgan_ct.errors import InputError
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.fingerprint import request_key
from cgan_ct.io.volume import AcquisitionInfo, Volume
from tests.conftest import REPO
from tests.volume_factory import phantom_hu

INFER_OUTPUTS = ("condition.nii.gz", "condition_dicom", "generated.nii.gz", "generated_dicom")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stamps(folder) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# --- cgan_ct.cli.output_set ----------------------------------------------------------------------------------


def _write(outputs: OutputSet, names, text="new") -> None:
    with outputs.staging(keep=outputs.kept) as staging:
        for name in names:
            (staging / name).write_text(text)
            outputs.place(name)


def test_output_set_keeps_what_the_same_request_wrote_and_names_the_rest(tmp_path):
    out = tmp_path / "out"
    first = OutputSet(out, "infer", ["a.nii.gz", "b_dicom"], request_key({"seed": 0}))
    assert first.plan() == ("a.nii.gz", "b_dicom") and not out.exists()  # planning writes nothing
    _write(first, ["a.nii.gz"])
    assert json.loads((out / "infer.json").read_text())["outputs"] == ["a.nii.gz"]

    again = OutputSet(out, "infer", ["a.nii.gz", "b_dicom"], request_key({"seed": 0}))
    assert again.plan() == ("b_dicom",) and again.kept == ("a.nii.gz",) and again.foreign == ()
    _write(again, ["b_dicom"])
    assert json.loads((out / "infer.json").read_text())["outputs"] == ["a.nii.gz", "b_dicom"]
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b_dicom", "infer.json"]  # nothing hidden left

    other = OutputSet(out, "infer", ["a.nii.gz", "b_dicom"], request_key({"seed": 1}))
    assert other.plan() == () and other.kept == () and other.foreign == ("a.nii.gz", "b_dicom")
    _write(other, ["a.nii.gz"], text="replaced")  # what --overwrite does: the record first stops claiming it
    assert (out / "a.nii.gz").read_text() == "replaced"
    assert json.loads((out / "infer.json").read_text())["outputs"] == ["a.nii.gz"]


def test_output_set_removes_stale_temporaries_and_refuses_a_running_writer(tmp_path):
    outputs = OutputSet(tmp_path, "infer", ["generated.nii.gz", "generated_dicom"], request_key({}))
    stale = tmp_path / f".tmp-infer-{_dead_pid()}-0123abcd"
    (stale / ".generated_dicom.tmp-20260101000000-abcdef12").mkdir(parents=True)
    (stale / "generated.nii.gz").write_bytes(b"half")
    legacy = tmp_path / ".generated_dicom.tmp-20260101000000-abcdef12"  # what versions before left
    legacy.mkdir()
    (legacy / "IM00001.dcm").write_bytes(b"half")
    unrelated = tmp_path / ".tmp-export-1-0123abcd"  # not this job's: left alone
    unrelated.mkdir()
    assert outputs.plan() == ("generated.nii.gz", "generated_dicom")
    assert sorted(p.name for p in tmp_path.iterdir()) == [unrelated.name]

    running = tmp_path / f".tmp-infer-{os.getppid()}-0123abcd"
    running.mkdir()
    with pytest.raises(InputError, match=rf"pid {os.getppid()}\) is writing into this folder"):
        outputs.plan()
    assert running.is_dir()


def test_output_set_leaves_nothing_when_the_job_fails(tmp_path):
    out = tmp_path / "out"
    outputs = OutputSet(out, "infer", ["a.nii.gz"], request_key({}))
    outputs.plan()
    with pytest.raises(RuntimeError), outputs.staging() as staging:
        (staging / "a.nii.gz").write_text("half")
        raise RuntimeError("stopped")
    assert not out.exists()


# --- cgan-ct-infer -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    image = sitk.GetImageFromArray(phantom_hu(7)[:20, :40, :37].copy())
    image.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(image, str(path))
    return path


def _infer_command(scan, out, *extra, model="pretrained:denoise"):
    command = [sys.executable, "-m", "pipelines.infer", "--model", model, "--input", str(scan)]
    return [*command, "--output_dir", str(out), "--overlap", "0", *extra]


def _infer(scan, out, *extra, **kwargs):
    return subprocess.run(_infer_command(scan, out, *extra, **kwargs), capture_output=True, text=True, cwd=REPO)


def test_infer_refuses_an_existing_output_before_loading_anything(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "generated.nii.gz").write_bytes(b"an earlier result")
    # neither model nor scan exists: an error about them would mean they were looked at first
    result = _infer(tmp_path / "no-scan.nii.gz", out, model=str(tmp_path / "no-model"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"cgan-ct-infer: error: {out / 'generated.nii.gz'}: already exists, not from a run with these settings; "
        "--overwrite replaces it"
    ]
    assert "model:" not in result.stdout and (out / "generated.nii.gz").read_bytes() == b"an earlier result"


@pytest.mark.slow
def test_infer_overwrite_replaces_outputs_and_stale_temporaries_go(scan, tmp_path):
    out = tmp_path / "out"
    (out / "condition_dicom").mkdir(parents=True)
    (out / "condition_dicom" / "foreign.dcm").write_bytes(b"another series")
    (out / "generated.nii.gz").write_bytes(b"an earlier result")
    stale = out / f".tmp-infer-{_dead_pid()}-0123abcd"  # as kill -9 during the write leaves it
    stale.mkdir()
    (stale / "generated.nii.gz").write_bytes(b"half")
    (out / ".generated_dicom.tmp-20260101000000-abcdef12").mkdir()  # a version before the staging folder

    result = _infer(scan, out, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([*INFER_OUTPUTS, "infer.json"])
    assert read_volume(out / "generated.nii.gz").shape == (20, 40, 37)
    assert sorted(p.name for p in (out / "condition_dicom").iterdir()) == [f"IM{k:05d}.dcm" for k in range(1, 21)]
    assert json.loads((out / "infer.json").read_text())["outputs"] == list(INFER_OUTPUTS)


@pytest.mark.slow
def test_infer_after_kill_9_completes_then_has_nothing_to_do(scan, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen(_infer_command(scan, out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while job.poll() is None and time.monotonic() < deadline and not list(out.glob(".tmp-infer-*")):
        time.sleep(0.02)
    staged = job.poll() is None and list(out.glob(".tmp-infer-*"))
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert staged, "no staging folder while the job ran"
    assert [p.name for p in out.iterdir()] == [staged[0].name]  # killed: nothing under a final name

    result = _infer(scan, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([*INFER_OUTPUTS, "infer.json"])  # the stale one gone
    before = _stamps(out)

    again = _infer(scan, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to do" in again.stdout and "model:" not in again.stdout
    assert _stamps(out) == before

    other = _infer(scan, out, "--seed", "1")
    assert other.returncode == 2 and "already exists (and 3 more)" in other.stderr and "--overwrite" in other.stderr
    assert _stamps(out) == before


# --- cgan-ct-synthesize (cgan_ct.synthesis.writing) ---------------------------------------------------------


class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs (no cleanup an exception handler could do is relied on)."""


def _synthetic(hu: np.ndarray, seed: int) -> Volume:
    """A volume as cgan_ct.synthesis.synthesis.synthetic_volume makes one (canonical axes, synthetic ids)."""
    return Volume(
        hu=hu,
        spacing_mm=(2.0, 1.0, 1.0),
        origin_mm=(0.0, 0.0, 0.0),
        direction=np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        volume_id=f"vol-test{seed}",
        patient_key=f"syn-test{seed}",
        acquisition=AcquisitionInfo("synthetic", manufacturer="cgan-ct (synthetic)", kernel="synthetic"),
    )


class FakeCascade:
    """What write_synthetic_volumes needs of a Cascade, without models: a small volume per seed."""

    def __init__(self, kill_at_seed: int | None = None, grain=None, placements=None):
        self.info = types.SimpleNamespace(cascade_id="cas-test", default_slices=4)
        self.kill_at_seed, self.drawn, self.grain, self.placements = kill_at_seed, [], grain, placements

    def synthesize(self, seed, slices, overlap=0.25, batch_size=16, progress=None):
        if seed == self.kill_at_seed:
            raise Killed()
        self.drawn.append(seed)
        hu = (np.arange(slices * 16 * 16).reshape(slices, 16, 16) % 200 + 10 * seed - 500).astype(np.int16)
        return _synthetic(hu, seed)


def _series_uids(folder) -> list[str]:
    """The SeriesInstanceUID of every DICOM file under ``folder``, hidden ones too: what a recursive importer sees."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and pydicom.misc.is_dicom(p)]
    return [pydicom.dcmread(p).SeriesInstanceUID for p in files]


def test_synthesize_never_moves_a_stale_partial_series_into_place(tmp_path):
    from cgan_ct.synthesis.writing import write_synthetic_volumes

    out = tmp_path / "syn"
    tmp = out / ".tmp-synthetic_000"  # as a kill during the DICOM write of volume 0 leaves it
    foreign = _synthetic(np.zeros((2, 16, 16), np.int16), 99)
    tmp.mkdir(parents=True)
    write_dicom_series(foreign, tmp / ".dicom.tmp-20260101000000-abcdef12")
    write_dicom_series(foreign, tmp / "dicom")
    stale_uid = _series_uids(tmp / "dicom")[0]

    write_synthetic_volumes(FakeCascade(), out, count=1)
    uids = _series_uids(out / "synthetic_000")
    assert len(uids) == 4 and set(uids) != {stale_uid} and len(set(uids)) == 1  # one series: the new one
    assert sorted(p.name for p in (out / "synthetic_000").iterdir()) == ["dicom", "volume.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["synthesis.json", "synthetic_000"]


def test_synthesize_resumes_after_a_kill_between_volumes(tmp_path):
    from cgan_ct.synthesis.writing import write_synthetic_volumes

    out = tmp_path / "syn"
    with pytest.raises(Killed):
        write_synthetic_volumes(FakeCascade(kill_at_seed=1), out, count=3)
    before = _stamps(out / "synthetic_000")
    time.sleep(0.01)  # a rewrite would show in the mtimes

    cascade, kept = FakeCascade(), []
    written = write_synthetic_volumes(cascade, out, count=3, on_kept=kept.append)
    assert cascade.drawn == [1, 2] and kept == [out / "synthetic_000"]
    assert [(w.folder.name, w.seed, w.kept) for w in written] == [
        ("synthetic_000", 0, True),
        ("synthetic_001", 1, False),
        ("synthetic_002", 2, False),
    ]
    assert _stamps(out / "synthetic_000") == before
    record = json.loads((out / "synthesis.json").read_text())
    assert [(v["folder"], v["seed"]) for v in record["volumes"]] == [(f"synthetic_{i:03d}", i) for i in range(3)]
    assert not list(out.glob(".tmp-*"))


def test_synthesize_keeps_a_volume_renamed_but_not_yet_recorded_and_extends_a_count(tmp_path):
    from cgan_ct.synthesis.writing import RECORD_FILE, write_synthetic_volumes

    out = tmp_path / "syn"
    write_synthetic_volumes(FakeCascade(), out, count=2, formats=["nifti"])
    record = json.loads((out / RECORD_FILE).read_text())
    record["volumes"] = record["volumes"][:1]  # killed between volume 1's rename and its record
    (out / RECORD_FILE).write_text(json.dumps(record))
    cascade = FakeCascade()
    written = write_synthetic_volumes(cascade, out, count=3, formats=["nifti"])
    assert cascade.drawn == [2] and [w.kept for w in written] == [True, True, False]
    assert len(json.loads((out / RECORD_FILE).read_text())["volumes"]) == 3
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["grain"] is False
    del record["grain"]  # a record written before the grain existed: its volumes had none
    (out / RECORD_FILE).write_text(json.dumps(record))
    cascade = FakeCascade()
    assert [w.kept for w in write_synthetic_volumes(cascade, out, count=3, formats=["nifti"])] == [True] * 3


def test_synthesize_refuses_folders_of_other_settings_or_incomplete_ones_before_drawing(tmp_path):
    from cgan_ct.synthesis.writing import write_synthetic_volumes

    out = tmp_path / "syn"
    write_synthetic_volumes(FakeCascade(), out, count=2)
    for kwargs, pattern in [
        ({"seed": 5}, "synthetic_000: exists, not from a run with these settings .*differs in seed"),
        ({"slices": 6}, "synthetic_000: exists, not from a run with these settings .*differs in slices"),
        ({"formats": ["nifti"]}, "synthetic_000: exists, not from a run with these settings .*differs in formats"),
        ({}, "synthetic_000: exists, not from a run with these settings .*differs in grain"),
    ]:
        cascade = FakeCascade(grain=None if kwargs else object())  # {}: the same request, the grain applied
        with pytest.raises(InputError, match=pattern):
            write_synthetic_volumes(cascade, out, count=1, **kwargs)
        assert cascade.drawn == []
    (out / "synthetic_001" / "dicom" / "IM00004.dcm").unlink()
    cascade = FakeCascade()
    with pytest.raises(InputError, match="synthetic_001: exists but is not a complete volume"):
        write_synthetic_volumes(cascade, out, count=3)
    assert cascade.drawn == []
