"""Conditions and augmentation: exact references, statistics, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.data import augment
from cgan_ct.ops import corruption
from tests.volume_factory import numpy_depixelate


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(32, 32, 32), (37, 33, 40), (2, 16, 16, 16)])
def test_depixelate_matches_numpy(shape, factor):
    hu = np.random.default_rng(0).normal(0, 500, shape).astype(np.float32)
    got = corruption.depixelate(hu, factor).numpy()
    np.testing.assert_array_equal(got, numpy_depixelate(hu, factor))
    np.testing.assert_array_equal(got[..., ::factor, ::factor, ::factor], hu[..., ::factor, ::factor, ::factor])


def _loop_cell_means(hu, factor):
    """Reference: each factor-cube's mean by explicit loops over the cells (edge cells: the voxels they have)."""
    z, y, x = hu.shape[-3:]
    out = np.empty(hu.shape[:-3] + tuple(-(-n // factor) for n in (z, y, x)))
    for k in range(out.shape[-3]):
        for j in range(out.shape[-2]):
            for i in range(out.shape[-1]):
                z, y, x = (slice(c * factor, (c + 1) * factor) for c in (k, j, i))
                out[..., k, j, i] = hu[..., z, y, x].reshape(hu.shape[:-3] + (-1,)).mean(axis=-1)
    return out


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(8, 8, 8), (7, 5, 9), (2, 9, 8, 6)])
def test_mean_pyramid_condition_is_the_cell_means_repeated(shape, factor):
    """The mean pyramid (issue 33): numpy's and TensorFlow's cell means agree with a loop over the cells, edge
    cells included, and the condition is them repeated (so a stage's condition is the level above)."""
    from cgan_ct.ops.pyramid import downsample, mean_pool, upsample_nearest

    hu = np.random.default_rng(1).normal(0, 300, shape).astype(np.float32)
    reference = _loop_cell_means(hu.astype(np.float64), factor)
    np.testing.assert_allclose(mean_pool(hu, factor), reference, atol=1e-3)
    np.testing.assert_array_equal(downsample(hu, factor, "mean"), mean_pool(hu, factor))
    np.testing.assert_array_equal(downsample(hu, factor), hu[..., ::factor, ::factor, ::factor])
    got = corruption.depixelate(hu, factor, pyramid="mean").numpy()
    np.testing.assert_allclose(got, upsample_nearest(reference, factor, shape[-3:]), atol=1e-3)
    with pytest.raises(ValueError, match="pyramid must be one of"):
        corruption.depixelate(hu, factor, pyramid="median")
    with pytest.raises(ValueError, match="pyramid must be one of"):
        downsample(hu, factor, "median")


def test_mean_pyramid_levels_carry_less_voxel_noise():
    """Why the mean pyramid exists: white noise keeps its level when subsampled and falls by sqrt(8) per x2
    level when averaged."""
    from cgan_ct.ops.pyramid import downsample

    noise = np.random.default_rng(2).normal(0, 40, (64, 64, 64)).astype(np.float32)
    assert downsample(noise, 2).std() == pytest.approx(40, rel=0.03)
    assert downsample(noise, 2, "mean").std() == pytest.approx(40 / np.sqrt(8), rel=0.03)
    assert downsample(noise, 4, "mean").std() == pytest.approx(40 / 8, rel=0.05)


@pytest.mark.parametrize("hu_value,peak", [(-1024.0 + 409.6, 512.0), (40.0, 512.0), (40.0, 128.0), (1500.0, 512.0)])
def test_poisson_mean_and_variance_match_theory(hu_value, peak):
    hu = np.full((64, 64, 64), hu_value, np.float32)
    y = corruption.poisson_noise(hu, tf.constant([3, 7]), peak).numpy().astype(np.float64)
    x01 = (hu_value + 1024) / 4096
    expected_var = 4096.0**2 * x01 / peak
    n = y.size
    assert abs(y.mean() - hu_value) < 5 * np.sqrt(expected_var / n)
    assert y.var() == pytest.approx(expected_var, rel=0.03)
    # on the counts' grid: Y is an integer number of photons
    counts = (y + 1024) / 4096 * peak
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3)


def test_poisson_is_seeded_and_clipped():
    hu = np.linspace(-3000, 5000, 4096, dtype=np.float32).reshape(16, 16, 16)
    a = corruption.poisson_noise(hu, tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(a, corruption.poisson_noise(hu, tf.constant([1, 2])).numpy())
    assert not np.array_equal(a, corruption.poisson_noise(hu, tf.constant([1, 3])).numpy())
    assert a.min() >= -1024 and (a[hu < -1024] == -1024).all()


def test_make_condition_dispatch():
    hu = np.zeros((4, 4, 4), np.float32)
    np.testing.assert_array_equal(corruption.make_condition(hu, "autoencode").numpy(), hu)
    with pytest.raises(ValueError, match="needs a seed"):
        corruption.make_condition(hu, "denoise")
    with pytest.raises(ValueError, match="unknown task"):
        corruption.make_condition(hu, "inpaint")


def _coordinate_block(size=48):
    z, y, x = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
    return (z * 10000 + y * 100 + x).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_random_block_is_a_turned_flipped_crop_within_the_margin(seed):
    stored = _coordinate_block()
    out = augment.random_block(tf.constant(stored), tf.constant([seed, 99]), 32).numpy()
    z, y, x = out // 10000, (out // 100) % 100, out % 100
    for coords in (z, y, x):
        values = np.unique(coords)
        assert len(values) == 32 and values[-1] - values[0] == 31 and 0 <= values[0] <= 16
    # z runs along axis 0 only (turns are in-plane); y and x each run along one in-plane axis
    assert (np.ptp(z, axis=(1, 2)) == 0).all()
    assert np.ptp(y[0], axis=0).max() == 0 or np.ptp(y[0], axis=1).max() == 0
    again = augment.random_block(tf.constant(stored), tf.constant([seed, 99]), 32).numpy()
    np.testing.assert_array_equal(out, again)


def test_random_blocks_vary_with_the_seed():
    stored = tf.constant(_coordinate_block())
    outs = {augment.random_block(stored, tf.constant([s, 0]), 32).numpy().tobytes() for s in range(8)}
    assert len(outs) == 8


def test_small_rotation_turns_a_ramp():
    size, block = 48, 32
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp = np.broadcast_to((3.0 * yy + 1.0 * xx)[None], (size, size, size)).astype(np.float32)
    angle = np.radians(7.0)
    center = tf.constant([(size - 1) / 2.0, (size - 1) / 2.0])
    out = augment._crop_rotated(tf.constant(ramp), 8, center, tf.constant(angle, tf.float32), block).numpy()
    g = np.arange(block) - (block - 1) / 2
    gy, gx = np.meshgrid(g, g, indexing="ij")
    sy = (size - 1) / 2 + np.cos(angle) * gy - np.sin(angle) * gx
    sx = (size - 1) / 2 + np.sin(angle) * gy + np.cos(angle) * gx
    np.testing.assert_allclose(out[5], 3.0 * sy + sx, atol=1e-3)
    straight = augment._crop_rotated(tf.constant(ramp), 8, center, tf.constant(0.0), block).numpy()
    np.testing.assert_array_equal(straight, ramp[8:40, 8:40, 8:40])


def test_rotation_needs_margin():
    assert augment.rotation_reach(32, 10) == 3
    with pytest.raises(ValueError, match="needs a margin"):
        augment.random_block(tf.zeros([36, 36, 36]), tf.constant([0, 0]), 32, max_rotation_deg=30)
    out = augment.random_block(tf.constant(_coordinate_block()), tf.constant([0, 0]), 32, max_rotation_deg=10)
    assert out.shape == (32, 32, 32)


def _axes_map(out):
    """The 3 x 3 matrix of how the block's (z, y, x) coordinates run along its axes (a coordinate block's)."""
    coords = np.stack([out // 10000, (out // 100) % 100, out % 100])  # [3, B, B, B]
    return np.array([[np.sign(np.diff(coords[c], axis=a).mean()) for a in range(3)] for c in range(3)])


def test_translation_only_is_a_plain_crop():
    stored = _coordinate_block()
    for seed in range(6):
        out = augment.random_block(tf.constant(stored), tf.constant([seed, 1]), 32, mirror_axes=(), quarter_turns=False)
        out = out.numpy()
        z0, y0, x0 = int(out[0, 0, 0] // 10000), int(out[0, 0, 0] // 100 % 100), int(out[0, 0, 0] % 100)
        np.testing.assert_array_equal(out, stored[z0 : z0 + 32, y0 : y0 + 32, x0 : x0 + 32])


def test_without_mirrors_the_handedness_is_kept():
    """Quarter turns alone are proper rotations (the heart stays left); the paper's mirrors are not."""
    stored = tf.constant(_coordinate_block())
    kept = [
        np.linalg.det(_axes_map(augment.random_block(stored, tf.constant([s, 5]), 32, mirror_axes=()).numpy()))
        for s in range(12)
    ]
    assert all(d == 1 for d in kept)
    mirrored = [
        np.linalg.det(_axes_map(augment.random_block(stored, tf.constant([s, 5]), 32).numpy())) for s in range(12)
    ]
    assert -1 in mirrored
    turned = {
        tuple(_axes_map(augment.random_block(stored, tf.constant([s, 5]), 32, mirror_axes=()).numpy()).ravel())
        for s in range(12)
    }
    assert len(turned) > 1  # the turns still vary


def test_elastic_field_is_smooth_and_bounded():
    field = augment.elastic_field(tf.constant([4, 2]), 32, 3.0).numpy()
    assert field.shape == (32, 32, 32, 3)
    assert np.abs(field).max() <= 3.0 + 1e-5 and field.std() > 0.5
    spacing = 31 / (augment.ELASTIC_GRID - 1)  # voxels between control points
    for axis in range(3):  # the steepest a raised cosine between -3 and +3 can be: 6 * pi / 2 per spacing
        assert np.abs(np.diff(field, axis=axis)).max() <= 3.0 * np.pi / spacing
    weights = augment.cosine_weights(32, augment.ELASTIC_GRID)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)


def test_elastic_block_samples_the_displaced_positions():
    """On a linear ramp trilinear sampling is exact, so the block is the ramp at the displaced positions."""
    size, block, seed = 48, 32, tf.constant([7, 1])
    z, y, x = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
    ramp = (3.0 * z + 2.0 * y + 1.0 * x).astype(np.float32)
    out = augment.random_block(tf.constant(ramp), seed, block, mirror_axes=(), quarter_turns=False, elastic_voxels=3)
    field = augment.elastic_field(tf.random.experimental.stateless_fold_in(seed, 5), block, 3.0).numpy()
    moved = out.numpy() - (3.0 * field[..., 0] + 2.0 * field[..., 1] + field[..., 2])
    # what is left is a plain translated ramp: constant steps of 3, 2, 1 along z, y, x, inside the margin
    np.testing.assert_allclose(np.diff(moved, axis=0), 3.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(moved, axis=1), 2.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(moved, axis=2), 1.0, atol=1e-3)
    corner = moved[0, 0, 0]
    assert 3 * 3 + 2 * 3 + 3 <= corner <= 3 * 13 + 2 * 13 + 13  # the crop started 3 voxels inside the margin
    plain = augment._crop_deformed(tf.constant(ramp), 8, tf.constant([23.5, 23.5]), 0.0, tf.zeros([32, 32, 32, 3]), 32)
    np.testing.assert_array_equal(plain.numpy(), ramp[8:40, 8:40, 8:40])


def test_noise_preserving_sampling_keeps_the_noise_that_trilinear_smooths():
    """White noise read half a voxel off on every axis: trilinear averages 8 voxels (variance / 8, power moved to
    low frequencies); noise_preserving keeps most of the power and the grain. Both are exact at whole voxels and
    on a linear ramp (the smoothed copy of a ramp is the ramp: no detail to add back)."""
    noise = tf.constant(np.random.default_rng(2).normal(0.0, 100.0, (40, 40, 40)), tf.float32)
    grid = np.stack(np.meshgrid(*(np.arange(4, 36, dtype=np.float32),) * 3, indexing="ij"), axis=-1)
    for sampling in ("trilinear", "noise_preserving"):
        np.testing.assert_allclose(augment.sample(noise, grid, sampling), noise.numpy()[4:36, 4:36, 4:36], atol=1e-3)
    trilinear, kept = (augment.sample(noise, grid + 0.5, s).numpy() for s in ("trilinear", "noise_preserving"))
    assert trilinear.std() < 0.4 * 100.0  # theory: 100 / sqrt(8) = 35
    assert kept.std() > 0.8 * 100.0

    def high_share(volume):  # share of the power above half the Nyquist frequency along x
        power = np.abs(np.fft.rfft(volume - volume.mean(), axis=2)) ** 2
        return power[..., 9:].sum() / power.sum()

    assert high_share(trilinear) < 0.2 < 0.4 < high_share(kept)  # white noise: 0.57; trilinear: 0.15
    z, y, x = np.meshgrid(*(np.arange(40, dtype=np.float32),) * 3, indexing="ij")
    ramp = tf.constant(3.0 * z + 2.0 * y + x)
    inside = grid + np.random.default_rng(3).uniform(-2.0, 2.0, grid.shape).astype(np.float32)
    expected = (3.0 * inside[..., 0] + 2.0 * inside[..., 1] + inside[..., 2]).astype(np.float32)
    np.testing.assert_allclose(augment.sample(ramp, inside, "noise_preserving"), expected, atol=1e-3)
    with pytest.raises(ValueError, match="sampling must be one of"):
        augment.sample(ramp, inside, "cubic")
    nearest = augment.sample_nearest(noise, grid + 0.5).numpy()  # halves round up: a plain shift by one voxel
    np.testing.assert_array_equal(nearest, noise.numpy()[5:37, 5:37, 5:37])


def test_random_block_reads_elastic_blocks_as_asked():
    stored = tf.constant(np.random.default_rng(4).normal(0.0, 100.0, (40, 40, 40)), tf.float32)
    blocks = {
        s: augment.random_block(stored, tf.constant([1, 2]), 32, elastic_voxels=3.0, elastic_sampling=s).numpy()
        for s in ("trilinear", "noise_preserving")
    }
    assert blocks["trilinear"].std() < 0.75 * blocks["noise_preserving"].std()
    with pytest.raises(ValueError, match="elastic_sampling must be one of"):
        augment.random_block(stored, tf.constant([1, 2]), 32, elastic_voxels=3.0, elastic_sampling="cubic")


def test_elastic_needs_margin():
    with pytest.raises(ValueError, match="elastic displacement of 9.0 voxels needs a margin of 9"):
        augment.random_block(tf.zeros([48, 48, 48]), tf.constant([0, 0]), 32, elastic_voxels=9.0)
    with pytest.raises(ValueError, match="rotation and an elastic displacement"):
        augment.random_block(tf.zeros([48, 48, 48]), tf.constant([0, 0]), 32, max_rotation_deg=10, elastic_voxels=6)


def test_center_crop():
    stored = _coordinate_block()
    np.testing.assert_array_equal(augment.center_crop(tf.constant(stored), 32).numpy(), stored[8:40, 8:40, 8:40])


# Each op as the input pipeline runs it: inside tf.data's map (a graph, no Python per element) the same values as
# eagerly, for the same input and stateless seed (big_vision tests its preprocessing ops both ways).
_SEED = tf.constant([3, 4], tf.int64)
_OPS = {
    "autoencode": lambda hu: corruption.autoencode(hu),
    "poisson": lambda hu: corruption.poisson_noise(hu, _SEED, 128.0),
    "depixelate": lambda hu: corruption.depixelate(hu, 2),
    "depixelate_degraded": lambda hu: corruption.depixelate(hu, 2, (0.8, 5.0, 1), _SEED),
    "make_condition_denoise": lambda hu: corruption.make_condition(hu, "denoise", _SEED, 256.0),
    "random_block": lambda hu: augment.random_block(hu, _SEED, 16),
    "random_block_rotated": lambda hu: augment.random_block(hu, _SEED, 16, max_rotation_deg=10.0),
    "random_block_elastic": lambda hu: augment.random_block(hu, _SEED, 16, max_rotation_deg=5.0, elastic_voxels=2.0),
    "random_block_elastic_noise_preserving": lambda hu: augment.random_block(
        hu, _SEED, 16, elastic_voxels=2.0, elastic_sampling="noise_preserving"
    ),
    "center_crop": lambda hu: augment.center_crop(hu, 16),
}


@pytest.mark.parametrize("name", sorted(_OPS))
def test_op_gives_the_same_values_eagerly_and_inside_tf_data(name):
    hu = tf.constant(np.random.default_rng(5).normal(-200, 400, (24, 24, 24)), tf.float32)
    eager = _OPS[name](hu).numpy()
    (mapped,) = list(tf.data.Dataset.from_tensors(hu).map(_OPS[name]).as_numpy_iterator())
    assert mapped.shape == eager.shape
    # float32 rounding only: the graph may fuse the bilinear weights' products (measured: <= 0.003 HU)
    np.testing.assert_allclose(mapped, eager, rtol=1e-6, atol=0.01)
    if name != "autoencode":
        assert not np.array_equal(eager, hu.numpy()[: eager.shape[0], : eager.shape[1], : eager.shape[2]])
