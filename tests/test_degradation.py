"""Degraded depixelate conditions (cascade stages) and the fit that measures the degradation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from cgan_ct.data.input_pipeline import PipelineOptions
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.ops import corruption
from cgan_ct.ops.pyramid import subsample
from cgan_ct.synthesis.degradation import fit_degradation, slice_spectrum


def _coarse_phantoms(seeds, slices=64, size=256, factor=4):
    return [subsample(make_phantom(s, slices, size).hu.astype(np.float32), factor) for s in seeds]


def test_no_degradation_is_the_plain_condition():
    x = np.random.default_rng(0).normal(0, 100, (2, 16, 16, 16)).astype(np.float32)
    plain = corruption.depixelate(x, 2).numpy()
    assert np.array_equal(corruption.depixelate(x, 2, (0.0, 0.0, 0), None).numpy(), plain)
    with pytest.raises(ValueError, match="seed"):
        corruption.depixelate(x, 2, (0.5, 0.0, 0), None)


def test_blur_is_a_gaussian_with_reflected_edges():
    low = np.random.default_rng(1).normal(0, 100, (12, 9, 5)).astype(np.float32)  # axes shorter than the kernel too
    blurred = corruption.degrade_low(low, 1.5, 0.0, tf.constant([1, 2])).numpy()
    np.testing.assert_allclose(blurred, gaussian_filter(low, 1.5, mode="mirror", truncate=3.0), atol=1e-3)


def test_noise_and_shift_are_seeded_and_sized():
    x = np.random.default_rng(2).normal(0, 100, (16, 16, 16)).astype(np.float32)
    a = corruption.depixelate(x, 2, (0.0, 20.0, 0), tf.constant([3, 4])).numpy()
    b = corruption.depixelate(x, 2, (0.0, 20.0, 0), tf.constant([3, 4])).numpy()
    c = corruption.depixelate(x, 2, (0.0, 20.0, 0), tf.constant([5, 4])).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.std(a - corruption.depixelate(x, 2).numpy()) == pytest.approx(20.0, rel=0.2)
    shifted = corruption.depixelate(x, 2, (0.0, 0.0, 1), tf.constant([7, 8])).numpy()
    plain = corruption.depixelate(x, 2).numpy()
    matches = [
        (dz, dy, dx)
        for dz in (-1, 0, 1)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
        if np.array_equal(np.roll(plain, (dz, dy, dx), axis=(0, 1, 2)), shifted)
    ]
    assert matches, "the shifted condition is not the plain one rolled by at most one voxel"


def test_pipeline_options_refuse_negative_degradations():
    with pytest.raises(ValueError, match="condition_blur"):
        PipelineOptions(condition_blur=-1.0)


def test_fit_recovers_a_known_blur_and_noise():
    real = _coarse_phantoms(range(3))
    rng = np.random.default_rng(0)
    # noise the size of the blurred volumes' high-frequency power (smaller noise is not measurable, nor needed)
    generated = [gaussian_filter(v, 1.0) + rng.normal(0, 60.0, v.shape) for v in _coarse_phantoms(range(3, 6))]
    fit = fit_degradation(real, generated)
    # parsimony (least noise within the tolerance) leans low: seen 0.7 for 1.0
    assert 0.6 <= fit.blur_sigma <= 1.2, fit
    assert 20.0 <= fit.noise_hu <= 80.0, fit
    assert fit.fit_error < fit.fit_error_clean


def test_fit_of_real_against_real_finds_little():
    fit = fit_degradation(_coarse_phantoms(range(3)), _coarse_phantoms(range(3, 6)))
    assert (fit.blur_sigma, fit.noise_hu) == (0.0, 0.0)


def test_white_noise_spectrum_reads_its_variance():
    noise = [np.random.default_rng(3).normal(0, 30.0, (4, 64, 64))]
    _, power = slice_spectrum(noise)
    assert np.median(power[4:]) == pytest.approx(900.0, rel=0.15)


def test_fit_errors_name_the_problem():
    with pytest.raises(ValueError, match="square"):
        slice_spectrum([np.zeros((2, 16, 8))])
    with pytest.raises(ValueError, match="need real and generated"):
        fit_degradation([], [np.zeros((2, 16, 16))])
