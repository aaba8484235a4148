"""Shared fixtures: the real CT sample folder and external reference tools."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil

import pytest
import SimpleITK as sitk

import cgan_ct  # noqa: F401  (first: sets TensorFlow's CPU runtime before a test imports it)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_CT = REPO.parent / "shared" / "data" / "ct"

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
