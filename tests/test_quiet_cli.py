"""Quiet, quick commands: every job's ``--help`` and ``--version`` answer without importing TensorFlow, and a
job that runs TensorFlow prints none of TensorFlow's log lines (its C++ ones, abseil's, CUDA's, and the INFO
lines of its Python side) unless the user asks for them with ``TF_CPP_MIN_LOG_LEVEL``; warnings stay. How
fast ``--help`` is: benchmarks/cli_startup_bench.py (timed there, never here)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import pytest
from absl import flags
from absl import logging as absl_logging

from cgan_ct import runtime
from cgan_ct.cli import job
from cgan_ct.version import __version__
from tests.conftest import REPO, setup_jobs

BIN = pathlib.Path(sys.executable).parent
# A C++ log line of TensorFlow / abseil (I/W/E/F, date, time, thread, file:line]), abseil's pre-init note,
# the continuation line of TensorFlow's CPU-feature note, and any mention of CUDA's driver.
NATIVE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|All log messages before absl::InitializeLog|^To enable the|cuInit"
)
IMPORT_TIME = re.compile(r"^import time: +(?:self \[us\]|\d+) \| +(?:cumulative|\d+) \| +(\S+)")
HEAVY = {"tensorflow", "keras", "jax"}


JOBS = setup_jobs()


def _command(name: str) -> list[str]:
    """The console script where installed (what a user runs), else ``python -m`` of its module."""
    script = BIN / f"cgan-ct-{name}"
    return [str(script)] if script.exists() else [sys.executable, "-m", JOBS[name]]


def _env(**extra) -> dict:
    """The environment of a user who set none of TensorFlow's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "PYTHONPROFILEIMPORTTIME"))}
    return env | extra


def _run(command: list, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=REPO, timeout=600, env=_env(**env)
    )


def _imported(stderr: str) -> set[str]:
    return {m.group(1) for m in map(IMPORT_TIME.match, stderr.splitlines()) if m}


def _not_import_time(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not IMPORT_TIME.match(line)]


@pytest.fixture(scope="module")
def answers():
    """``--help`` and ``--version`` of every job, each with the modules it imported (PYTHONPROFILEIMPORTTIME)."""
    runs = {(name, ask): [*_command(name), ask] for name in JOBS for ask in ("--help", "--version")}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {key: pool.submit(_run, command, PYTHONPROFILEIMPORTTIME="1") for key, command in runs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_help_exits_0_quietly_without_importing_tensorflow(name, answers):
    result = answers[name, "--help"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"cgan-ct-{name}: ") and "Try --helpfull" in result.stdout
    assert _not_import_time(result.stderr) == []
    heavy = sorted(m for m in _imported(result.stderr) if m.split(".")[0] in HEAVY)
    assert not heavy, f"cgan-ct-{name} --help imports {heavy[:5]}"
    assert _imported(result.stderr), "no import-time lines: was PYTHONPROFILEIMPORTTIME honoured?"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_version_prints_the_command_and_the_package_version(name, answers):
    result = answers[name, "--version"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"cgan-ct-{name} {__version__}\n"
    assert _not_import_time(result.stderr) == []
    assert not {m for m in _imported(result.stderr) if m.split(".")[0] in HEAVY}


def _fake_cuda_driver(folder: pathlib.Path) -> pathlib.Path | None:
    """A ``libcuda.so.1`` whose ``cuInit`` fails: a machine with NVIDIA's driver library and no GPU (the
    machine that printed ``failed call to cuInit``). None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not sys.platform.startswith("linux"):
        return None
    source = folder / "fake_cuda.c"
    source.write_text(
        "int cuInit(unsigned int flags) { (void)flags; return 303; }\n"
        "int cuDriverGetVersion(int *v) { *v = 12080; return 0; }\n"
        "int cuDeviceGetCount(int *n) { *n = 0; return 303; }\n"
        'int cuGetErrorString(int e, const char **s) { (void)e; *s = "UNKNOWN ERROR (303)"; return 0; }\n'
        'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_UNKNOWN"; return 0; }\n'
    )
    built = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "libcuda.so.1"), str(source)])
    return folder if built.returncode == 0 else None


@pytest.fixture(scope="module")
def tensorflow_runs(tmp_path_factory):
    """Jobs that import TensorFlow and run it: cgan-ct-inspect on a tiny dataset (decodes its records: the
    devices are initialised, cuInit is called) with a failing CUDA driver where one can be built, quiet
    and with the user asking for TensorFlow's logs; cgan-ct-export failing on a missing run folder; one
    training step of cgan-ct-train."""
    import SimpleITK as sitk

    from cgan_ct.config import conversion_config
    from cgan_ct.data.conversion import convert
    from tests.dicom_factory import random_hu

    tmp = tmp_path_factory.mktemp("quiet")
    volumes = [tmp / f"v{i}.nii.gz" for i in range(2)]
    for seed, path in enumerate(volumes):
        sitk.WriteImage(sitk.GetImageFromArray(random_hu((20, 20, 20), seed=seed)), str(path))
    convert(volumes, tmp / "ds", conversion_config("smoke", test_fraction=0.5), workers=1)
    driver = _fake_cuda_driver(tmp)
    cuda = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(driver), os.environ.get("LD_LIBRARY_PATH")]))}
    inspect = [*_command("inspect"), "--dataset_dir", tmp / "ds"]
    export = [*_command("export"), "--run_dir", tmp / "nope", "--output_dir", tmp / "m", "--version", "3"]
    train = [*_command("train"), "--dataset_dir", tmp / "ds", "--task", "denoise", "--output_dir", tmp / "run"]
    train += ["--preset", "smoke", "--epochs", "1", "--steps_per_epoch", "1", "--validation_steps", "1"]
    runs = {
        "inspect": (inspect, cuda if driver else {}),
        "inspect, logs asked for": (inspect, (cuda if driver else {}) | {"TF_CPP_MIN_LOG_LEVEL": "0"}),
        "export": (export, {}),
        "train": ([*train, "--verbose", "0"], {}),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_run, command, **env) for key, (command, env) in runs.items()}
        return {key: future.result() for key, future in futures.items()} | {"driver": driver, "tmp": tmp}


def test_a_job_running_tensorflow_prints_no_native_line(tensorflow_runs):
    result = tensorflow_runs["inspect"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified" in result.stdout
    assert result.stderr == "", "TensorFlow / abseil / CUDA lines on stderr:\n" + result.stderr[-3000:]


def test_training_prints_its_own_line_only(tensorflow_runs):
    """Nor TensorFlow's Python INFO lines ("Using MirroredStrategy ..."), shown by absl by default."""
    result = tensorflow_runs["train"]
    assert result.returncode == 0, result.stderr[-3000:]
    # its own lines: the precision it chose (smoke: float32), then the result
    lines = result.stdout.splitlines()
    assert lines[0] == "cgan-ct-train: precision float32: asked for", result.stdout
    assert lines[1].startswith("cgan-ct-train: finished: 1 steps")
    assert result.stderr == "", "lines on stderr:\n" + result.stderr[-3000:]


def test_the_users_own_log_level_brings_the_lines_back(tensorflow_runs):
    result = tensorflow_runs["inspect, logs asked for"]
    assert result.returncode == 0, result.stderr[-3000:]
    native = [line for line in result.stderr.splitlines() if NATIVE.search(line)]
    assert native, "TF_CPP_MIN_LOG_LEVEL=0 should show TensorFlow's own log lines"
    if tensorflow_runs["driver"]:  # the failing driver was really loaded: the quiet run hid its error
        assert any("cuInit" in line for line in native), result.stderr[-3000:]


def test_an_input_error_is_the_only_line_and_export_keeps_its_version_flag(tensorflow_runs):
    result = tensorflow_runs["export"]
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    nope = tensorflow_runs["tmp"] / "nope"
    assert result.stderr.splitlines() == [f"cgan-ct-export: error: {nope}: not a training run folder (no run.json)"]


# --- in this process ---------------------------------------------------------------------------------------


def test_version_is_a_bare_flag_unless_the_job_has_a_version_flag_of_its_own():
    assert job.asked_for_version(["prog", "--version"], flags.FlagValues())
    assert job.asked_for_version(["prog", "-version", "x"], flags.FlagValues())
    assert not job.asked_for_version(["prog", "--", "--version"], flags.FlagValues())
    own = flags.FlagValues()
    flags.DEFINE_integer("version", None, "A model version.", flag_values=own)
    assert not job.asked_for_version(["prog", "--version", "3"], own)
    assert not job.asked_for_version(["prog", "--version=3"], own)
    assert job.asked_for_version(["prog", "--version"], own)
    assert job.asked_for_version(["prog", "--version", "--run_dir", "x"], own)


def test_run_answers_version_without_running_main(monkeypatch, capsys):
    module = types.ModuleType("tests.fake_quiet_job", "cgan-ct-fake: a job for the tests.\n")
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def main(argv):
        raise AssertionError("main must not run")

    with pytest.raises(SystemExit) as exited:
        job.run(main, module.__name__, required=("not_a_flag",), argv=["prog", "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"cgan-ct-fake {__version__}\n"


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, "x.py", 1, "a message", None, None)


def test_the_libraries_python_info_lines_are_hidden_and_their_warnings_kept():
    hide = job.LibraryInfoFilter()
    for name in ("tensorflow", "absl", "jax._src.xla_bridge"):  # "Using MirroredStrategy", "Writing fingerprint"
        assert not hide.filter(_record(name, logging.INFO)), name
        assert hide.filter(_record(name, logging.WARNING)), name
    assert hide.filter(_record("cgan_ct.model", logging.INFO))  # not a library's logger
    handler = absl_logging.get_absl_handler()
    with job.library_info_hidden(level=3):
        assert any(isinstance(f, job.LibraryInfoFilter) for f in handler.filters)
    assert not any(isinstance(f, job.LibraryInfoFilter) for f in handler.filters)
    with job.library_info_hidden(level=0):  # the user asked for TensorFlow's logs
        assert not any(isinstance(f, job.LibraryInfoFilter) for f in handler.filters)


@pytest.mark.parametrize(
    ("line", "hidden_from_level"),
    [
        ("I0000 00:00:1796283440.209548   10309 port.cc:153] oneDNN custom operations are on.", 1),
        ("W1203 07:41:00.123456   10309 dso_loader.cc:64] Could not load dynamic library", 2),
        ("E0000 00:00:1796283693.883767   12544 cuda_platform.cc:52] failed call to cuInit: INTERNAL", 3),
        ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", 1),
        ("F0000 00:00:1796283693.883767   12544 cpu_feature_guard.cc:1] The TensorFlow library was compiled", None),
        ("W1203 07:41:00.123456 140 training.py:12] a Python absl.logging line", None),
        ("/x/keras/src/trainers/trainer.py:12: UserWarning: a Python warning", None),
    ],
)
def test_which_native_lines_each_level_hides(line, hidden_from_level):
    for level in range(5):
        expected = hidden_from_level is not None and level >= hidden_from_level
        assert runtime.hides_native_line(line, level) is expected, (line, level)


def test_native_log_level_reads_the_users_setting():
    assert runtime.native_log_level({}) == 0
    assert runtime.native_log_level({"TF_CPP_MIN_LOG_LEVEL": "2"}) == 2
    assert runtime.native_log_level({"TF_CPP_MIN_LOG_LEVEL": "loud"}) == 0


_LOAD_TIME = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796283440.209548   10309 port.cc:153] oneDNN custom operations are on.\n"
    b"/x/fake.py:3: UserWarning: a warning the user must see\n"
    b"E0000 00:00:1796283440.209548   10309 loader.cc:1] an error\n"
)


@pytest.fixture
def fake_native_module(tmp_path, monkeypatch):
    """A module that writes like TensorFlow's libraries while loading (to file descriptor 2), then fails or not."""
    name = "cgan_ct_fake_native_lib"
    source = f"import os\nos.write(2, {_LOAD_TIME!r})\nif os.environ.get('FAKE_FAIL'):\n    raise ImportError('no')\n"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    runtime.uninstall_quiet_import()
    sys.modules.pop(name, None)


def test_the_first_import_hides_the_lines_below_the_level_and_keeps_the_rest(fake_native_module, capfd):
    assert runtime.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "2"}, name=fake_native_module)
    __import__(fake_native_module)
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "/x/fake.py:3: UserWarning: a warning the user must see",
        "E0000 00:00:1796283440.209548   10309 loader.cc:1] an error",
    ]
    assert not any(isinstance(f, runtime._QuietImport) for f in sys.meta_path)  # once, then gone


def test_a_failed_import_shows_everything(fake_native_module, capfd, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    assert runtime.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "3"}, name=fake_native_module)
    with pytest.raises(ImportError, match="no"):
        __import__(fake_native_module)
    assert capfd.readouterr().err.encode() == _LOAD_TIME


def test_nothing_is_filtered_when_the_user_asks_for_the_logs(fake_native_module, capfd):
    assert not runtime.quiet_tensorflow_import({"TF_CPP_MIN_LOG_LEVEL": "0"}, name=fake_native_module)
    __import__(fake_native_module)
    assert capfd.readouterr().err.encode() == _LOAD_TIME


def test_the_startup_benchmark_runs_in_its_tiny_mode():
    result = _run([sys.executable, REPO / "benchmarks" / "cli_startup_bench.py", "--tiny"])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("cgan-ct-")]
    assert sorted(row[0] for row in rows) == sorted(f"cgan-ct-{name}" for name in JOBS)
    assert all(row[4] == "no" for row in rows), result.stdout  # no --help imports TensorFlow
