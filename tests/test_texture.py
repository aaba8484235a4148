"""Texture against real CT (issue 33, item 3): noise power and edge sharpness as ratios to the real scan."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cgan_ct import read_volume
from cgan_ct.realism.texture import cell_edge_ratio, edge_voxels, gradient_magnitude, texture_against

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


def test_cell_edge_ratio_finds_squares_and_not_noise():
    rng = np.random.default_rng(4)
    noise = rng.normal(40, 20, (4, 64, 64)).astype(np.float32)
    everywhere = np.ones(noise.shape, bool)
    assert cell_edge_ratio(noise, 8, everywhere) == pytest.approx(1.0, abs=0.05)  # no grid, however noisy
    cells = np.kron(rng.normal(40, 20, (4, 8, 8)), np.ones((1, 8, 8))).astype(np.float32)
    squares = cells + rng.normal(0, 5, cells.shape).astype(np.float32)  # 8-voxel squares under a little noise
    assert cell_edge_ratio(squares, 8, everywhere) > 3
    assert cell_edge_ratio(squares, 4, everywhere) > 1.5  # every other 4-voxel boundary is a square's
    assert cell_edge_ratio(np.roll(squares, 3, axis=2), 8, everywhere) < cell_edge_ratio(squares, 8, everywhere)
    body = np.zeros(noise.shape, bool)
    body[:, 8:56, 8:56] = True
    inside = squares.copy()
    inside[~body] = rng.normal(-1000, 200, int((~body).sum()))  # wild air outside the mask: not counted
    crop = squares[:, 8:56, 8:56]  # the body alone, its grid in place (8 is a boundary)
    assert cell_edge_ratio(inside, 8, body) == pytest.approx(cell_edge_ratio(crop, 8, np.ones(crop.shape, bool)))
    assert cell_edge_ratio(noise, 8, np.zeros(noise.shape, bool)) is None
    with pytest.raises(ValueError, match="period"):
        cell_edge_ratio(noise, 1)


def test_cell_edge_ratio_between_slices_finds_bands_the_in_plane_one_misses():
    """Slabs of 8 slices, smooth in-plane (the bands of a coronal view): a grid along z, none in-plane."""
    rng = np.random.default_rng(5)
    slabs = np.kron(rng.normal(40, 20, (8, 1, 1)), np.ones((8, 32, 32))).astype(np.float32)
    banded = slabs + rng.normal(0, 5, slabs.shape).astype(np.float32)
    everywhere = np.ones(banded.shape, bool)
    assert cell_edge_ratio(banded, 8, everywhere, axes=(0,)) > 2  # 7 slab steps of about 4x the noise step
    assert cell_edge_ratio(banded, 8, everywhere) == pytest.approx(1.0, abs=0.05)
    noise = rng.normal(40, 20, banded.shape).astype(np.float32)
    assert cell_edge_ratio(noise, 8, everywhere, axes=(0,)) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="axes"):
        cell_edge_ratio(noise, 8, everywhere, axes=(3,))
