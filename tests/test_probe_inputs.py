"""The probe's bad inputs (tests/probe_inputs.py) through read_volume, cgan-ct-info and cgan-ct-convert.

Each ends in a correct volume (exit 0) or in one line naming the input and the
problem (exit 2), with nothing half-written; in an archive, every bad input is
a skipped volume with its reason and the rest converts.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys

import pytest

from cgan_ct import InputError, read_volume
from cgan_ct.config import conversion_config
from cgan_ct.data.conversion import convert
from tests.conftest import REPO, runs_in_one_process
from tests.probe_inputs import CASES, build_case, convert_outcome

IDS = [case.name for case in CASES]


@pytest.fixture(scope="module")
def probe_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    paths = {case.name: build_case(case, root, seed) for seed, case in enumerate(CASES)}
    return root, paths


def _named(message: str, path) -> bool:
    """The message names the input: the path given, or a file inside the folder given."""
    return str(path) in message


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_read_volume(case, probe_root):
    _, paths = probe_root
    path = paths[case.name]
    if case.outcome == "ok":
        volume = read_volume(path)
        if case.expect:
            assert any(case.expect in w for w in volume.warnings), volume.warnings
        if case.check:
            case.check(volume)
        return
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert case.expect in message and _named(message, path), message
    assert "\n" not in message


def _info(*paths):
    command = [sys.executable, "-m", "pipelines.info", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO)


def _sections(stdout: str, paths) -> dict[str, str]:
    """cgan-ct-info's output for several inputs, cut at the line naming each input (its summary's first line)."""
    starts = {str(p) for p in paths}
    sections, current = {}, None
    for line in stdout.splitlines():
        if line in starts:
            current = line
            sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def test_cgan_ct_info(probe_root):
    """The good inputs in one run (as `cgan-ct-info A B C` reads them), each bad one in a run of its own (the first
    error ends a run; those runs share two processes, beside the first); all in one test to keep the output
    readable."""
    _, paths = probe_root
    good = [case for case in CASES if case.outcome == "ok"]
    bad = [case for case in CASES if case.outcome != "ok"]
    halves = [[paths[case.name] for case in bad[i::2]] for i in range(2)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        together = pool.submit(_info, *(paths[case.name] for case in good))
        argvs = ([["cgan-ct-info", str(path)] for path in half] for half in halves)
        firsts, seconds = pool.map(lambda each: runs_in_one_process("pipelines.info", each), argvs)
        together = together.result()
    results = [None] * len(bad)
    results[0::2], results[1::2] = firsts, seconds
    failures = []
    if together.returncode != 0:
        failures.append(f"good inputs together: exit {together.returncode}, stderr {together.stderr[-400:]!r}")
    sections = _sections(together.stdout, [paths[case.name] for case in good])
    for case in good:
        section = sections.get(str(paths[case.name]))
        if section is None or (case.expect and case.expect not in section):
            failures.append(f"{case.name}: no summary or no {case.expect!r} in {section!r}")
    for case, result in zip(bad, results, strict=True):
        path = paths[case.name]
        lines = result.stderr.strip().splitlines()
        good_error = (
            result.returncode == 2
            and len(lines) == 1
            and lines[0].startswith("cgan-ct-info: error: ")
            and case.expect in lines[0]
            and _named(lines[0], path)
        )
        if not good_error:
            failures.append(f"{case.name}: exit {result.returncode}, stderr {result.stderr[-400:]!r}")
    assert not failures, "\n".join(failures)


def test_convert_archive_skips_each_bad_input_and_converts_the_rest(probe_root, tmp_path):
    root, paths = probe_root
    args = [a for case in CASES for a in ("--input", str(paths[case.name]))]
    out = tmp_path / "dataset"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfrecords_tools.convert",
            *args,
            "--output_dir",
            str(out),
            "--preset",
            "smoke",
            "--test_fraction",
            "0",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    skip_lines = [line for line in result.stdout.splitlines() if line.strip().startswith("skipped ")]
    for case in CASES:
        named = [line for line in skip_lines if str(paths[case.name]) in line]
        if convert_outcome(case) == "skip":
            assert named, f"{case.name} is not listed as skipped:\n{result.stdout}"
        else:
            assert not named, f"{case.name} was skipped: {named}"
    manifest = json.loads((out / "manifest.json").read_text())
    converted = len(manifest["volumes"])
    expected_ok = sum(1 for case in CASES if convert_outcome(case) == "ok")
    expected_ok += 1  # the two-series folder holds two volumes
    assert converted == expected_ok, (converted, expected_ok)
    assert len(manifest["skipped"]) == len(skip_lines)
    text = (out / "manifest.json").read_text()
    assert str(root) not in text and "slice0" not in text and "scan.n" not in text
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".") or p.stat().st_size == 0]
    assert not leftovers, leftovers


@pytest.mark.parametrize("case", [c for c in CASES if convert_outcome(c) == "skip"][:12], ids=lambda c: c.name)
def test_convert_of_only_a_bad_input_names_it_and_leaves_nothing(case, probe_root, tmp_path):
    _, paths = probe_root
    out = tmp_path / "dataset"
    with pytest.raises(InputError) as info:
        convert([paths[case.name]], out, conversion_config("smoke"), workers=1)
    message = str(info.value)
    assert "nothing written" in message and str(paths[case.name]) in message, message
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
