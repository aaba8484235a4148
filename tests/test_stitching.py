"""Tiling and stitching: identity predictors come back exactly on awkward shapes."""

from __future__ import annotations

import numpy as np
import pytest

from cgan_ct.ops.blocks import blend_window, predict_volume, sliding_origins


def test_sliding_origins():
    assert sliding_origins(40, 16, 16) == [0, 16, 24]
    assert sliding_origins(32, 16, 8) == [0, 8, 16]
    assert sliding_origins(16, 16, 4) == [0]


@pytest.mark.parametrize("overlap,window", [(0.0, "none"), (0.25, "gaussian"), (0.5, "linear"), (0.5, "gaussian")])
@pytest.mark.parametrize("shape", [(37, 33, 40), (16, 50, 17), (5, 20, 20)])
def test_identity_plus_one_comes_back_exactly(shape, overlap, window):
    volume = np.random.default_rng(0).normal(0, 100, shape).astype(np.float32)
    calls = []

    def predictor(batch):
        calls.append(batch.shape[0])
        return batch + 1

    out = predict_volume(volume, predictor, block=16, overlap=overlap, batch_size=7, window=window)
    assert out.shape == shape
    np.testing.assert_allclose(out, volume + 1, rtol=1e-5, atol=1e-3)
    assert max(calls) <= 7


def test_overlapping_predictions_are_blended_by_the_window():
    volume = np.zeros((16, 16, 24), np.float32)
    seen = iter([10.0, 20.0])  # two blocks along x: origins 0 and 8

    def predictor(batch):
        return np.stack([np.full(batch.shape[1:], next(seen), np.float32) for _ in batch])

    out = predict_volume(volume, predictor, block=16, overlap=0.5, batch_size=1, window="linear")
    assert out[8, 8, 0] == pytest.approx(10.0) and out[8, 8, 23] == pytest.approx(20.0)
    w = blend_window(16, "linear")[8, 8]
    expected = (10 * w[12] + 20 * w[4]) / (w[12] + w[4])  # voxel x = 12: offset 12 in block one, 4 in block two
    assert out[8, 8, 12] == pytest.approx(expected, rel=1e-5)


def test_progress_and_bad_arguments():
    updates = []
    predict_volume(np.zeros((16, 16, 32)), lambda b: b, 16, overlap=0.0, progress=lambda d, t: updates.append((d, t)))
    assert updates[-1] == (2, 2)
    with pytest.raises(ValueError, match="overlap"):
        predict_volume(np.zeros((16, 16, 16)), lambda b: b, 16, overlap=1.0)
    with pytest.raises(ValueError, match="window"):
        blend_window(16, "hann")


def _pixelated(shape, factor, seed=0):
    """A volume made of factor^3 cells starting at index 0 (the cells at odd ends are cut short)."""
    cells = np.random.default_rng(seed).normal(size=[-(-n // factor) for n in shape]).astype(np.float32)
    for axis in range(3):
        cells = np.repeat(cells, factor, axis=axis)
    return cells[: shape[0], : shape[1], : shape[2]]


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.1])
def test_depixelation_tiles_start_on_the_pixel_grid(overlap):
    """On odd-length axes the last tile used to start at an odd index and see its cells shifted by one."""
    shape, block, factor = (37, 33, 40), 8, 2
    volume = _pixelated(shape, factor)

    def predictor(batch):
        for tile in batch[..., 0]:  # every tile is whole cells beginning at its first voxel
            cells = tile[::factor, ::factor, ::factor].repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
            assert np.array_equal(tile, cells)
        return batch

    out = predict_volume(volume, predictor, block, overlap=overlap, batch_size=7, window="linear", grid=factor)
    np.testing.assert_allclose(out, volume, atol=1e-5)  # the weighted average of equal values
    with pytest.raises(AssertionError):  # the check above is not blind: without the grid it fails
        predict_volume(volume, predictor, block, overlap=overlap, batch_size=7, window="linear")


def test_tile_edges_follow_the_grid():
    from cgan_ct.ops.blocks import tile_edges, tile_origins

    assert tile_edges(37, 8, 0.0, grid=2) == [8, 16, 24, 30, 32]  # the last tile starts at 30 of a 38 padded
    assert tile_edges(37, 8, 0.0) == [8, 16, 24, 29, 32]
    assert all(z % 2 == 0 and y % 2 == 0 and x % 2 == 0 for z, y, x in tile_origins((37, 33, 41), 8, 0.1, grid=2))
