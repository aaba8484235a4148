"""Every job runs the one way (cgan_ct.cli.job): ``--help`` describes the job and exits 0, a missing
required flag is a usage error, and an input error is one line ``cgan-ct-<job>: error: ...`` and exit 2."""

from __future__ import annotations

import ast
import concurrent.futures
import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

from cgan_ct.cli import job
from cgan_ct.data.input_pipeline import PipelineOptions
from cgan_ct.errors import InputError
from tests.conftest import REPO, runs_in_one_process, setup_jobs

BIN = pathlib.Path(sys.executable).parent
# TensorFlow's native logging writes to stderr before the job runs; it is not the job's output.
NATIVE_LOG = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog|To enable)"
)


JOBS = setup_jobs()


def _module_path(module: str) -> pathlib.Path:
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def _doc_first_line(module: str) -> str:
    return ast.get_docstring(ast.parse(_module_path(module).read_text())).splitlines()[0]


def _own_flags(module: str) -> list[str]:
    """The flags the job module defines itself (``flags.DEFINE_*("name", ...)``)."""
    names = []
    for node in ast.walk(ast.parse(_module_path(module).read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("DEFINE_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(node.args[0].value)
    return names


def _script(name: str) -> pathlib.Path:
    return BIN / f"cgan-ct-{name}"


def _command(name: str) -> list[str]:
    """The console script where installed, else ``python -m`` of its module (the same code)."""
    script = _script(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", JOBS[name]]


def _run(command: list) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=REPO, timeout=300, env=os.environ.copy()
    )


def _job_stderr(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip() and not NATIVE_LOG.match(line)]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Every command of this file, run at once in threads (each is a process importing TensorFlow, seconds)."""
    tmp = tmp_path_factory.mktemp("cli")
    broken_run = tmp / "broken_run"  # a run folder whose checkpoint is not a .keras file: keras raises ValueError
    broken_run.mkdir()
    record = {"model": {"block_size": 32}, "task": "denoise", "seed": 0, "pipeline": {}, "dataset_dir": str(tmp)}
    record |= {"dataset_fingerprint": "0", "intensity": {}, "format_version": 1}
    (broken_run / "run.json").write_text(json.dumps(record))
    (broken_run / "generator_best.keras").write_text("not a zip file")
    (tmp / "a_file").write_text("")
    commands = {
        ("help", "python -m pipelines.train"): [sys.executable, "-m", "pipelines.train", "--help"],
        ("missing", "train"): [*_command("train"), "--dataset_dir", tmp],
        ("missing", "reader-study-score"): [*_command("reader-study-score"), "--answers", tmp / "a.json"],
        ("empty", "export"): [*_command("export"), "--run_dir", tmp, "--output_dir="],
        ("stray", "inspect"): [*_command("inspect"), "--dataset_dir", tmp, "extra"],
        ("error", "export InputError"): [*_command("export"), "--run_dir", "/nonexistent", "--output_dir", tmp / "m"],
        ("error", "export ValueError"): [*_command("export"), "--run_dir", broken_run, "--output_dir", tmp / "m2"],
        ("error", "export OSError"): [*_command("export"), "--run_dir", tmp, "--output_dir", tmp / "a_file"],
    }
    for name in JOBS:
        if _script(name).exists():
            commands["help", name] = [_script(name), "--help"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_run, command) for key, command in commands.items()}
        return {key: future.result() for key, future in futures.items()} | {"tmp": tmp, "broken_run": broken_run}


def _assert_describes(result: subprocess.CompletedProcess, module: str) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert _doc_first_line(module) in result.stdout
    flag_names = _own_flags(module)
    assert flag_names, f"{module} defines no flags?"
    for name in flag_names:
        assert re.search(rf"--(\[no\])?{name}\b", result.stdout), f"--{name} missing from the help of {module}"
    assert "Try --helpfull" in result.stdout


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_docstring_names_its_command(name):
    assert _doc_first_line(JOBS[name]).startswith(f"cgan-ct-{name}: ")


@pytest.mark.parametrize("name", sorted(JOBS))
def test_console_script_help_describes_the_job_and_exits_0(name, cases):
    if ("help", name) not in cases:
        pytest.skip(f"{_script(name)} is not installed (pip install -e . makes the console scripts)")
    _assert_describes(cases["help", name], JOBS[name])


def test_python_m_help_describes_the_job_and_exits_0(cases):
    _assert_describes(cases["help", "python -m pipelines.train"], "pipelines.train")


@pytest.mark.parametrize(("name", "flag"), [("train", "--task"), ("reader-study-score", "--key")])
def test_missing_required_flag_is_a_usage_error_naming_it(name, flag, cases):
    result = cases["missing", name]
    assert result.returncode == 1, result.stderr
    assert flag in result.stderr and "Traceback" not in result.stderr


def test_empty_required_flag_is_a_usage_error(cases):
    result = cases["empty", "export"]
    assert result.returncode == 1, result.stderr
    assert "--output_dir must not be empty" in result.stderr


def test_stray_argument_is_a_usage_error(cases):
    result = cases["stray", "inspect"]
    assert result.returncode == 1, result.stderr
    assert "unexpected arguments: ['extra']" in result.stderr


def test_volume_error_is_one_line_and_status_2(cases):
    result = cases["error", "export InputError"]
    assert result.returncode == 2, result.stderr
    assert _job_stderr(result) == ["cgan-ct-export: error: /nonexistent: not a training run folder (no run.json)"]


def test_value_error_is_one_line_and_status_2(cases):
    """A ValueError used to escape cgan-ct-export (it caught only InputError) as a traceback."""
    result = cases["error", "export ValueError"]
    assert result.returncode == 2, result.stderr
    [line] = _job_stderr(result)
    assert line.startswith("cgan-ct-export: error: ") and "generator_best.keras" in line, result.stderr
    assert not (cases["tmp"] / "m2").exists()


def test_os_error_is_one_line_and_status_2(cases):
    result = cases["error", "export OSError"]
    assert result.returncode == 2, result.stderr
    [line] = _job_stderr(result)
    assert line.startswith("cgan-ct-export: error: ") and "a_file" in line, result.stderr


# --- cgan_ct.cli.job in-process ----------------------------------------------------------------------------


@pytest.fixture
def fake_job(monkeypatch):
    """A job module's name, its docstring naming the command; absl's logging handler is undone afterwards."""
    import logging

    module = types.ModuleType("tests.fake_cli_job", "cgan-ct-fake: a job for the tests.\n\n  cgan-ct-fake [ARG]\n")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    handlers = list(logging.getLogger().handlers)
    yield module.__name__
    logging.getLogger().handlers[:] = handlers


def _exit_of(main, module, argv=("prog",), **kwargs) -> int:
    with pytest.raises(SystemExit) as exited:
        job.run(main, module, argv=list(argv), **kwargs)
    return exited.value.code


def _raises(exc):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize(
    "exc, line",
    [
        (ValueError("bad value"), "bad value"),
        (InputError("/x", "bad value"), "/x: bad value"),
        (FileNotFoundError(2, "bad value"), "bad value"),
        # issue 30 item 13: the path, not "[Errno 28]"; one line, whatever the library wrote
        (
            OSError(28, "No space left on device", "/out/generated.nii.gz"),
            "/out/generated.nii.gz: No space left on device",
        ),
        (OSError(18, "Invalid cross-device link", "/a", None, "/b"), "/a: Invalid cross-device link (to /b)"),
        (InputError("/x", "bad value:\n  first line\n  second line"), "/x: bad value: first line second line"),
    ],
)
def test_run_turns_an_input_error_into_one_line_and_status_2(exc, line, fake_job, capsys):
    assert _exit_of(_raises(exc), fake_job) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"cgan-ct-fake: error: {line}"] and out == ""


def test_run_keeps_the_traceback_when_asked(fake_job, monkeypatch):
    monkeypatch.setenv(job.TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="bad value"):
        job.run(_raises(ValueError("bad value")), fake_job, argv=["prog"])


def test_run_exits_with_what_main_returns(fake_job, capsys):
    assert _exit_of(lambda argv: 3, fake_job) == 3
    assert _exit_of(lambda argv: None, fake_job) == 0
    assert capsys.readouterr().err == ""


def test_run_leaves_a_bug_its_traceback(fake_job):
    with pytest.raises(RuntimeError, match="a bug"):
        job.run(_raises(RuntimeError("a bug")), fake_job, argv=["prog"])


def test_run_positional_arguments_only_where_the_job_takes_them(fake_job, capsys):
    seen = []
    assert _exit_of(lambda argv: seen.append(argv), fake_job, argv=("prog", "a", "b"), positional=True) == 0
    assert seen == [["prog", "a", "b"]]
    assert _exit_of(seen.append, fake_job, argv=("prog", "a")) == 1
    assert "unexpected arguments: ['a']" in capsys.readouterr().err and len(seen) == 1


def test_run_help_prints_the_job_doc_and_exits_0(fake_job, capsys):
    assert _exit_of(_raises(AssertionError("main must not run")), fake_job, argv=("prog", "--help")) == 0
    out = capsys.readouterr().out
    assert out.startswith("cgan-ct-fake: a job for the tests.") and "Try --helpfull" in out


def test_job_name_is_the_docstrings_first_word(fake_job, monkeypatch):
    assert job.job_name(fake_job) == "cgan-ct-fake"
    monkeypatch.setattr(sys.modules[fake_job], "__doc__", "No command name here.")
    assert job.job_name(fake_job) == fake_job


def test_train_augmentation_flags_reach_the_pipeline(tmp_path):
    """cgan-ct-train's augmentation flags (issue 33, item 1) become the run's PipelineOptions, and --upsample the
    model's; unset, the defaults. Both command lines parsed in one process (the flags reset between them)."""
    cases = [
        [],
        ["--mirror_axes", "none", "--noquarter_turns", "--max_rotation_deg", "5", "--elastic_voxels", "2"]
        + ["--elastic_sampling", "noise_preserving", "--upsample", "resize"],
    ]
    stub = (
        "import cgan_ct.model.training as training\n"
        "def seen(dataset_dir, run_dir, config, options, **kw):\n"
        "    p = options.pipeline\n"
        "    print('PIPELINE', p.mirror_axes, p.quarter_turns, p.max_rotation_deg, p.elastic_voxels,"
        " p.elastic_sampling, p.air_keep, config.upsample)\n"
        "    raise SystemExit(0)\n"
        "training.train = seen\n"
    )
    required = ["--dataset_dir", "d", "--task", "depixelate", "--output_dir", "o"]
    runs = runs_in_one_process("pipelines.train", [["cgan-ct-train", *required, *extra] for extra in cases], stub)
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    lines = [next(x for x in run.stdout.splitlines() if x.startswith("PIPELINE")) for run in runs]
    default = PipelineOptions()
    assert lines[0] == f"PIPELINE (0, 1, 2) True 0.0 0.0 trilinear {default.air_keep} transpose"
    assert lines[1] == f"PIPELINE () False 5.0 2.0 noise_preserving {default.air_keep} resize"
