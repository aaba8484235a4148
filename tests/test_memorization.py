"""The privacy check: planted training blocks are flagged, blocks of other patients are not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from cgan_ct.demo.phantom import make_phantom
from cgan_ct.ops.pyramid import subsample, upsample_nearest
from cgan_ct.realism.memorization_report import (
    COARSE_BLOCK,
    coarse_memorization_report,
    memorization_report,
    positive_control,
)
from cgan_ct.realism.memorization_search import QueryBlocks, grid_blocks, nearest_at_every_shift, normalize_hu
from tests.conftest import benchmark_module

_grid = benchmark_module("memorization_grid")  # the grid search: the benchmark's reference, tested as such
BlockSet, blocks_from_volumes, extract_blocks = _grid.BlockSet, _grid.blocks_from_volumes, _grid.extract_blocks
memorization_check, nearest_distances = _grid.memorization_check, _grid.nearest_distances

BLOCK = 16
TRAINING_SEEDS = (0, 1, 2)
HELDOUT_SEEDS = (3, 4)
SYNTHETIC_SEEDS = (5, 6)


@pytest.fixture(scope="module")
def phantoms() -> dict[int, np.ndarray]:
    return {seed: make_phantom(seed, 32, 96).hu for seed in TRAINING_SEEDS + HELDOUT_SEEDS + SYNTHETIC_SEEDS}


@pytest.fixture(scope="module")
def training(phantoms) -> BlockSet:
    return blocks_from_volumes([phantoms[s] for s in TRAINING_SEEDS], block=BLOCK)


@pytest.fixture(scope="module")
def heldout(phantoms) -> BlockSet:
    return blocks_from_volumes([phantoms[s] for s in HELDOUT_SEEDS], block=BLOCK)


def _plant(phantoms, training: BlockSet, index: int, change) -> tuple[BlockSet, tuple[int, int, int]]:
    """Synthetic blocks of the synthetic seeds, with training block ``index`` (HU, after ``change``) pasted into
    the first synthetic volume at the same origin."""
    z, y, x = (int(v) for v in training.origins_zyx[index])
    window = np.s_[z : z + BLOCK, y : y + BLOCK, x : x + BLOCK]
    source = phantoms[TRAINING_SEEDS[training.volume_index[index]]][window]
    target = phantoms[SYNTHETIC_SEEDS[0]].copy()
    target[window] = change(source)
    synthetic = blocks_from_volumes([target] + [phantoms[s] for s in SYNTHETIC_SEEDS[1:]], block=BLOCK)
    return synthetic, (z, y, x)


def _a_training_block(training: BlockSet) -> int:
    """A block of the second training volume near the middle of the body (mostly lung, heart and ribs)."""
    candidates = np.flatnonzero(training.volume_index == 1)
    assert candidates.size > 10
    return int(candidates[candidates.size // 2])


def test_planted_exact_copy_is_flagged(phantoms, training, heldout):
    index = _a_training_block(training)
    synthetic, origin = _plant(phantoms, training, index, lambda hu: hu)
    report = memorization_check(synthetic, training, heldout)
    assert len(report.flagged) == 1
    flagged = report.flagged[0]
    assert flagged.distance == 0.0  # recomputed exactly, not from the float32 expansion
    assert (flagged.synthetic_volume, flagged.synthetic_origin_zyx) == (0, origin)
    assert (flagged.training_index, flagged.training_volume, flagged.training_origin_zyx) == (index, 1, origin)
    assert flagged.flip_axes == ()
    assert report.heldout_distance.min() > 0.05  # other patients stay far: the threshold is not noise-level
    text = report.markdown()
    assert f"Flagged: 1 of {len(synthetic)} synthetic blocks" in text and "heldout -> training" in text


def test_planted_copy_with_noise_is_flagged(phantoms, training, heldout):
    index = _a_training_block(training)
    rng = np.random.default_rng(7)

    def noisy(hu):
        return np.rint(hu + rng.normal(0, 10, hu.shape)).astype(np.int16)

    synthetic, origin = _plant(phantoms, training, index, noisy)
    report = memorization_check(synthetic, training, heldout)
    assert [(f.training_index, f.synthetic_origin_zyx) for f in report.flagged] == [(index, origin)]
    # 10 HU Gaussian noise is about 10 / 1024 RMS in the normalized scale
    assert report.flagged[0].distance == pytest.approx(10 / 1024, rel=0.1)
    assert report.flagged[0].distance < report.threshold / 3


def test_mirrored_copy_is_flagged_only_with_the_flip(phantoms, training, heldout):
    index = _a_training_block(training)
    synthetic, origin = _plant(phantoms, training, index, lambda hu: hu[:, :, ::-1])
    report = memorization_check(synthetic, training, heldout)  # left-right flips by default
    assert [(f.training_index, f.flip_axes, f.distance) for f in report.flagged] == [(index, (2,), 0.0)]
    unflipped = memorization_check(synthetic, training, heldout, flip_axes=())
    assert unflipped.flagged == ()


def test_other_patients_are_not_flagged(phantoms, training, heldout):
    synthetic = blocks_from_volumes([phantoms[s] for s in SYNTHETIC_SEEDS], block=BLOCK)
    report = memorization_check(synthetic, training, heldout, flip_axes=(0, 1, 2))
    assert report.flagged == ()
    assert report.synthetic_distance.shape == (len(synthetic),) and report.heldout_distance.shape == (len(heldout),)
    quantiles = report.quantiles()
    # novel blocks, synthetic or held-out, sit at comparable distances from the training set
    assert 0.5 < quantiles["synthetic"]["median"] / quantiles["heldout"]["median"] < 2
    assert report.threshold == pytest.approx(0.5 * report.heldout_distance.min())
    assert "Flagged: 0 of" in report.markdown()


def test_flip_along_any_axis_is_found_and_named():
    rng = np.random.default_rng(3)
    training = rng.uniform(-1, 1, (20, 4, 4, 4)).astype(np.float32)
    synthetic = np.stack([training[5, ::-1], training[9, :, ::-1, ::-1], rng.uniform(-1, 1, (4, 4, 4))])
    heldout = rng.uniform(-1, 1, (10, 64)).astype(np.float32)
    report = memorization_check(synthetic.reshape(3, 64), training.reshape(20, 64), heldout, flip_axes=(0, 1, 2))
    found = sorted((f.synthetic_index, f.training_index, f.flip_axes) for f in report.flagged)
    assert found == [(0, 5, (0,)), (1, 9, (1, 2))]
    assert report.flagged[0].synthetic_volume == -1  # plain arrays carry no source


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_nearest_distances_agree_with_brute_force(chunk):
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, (53, 27)).astype(np.float32)
    query = rng.normal(0, 1, (37, 27)).astype(np.float32)
    query[4] = reference[11]
    distance, index = nearest_distances(query, reference, chunk=chunk)
    full = cdist(query.astype(np.float64), reference.astype(np.float64))
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(distance, full.min(axis=1) / np.sqrt(27), rtol=1e-6, atol=0)
    assert distance[4] == 0.0 and index[4] == 11


def test_nearest_distances_on_ct_blocks_agree_with_brute_force(training, heldout):
    # large, nearly equal norms (air and lung near -1) are where the |a|^2 + |b|^2 - 2ab expansion loses digits
    distance, index = nearest_distances(heldout.blocks, training.blocks, chunk=16)
    full = cdist(heldout.blocks.astype(np.float64), training.blocks.astype(np.float64))
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(distance, full.min(axis=1) / np.sqrt(BLOCK**3), rtol=1e-9)


def test_air_and_uniform_blocks_are_excluded():
    hu = np.full((32, 48, 48), -1000, np.int16)
    assert extract_blocks(hu, block=BLOCK)[0].shape == (0, BLOCK**3)
    rng = np.random.default_rng(1)
    hu[:, :32, :32] = 40 + rng.normal(0, 15, (32, 32, 32)).round().astype(np.int16)  # one tissue, CT-like noise
    hu[:, :32, 8:16] = 400  # a bone plate: structure in the blocks it crosses
    blocks, origins = extract_blocks(hu, block=BLOCK)
    # only the blocks holding the plate: body fraction >= 0.5 and HU spread >= 40
    assert sorted(map(tuple, origins.tolist())) == [(z, y, 0) for z in (0, 16) for y in (0, 16)]
    assert blocks.dtype == np.float32 and blocks.shape == (4, BLOCK**3)
    assert blocks.min() >= -1 and blocks.max() == pytest.approx(400 / 1024)
    uniform_kept = extract_blocks(hu, block=BLOCK, min_std_hu=0)[1]
    assert len(uniform_kept) == 8  # the uniform tissue blocks come back without the spread filter; air never does


def test_stride_and_sources(phantoms):
    blocks, origins = extract_blocks(phantoms[0], block=BLOCK, stride=8)
    assert len(blocks) > len(extract_blocks(phantoms[0], block=BLOCK)[0])
    assert origins[:, 0].max() == 32 - BLOCK and set(origins[:, 0].tolist()) <= {0, 8, 16}
    both = blocks_from_volumes([phantoms[0], make_phantom(1, 32, 96)], block=BLOCK)
    assert set(both.volume_index.tolist()) == {0, 1} and len(both) == both.origins_zyx.shape[0]


def test_bad_inputs_raise_clear_errors(training, heldout):
    small = np.zeros((3, 8**3), np.float32)
    with pytest.raises(ValueError, match="different sizes"):
        nearest_distances(small, training.blocks)
    with pytest.raises(ValueError, match="reference is empty"):
        nearest_distances(small, np.zeros((0, 8**3), np.float32))
    with pytest.raises(ValueError, match="different sizes"):
        memorization_check(small, training, heldout)
    with pytest.raises(ValueError, match="heldout has no blocks"):
        memorization_check(training, training, np.zeros((0, BLOCK**3), np.float32))
    with pytest.raises(ValueError, match="training is empty|training has no blocks"):
        memorization_check(heldout, np.zeros((0, BLOCK**3), np.float32), heldout)
    with pytest.raises(ValueError, match="flip_axes"):
        memorization_check(heldout, training, heldout, flip_axes=(3,))
    with pytest.raises(ValueError, match="not an integer cubed"):
        memorization_check(np.zeros((2, 10)), np.zeros((2, 10)), np.ones((2, 10)))
    with pytest.raises(ValueError, match="threshold_factor"):
        memorization_check(heldout, training, heldout, threshold_factor=1.5)
    with pytest.raises(ValueError, match="smaller than a block"):
        extract_blocks(np.zeros((8, 64, 64), np.int16), block=BLOCK)
    with pytest.raises(ValueError, match="3-D"):
        extract_blocks(np.zeros((64, 64), np.int16), block=BLOCK)


# --- the search at every shift (memorization_report) ------------------------------------------------------------

SHIFTS = ((2, 0, 4), (5, 3, 11), (8, 0, 16))  # (z, y, x) voxels, off the 16-voxel grid and the 4-voxel cells


def _shifted_copy(hu: np.ndarray, shift, mirror: bool, seed: int) -> np.ndarray:
    """``hu`` from ``shift`` on (a crop, so every block sits off the source's grid), maybe mirrored, 10 HU noise."""
    dz, dy, dx = shift
    crop = hu[dz:, dy:, dx:]
    crop = crop[:, :, ::-1] if mirror else crop
    noise = np.random.default_rng(seed).normal(0, 10, crop.shape)
    return np.rint(crop + noise).astype(np.int16)


@pytest.fixture(scope="module")
def shift_report(phantoms):
    source = phantoms[TRAINING_SEEDS[1]]
    copies = [_shifted_copy(source, s, mirror=k == 2, seed=k) for k, s in enumerate(SHIFTS)]
    training = [phantoms[s] for s in TRAINING_SEEDS[:2]]
    control = [
        positive_control(training, seed=1, block=BLOCK, blocks_per_axis=2),
        positive_control([phantoms[SYNTHETIC_SEEDS[1]]], block=BLOCK, blocks_per_axis=2),  # NOT from training
    ]
    synthetic = [phantoms[SYNTHETIC_SEEDS[0]], *copies]
    heldout = [phantoms[s] for s in HELDOUT_SEEDS]
    return memorization_report(synthetic, training, heldout, control=control, block=BLOCK)


def test_shifted_and_mirrored_copies_are_flagged_where_the_grid_check_is_blind(phantoms, shift_report):
    report = shift_report
    by_volume = {}
    for f in report.flagged:
        by_volume.setdefault(f.synthetic_volume, []).append(f)
    blocks = {
        v: len(grid_blocks([_shifted_copy(phantoms[1], s, k == 2, k)], BLOCK, "c"))
        for k, s in enumerate(SHIFTS)
        for v in [k + 1]
    }
    for k, shift in enumerate(SHIFTS):
        found = by_volume.get(k + 1, [])
        assert len(found) == blocks[k + 1] > 5  # every block of every copy
        assert all(f.training_volume == 1 and f.distance < 12 / 1024 for f in found)
        if k < 2:  # the source origin is the copy's origin plus the shift
            assert all(f.flip_axes == () for f in found)
            assert all(
                f.training_origin_zyx == tuple(o + s for o, s in zip(f.synthetic_origin_zyx, shift, strict=True))
                for f in found
            )
        else:
            assert all(f.flip_axes == (2,) for f in found)
    assert 0 not in by_volume  # another patient is not flagged
    source = blocks_from_volumes([phantoms[1]], block=BLOCK)
    grid = memorization_check(
        blocks_from_volumes([_shifted_copy(phantoms[1], s, k == 2, k) for k, s in enumerate(SHIFTS)], block=BLOCK),
        source,
        blocks_from_volumes([phantoms[s] for s in HELDOUT_SEEDS], block=BLOCK),
    )
    assert len(grid.flagged) < len(report.flagged) / 4  # the old grid check misses most of them


def test_positive_control_is_flagged_and_a_foreign_control_is_not(shift_report):
    real, foreign = shift_report.control
    assert real.detected and real.flagged == real.blocks >= 4 and real.min_distance < real.threshold
    assert not foreign.detected and foreign.min_distance > foreign.threshold  # the control can fail
    text = shift_report.markdown()
    assert "the check sees this off-grid copy" in text and "the check is blind" in text
    assert f"Flagged: {len(shift_report.flagged)} of {shift_report.synthetic_distance.size} synthetic" in text


def test_report_json_and_cost(shift_report):
    record = json.loads(json.dumps(shift_report.to_json()))
    assert record["flagged_blocks"] == len(shift_report.flagged)
    assert [c["detected"] for c in record["control"]] == [True, False]
    search = record["search"]
    assert search["query_blocks"]["control"] == sum(c.blocks for c in shift_report.control)
    assert search["seconds"] > 0 and 0 < search["positions"] <= search["positions_total"]
    assert search["bound_evaluations"] == sum(search["query_blocks"].values()) * 2 * search["positions"]
    assert "/" not in json.dumps(record)  # no paths


def _brute_force(blocks: np.ndarray, training, flips) -> np.ndarray:
    shape = blocks.shape[1:]
    best = np.full(len(blocks), np.inf)
    for hu in training:
        norm = normalize_hu(hu).astype(np.float64)
        windows = np.lib.stride_tricks.sliding_window_view(norm, shape).reshape(-1, *shape)
        for i, block in enumerate(blocks.astype(np.float64)):
            for axes in flips:
                mirrored = np.flip(block, [a for a in axes]) if axes else block
                best[i] = min(best[i], np.sqrt(((windows - mirrored) ** 2).mean(axis=(1, 2, 3)).min()))
    return best


@pytest.mark.parametrize("pool, candidates", [(1, 1), (2, 4), (3, 2)])
def test_search_agrees_with_brute_force_at_every_shift(pool, candidates):
    rng = np.random.default_rng(pool)
    training = [np.cumsum(rng.integers(-300, 300, (11, 12, 13)), axis=2).astype(np.int16) for _ in range(2)]
    shape = (4, 6, 6)
    novel = [normalize_hu(rng.integers(-900, 900, shape)) for _ in range(3)]
    copy = normalize_hu(training[1][3:7, 5:11, 2:8])[:, ::-1, ::-1]  # off every cell phase, mirrored twice
    queries = QueryBlocks(np.stack([*novel, copy]), np.zeros(4, np.int64), np.zeros((4, 3), np.int64))
    found = nearest_at_every_shift(queries, training, (1, 2), pool, candidates, min_body_fraction=0, min_std_hu=0)
    truth = _brute_force(queries.blocks, training, [(), (1,), (2,), (1, 2)])
    assert np.all(found.distance >= truth - 1e-12)  # an upper bound always
    np.testing.assert_allclose(found.distance[found.exact], truth[found.exact], rtol=1e-9)
    assert found.distance[3] == 0 and found.exact[3] and found.flips[found.flip[3]] == (1, 2)
    assert tuple(found.training_origin_zyx[3]) == (3, 5, 2) and found.training_volume[3] == 1
    assert not np.all(found.exact) or pool == 1  # few candidates: the novel blocks are upper bounds
    if pool == 1:
        np.testing.assert_allclose(found.distance, truth, rtol=1e-9)  # exhaustive at pool 1


def test_coarse_level_flags_a_coarse_copy_and_not_another_patient(phantoms):
    training = [phantoms[TRAINING_SEEDS[1]]]
    coarse_copy = upsample_nearest(subsample(phantoms[1], 2)[1:, 3:, 5:], 2)  # shifted by (1, 3, 5) level-1 voxels
    control = positive_control(training, seed=0, block=COARSE_BLOCK, blocks_per_axis=2, grid=2)
    report = coarse_memorization_report(
        [phantoms[SYNTHETIC_SEEDS[0]], coarse_copy], training, [phantoms[HELDOUT_SEEDS[0]]], [control], levels=1
    )
    assert report.search.level == 1 and report.search.pool == 1 and report.search.block_zyx == COARSE_BLOCK
    assert report.flagged and {f.synthetic_volume for f in report.flagged} == {1}
    assert all(f.distance == 0 for f in report.flagged)
    assert report.control[0].detected
    assert report.search.exact["synthetic"] == report.synthetic_distance.size  # exhaustive: every distance exact


def test_bad_inputs_of_the_shift_search_raise_clear_errors(phantoms):
    volume = phantoms[0]
    with pytest.raises(ValueError, match="heldout has no volumes"):
        memorization_report([volume], [volume], [], block=BLOCK)
    with pytest.raises(ValueError, match=r"heldout\[0\] is training\[0\]"):
        memorization_report([phantoms[1]], [volume], [volume], block=BLOCK)
    with pytest.raises(ValueError, match=r"synthetic\[0\] must be a 3-D"):
        memorization_report([volume[0]], [volume], [phantoms[1]], block=BLOCK)
    with pytest.raises(ValueError, match=r"training\[0\] of shape .* smaller than a block"):
        memorization_report([volume], [volume[:8]], [phantoms[1]], block=BLOCK)
    with pytest.raises(ValueError, match="threshold_factor"):
        memorization_report([volume], [volume], [phantoms[1]], block=BLOCK, threshold_factor=0)
    with pytest.raises(ValueError, match="pool must be"):
        memorization_report([volume], [volume], [phantoms[1]], block=BLOCK, pool=17)
    with pytest.raises(ValueError, match="flip_axes"):
        memorization_report([volume], [volume], [phantoms[1]], block=BLOCK, flip_axes=(3,))
    air = np.full((20, 40, 40), -1000, np.int16)
    with pytest.raises(ValueError, match=r"control\[0\] has no blocks"):
        memorization_report([volume], [volume], [phantoms[1]], control=[air], block=BLOCK)
    with pytest.raises(ValueError, match="offset must be"):
        positive_control([volume], offset=(16, 5, 7), block=BLOCK)
    with pytest.raises(ValueError, match="too short"):
        positive_control([volume[:18]], offset=(3, 5, 7), block=BLOCK)


def test_the_report_refuses_volumes_shorter_than_its_blocks_before_writing_anything(tmp_path):
    """Issue 30 item 13: volumes shorter than the block stack failed mid-report and left an empty figures/."""
    from cgan_ct.errors import InputError
    from cgan_ct.realism.synthesis_report import synthesis_report

    volumes = [make_phantom(seed, 16, 64) for seed in range(3)]
    with pytest.raises(InputError, match=r"synthetic volume 1 of 1 is 16 x 64 x 64 voxels: .* at least 39 voxels"):
        synthesis_report(volumes[:1], volumes[1:2], volumes[2:], tmp_path / "report", realism=False)
    assert not (tmp_path / "report").exists()
