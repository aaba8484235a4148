"""The output grain (cgan_ct.synthesis.grain): noise of the spectrum asked, mottle out with edges kept, a fit
that gives synthetic soft tissue the real volumes' noise power, the same volume whatever its slabs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgan_ct.realism.tissue_sanity import noise_power_spectrum
from cgan_ct.synthesis.grain import BIN_PER_MM, Grain, fit_grain, guided_smooth, soft_tissue_nps

SPACING = (2.0, 0.75, 0.75)
BINS = tuple((np.arange(20) + 0.5) * BIN_PER_MM)  # to 0.975 /mm: past the corner of the plane at 0.75 mm


def _everywhere(shape) -> np.ndarray:
    return np.ones(shape, bool)


def test_noise_has_the_power_spectrum_asked():
    white = Grain(BINS, (20.0**2 * 0.75 * 0.75,) * len(BINS), smooth_radius=0)
    noise = white.noise((6, 128, 128), SPACING, seed=3)
    assert noise.dtype == np.float32
    assert noise.std() == pytest.approx(20.0, rel=0.03)  # a flat NPS of s^2 * pixel area is white noise of s
    measured = noise_power_spectrum(noise, SPACING, _everywhere(noise.shape))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(32, 0.75), np.fft.fftfreq(32, 0.75)))  # the 32-voxel patch's
    assert measured["mean_frequency_per_mm"] == pytest.approx(radius.mean(), rel=0.03)  # white: every one alike
    low = Grain(BINS, tuple(400.0 if f < 0.2 else 0.0 for f in BINS), smooth_radius=0)
    measured_low = noise_power_spectrum(low.noise((6, 128, 128), SPACING, seed=3), SPACING, _everywhere(noise.shape))
    assert measured_low["mean_frequency_per_mm"] < 0.2 < measured["mean_frequency_per_mm"]


def test_noise_is_the_same_whatever_the_slabs_and_new_for_each_seed():
    grain = Grain(BINS, (100.0,) * len(BINS), smooth_radius=2, smooth_hu=10.0)
    volume = np.random.default_rng(0).normal(40, 30, (7, 48, 40)).astype(np.float32)
    whole = grain.apply(volume, SPACING, seed=5)
    pieces = np.concatenate(list(grain.stream([volume[:2], volume[2:3], volume[3:]], SPACING, seed=5)))
    np.testing.assert_array_equal(whole, pieces)
    assert not np.allclose(whole, grain.apply(volume, SPACING, seed=6))
    silent = Grain(BINS, (0.0,) * len(BINS), smooth_radius=0)
    np.testing.assert_array_equal(silent.apply(volume, SPACING, seed=5), volume)


def test_guided_smoothing_flattens_mottle_and_keeps_an_edge():
    y, x = np.mgrid[:96, :96]
    mottle = 12.0 * np.sin(2 * np.pi * y / 24) * np.sin(2 * np.pi * x / 24)  # 12 HU blotches, 18 mm apart
    tissue = np.where(x < 48, 40.0, -100.0) + mottle  # soft tissue beside fat: a 140 HU edge
    slab = np.stack([tissue, tissue]).astype(np.float32)
    smoothed = guided_smooth(slab, radius=8, contrast_hu=30.0)
    inside = (slice(None), slice(16, 80), slice(8, 32))  # soft tissue away from the edge
    assert smoothed[inside].std() < 0.35 * slab[inside].std()
    step = smoothed[:, 16:80, 52].mean() - smoothed[:, 16:80, 43].mean()  # either side of the edge
    assert step == pytest.approx(-140.0, abs=15.0)


def _body(shape, fill_hu: float) -> np.ndarray:
    """A cylinder of ``fill_hu`` in air: uniform soft tissue to measure."""
    z, rows, columns = shape
    y, x = np.mgrid[:rows, :columns]
    disk = (y - rows / 2) ** 2 + (x - columns / 2) ** 2 < (0.45 * rows) ** 2
    volume = np.full(shape, -1000.0, np.float32)
    volume[:, disk] = fill_hu
    return volume


def test_fit_gives_mottled_synthetic_tissue_the_real_noise_power():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    shape = (6, 160, 160)
    real = [_body(shape, 40.0) + rng.normal(0, 25, shape).astype(np.float32) for _ in range(3)]
    real_nps = [soft_tissue_nps(v, SPACING) for v in real]
    mottled = []
    for _ in range(2):  # the synthetic tissue: 25 HU of blotches a centimetre across, hardly any grain
        blotches = ndimage.gaussian_filter(rng.normal(0, 1, shape), (0, 6, 6))
        mottled.append(_body(shape, 40.0) + (25.0 * blotches / blotches.std()).astype(np.float32))
    grain, record = fit_grain([(v, SPACING) for v in mottled], real_nps)
    assert grain.volumes == 3 and grain.draws == 2 and grain.smooth_hu == pytest.approx(25.0, rel=0.1)
    assert record["synthetic"]["mean_frequency_per_mm"] < 0.5 * record["real"]["mean_frequency_per_mm"]
    grained = grain.apply(mottled[0], SPACING, seed=9)
    served = noise_power_spectrum(grained, SPACING, mottled[0] > -500)  # the same patches as below
    raw = noise_power_spectrum(mottled[0], SPACING, mottled[0] > -500)
    real_frequency = np.mean([noise_power_spectrum(v, SPACING, v > -500)["mean_frequency_per_mm"] for v in real])
    # mottle as strong as the real noise is halved, not removed (a guided filter's a is 1/2 there): most of
    # the way to the real grain, as the fit's record expects
    gap = real_frequency - raw["mean_frequency_per_mm"]
    assert served["mean_frequency_per_mm"] > raw["mean_frequency_per_mm"] + 0.6 * gap
    assert served["mean_frequency_per_mm"] == pytest.approx(record["expected"]["mean_frequency_per_mm"], rel=0.1)
    assert served["noise_hu"] == pytest.approx(record["expected"]["noise_hu"], rel=0.15)
    with pytest.raises(ValueError, match="no real volume"):
        fit_grain([(mottled[0], SPACING)], [None])
    with pytest.raises(ValueError, match="no synthetic volume"):
        fit_grain([(np.full(shape, -1000.0, np.float32), SPACING)], real_nps)


def test_grain_round_trips_and_refuses_bad_spectra():
    grain = Grain(BINS, tuple(range(len(BINS))), smooth_radius=4, smooth_hu=28.5, draws=4, volumes=6)
    assert Grain.from_json(grain.to_json()) == grain
    for frequencies, nps, why in [
        ((0.1, 0.05), (1.0, 1.0), "increase strictly"),
        ((0.1,), (1.0, 2.0), "one power per frequency"),
        ((0.1, 0.2), (1.0, -1.0), "powers >= 0"),
        ((0.1, 0.2), (1.0, np.nan), "finite"),
    ]:
        with pytest.raises(ValueError, match=why):
            Grain(frequencies, nps)
    with pytest.raises(ValueError, match="smooth_radius"):
        Grain(BINS, (0.0,) * len(BINS), smooth_radius=-1)


class MottledCascade:
    """What the trainer's grain fit needs of a Cascade: whole volumes in slabs, mottled soft tissue."""

    def __init__(self, shape=(6, 160, 160)):
        from cgan_ct.synthesis.cascade_spec import CascadeSpec

        self.spacing_mm, self.seeds = SPACING, []
        self.info = CascadeSpec(1, shape[1], SPACING, shape[0], "coarse", ("stage0",))

    def slabs(self, seed, slices):
        from scipy import ndimage

        self.seeds.append(seed)
        shape = (slices, self.info.size, self.info.size)
        blotches = ndimage.gaussian_filter(np.random.default_rng(seed).normal(0, 1, shape), (0, 6, 6))
        volume = _body(shape, 40.0) + (25.0 * blotches / blotches.std()).astype(np.float32)
        return iter([volume[:2], volume[2:]])


def test_trainer_fits_the_grain_on_its_own_draws_and_records_it(tmp_path):
    from cgan_ct.synthesis.cascade_training import OUTPUT_GRAIN_FILE, OUTPUT_GRAIN_SEED, fit_output_grain

    rng = np.random.default_rng(2)
    real = [soft_tissue_nps(_body((6, 160, 160), 40.0) + rng.normal(0, 25, (6, 160, 160)), SPACING) for _ in range(2)]
    cascade, said = MottledCascade(), []
    spec = fit_output_grain(cascade, real, 3, tmp_path, said.append)
    assert cascade.seeds == [OUTPUT_GRAIN_SEED + i for i in range(3)]
    grain = Grain.from_json(spec.output_grain)
    assert grain.draws == 3 and grain.volumes == 2 and sum(grain.nps) > 0
    record = json.loads((tmp_path / OUTPUT_GRAIN_FILE).read_text())
    assert record["grain"] == spec.output_grain and len(record["real_nps"]) == len(grain.nps)
    assert said[0].startswith("output: grain fitted (3 volumes against 2 real ones): soft-tissue noise")
    nothing = fit_output_grain(MottledCascade(), [None, None], 1, tmp_path / "none", said.append)
    assert nothing.output_grain is None and said[-1].startswith("output: no grain (no real volume")
