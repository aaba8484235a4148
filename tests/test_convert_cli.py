"""cgan-ct-convert and cgan-ct-inspect as a user runs them, including kill -9 mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cgan_ct.data.dataset_check import verify
from cgan_ct.data.tfrecord_io import iter_records
from tests.conftest import REPO
from tests.volume_factory import write_nifti_volume


def _tool(module, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO, **kwargs
    )


def test_exit_codes_and_summary(tmp_path):
    write_nifti_volume(tmp_path / "a.nii.gz", (20, 20, 20), seed=1)
    write_nifti_volume(tmp_path / "b.nii.gz", (20, 20, 20), seed=2)
    ok = _tool(
        "tfrecords_tools.convert",
        "--input",
        tmp_path / "a.nii.gz",
        "--input",
        tmp_path / "b.nii.gz",
        "--output_dir",
        tmp_path / "ds",
        "--preset",
        "smoke",
        "--workers",
        "1",
    )
    assert ok.returncode == 0, ok.stderr
    assert "train 1 patients" in ok.stdout and "test  1 patients" in ok.stdout
    assert "shards [" in ok.stderr  # progress bar

    partial = _tool(
        "tfrecords_tools.convert",
        "--input",
        tmp_path / "a.nii.gz",
        "--input",
        tmp_path / "nope",
        "--output_dir",
        tmp_path / "ds2",
        "--preset",
        "smoke",
    )
    assert partial.returncode == 1
    assert f"skipped {tmp_path / 'nope'}: no such file or folder" in partial.stdout

    bad = _tool(
        "tfrecords_tools.convert",
        "--input",
        tmp_path / "a.nii.gz",
        "--output_dir",
        tmp_path / "ds3",
        "--block_size",
        "24",
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "multiple of" in bad.stderr


def test_inspect_verifies_and_catches_damage(tmp_path):
    write_nifti_volume(tmp_path / "a.nii.gz", (20, 40, 40), seed=1)
    _tool(
        "tfrecords_tools.convert",
        "--input",
        tmp_path / "a.nii.gz",
        "--output_dir",
        tmp_path / "ds",
        "--preset",
        "smoke",
        check=True,
    )
    good = _tool("tfrecords_tools.inspect", "--dataset_dir", tmp_path / "ds", "--montage", tmp_path / "m.png")
    assert good.returncode == 0, good.stderr
    assert "verified" in good.stdout and (tmp_path / "m.png").stat().st_size > 1000
    [shard] = (tmp_path / "ds").glob("train-*.tfrecord")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    damaged = _tool("tfrecords_tools.inspect", "--dataset_dir", tmp_path / "ds")
    assert damaged.returncode == 1 and "CRC-32C differs" in damaged.stderr
    missing = _tool("tfrecords_tools.inspect", "--dataset_dir", tmp_path)
    assert missing.returncode == 2 and "no manifest" in missing.stderr


@pytest.mark.slow
def test_kill_9_then_resume_gives_every_block_once(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(14):
        write_nifti_volume(tmp_path / "in" / f"v{i:02d}.nii", (64, 96, 96), seed=i)
    args = [
        "--input",
        tmp_path / "in",
        "--output_dir",
        tmp_path / "ds",
        "--preset",
        "smoke",
        "--shard_mb",
        "0.5",
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "tfrecords_tools.convert", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "ds").glob("*-of-*.tfrecord")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "ds" / "manifest.json").exists(), "the run finished before it could be killed"
    finals = list((tmp_path / "ds").glob("*-of-*.tfrecord"))
    assert 1 <= len(finals) < 14
    for shard in finals:  # no corrupt shard under a final name
        assert sum(1 for _ in iter_records(shard)) > 0

    resumed = _tool("tfrecords_tools.convert", *args)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["volumes"] == 14 and manifest["counts"]["blocks"] == 14 * 4 * 6 * 6
    assert verify(tmp_path / "ds") == []  # checksums, counts, and no block twice
    assert not list((tmp_path / "ds").glob(".tmp-*"))


def test_condition_flags(tmp_path):
    """--condition lowdose [--dose], --condition_input (a real pair, here a NIfTI file of the same name)."""
    for folder, seed in (("full", 1), ("low", 1)):
        (tmp_path / folder).mkdir()
        write_nifti_volume(tmp_path / folder / "p1.nii.gz", (20, 20, 20), seed=seed)
    common = ("--preset", "smoke", "--workers", "1", "--test_fraction", "0")
    simulated = _tool(
        "tfrecords_tools.convert",
        "--input", tmp_path / "full", "--output_dir", tmp_path / "sim", "--condition", "lowdose",
        "--dose", "0.5", "--views", "32", *common,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    assert (
        "paired condition: lowdose (dose 0.5, i0 calibrated per scan, electronic_variance 10, views 32, seed 0)"
        in simulated.stdout
    )
    assert json.loads((tmp_path / "sim" / "manifest.json").read_text())["condition"]["dose"] == 0.5
    paired = _tool(
        "tfrecords_tools.convert",
        "--input", tmp_path / "full", "--condition_input", tmp_path / "low", "--output_dir", tmp_path / "pair", *common,
    )  # fmt: skip
    assert paired.returncode == 0, paired.stderr
    assert "paired condition: paired" in paired.stdout
    both = _tool(
        "tfrecords_tools.convert",
        "--input", tmp_path / "full", "--condition_input", tmp_path / "low", "--condition", "lowdose",
        "--output_dir", tmp_path / "x", *common,
    )  # fmt: skip
    assert both.returncode != 0 and "give one" in both.stderr
    stray = _tool(
        "tfrecords_tools.convert", "--input", tmp_path / "full", "--output_dir", tmp_path / "y", "--dose", "0.5"
    )
    assert stray.returncode != 0 and "go with --condition lowdose" in stray.stderr
