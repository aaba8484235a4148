"""Issue 18's conversion defects, each kept fixed: an archive's bad volume is a skip, never the end of
the run; nothing is left behind that a rerun must be told to discard; workers die with their parent;
patients of volume files; unreadable files named with their real cause."""

from __future__ import annotations

import builtins
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from cgan_ct import InputError, read_volume
from cgan_ct.config import conversion_config
from cgan_ct.data import shard_writer, workers
from cgan_ct.data.conversion import convert
from cgan_ct.io import dicom_reader
from cgan_ct.io.sources import read_patients_table
from tests.conftest import REPO
from tests.dicom_factory import random_hu, write_ct_series
from tests.volume_factory import write_nifti_volume

SMOKE = conversion_config("smoke", test_fraction=0.0)


def _nan_volume(path: pathlib.Path) -> None:
    values = np.zeros((20, 20, 20), np.float32)
    values[3, 4, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))


def test_unexpected_error_in_one_volume_is_a_skip_and_the_rest_converts(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    for i in range(3):
        write_nifti_volume(tmp_path / "in" / f"v{i}.nii.gz", (20, 20, 20), seed=i)
    real = shard_writer.convert_volume
    victim = sorted((tmp_path / "in").iterdir())[1]

    def flaky(source, config, salt):
        if source.file == victim:
            raise ZeroDivisionError("a header no check foresaw")
        return real(source, config, salt)

    monkeypatch.setattr(shard_writer, "convert_volume", flaky)
    report = convert([tmp_path / "in"], tmp_path / "ds", SMOKE, workers=1)
    assert report.manifest.counts["volumes"] == 2
    assert [s.reason for s in report.manifest.skipped] == [
        "cannot be read (ZeroDivisionError: a header no check foresaw)"
    ]
    assert report.skipped == [(str(victim), "cannot be read (ZeroDivisionError: a header no check foresaw)")]


def test_a_shard_left_empty_is_not_written_and_resumes(tmp_path):
    (tmp_path / "in").mkdir()
    write_nifti_volume(tmp_path / "in" / "a.nii.gz", (20, 20, 20), seed=1)
    write_nifti_volume(tmp_path / "in" / "b.nii.gz", (20, 20, 20), seed=2)
    _nan_volume(tmp_path / "in" / "c.nii.gz")
    config = conversion_config("smoke", test_fraction=0.0, shard_target_mb=0.001)  # one volume a shard
    out = tmp_path / "ds"

    def interrupt(receipt, done, total):
        if done == 3:
            raise KeyboardInterrupt  # every shard done, the manifest not yet written

    with pytest.raises(KeyboardInterrupt):
        convert([tmp_path / "in"], out, config, workers=1, progress=interrupt)
    written = list(out.glob("*.tfrecord"))
    assert len(written) == 2 and all(p.stat().st_size > 0 for p in written)  # no 0-byte shard for c
    report = convert([tmp_path / "in"], out, config, workers=1)
    assert report.shards_reused == 3 and report.shards_written == 0  # the empty shard's receipt counts as done
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) == 2 and manifest["counts"]["volumes"] == 2
    assert all(s["records"] > 0 for s in manifest["splits"]["train"]["shards"])
    assert [s["reason"].split(" (")[0] for s in manifest["skipped"]] == ["1 of 8000 voxels are NaN or infinite"]


def test_nothing_converted_leaves_nothing_and_a_rerun_needs_no_overwrite(tmp_path):
    _nan_volume(tmp_path / "bad.nii.gz")
    out = tmp_path / "ds"
    for _ in range(2):  # the second run is not refused for a leftover of the first
        with pytest.raises(InputError) as info:
            convert([tmp_path / "bad.nii.gz"], out, SMOKE, workers=1)
        message = str(info.value)
        assert message.startswith("no training volume was converted; nothing written. Skipped: ")
        assert f"{tmp_path / 'bad.nii.gz'}: 1 of 8000 voxels are NaN or infinite" in message
        assert not out.exists()


def test_nonfinite_as_air_converts(tmp_path):
    _nan_volume(tmp_path / "bad.nii.gz")
    report = convert([tmp_path / "bad.nii.gz"], tmp_path / "ds", conversion_config("smoke", nonfinite="air"))
    assert report.complete
    assert report.manifest.volumes[0].warnings == ("1 NaN or infinite voxels set to air (-1024 HU)",)
    volume = read_volume(tmp_path / "bad.nii.gz", nonfinite="air")
    assert volume.hu[3, 4, 5] == -1024


def test_an_unreadable_slice_is_named_with_its_cause(tmp_path, monkeypatch):
    write_ct_series(tmp_path / "s", random_hu((3, 6, 7)))
    locked = tmp_path / "s" / "slice002.dcm"
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if pathlib.Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(dicom_reader, "open", guarded_open, raising=False)  # the module's own open()
    with pytest.raises(InputError, match=r"slice002\.dcm: cannot be read \(Permission denied\)"):
        read_volume(tmp_path / "s")
    with pytest.raises(InputError, match="no volume to convert.*file 3 of 3 of the series' folder: cannot be read"):
        convert([tmp_path / "s"], tmp_path / "ds", SMOKE, workers=1)


def test_permissions_really(tmp_path):
    """A slice no one may read. Root reads anything, so as root the reader runs without the capabilities
    that override file permissions (setpriv, util-linux)."""
    write_ct_series(tmp_path / "s", random_hu((3, 6, 7)))
    (tmp_path / "s" / "slice002.dcm").chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    code = "import sys; from cgan_ct import read_volume; read_volume(sys.argv[1])"
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode != 0
    assert f"{tmp_path / 's' / 'slice002.dcm'}: cannot be read (Permission denied)" in result.stderr


def test_patients_table_keeps_a_patients_files_in_one_split(tmp_path):
    files = []
    (tmp_path / "in").mkdir()
    for i in range(6):
        files.append(tmp_path / "in" / f"scan{i}.nii.gz")
        write_nifti_volume(files[-1], (20, 20, 20), seed=i)
    table = tmp_path / "patients.csv"
    table.write_text("file,patient\n" + "".join(f"in/scan{i}.nii.gz,P{i // 2}\n" for i in range(6)))
    patients = read_patients_table(table)
    config = conversion_config("smoke", test_fraction=0.34)
    report = convert([tmp_path / "in"], tmp_path / "ds", config, workers=1, patients=patients)
    assert report.warnings == ()
    by_patient: dict[str, set[str]] = {}
    for volume in report.manifest.volumes:
        by_patient.setdefault(volume.patient_key, set()).add(volume.split)
    assert len(by_patient) == 3 and all(len(splits) == 1 for splits in by_patient.values())
    assert "P0" not in (tmp_path / "ds" / "manifest.json").read_text()

    unpaired = convert([tmp_path / "in"], tmp_path / "ds2", config, workers=1)
    assert len({v.patient_key for v in unpaired.manifest.volumes}) == 6
    assert "two scans of one patient can land in both splits" in unpaired.warnings[0]


def test_patients_table_errors(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("a.nii.gz,P1,extra\n")
    with pytest.raises(InputError, match="data row 1 is not 'file,patient'"):
        read_patients_table(bad)
    bad.write_text("a.nii.gz,P1\na.nii.gz,P2\n")
    with pytest.raises(InputError, match="listed twice"):
        read_patients_table(bad)
    with pytest.raises(InputError, match="cannot read the patients table"):
        read_patients_table(tmp_path / "missing.csv")


def _children(pid: int) -> list[int]:
    kids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_leaves_no_worker_converting_on(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(8):
        write_nifti_volume(tmp_path / "in" / f"v{i}.nii", (64, 96, 96), seed=i)
    args = ["--input", tmp_path / "in", "--output_dir", tmp_path / "ds", "--preset", "smoke", "--shard_mb", "0.5"]
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrecords_tools.convert", *map(str, args), "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    children: list[int] = []
    while len(children) < 3 and time.monotonic() < deadline:  # two workers and the resource tracker
        children = _children(process.pid)
        time.sleep(0.05)
    assert children, "no worker process started"
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "processes of the killed conversion live on"
    finals_then = sorted(p.name for p in (tmp_path / "ds").glob("*-of-*.tfrecord"))
    time.sleep(2)
    assert sorted(p.name for p in (tmp_path / "ds").glob("*-of-*.tfrecord")) == finals_then
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_worker_initializer_exits_when_the_parent_is_already_gone(monkeypatch):
    def fake_exit(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as info:
        workers.die_with_parent(os.getppid() + 10**6)  # not our parent: it "died" before the call
    assert info.value.code == 1


def test_a_second_conversion_into_a_busy_folder_is_refused_and_a_dead_holders_lock_is_taken(tmp_path):
    """Issue 30 item 13: two conversions into one folder at once: one died on an opaque temp-file error and the
    other's temporaries were deleted by it. Now the folder is locked by the holder's pid."""
    write_nifti_volume(tmp_path / "a.nii.gz", (20, 20, 20), seed=1)
    out = tmp_path / "ds"
    out.mkdir()
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".cgan-ct-convert.lock").write_text(f"{busy.pid}\n")
        (out / ".tmp-theirs").write_text("the other conversion's temporary")
        with pytest.raises(InputError, match=rf"another cgan-ct convert \(process {busy.pid}\) is writing"):
            convert([tmp_path / "a.nii.gz"], out, SMOKE, workers=1)
        assert (out / ".tmp-theirs").exists()  # nothing of theirs touched
    finally:
        busy.kill()
        busy.wait()
    (out / ".tmp-theirs").unlink()
    report = convert([tmp_path / "a.nii.gz"], out, SMOKE, workers=1)  # the holder is gone: its lock is taken
    assert report.complete and not (out / ".cgan-ct-convert.lock").exists()
