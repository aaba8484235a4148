"""Shared fixtures: the real CT sample folder, external reference tools, and the smoke dataset, run and export.

The smoke fixtures are session-scoped: each pytest-xdist worker builds them once for every module that asks
(they were module fixtures imported across four modules, so the dataset was rebuilt and the run retrained in
each). Tests treat them as read-only; a test that trains on or exports from them writes into its own tmp_path.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import SimpleITK as sitk

import cgan_ct  # noqa: F401  (first: sets TensorFlow's CPU runtime before a test imports it)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct"
# experiments/heldout.texture_table's "share at Nyquist (real)" cell: "-", or the share with the real level's
GRID_CELL = r"(-|[\d.]+( \([\d.]+\))?)"

sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's sform notes on dcm2niix files
# A key of the suite's own for the pseudonyms, as a user with real data sets one: without it the library would
# make a secret in the user's config folder. Tests of that (tests/test_salt*.py) unset it and point
# XDG_CONFIG_HOME into tmp_path: no test writes to the real ~/.config.
if not os.environ.get("CGAN_CT_SALT"):
    os.environ["CGAN_CT_SALT"] = "cgan-ct-test-suite-key"


def setup_jobs() -> dict[str, str]:
    """setup.py's ``_JOBS`` (console script suffix -> module), read without running setup.py."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_JOBS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no _JOBS")


@pytest.fixture(scope="session")
def shared_ct() -> pathlib.Path:
    """The real de-identified CT sample (../shared/data/ct); skips where absent."""
    if not SHARED_CT.is_dir():
        pytest.skip(f"real CT sample not found at {SHARED_CT} (only in the project's checkout)")
    return SHARED_CT


def require_tool(name: str) -> str:
    """Path of an external tool; skips without it, but fails in CI, which installs it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, but CI must run this check (make system-deps)")
        pytest.skip(f"{name} not installed (Debian: apt-get install dcm2niix dicom3tools)")
    return path


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> pathlib.Path:
    """Four 64^3 phantoms converted with the smoke settings (a TFRecord dataset folder)."""
    from cgan_ct.config import conversion_config
    from cgan_ct.data.conversion import convert
    from tests.volume_factory import phantom_hu

    root = tmp_path_factory.mktemp("train")
    for i in range(4):
        sitk.WriteImage(sitk.GetImageFromArray(phantom_hu(i)), str(root / f"v{i}.nii"))
    convert([root], root / "ds", conversion_config("smoke"), workers=1)
    return root / "ds"


@pytest.fixture(scope="session")
def smoke_run(smoke_dataset, tmp_path_factory) -> pathlib.Path:
    """A denoise run of the smoke preset, 6 steps, on the smoke dataset (a run folder)."""
    from cgan_ct.config import model_config
    from cgan_ct.model.training import RunOptions, train

    run_dir = tmp_path_factory.mktemp("run") / "run"
    result = train(smoke_dataset, run_dir, model_config("smoke"), RunOptions("denoise", steps_per_epoch=6), verbose=0)
    assert not result.diverged and result.steps == 6
    return run_dir


@pytest.fixture(scope="session")
def model_dir(smoke_run, tmp_path_factory) -> pathlib.Path:
    """The smoke run exported (a flat SavedModel folder)."""
    from cgan_ct.model.export import export_generator

    return export_generator(smoke_run, tmp_path_factory.mktemp("model") / "denoise")


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Each file's content digest (a rewrite with the same content, as a finished run's record, is no change)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(autouse=True)
def _shared_fixtures_stay_read_only(request):
    """Fails the test that writes into a session fixture's folder: the next test on that worker would read
    the edit, so the failure would land on an innocent test, and only in some orders (a CI run was lost so)."""
    names = [n for n in ("smoke_dataset", "smoke_run", "model_dir") if n in request.fixturenames]
    before = {n: _snapshot(request.getfixturevalue(n)) for n in names}
    yield
    for name in names:
        assert _snapshot(request.getfixturevalue(name)) == before[name], (
            f"this test changed the session fixture {name}'s folder; copy it into tmp_path and edit the copy"
        )


_RUN_END = "=== end of one run ==="


def runs_in_one_process(module: str, argvs: list[list[str]], prelude: str = "") -> list[subprocess.CompletedProcess]:
    """What ``module``'s job (its ``run()``) gives for each command line of ``argvs`` (argv[0] the program): exit
    status, stdout and stderr per run, as if each ran in its own process. All run in one process, so Python's and
    TensorFlow's start is paid once; absl's flags are reset between runs. ``prelude``: source run first (e.g. a
    stub in place of the library function the job calls)."""
    code = (
        f"import sys\nfrom absl import flags\n{prelude}\nfrom {module} import run\n"
        f"for argv in {argvs!r}:\n"
        "    flags.FLAGS.unparse_flags()\n"
        "    sys.argv, code = argv, 0\n"
        "    try:\n"
        "        run()\n"
        "    except SystemExit as exc:\n"
        "        code = 0 if exc.code is None else exc.code\n"
        "        if not isinstance(code, int):  # as Python does with an uncaught SystemExit('message')\n"
        "            print(code, file=sys.stderr)\n"
        "            code = 1\n"
        "    for stream in (sys.stdout, sys.stderr):\n"
        f"        print({_RUN_END!r}, code, file=stream, flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outs, errs = result.stdout.split(_RUN_END), result.stderr.split(_RUN_END)
    assert len(outs) == len(errs) == len(argvs) + 1, result.stderr[-3000:]
    runs = []
    for i, argv in enumerate(argvs):
        # each part after the first begins with the rest of the previous run's end line: dropped
        stdout, stderr = (part if i == 0 else part.split("\n", 1)[1] for part in (outs[i], errs[i]))
        runs.append(subprocess.CompletedProcess(argv, int(outs[i + 1].split("\n", 1)[0]), stdout, stderr))
    return runs


def benchmark_module(name: str):
    """A helper module of ``benchmarks/`` or ``experiments/`` (``memorization_grid``, ``cohort``), imported by
    its path: those folders are scripts, not packages."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    folder = "experiments" if (REPO / "experiments" / f"{name}.py").exists() else "benchmarks"
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reader_volumes(tmp_path_factory):
    """The reader-study tests' pair: a phantom as 'real' and a blurred copy as 'generated' (NIfTI paths)."""
    from tests.reader_helpers import write_volume_pair

    return write_volume_pair(tmp_path_factory.mktemp("reader_volumes"))


@pytest.fixture()
def archive(tmp_path):
    """Five patients: P1 has two series (two kernels), plus one NIfTI volume, one MR series, one bad path."""
    from tests.dicom_factory import random_hu, write_ct_series
    from tests.volume_factory import write_nifti_volume

    root = tmp_path / "archive"
    for p in range(1, 5):
        write_ct_series(root / f"p{p}" / "a", random_hu((20, 24, 18), seed=p), tags={"PatientID": f"P{p}"})
    write_ct_series(root / "p1" / "b", random_hu((20, 24, 18), seed=11), tags={"PatientID": "P1"})
    write_nifti_volume(root / "p5.nii.gz", (30, 20, 20), seed=5)
    write_ct_series(root / "mr", random_hu((3, 8, 8)), tags={"Modality": "MR", "PatientID": "P9"})
    return root
