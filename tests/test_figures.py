"""Evaluation figures: every panel titled with method, patient and PSNR, the baseline beside the model on one
scale, the close-up inside the body where the two errors differ most; matplotlib only where figures are drawn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cgan_ct.inference import figures
from tests.conftest import REPO

PATIENT = "pat-0123456789ab"


def _body_slice(size: int = 64) -> np.ndarray:
    """Air around a square body of soft tissue (8..56), with an air-filled 'lung' inside it."""
    original = np.full((size, size), -1000.0, np.float32)
    original[8:56, 8:56] = 40.0
    original[14:30, 14:30] = -850.0
    return original


def _figure_slice(original, model, baseline) -> figures.FigureSlice:
    condition = original + np.random.default_rng(0).normal(0, 40, original.shape).astype(np.float32)
    return figures.FigureSlice("denoise", PATIENT, 2, 5, original, condition, model, "gaussian", baseline)


def test_window_means_match_the_brute_force_mean():
    image = np.random.default_rng(1).normal(0, 100, (13, 17))
    means = figures.window_means(image, 4)
    assert means.shape == (10, 14)
    for y, x in ((0, 0), (9, 13), (3, 7)):
        assert means[y, x] == pytest.approx(image[y : y + 4, x : x + 4].mean())


def test_the_closeup_lies_inside_the_body_where_the_model_and_the_baseline_differ_most():
    original = _body_slice()
    rng = np.random.default_rng(2)
    baseline = original + rng.normal(0, 10, original.shape).astype(np.float32)
    model = original + rng.normal(0, 10, original.shape).astype(np.float32)
    model[0:8, 0:8] += 900  # a huge error in the air around the body: never the close-up
    model[36:44, 40:48] += 100  # inside the body: the model off by 100 HU
    baseline[40:48, 12:20] -= 60  # elsewhere inside: the baseline off by 60 HU, a smaller difference
    body = figures.slice_body(original)
    assert figures.closeup_origin(original, model, baseline, 8) == (36, 40)
    assert body[36:44, 40:48].all()
    baseline[40:48, 12:20] -= 100  # now the baseline is off by 160 HU there: the larger difference, either sign
    y, x = figures.closeup_origin(original, model, baseline, 8)
    assert (y, x) == (40, 12) and body[y : y + 8, x : x + 8].mean() >= figures.IN_BODY
    assert figures.closeup_origin(np.full((20, 20), -1000.0), model[:20, :20], baseline[:20, :20], 8) == (0, 0)


def test_the_comparison_figure_titles_every_panel_and_puts_both_errors_on_one_scale():
    original = _body_slice()
    model, baseline = original + 20.0, original - 50.0
    s = _figure_slice(original, model, baseline)
    figure = figures.draw_comparison(s, box=(36, 40, 8))
    titled = [ax for ax in figure.axes if ax.get_title()]
    titles = [ax.get_title() for ax in titled]
    labels = ("condition", "model", "gaussian (best baseline)", "original")
    assert [t.split("\n")[0] for t in titles[:8]] == [*labels, *labels]  # lung window, then soft tissue
    assert [t.split("\n")[0] for t in titles[8:]] == [
        "|model − original|",
        "|gaussian − original|",
        "|model error| − |gaussian error|",
    ]
    assert all(PATIENT in t for t in titles)
    assert "PSNR" in titles[1] and "dB" in titles[1] and "reference" in titles[3]
    windows = [titled[0].get_images()[0].get_clim(), titled[4].get_images()[0].get_clim()]
    assert windows == [(-1350.0, 150.0), (-160.0, 240.0)]
    model_error, baseline_error = (titled[i].get_images()[0] for i in (8, 9))
    assert model_error.get_clim() == baseline_error.get_clim() == (0, figures.error_scales_hu(s)[0])
    assert all(len(ax.patches) == 1 for ax in titled[:8])  # the close-up outlined on every image
    closeup = figures.draw_comparison(s, region=(36, 40, 8))
    assert closeup.axes[0].get_images()[0].get_array().shape == (8, 8)


def test_the_error_scales_are_the_99th_percentile_inside_the_body_rounded_up():
    original = _body_slice()
    s = _figure_slice(original, original + 30.0, original - 130.0)
    assert figures.error_scales_hu(s) == (200.0, 100.0)  # errors 30 and 130 HU -> 200; their difference 100
    floor = figures.ERROR_FLOOR_HU
    assert figures.error_scales_hu(_figure_slice(original, original, original)) == (floor, floor)


def test_figures_are_written_as_png_without_pyplot_and_modules_that_compute_do_not_import_matplotlib(tmp_path):
    # Not cgan_ct.inference.evaluation: it imports Keras, which imports matplotlib.pyplot where installed.
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from cgan_ct.inference import baselines, figures, metrics, report\n"
        "assert not any(m.startswith('matplotlib') for m in sys.modules), 'matplotlib imported'\n"
        "o = np.full((48, 48), -1000.0, np.float32); o[6:42, 6:42] = 40\n"
        "s = figures.FigureSlice('denoise', 'pat-x', 0, 1, o, o + 30, o + 10, 'gaussian', o - 20)\n"
        f"print(*figures.write_figures(s, {str(tmp_path)!r}, 'denoise_000', 16))\n"
        f"figures.before_after_figure(o + 30, o, 'pat-x', 'lowdose', {str(tmp_path / 'as_is.png')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    from PIL import Image

    for name in ("denoise_000_scan.png", "denoise_000_closeup.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (
                round(4 * figures.PANEL_INCHES * figures.DPI),
                round((3 * figures.PANEL_INCHES + 0.5) * figures.DPI),
            )
    assert (tmp_path / "as_is.png").stat().st_size > 10_000


def test_the_before_after_figure_titles_its_panels():
    before = _body_slice()
    figure = figures.draw_before_after(before + 30.0, before, PATIENT, "lowdose")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert [t.split("\n")[0] for t in titles] == [
        "input (no reference)", "model (lowdose)", "|model − input|", "input (no reference)", "model (lowdose)",
    ]  # fmt: skip
    assert all(PATIENT in t for t in titles)


def test_the_figure_keeps_one_slice_of_the_baseline_with_the_best_psnr():
    hu = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    methods = {"model": hu + 1, "condition": hu + 2, "gaussian": hu + 3, "non_local_means": hu + 4}
    rows = [
        {"method": m, "region": region, "psnr_slices_db": db}
        for m, region, db in (("model", "volume", 40.0), ("condition", "volume", 45.0), ("gaussian", "volume", 30.0),
                              ("non_local_means", "volume", 35.0), ("gaussian", "lungs", 50.0))
    ]  # fmt: skip
    s = figures.figure_slice(hu, PATIENT, "denoise", methods, rows)
    assert s.baseline_name == "non_local_means" and (s.index, s.depth, s.patient) == (2, 5, PATIENT)
    np.testing.assert_array_equal(s.baseline, hu[2] + 4)
    np.testing.assert_array_equal(s.condition, hu[2] + 2)
    autoencode = figures.figure_slice(hu, PATIENT, "autoencode", {"model": hu, "condition": hu}, rows[:2])
    assert autoencode.baseline_name == "condition"
