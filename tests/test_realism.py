"""Realism measures: Fréchet Radiomics Distance, MS-SSIM diversity, tissue sanity, noise power spectrum."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from scipy import linalg, ndimage

from cgan_ct.demo.phantom import make_phantom
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.ms_ssim import matched_slices, ms_ssim, pairwise_ms_ssim, scales_for, volume_ms_ssim
from cgan_ct.realism.radiomics_frd import (
    frechet_distance,
    frechet_radiomics_distance,
    ledoit_wolf_covariance,
    sample_slices,
    slice_features,
)
from cgan_ct.realism.realism_table import TISSUE_KEYS, RealismResult, realism_table
from cgan_ct.realism.tissue_sanity import noise_power_spectrum, tissue_statistics

# Phantom slices and first-order plus texture features of the Original image only: fast, same code path.
FAST_FRD = {"image_types": {"Original": {}}, "resampled_spacing_mm": None}


@pytest.fixture(scope="module")
def radiomics():
    """PyRadiomics, or a skip (a failure in CI, which installs it through the test extra)."""
    if importlib.util.find_spec("radiomics") is None:
        if os.environ.get("CI"):
            pytest.fail("PyRadiomics is missing, but CI installs it ('.[test]' includes pyradiomics-bhklab)")
        pytest.skip("PyRadiomics not installed: pip install 'cgan-ct[realism]'")


@pytest.fixture(scope="module")
def phantoms():
    # 10 mm slices: 24 of them span the chest; 96 x 96 pixels of about 4.5 mm
    return [make_phantom(seed, 24, 96, slice_mm=10.0) for seed in range(6)]


def _degraded(volume, seed):
    """Blurred in-plane and given strong noise: a poor generator's output."""
    blurred = ndimage.gaussian_filter(volume.hu.astype(np.float32), (0, 1.5, 1.5))
    noisy = blurred + np.random.default_rng(seed).normal(0, 60, volume.hu.shape)
    return volume.replace(hu=np.clip(noisy, -1024, 3071).astype(np.int16))


# --- Fréchet distance and covariance ----------------------------------------------------------------


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # commuting (diagonal) covariances: sum over axes
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 2.0**2 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance([0, 2, 0], np.diag(a), [0, 0, 0], np.diag(b)) == pytest.approx(expected)
    # general covariances: against tr(A + B - 2 (A B)^(1/2)) through scipy's sqrtm
    rng = np.random.default_rng(0)
    m, n = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    cov_a, cov_b = m @ m.T + 0.1 * np.eye(5), n @ n.T + 0.1 * np.eye(5)
    mean_a, mean_b = rng.normal(size=5), rng.normal(size=5)
    reference = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(linalg.sqrtm(cov_a @ cov_b)))
    assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(mean_b, cov_b, mean_a, cov_a) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(mean_a, cov_a, mean_a, cov_a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance([0, 0], np.eye(2), [0, 0, 0], np.eye(3))


def test_ledoit_wolf_is_well_conditioned_with_few_samples_and_exact_with_many():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(10, 40))
    cov, shrinkage = ledoit_wolf_covariance(few)
    assert 0 < shrinkage <= 1 and np.linalg.eigvalsh(cov).min() > 0  # the sample covariance has rank 9
    true = np.diag(np.linspace(1, 4, 6))
    many = rng.multivariate_normal(np.zeros(6), true, size=20000)
    cov, shrinkage = ledoit_wolf_covariance(many)
    assert shrinkage < 0.01 and np.allclose(cov, true, atol=0.1)


def test_frd_is_invariant_to_feature_units_and_ranks_a_shift():
    rng = np.random.default_rng(2)
    reference, same = rng.normal(size=(60, 20)), rng.normal(size=(40, 20))
    shifted = rng.normal(size=(40, 20)) + 0.8
    near, far = frechet_radiomics_distance(same, reference), frechet_radiomics_distance(shifted, reference)
    assert far > 0.8**2 * 20 * 0.8 > near  # the mean term alone is 12.8
    units = np.geomspace(1e-3, 1e4, 20)  # per-feature scales: z-scoring on the reference removes them
    assert frechet_radiomics_distance(same * units, reference * units) == pytest.approx(near, rel=1e-9)
    # equal sample counts: subsets of 20 rows, averaged over draws, reproducibly
    subsampled = frechet_radiomics_distance(same, reference, samples=20, seed=3)
    assert subsampled == frechet_radiomics_distance(same, reference, samples=20, seed=3) and subsampled > near
    with pytest.raises(ValueError, match="no feature varies"):
        frechet_radiomics_distance(same, np.ones((10, 20)))


def test_missing_pyradiomics_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "radiomics", None)  # makes `import radiomics` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'cgan-ct\[realism\]'"):
        slice_features(np.zeros((2, 16, 16)), (1.0, 1.0, 1.0))


def test_slices_are_spread_over_the_body():
    body = np.zeros((40, 10, 10), bool)
    body[5:35, 2:8, 2:8] = True
    chosen = sample_slices(body, 6)
    assert len(chosen) == 6 and chosen.min() >= 5 and chosen.max() < 35 and np.all(np.diff(chosen) >= 4)
    assert np.array_equal(sample_slices(body, 100), np.arange(5, 35))


def test_frd_ranks_degraded_volumes_farther_than_real_like_ones(radiomics, phantoms):
    def features(volumes):
        return np.concatenate([slice_features(v.hu, v.spacing_mm, slices=8, **FAST_FRD)[1] for v in volumes])

    training = features(phantoms[:3])
    assert training.shape == (24, 77) and np.isfinite(training).all()
    real_like = features(phantoms[3:5])
    degraded = features([_degraded(v, i) for i, v in enumerate(phantoms[3:5])])
    near = frechet_radiomics_distance(real_like, training)
    far = frechet_radiomics_distance(degraded, training)
    assert far > 2 * near > 0


# --- MS-SSIM ----------------------------------------------------------------------------------------


def test_ms_ssim_agrees_with_scikit_image_and_tensorflow():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    a = ndimage.gaussian_filter(rng.uniform(0, 2048, (176, 176)), 2)
    b = np.clip(a + rng.normal(0, 60, a.shape), 0, 2048)
    single = structural_similarity(a, b, data_range=2048, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ms_ssim(a, b, 2048, scales=1) == pytest.approx(single, rel=1e-6)
    import tensorflow as tf

    expected = tf.image.ssim_multiscale(a[None, ..., None], b[None, ..., None], max_val=2048.0).numpy()[0]
    assert scales_for(a.shape) == 5
    assert ms_ssim(a, b, 2048) == pytest.approx(float(expected), rel=1e-4)
    assert ms_ssim(a, a, 2048) == pytest.approx(1.0)
    assert scales_for((96, 96)) == 4  # 96, 48, 24, 12: a fifth scale of 6 pixels would not hold the window
    with pytest.raises(ValueError, match="smaller than"):
        scales_for((8, 8))


def test_volume_ms_ssim_identical_different_and_collapsed(phantoms):
    a, b = phantoms[0].hu, phantoms[1].hu
    assert volume_ms_ssim(a, a) == pytest.approx(1.0)
    different = volume_ms_ssim(a, b)
    assert different < 0.95
    # slices at matched relative heights: a volume of twice the slices, each repeated, is the same volume
    assert volume_ms_ssim(a, np.repeat(a, 2, axis=0)) == pytest.approx(1.0)
    assert np.array_equal(matched_slices(10, 5), [1, 3, 5, 7, 9])
    # a collapsed generator: copies of one volume (with a little noise) against different patients
    rng = np.random.default_rng(5)
    copies = [a + rng.normal(0, 10, a.shape) for _ in range(3)]
    collapsed, diverse = pairwise_ms_ssim(copies), pairwise_ms_ssim([p.hu for p in phantoms[:3]])
    assert len(collapsed) == len(diverse) == 3
    assert min(collapsed) > max(diverse)
    with pytest.raises(ValueError, match="same in-plane shape"):
        volume_ms_ssim(a, a[:, :50])


def test_aligned_ms_ssim_sees_through_field_of_view_and_placement():
    """The same body on two fields of view and placed apart differs as stored, not aligned; two patients differ
    aligned too (so the aligned measure is not blind)."""
    from cgan_ct.ops.regrid import Regrid
    from cgan_ct.realism.ms_ssim import aligned_ms_ssim, body_aligned

    volume = make_phantom(0, 12, 256, pixel_mm=1.5, slice_mm=25.0)
    a = volume.hu.astype(np.float32)
    moved = Regrid((1.5, 1.5), (1.8, 1.8), 256, shift_mm=(-30.0, 20.0)).apply(a)  # zoomed out, shifted
    assert volume_ms_ssim(a, moved) < 0.6
    same = aligned_ms_ssim([(a, (1.5, 1.5)), (moved, (1.8, 1.8))])
    other = make_phantom(3, 12, 256, pixel_mm=1.5, slice_mm=25.0).hu
    different = aligned_ms_ssim([(a, (1.5, 1.5)), (other, (1.5, 1.5))])
    assert same[0] > 0.85 and different[0] < same[0] - 0.15, (same, different)
    # the body's centroid lands on the grid's centre; an empty slice is kept centred
    yy, xx = np.mgrid[:64, :64]
    disc = np.where((yy - 20) ** 2 + (xx - 40) ** 2 <= 100, 40.0, -1000.0)  # 20 mm across on 2 mm pixels
    aligned = body_aligned(disc, (2.0, 2.0), size=128)
    cy, cx = ndimage.center_of_mass(aligned > -500)
    assert (
        abs(cy - 63.5) < 0.5
        and abs(cx - 63.5) < 0.5
        and (aligned > -500).sum() * 0.64 == pytest.approx((disc > -500).sum() * 4.0, rel=0.05)
    )
    assert body_aligned(np.full((32, 32), -1000.0), (1.0, 1.0), size=16).max() == pytest.approx(-1000.0)


# --- tissue sanity and NPS -----------------------------------------------------------------------------


def test_noise_power_spectrum_of_white_noise_on_a_ramp():
    rng = np.random.default_rng(6)
    hu = rng.normal(40, 20, (4, 96, 96))
    ramp = hu + np.linspace(0, 200, 96)[None, None, :]  # a plane, removed by the detrending
    region = np.ones(hu.shape, bool)
    flat = noise_power_spectrum(hu, (2.0, 0.5, 0.5), region)
    sloped = noise_power_spectrum(ramp, (2.0, 0.5, 0.5), region)
    assert flat["noise_hu"] == pytest.approx(20.0, rel=0.05) and sloped["noise_hu"] == pytest.approx(20.0, rel=0.05)
    high = flat["frequencies_per_mm"] > 0.2
    assert flat["nps"][high] == pytest.approx(np.full(high.sum(), 20.0**2 * 0.25), rel=0.1)  # sigma^2 dy dx
    smooth = ndimage.gaussian_filter(hu, (0, 1.5, 1.5))
    assert (
        noise_power_spectrum(smooth, (2.0, 0.5, 0.5), region)["mean_frequency_per_mm"]
        < 0.6 * (flat["mean_frequency_per_mm"])
    )
    assert noise_power_spectrum(hu, (2.0, 0.5, 0.5), np.zeros(hu.shape, bool)) is None


def test_grid_share_finds_a_period_two_pattern():
    """The share of NPS power on the in-plane Nyquist row and column: 2 / patch for white noise (63 of 1024
    frequencies, less the detrending's), near 0 for smoothed noise, and most of it for a faint cross-hatch of
    period 2 on smoothed noise (issue 33's synthetic look)."""
    rng = np.random.default_rng(7)
    hu = rng.normal(40, 20, (4, 96, 96))
    region = np.ones(hu.shape, bool)
    white = noise_power_spectrum(hu, (2.0, 0.5, 0.5), region)["grid_share"]
    assert white == pytest.approx(63 / 1024, rel=0.15)
    smooth = ndimage.gaussian_filter(hu, (0, 1.5, 1.5))
    assert noise_power_spectrum(smooth, (2.0, 0.5, 0.5), region)["grid_share"] < 0.005
    stripes = np.where(np.arange(96) % 2, 3.0, -3.0)  # 3 HU, alternating columns
    hatched = smooth + stripes[None, None, :] + stripes[None, :, None]
    assert noise_power_spectrum(hatched, (2.0, 0.5, 0.5), region)["grid_share"] > 0.5
    assert noise_power_spectrum(hu, (2.0, 0.5, 0.5), region, patch=31)["grid_share"] == 0.0  # no Nyquist row


def test_tissue_medians_come_from_regions(phantoms):
    volume = phantoms[0]
    stats = tissue_statistics(volume.hu, volume.spacing_mm)
    assert set(stats) == set(TISSUE_KEYS)
    assert -900 < stats["lung_hu"] < -700 and -190 <= stats["fat_hu"] <= -30
    assert 20 < stats["mediastinum_hu"] < 120  # the phantom's heart and blood are 40-45 HU, contrast 250
    assert 300 < stats["bone_hu"] < 850  # cortex (900) and filled-in marrow (250): the region, not the window
    assert 0.1 < stats["lung_fraction"] < 0.6 and 0 < stats["bone_fraction"] < 0.2 and 0 < stats["body_fraction"] < 1
    filled = volume.hu.copy()
    filled[body_mask(filled) & (filled < -400)] = 40  # lungs filled with soft tissue
    no_lungs = tissue_statistics(filled, volume.spacing_mm)
    assert no_lungs["lung_hu"] is None and no_lungs["lung_fraction"] == 0.0 and no_lungs["mediastinum_hu"] is None
    with pytest.raises(ValueError, match="no body"):
        tissue_statistics(np.full((2, 16, 16), -1000, np.int16), (1.0, 1.0, 1.0))


# --- the table -----------------------------------------------------------------------------------------


def test_realism_table_flags_a_collapsed_degraded_generator(radiomics, phantoms):
    training, heldout = phantoms[:3], phantoms[3:5]
    collapsed = [_degraded(phantoms[5], seed) for seed in range(3)]
    bad = realism_table(collapsed, training, heldout, slices_per_volume=8, frd_options=FAST_FRD)
    assert bad.groups["synthetic"]["frd"] > 2 * bad.groups["heldout"]["frd"]
    assert min(bad.groups["synthetic"]["ms_ssim"]) > max(bad.real_ms_ssim)
    assert [passed for passed, _ in bad.goals().values()] == [False, False]
    lines = bad.markdown().splitlines()
    assert lines[0].startswith("| group | volumes | FRD vs training | MS-SSIM pairs | lung HU |")
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| synthetic", "| heldout", "| real range"]
    assert sum(line.startswith("|") for line in lines) == 5 and all(line.count("|") == 18 for line in lines[:5])
    assert lines[-2].startswith("- FRD synthetic <= 2x held-out: no (synthetic ")
    assert lines[-1].startswith("- MS-SSIM synthetic pairs not above real pairs: no (synthetic pairs ")
    record = json.loads(bad.to_json())
    assert record["settings"]["frd_samples_per_group"] == 16 and record["goals"]
    assert record["groups"]["heldout"]["tissue"]["lung_hu"]["in_range"] in ([True, True], [True, False], [False, True])
    written = bad.markdown() + bad.to_json()
    assert not any(v.volume_id in written or v.patient_key in written for v in phantoms)


def test_markdown_cells_and_goal_lines():
    def tissue(values, verdicts):
        return {key: {"values": values, "in_range": verdicts} for key in TISSUE_KEYS}

    result = RealismResult(
        groups={
            "synthetic": {
                "volumes": 2,
                "frd": 30.0,
                "ms_ssim": [0.5],
                "tissue": tissue([-850.0, -800.0], [True, False]),
            },
            "heldout": {"volumes": 1, "frd": 10.0, "ms_ssim": None, "tissue": tissue([None], [None])},
        },
        real_ms_ssim=[0.2, 0.4],
        real_range={key: [-860.0, -820.0] for key in TISSUE_KEYS},
        settings={"slices_per_volume": 16, "real_volumes": 3},
    )
    lines = result.markdown().splitlines()
    assert lines[2].startswith("| synthetic | 2 | 30.0 | 0.500 (0.500–0.500) | -825 (-850–-800) 1/2 | ")
    assert lines[3].startswith("| heldout | 1 | 10.0 | (with real) | – | ")
    assert lines[4].startswith("| real range | 3 | – | 0.300 (0.200–0.400) | -860–-820 | ")
    assert lines[-2] == "- FRD synthetic <= 2x held-out: no (synthetic 30.0, held-out 10.0, ratio 3.00)"
    assert lines[-1] == "- MS-SSIM synthetic pairs not above real pairs: no (synthetic pairs 0.500, real pairs 0.300)"
    assert result.frd_ratio == pytest.approx(3.0)
    aligned = dataclasses.replace(result, aligned_ms_ssim={"synthetic": [0.4], "real": [0.35, 0.45]})
    assert "with the bodies aligned" in aligned.markdown() and "synthetic 0.400 (0.400–0.400), real 0.400" in (
        aligned.markdown()
    )


def test_realism_table_rejects_too_few_volumes(phantoms):
    with pytest.raises(ValueError, match=">= 2 synthetic"):
        realism_table(phantoms[:1], phantoms[1:2], phantoms[2:3])
    with pytest.raises(TypeError, match="Volumes"):
        realism_table([phantoms[0].hu, phantoms[1].hu], phantoms[1:2], phantoms[2:3])


# --- real CT -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_chest_ct(radiomics, shared_ct):
    from cgan_ct import read_volume

    volume = read_volume(shared_ct / "lung-pet-ct-dx-A0001")
    stats = tissue_statistics(volume.hu, volume.spacing_mm)
    names, features = slice_features(volume.hu, volume.spacing_mm, slices=6)
    assert features.shape == (6, 693) and len(names) == 693 and np.isfinite(features).all()
    assert {name.split("_")[0] for name in names} >= {"original", "log-sigma-2-0-mm-3D", "wavelet-HH"}
    assert -900 < stats["lung_hu"] < -750 and -130 < stats["fat_hu"] < -60
    assert 0 < stats["mediastinum_hu"] < 80 and stats["bone_hu"] > 200
    assert 0.1 < stats["lung_fraction"] < 0.6 and 0.01 < stats["bone_fraction"] < 0.2
    assert 5 < stats["nps_noise_hu"] < 100 and 0.05 < stats["nps_mean_frequency_per_mm"] < 0.5 / volume.spacing_mm[2]
