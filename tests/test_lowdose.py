"""The lowdose condition's physics: projection/reconstruction round trip, dose scaling, noise texture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cgan_ct.config import LowDoseConfig
from cgan_ct.ops import lowdose


def _grid(size):
    c = np.arange(size) - (size - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _water_cylinder(size=128, radius_px=50):
    yy, xx = _grid(size)
    return np.where(xx**2 + yy**2 < radius_px**2, 0.0, -1000.0).astype(np.float32), yy, xx


def test_projection_round_trip_reproduces_the_slice():
    """Without noise, FBP(project(slice)) is the slice within 15 HU (mean absolute, away from edges)."""
    size = 128
    yy, xx = _grid(size)
    slice_hu = np.full((size, size), -1000.0, np.float32)
    body = xx**2 + (yy / 0.8) ** 2 < 55**2
    slice_hu[body] = 40.0
    bone = (xx - 20) ** 2 + (yy + 10) ** 2 < 8**2
    lung = (xx + 22) ** 2 + yy**2 < 14**2
    slice_hu[bone], slice_hu[lung] = 1000.0, -850.0
    mu = lowdose.MU_WATER_PER_MM * (1 + slice_hu / 1000)
    geometry = lowdose.ParallelBeam(size, 400)
    back_hu = (geometry.fbp(geometry.project(mu[None]))[0] / lowdose.MU_WATER_PER_MM - 1) * 1000
    error = back_hu - slice_hu
    edges = np.zeros_like(body)
    for mask in (body, bone, lung):
        near = np.zeros_like(mask)
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                near |= np.roll(mask, (dy, dx), (0, 1)) != mask
        edges |= near
    interior = body & ~edges
    assert np.abs(error[interior]).mean() < 15.0
    assert abs(error[interior].mean()) < 5.0  # no bias
    assert np.abs(error[~body & ~edges & (xx**2 + yy**2 < 60**2)]).mean() < 15.0  # air stays air


def _noise_std(dose, rng_seed, from_dose=None, draws=6, size=128):
    water, yy, xx = _water_cylinder(size)
    centre = xx**2 + yy**2 < 25**2
    config = LowDoseConfig(dose=dose)
    rng = np.random.default_rng(rng_seed)
    noise = lowdose.lowdose_noise_hu(np.repeat(water[None], draws, 0), 2.0, config, rng, from_dose=from_dose)
    return float(np.std(noise[:, centre])), noise, centre


def test_noise_grows_as_one_over_sqrt_dose():
    full, _, _ = _noise_std(1.0, 1)
    quarter, _, _ = _noise_std(0.25, 2)
    half, _, _ = _noise_std(0.5, 3)
    assert quarter / full == pytest.approx(2.0, rel=0.10)
    assert half / full == pytest.approx(np.sqrt(2.0), rel=0.10)


def test_inserted_noise_is_the_dose_difference():
    """Noise inserted into a full-dose scan to reach dose d has sqrt(1/d - 1) times full-dose noise."""
    full, _, _ = _noise_std(1.0, 4)
    inserted, _, _ = _noise_std(0.25, 5, from_dose=1.0)
    assert inserted / full == pytest.approx(np.sqrt(3.0), rel=0.10)
    with pytest.raises(ValueError, match="noise only adds"):
        _noise_std(1.0, 6, from_dose=0.5)


def test_noise_power_spectrum_is_not_white():
    """Filtered back-projection's noise: little power at low frequency, a peak well above zero."""
    size = 128
    _, noise, _ = _noise_std(0.25, 7, size=size)
    patch = noise[:, 40:88, 40:88]  # inside the cylinder
    patch = patch - patch.mean(axis=(1, 2), keepdims=True)
    power = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(patch), axes=(1, 2))) ** 2, axis=0)
    n = patch.shape[-1]
    fy, fx = _grid(n)
    radius = np.hypot(fy, fx) / n  # cycles per pixel
    bins = np.digitize(radius, np.linspace(0, 0.5, 11))
    radial = np.array([power[bins == b].mean() for b in range(1, 11)])
    peak = int(np.argmax(radial))
    assert peak >= 2  # peak at >= 0.1 cycles/pixel
    assert radial[0] < 0.5 * radial[peak]
    # a white field of the same variance has a flat spectrum: first bin / peak about 1
    white = np.random.default_rng(0).standard_normal(patch.shape)
    white_power = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(white), axes=(1, 2))) ** 2, axis=0)
    white_radial = np.array([white_power[bins == b].mean() for b in range(1, 11)])
    assert white_radial[0] > 0.5 * white_radial.max()


def test_noise_is_even_across_the_slice_unlike_image_domain_poisson():
    """Air outside the body is about as noisy as tissue inside it (not 13 HU against 92, as the paper's noise)."""
    _, noise, centre = _noise_std(0.25, 8)
    yy, xx = _grid(128)
    air = (xx**2 + yy**2 > 54**2) & (xx**2 + yy**2 < 62**2)
    ratio = np.std(noise[:, air]) / np.std(noise[:, centre])
    assert 0.4 < ratio <= 1.2


def test_simulation_is_reproducible_and_keyed():
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 50, (5, 40, 36)).astype(np.float32) - 200
    config = LowDoseConfig(views=64)
    a = lowdose.simulate_lowdose(volume, (2.0, 1.0, 1.0), config, "vol-a", workers=1)
    b = lowdose.simulate_lowdose(volume, (2.0, 1.0, 1.0), config, "vol-a", workers=2)
    c = lowdose.simulate_lowdose(volume, (2.0, 1.0, 1.0), config, "vol-b", workers=1)
    assert a.shape == volume.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 1.0 < np.std(a - volume) < 500.0
    with pytest.raises(ValueError, match="at least 8 x 8"):
        lowdose.simulate_lowdose(volume[:, :4], (2.0, 1.0, 1.0), config, "vol-a")


def test_config_refuses_bad_settings():
    for bad in ({"dose": 0.0}, {"dose": 1.5}, {"i0": -1.0}, {"views": 2}):
        with pytest.raises(ValueError):
            LowDoseConfig(**bad)


def test_i0_is_calibrated_on_the_scans_own_noise():
    """A scan with 20 HU of noise at its own dose: quarter dose adds sqrt(3) x 20 HU (noise doubles)."""
    size = 128
    yy, xx = _grid(size)
    body = (xx / 55) ** 2 + (yy / 45) ** 2 < 1
    slice_hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    rng = np.random.default_rng(0)
    volume = np.repeat(slice_hu[None], 8, 0) + rng.normal(0, 20, (8, size, size)).astype(np.float32)
    spacing = (2.0, 1.5, 1.5)
    config = LowDoseConfig(dose=0.25, views=128)
    i0, own = lowdose.calibrate_i0(volume, spacing, config)
    assert own == pytest.approx(20.0, rel=0.15)
    simulated = lowdose.simulate_lowdose(volume, spacing, config, "vol-a")
    inner = (xx / 45) ** 2 + (yy / 35) ** 2 < 1
    added = float(np.std((simulated - volume)[:, inner]))
    assert added == pytest.approx(np.sqrt(3.0) * own, rel=0.2)
    # a given i0 is used as it is; half the photons, twice the variance
    fixed = lowdose.simulate_lowdose(volume, spacing, dataclasses.replace(config, i0=i0 / 2), "vol-a")
    assert float(np.std((fixed - volume)[:, inner])) == pytest.approx(np.sqrt(2) * added, rel=0.1)
    assert lowdose.calibrate_i0(volume, spacing, dataclasses.replace(config, i0=5e5)) == (
        5e5,
        pytest.approx(np.nan, nan_ok=True),
    )
    air = np.full((4, 32, 32), -1000.0, np.float32)  # nothing to measure: the reference
    assert lowdose.calibrate_i0(air, spacing, config)[0] == lowdose.REFERENCE_I0


def test_residual_weight_keeps_the_correction_in_proportion_to_the_added_noise():
    w = lambda dose, gamma=1.0: lowdose.residual_weight(dose, 0.25, gamma)  # noqa: E731
    assert w(0.25) == 1.0 and w(0.1) == 1.0  # the model's own dose, or noisier: the whole correction
    assert w(1.0) == 0.0  # full dose: the scan as it is
    assert w(0.5) == pytest.approx(1 / 3) and w(0.5, 2.0) == pytest.approx(1 / 9)  # (1/d - 1) / (1/d0 - 1)
    doses = np.linspace(0.25, 1.0, 16)
    assert np.all(np.diff([w(d) for d in doses]) < 0)  # milder dose, less correction
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="doses must be in"):
            lowdose.residual_weight(bad, 0.25, 1.0)
