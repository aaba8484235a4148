"""The Beam pipeline on the DirectRunner gives the same blocks and manifest as the local tool."""

from __future__ import annotations

import collections

import pytest

pytest.importorskip("apache_beam", reason="apache-beam is the optional 'beam' extra (installed by the test extra)")

from cgan_ct.config import conversion_config  # noqa: E402
from cgan_ct.data.beam_conversion import convert_with_beam  # noqa: E402
from cgan_ct.data.conversion import convert  # noqa: E402
from cgan_ct.data.dataset_check import verify  # noqa: E402
from cgan_ct.data.tfrecord_io import iter_records  # noqa: E402
from cgan_ct.errors import InputError  # noqa: E402

SMOKE = conversion_config("smoke")  # as tests/test_conversion.py converts (the archive fixture: conftest.py)


def _records(dataset_dir, manifest):
    counts = collections.Counter()
    for split in ("train", "test"):
        for shard in manifest["splits"][split]["shards"]:
            counts.update((split, r) for r in iter_records(dataset_dir / shard["name"]))
    return counts


def _without_shard(volumes):
    return [{k: v for k, v in entry.items() if k != "shard"} for entry in volumes]


@pytest.mark.slow
def test_beam_matches_local(archive, tmp_path):
    local = convert([archive], tmp_path / "local", SMOKE, salt="s", workers=1).manifest.to_json()
    beam = convert_with_beam(
        [archive], tmp_path / "beam", SMOKE, salt="s", beam_args=["--runner=DirectRunner"]
    ).to_json()
    assert _records(tmp_path / "local", local) == _records(tmp_path / "beam", beam)
    assert _without_shard(beam["volumes"]) == _without_shard(local["volumes"])
    assert beam["intensity"] == local["intensity"] and beam["skipped"] == local["skipped"]
    assert beam["plan_fingerprint"] == local["plan_fingerprint"]
    for split in ("train", "test"):
        assert [s["name"] for s in beam["splits"][split]["shards"]] == [
            s["name"] for s in local["splits"][split]["shards"]
        ]
    assert verify(tmp_path / "beam") == []
    assert sorted(p.name for p in (tmp_path / "beam").iterdir() if p.name.startswith(".")) == []


def test_beam_refuses_a_used_folder(archive, tmp_path):  # noqa: F811
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "something").write_text("x")
    with pytest.raises(InputError, match="empty or new output folder"):
        convert_with_beam([archive], tmp_path / "out", SMOKE)


@pytest.mark.slow
def test_cli_engine_beam(archive, tmp_path):  # noqa: F811
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfrecords_tools.convert",
            "--engine",
            "beam",
            "--input",
            str(archive),
            "--output_dir",
            str(tmp_path / "ds"),
            "--preset",
            "smoke",
            "--",
            "--runner=DirectRunner",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr  # the archive holds one MR series: skipped
    assert "train 4 patients" in result.stdout and "modality is 'MR', not CT" in result.stdout
    assert verify(tmp_path / "ds") == []
