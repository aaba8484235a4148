"""Texture against real CT (issue 33, item 3): noise power and edge sharpness as ratios to the real scan."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cgan_ct import read_volume
from cgan_ct.realism.texture import edge_voxels, gradient_magnitude, texture_against

SERIES = "covid-ct-md-normal001"  # 2 mm Siemens chest: uniform soft tissue in the mediastinum and muscles


@pytest.fixture(scope="module")
def chest(shared_ct):
    """The central 16 slices at full in-plane resolution (HU, spacing)."""
    volume = read_volume(shared_ct / SERIES)
    start = (volume.shape[0] - 16) // 2
    return volume.hu[start : start + 16].astype(np.float32), volume.spacing_mm


def test_the_real_scan_against_itself_is_one_and_blur_and_noise_move_the_ratios_their_way(chest):
    hu, spacing = chest
    rng = np.random.default_rng(0)
    outputs = {
        "same": hu,
        "blurred": ndimage.gaussian_filter(hu, (0, 1.5, 1.5)),
        "noisier": hu + rng.normal(0, 40, hu.shape).astype(np.float32),
    }
    result = texture_against(hu, outputs, spacing)
    real = result["real"]
    assert real["nps_noise_hu"] > 0 and 0.05 < real["nps_mean_frequency_per_mm"] < 1.0
    assert real["edge_gradient_hu_per_mm"] > 100  # bone and lung walls: hundreds of HU over a millimetre or two
    ratios = {"nps_noise_ratio": 1.0, "nps_frequency_ratio": 1.0, "edge_sharpness_ratio": 1.0}
    assert result["same"] == {**ratios, "nps_grid_share": real["nps_grid_share"]}
    assert result["blurred"]["nps_grid_share"] < real["nps_grid_share"]  # smoothing empties the Nyquist lines
    blurred, noisier = result["blurred"], result["noisier"]
    assert blurred["nps_noise_ratio"] < 0.8 and blurred["nps_frequency_ratio"] < 0.8
    assert blurred["edge_sharpness_ratio"] < 0.8
    assert noisier["nps_noise_ratio"] > 1.2 and noisier["nps_frequency_ratio"] > 1.05
    assert 0.9 < noisier["edge_sharpness_ratio"] < 1.2  # noise barely moves the strong edges


def test_edges_are_the_strongest_inside_the_body_and_inputs_are_checked(chest):
    hu, spacing = chest
    edges = edge_voxels(hu, spacing)
    magnitude = gradient_magnitude(hu, spacing)
    assert 0.005 < edges.mean() < 0.02  # 2 % of the body, the body a part of the field of view
    assert magnitude[edges].min() >= np.quantile(magnitude[~edges], 0.9)
    with pytest.raises(ValueError, match="'cropped' has shape"):
        texture_against(hu, {"cropped": hu[:, 1:]}, spacing)
    with pytest.raises(ValueError, match="no body"):
        edge_voxels(np.full((4, 32, 32), -1000.0, np.float32), spacing)
    with pytest.raises(ValueError, match="top"):
        edge_voxels(hu, spacing, top=1.5)
