"""No-reference measures: noise level and edge spread width, before and after, without ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cgan_ct.inference import no_reference


def _chest(noise_hu=20.0, seed=0, shape=(20, 160, 160)):
    """Soft-tissue body in air, two lungs with vessels in them, white noise of ``noise_hu``."""
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w] - np.array([h / 2, w / 2])[:, None, None]
    slice_hu = np.full((h, w), -1000.0)
    slice_hu[(xx / 70) ** 2 + (yy / 55) ** 2 < 1] = 40.0
    for cx in (-30, 30):
        slice_hu[((xx - cx) / 22) ** 2 + (yy / 35) ** 2 < 1] = -850.0
        for vy in (-15, 0, 15):
            slice_hu[(xx - cx) ** 2 + (yy - vy) ** 2 < 4**2] = 40.0
    volume = np.repeat(slice_hu[None], z, 0)
    return volume + np.random.default_rng(seed).normal(0, noise_hu, volume.shape)


SPACING = (2.0, 1.0, 1.0)


def test_noise_level_is_found_in_tissue_and_air():
    volume = _chest(20.0)
    inside, outside = no_reference.noise_regions(volume)
    tissue = no_reference.global_noise_hu(volume, SPACING, inside, no_reference.TISSUE_HU)
    air = no_reference.global_noise_hu(volume, SPACING, outside, no_reference.AIR_HU_RANGE)
    assert tissue == pytest.approx(20.0, rel=0.15)
    assert air == pytest.approx(20.0, rel=0.15)
    assert np.isnan(no_reference.global_noise_hu(volume, SPACING, np.zeros_like(inside), no_reference.TISSUE_HU))


def test_smoothing_halves_noise_and_widens_edges_identity_changes_nothing():
    volume = _chest(20.0)
    same = no_reference.compare(volume, volume.copy(), SPACING)
    assert same["edge_points"]["body"] > 100 and same["edge_points"]["lung_vessel"] > 100
    for key in ("noise_tissue_hu", "noise_air_hu", "edge_body_mm", "edge_lung_vessel_mm"):
        assert same[key]["ratio"] == pytest.approx(1.0), key
    assert 0.5 < same["edge_body_mm"]["before"] < 4.0  # a step blurred by noise and sampling only
    blurred = no_reference.compare(volume, ndimage.gaussian_filter(volume, (0, 2.0, 2.0)), SPACING)
    assert blurred["noise_tissue_hu"]["ratio"] < 0.5
    assert blurred["edge_body_mm"]["ratio"] > 1.5
    assert blurred["edge_lung_vessel_mm"]["ratio"] > 1.2
