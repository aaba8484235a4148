"""Evaluation of synthetic volumes without raters: HU Wasserstein distance, radial spectra, lung fraction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from cgan_ct.demo.phantom import make_phantom
from cgan_ct.errors import InputError
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.synthesis_stats import (
    HuHistogram,
    RadialSpectrum,
    VolumeStatistics,
    compare,
    hu_histogram,
    hu_wasserstein,
    markdown_table,
    pool_histograms,
    pool_spectra,
    radial_power_spectra,
    spectrum_distance,
    tissue_masks,
    volume_statistics,
    wasserstein_hu,
)

PATCH = 12  # phantom pixels are about 4.5 mm: 12 fit inside a lung


def _phantom(seed):
    # 10 mm slices so that 24 slices span the whole chest, diaphragm to apices
    return make_phantom(seed, 24, 96, slice_mm=10.0)


@pytest.fixture(scope="module")
def phantoms():
    return [_phantom(seed) for seed in range(4)]


def _lungs_filled(volume):
    hu = volume.hu.copy()
    hu[body_mask(hu) & (hu < -400)] = 40
    return volume.replace(hu=hu, volume_id="lungs-filled")


# --- HU histograms and W1 -----------------------------------------------------------------------


def test_w1_of_a_shift_is_the_shift():
    values = np.repeat(np.arange(-300, 200), 3)
    assert wasserstein_hu(hu_histogram(values), hu_histogram(values + 37)) == pytest.approx(37.0, abs=1e-9)
    assert wasserstein_hu(hu_histogram(values), hu_histogram(values)) == 0.0


def test_w1_of_a_volume_against_its_own_voxels_shifted(phantoms):
    hu = phantoms[0].hu
    body = body_mask(hu)
    assert hu_wasserstein(hu, hu[body] + 50) == pytest.approx(50.0, abs=1e-9)
    assert hu_wasserstein(hu, hu_histogram(hu[body])) == 0.0
    everything = np.ones(hu.shape, bool)
    # float reference, every voxel (air included: +12 keeps it inside the histogram's -1024..3071 HU)
    assert hu_wasserstein(hu, hu.astype(np.float32) + 12.0, mask=everything) == pytest.approx(12.0, abs=1e-9)


def test_w1_agrees_with_scipy():
    rng = np.random.default_rng(0)
    a = np.rint(np.concatenate([rng.normal(-850, 60, 4000), rng.normal(40, 30, 6000)]))
    b = np.rint(np.concatenate([rng.normal(-800, 90, 3000), rng.normal(60, 50, 5000), rng.normal(900, 80, 500)]))
    a, b = np.clip(a, -1024, 3071), np.clip(b, -1024, 3071)  # the histogram's range: beyond it, values pile up
    assert a.min() == -1024 or b.min() == -1024
    expected = stats.wasserstein_distance(a, b)
    assert wasserstein_hu(hu_histogram(a), hu_histogram(b)) == pytest.approx(expected, rel=1e-9)
    coarse = wasserstein_hu(hu_histogram(a, bin_hu=5), hu_histogram(b, bin_hu=5))
    assert abs(coarse - expected) <= 5.0
    # floats are rounded to whole HU first
    float_a = a + rng.uniform(-0.4, 0.4, a.size)
    assert wasserstein_hu(hu_histogram(float_a), hu_histogram(b)) == pytest.approx(expected, rel=1e-9)


def test_histogram_bins_and_clipping():
    h = hu_histogram(np.array([-3000, -1024, -1023, 0, 4, 5, 3071, 5000]), bin_hu=5)
    assert h.counts.size == 820 and h.total == 8
    assert h.counts[0] == 3 and h.counts[-1] == 2
    assert h.counts[(0 + 1024) // 5] == 1 and h.counts[(5 + 1024) // 5] == 2  # -1024-based bins: [-4, 1), [1, 6)
    pooled = pool_histograms([h, h, h])
    assert pooled.total == 24 and np.array_equal(pooled.counts, 3 * h.counts)


# --- radial power spectra --------------------------------------------------------------------------


def test_white_noise_spectrum_is_flat_at_variance_times_pixel_area():
    rng = np.random.default_rng(1)
    hu = rng.normal(0, 100, (8, 96, 96))
    everything = {"all": np.ones(hu.shape, bool)}
    spectrum = radial_power_spectra(hu, (2.0, 0.5, 0.5), everything, patch=32, max_patches=200, bin_per_mm=0.05)["all"]
    assert spectrum.patches == 200
    assert spectrum.frequencies_per_mm.max() <= 1.0  # Nyquist of 0.5 mm pixels
    high = spectrum.frequencies_per_mm > 0.2  # away from the dip that removing the patch mean leaves at DC
    assert spectrum.power[high] == pytest.approx(np.full(high.sum(), 100.0**2 * 0.25), rel=0.08)
    # the patch mean is removed: an offset in HU changes nothing
    offset = radial_power_spectra(hu + 1000, (2.0, 0.5, 0.5), everything, patch=32, max_patches=200, bin_per_mm=0.05)
    assert np.allclose(offset["all"].power, spectrum.power)


def test_ring_of_frequencies_peaks_at_its_frequency_in_cycles_per_mm():
    # noise keeping only the in-plane frequencies within 0.02 of 0.25 cycles/mm (1 mm pixels): isotropic
    rng = np.random.default_rng(3)
    f = np.fft.fftfreq(128)
    ring = np.abs(np.hypot(f[:, None], f[None, :]) - 0.25) < 0.02
    hu = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(0, 100, (4, 128, 128))) * ring))
    everything = {"all": np.ones(hu.shape, bool)}
    spectrum = radial_power_spectra(hu, (1.0, 1.0, 1.0), everything, patch=32, bin_per_mm=0.02)["all"]
    assert spectrum.frequencies_per_mm[np.argmax(spectrum.power)] == pytest.approx(0.25, abs=0.02)
    # the same voxels at half the spacing: frequencies twice as high, power density a quarter
    fine = radial_power_spectra(hu, (1.0, 0.5, 0.5), everything, patch=32, bin_per_mm=0.04)["all"]
    assert np.allclose(fine.frequencies_per_mm, 2 * spectrum.frequencies_per_mm)
    assert np.allclose(fine.power, spectrum.power / 4)


def test_blur_lowers_and_noise_raises_high_frequency_power(phantoms):
    volume = phantoms[3]
    masks = tissue_masks(volume.hu, volume.spacing_mm)
    blurred = ndimage.gaussian_filter(volume.hu.astype(np.float32), (0, 1.0, 1.0))
    noisy = volume.hu + np.random.default_rng(2).normal(0, 80, volume.hu.shape)
    spectra = {
        name: radial_power_spectra(hu, volume.spacing_mm, masks, patch=PATCH)["lung"]
        for name, hu in (("original", volume.hu), ("blurred", blurred), ("noisy", noisy))
    }
    original = spectra["original"]
    assert original.patches >= 20
    assert np.array_equal(original.frequencies_per_mm, spectra["blurred"].frequencies_per_mm)
    top = slice(-2, None)  # the two highest frequency bins
    assert np.all(spectra["blurred"].power[top] < 0.5 * original.power[top])
    assert np.all(spectra["noisy"].power[top] > 1.2 * original.power[top])
    # blurring removes fine detail but keeps the coarse structure
    assert spectra["blurred"].power[0] == pytest.approx(original.power[0], rel=0.3)
    assert spectrum_distance(original, original) == 0.0
    assert spectrum_distance(original, spectra["blurred"]) > spectrum_distance(original, spectra["noisy"]) > 0.0


def test_spectra_pool_as_a_patch_weighted_mean():
    a = RadialSpectrum(0.1, np.array([10.0, 20.0, 0.0]), np.array([1, 1, 0]))
    b = RadialSpectrum(0.1, np.array([90.0, 30.0, 60.0, 6.0]), np.array([3, 3, 3, 3]))
    pooled = pool_spectra([a, b])
    assert np.allclose(pooled.frequencies_per_mm, [0.05, 0.15, 0.25, 0.35])
    assert np.allclose(pooled.power, [25.0, 12.5, 20.0, 2.0])
    assert pool_spectra([]) is None
    # a factor of 10 in power in the two shared bins
    assert spectrum_distance(a, RadialSpectrum(0.1, np.array([1.0, 2.0]), np.array([1, 1]))) == pytest.approx(1.0)
    assert spectrum_distance(a, RadialSpectrum(0.1, np.zeros(3), np.array([0, 0, 4]))) is None


def test_patch_selection_is_reproducible_and_capped(phantoms):
    volume = phantoms[1]
    masks = tissue_masks(volume.hu, volume.spacing_mm)
    first = radial_power_spectra(volume.hu, volume.spacing_mm, masks, patch=PATCH, max_patches=10, seed=5)
    again = radial_power_spectra(volume.hu, volume.spacing_mm, masks, patch=PATCH, max_patches=10, seed=5)
    other = radial_power_spectra(volume.hu, volume.spacing_mm, masks, patch=PATCH, max_patches=10, seed=6)
    assert first["lung"].patches == 10
    assert np.array_equal(first["lung"].power, again["lung"].power)
    assert not np.array_equal(first["lung"].power, other["lung"].power)
    assert "bone" not in first  # thin ribs and spine: no patch is 90 % bone at this resolution


# --- tissue classes and lung fraction --------------------------------------------------------------


def test_tissue_classes_are_disjoint_and_inside_the_body(phantoms):
    hu = phantoms[0].hu
    masks = tissue_masks(hu, phantoms[0].spacing_mm)
    assert set(masks) == {"lung", "fat", "soft_tissue", "bone"}
    total = sum(m.astype(int) for m in masks.values())
    assert total.max() == 1 and not np.any(total.astype(bool) & ~body_mask(hu))
    assert np.all((hu[masks["fat"]] >= -190) & (hu[masks["fat"]] <= -30))
    assert np.all(hu[masks["bone"]] >= 300) and masks["bone"].any()


def test_lung_fraction_of_a_chest_and_of_filled_lungs(phantoms):
    chest = volume_statistics(phantoms[0], patch=PATCH)
    assert 0.1 < chest.lung_fraction < 0.6
    assert chest.body_voxels > 0 and chest.histogram.total == chest.body_voxels
    filled = volume_statistics(_lungs_filled(phantoms[0]), patch=PATCH)
    assert filled.lung_fraction == 0.0 and "lung" not in filled.spectra
    assert "lung" in chest.spectra


# --- comparison against the training pool ------------------------------------------------------------


def test_heldout_is_closer_to_training_than_wrong_volumes(phantoms):
    training, heldout = phantoms[:2], phantoms[2:]
    shifted = phantoms[0].replace(hu=(phantoms[0].hu + 300).astype(np.int16), volume_id="shifted")
    blurred = phantoms[0].replace(
        hu=ndimage.gaussian_filter(phantoms[0].hu, (0, 1.5, 1.5)).astype(np.int16), volume_id="blurred"
    )
    result = compare([shifted, _lungs_filled(phantoms[0]), blurred], training, heldout, patch=PATCH)
    rows = {r["volume"]: r for r in result.rows}
    real = [r for r in result.rows if r["group"] == "heldout"]
    assert len(real) == 2 and len(result.rows) == 5
    worst_real_w1 = max(r["w1_hu"] for r in real)
    assert rows["shifted"]["w1_hu"] > 5 * worst_real_w1 and rows["lungs-filled"]["w1_hu"] > 5 * worst_real_w1
    assert rows["lungs-filled"]["lung_fraction"] == 0.0 and rows["lungs-filled"]["spectrum_lung"] is None
    assert all(0.1 < r["lung_fraction"] < 0.6 for r in real)
    assert rows["blurred"]["spectrum_lung"] > 3 * max(r["spectrum_lung"] for r in real)
    assert result.training["volumes"] == 2 and 0.1 < result.training["lung_fraction_mean"] < 0.6


def test_precomputed_statistics_and_generators_give_the_same_rows(phantoms):
    from_volumes = compare([phantoms[3]], phantoms[:2], [phantoms[2]], patch=PATCH)
    training_stats = [volume_statistics(v, patch=PATCH) for v in phantoms[:2]]
    assert all(isinstance(s, VolumeStatistics) for s in training_stats)
    from_stats = compare((v for v in [phantoms[3]]), iter(training_stats), (_phantom(2) for _ in range(1)), patch=PATCH)
    assert from_stats.rows == from_volumes.rows and from_stats.training == from_volumes.training


def test_markdown_table_shows_group_means_and_ranges():
    rows = [
        {"group": "synthetic", "volume": "s1", "w1_hu": 10.0, "spectrum_lung": 0.2, "lung_fraction": 0.3},
        {"group": "synthetic", "volume": "s2", "w1_hu": 30.0, "spectrum_lung": None, "lung_fraction": 0.1},
        {"group": "heldout", "volume": "h1", "w1_hu": 4.0, "spectrum_lung": 0.1, "lung_fraction": 0.25},
    ]
    for r in rows:
        r.update({"spectrum_fat": None, "spectrum_soft_tissue": None, "spectrum_bone": None})
    training = {"volumes": 3, "lung_fraction_mean": 0.28, "lung_fraction_min": 0.2, "lung_fraction_max": 0.33}
    lines = markdown_table(rows, training).splitlines()
    assert lines[0].startswith("| group | volumes | W1 (HU) | lung spectrum |") and len(lines) == 5
    assert lines[2] == "| heldout | 1 | 4.0 (4.0–4.0) | 0.100 (0.100–0.100) | – | – | – | 0.250 (0.250–0.250) |"
    assert lines[3] == "| synthetic | 2 | 20.0 (10.0–30.0) | 0.200 (0.200–0.200) | – | – | – | 0.200 (0.100–0.300) |"
    assert lines[4] == "| training | 3 | – | – | – | – | – | 0.280 (0.200–0.330) |"
    assert all(line.count("|") == lines[0].count("|") for line in lines)


# --- bad input -----------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(phantoms):
    with pytest.raises(ValueError, match="3-D"):
        hu_wasserstein(np.zeros((8, 8)), np.zeros(10))
    with pytest.raises(ValueError, match="3-D"):
        tissue_masks(np.zeros((1, 2, 8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mask has shape"):
        hu_wasserstein(np.zeros((2, 8, 8)), np.zeros(10), mask=np.ones((2, 8, 9), bool))
    with pytest.raises(ValueError, match="patch=2"):
        radial_power_spectra(np.zeros((2, 8, 8)), (1.0, 1.0, 1.0), {}, patch=2)
    with pytest.raises(ValueError, match="NaN"):
        hu_histogram(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="same bins"):
        wasserstein_hu(hu_histogram([0]), hu_histogram([0], bin_hu=5))
    with pytest.raises(ValueError, match="empty"):
        wasserstein_hu(hu_histogram([0]), HuHistogram(np.zeros(4096, np.int64)))
    with pytest.raises(ValueError, match="training has no volumes"):
        compare([phantoms[0]], [], [phantoms[1]])
    with pytest.raises(ValueError, match="heldout has no volumes"):
        compare([phantoms[0]], [phantoms[1]], iter([]), patch=PATCH)
    air = phantoms[0].replace(hu=np.full((4, 16, 16), -1000, np.int16), volume_id="vol-air")
    with pytest.raises(InputError, match="^vol-air: no body"):
        volume_statistics(air)
    with pytest.raises(TypeError, match="Volume"):
        volume_statistics(phantoms[0].hu)


# --- real CT -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_chest_statistics(shared_ct):
    from cgan_ct import read_volume

    volume = read_volume(shared_ct / "lung-pet-ct-dx-A0001")
    result = volume_statistics(volume)
    assert 0.1 < result.lung_fraction < 0.6
    assert {"lung", "soft_tissue"} <= set(result.spectra)
    assert result.spectra["lung"].frequencies_per_mm.max() < 0.5 / volume.spacing_mm[2]  # Nyquist
    assert result.histogram.total == result.body_voxels
