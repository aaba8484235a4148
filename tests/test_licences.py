"""Licences: the project's own, non-commercial code kept out of the default install, and the GPL-3.0
JPEG decoder replaceable (a series it would decode fails in one clear line without it)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
JPEG_LOSSLESS_SERIES = ROOT.parent / "shared" / "data" / "ct" / "covid-ct-md-P001"


def _setup_text() -> str:
    return (ROOT / "setup.py").read_text()


def test_the_project_has_a_licence_and_declares_it():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert 'license="Apache-2.0"' in _setup_text()
    assert (ROOT / "THIRD_PARTY_LICENSES.md").is_file()


def test_bm3d_is_an_extra_not_a_requirement():
    setup = _setup_text()
    requires = setup[setup.index("install_requires=[") : setup.index("extras_require=")]
    assert "bm3d" not in requires
    assert re.search(r'"bm3d": \["bm3d>=4"\]', setup)


def test_every_licence_listed_names_the_gpl_decoder():
    text = (ROOT / "THIRD_PARTY_LICENSES.md").read_text()
    assert "pylibjpeg-libjpeg" in text and "GPL-3.0" in text and "python-gdcm" in text


@pytest.mark.skipif(not JPEG_LOSSLESS_SERIES.is_dir(), reason="the shared real CT (../shared/data/ct) is absent")
def test_a_jpeg_lossless_series_without_a_decoder_fails_in_one_line_naming_file_and_gdcm():
    # pydicom's decoder plugins are process-wide: remove them in a child process only
    code = f"""
import cgan_ct
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEGLossless, JPEGLosslessSV1
for uid in (JPEGLossless, JPEGLosslessSV1):
    decoder = get_decoder(uid)
    for plugin in list(decoder.available_plugins):
        decoder.remove_plugin(plugin)
try:
    cgan_ct.read_volume({str(JPEG_LOSSLESS_SERIES)!r})
except cgan_ct.InputError as exc:
    print("ERROR:", str(exc).splitlines()[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    line = next(line for line in out.splitlines() if line.startswith("ERROR:"))
    assert "001.dcm" in line and "JPEG Lossless" in line and "gdcm" in line
