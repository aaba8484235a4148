"""The synthesis cascade: scale levels, streamed x2 refinement, the coarse generator,
training a tiny cascade end to end, synthetic DICOM output and what it must not carry."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from cgan_ct import read_volume
from cgan_ct.config import coarse_config, conversion_config, model_config
from cgan_ct.demo.phantom import make_phantom
from cgan_ct.errors import InputError
from cgan_ct.io.dicom_writer import DCIODVFY_UNKNOWN_SYNTHETIC
from cgan_ct.io.image_files import write_nifti
from cgan_ct.io.volume import subsample_volume
from cgan_ct.ops.blocks import predict_volume
from cgan_ct.ops.pyramid import level_shape, mean_pool, subsample, upsample_nearest
from cgan_ct.synthesis.cascade import cascade_stream, refine_stream
from tests.conftest import GRID_CELL, REPO, require_tool, runs_in_one_process


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` run by this Python in its own process from the repository root, which must exit 0."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _block_mean_predictor(blocks):
    """Depends on the whole block, so any tiling or blending difference shows."""
    return blocks * 0.5 + blocks.mean(axis=(1, 2, 3, 4), keepdims=True)


@pytest.mark.parametrize("shape", [(37, 33, 40), (9, 40, 40), (64, 48, 40), (20, 16, 16)])
@pytest.mark.parametrize("slab_rows", [1, 3, 8])
def test_refine_stream_equals_whole_volume_stitching(shape, slab_rows):
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 100, level_shape(shape, 1)).astype(np.float32)
    slabs = (coarse[z : z + slab_rows] for z in range(0, len(coarse), slab_rows))
    streamed = list(refine_stream(slabs, shape, _block_mean_predictor, 16, overlap=0.25, pad_value=-1000))
    assert all(len(s) > 0 for s in streamed)
    whole = predict_volume(upsample_nearest(coarse, 2, shape), _block_mean_predictor, 16, 0.25, pad_value=-1000)
    np.testing.assert_allclose(np.concatenate(streamed), whole, atol=1e-3)


def test_refine_stream_holds_a_few_slabs_whatever_the_depth():
    """The stream yields as it reads: after the first output, it has read only about a block ahead."""
    rng = np.random.default_rng(1)
    coarse = rng.normal(0, 1, (64, 16, 16)).astype(np.float32)
    read = []

    def slabs():
        for z in range(len(coarse)):
            read.append(z)
            yield coarse[z : z + 1]

    stream = refine_stream(slabs(), (128, 32, 32), lambda b: b, 16, overlap=0.25)
    first = next(stream)
    assert len(first) == 12 and len(read) <= 16  # one block of finer rows needs 8 coarse rows, plus a stride
    rest = list(stream)
    assert sum(len(s) for s in rest) + len(first) == 128 and len(read) == 64


def test_cascade_of_identities_is_nearest_upsampling():
    rng = np.random.default_rng(2)
    coarse = rng.normal(0, 100, (5, 8, 8)).astype(np.float32)
    shapes = [(10, 16, 16), (19, 32, 32)]
    out = np.concatenate(list(cascade_stream(coarse, [(lambda b: b, 8), (lambda b: b, 16)], shapes, slab_rows=2)))
    np.testing.assert_allclose(out, upsample_nearest(coarse, 4, (19, 32, 32)), atol=1e-3)


def test_refine_stream_rejects_wrong_slabs():
    with pytest.raises(ValueError, match="expected"):
        list(refine_stream([np.zeros((4, 9, 8), np.float32)], (8, 16, 16), lambda b: b, 8))
    with pytest.raises(ValueError, match="needs 4"):
        list(refine_stream([np.zeros((6, 8, 8), np.float32)], (8, 16, 16), lambda b: b, 8))


def test_subsample_volume_keeps_the_first_voxel_and_scales_spacing():
    volume = make_phantom(0, 10, 32)
    half = subsample_volume(volume, 2)
    assert half.shape == (5, 16, 16) == level_shape(volume.shape, 1)
    np.testing.assert_array_equal(half.hu, subsample(volume.hu, 2))
    assert half.spacing_mm == tuple(2 * s for s in volume.spacing_mm)
    np.testing.assert_allclose(half.index_to_lps((1, 1, 1)), volume.index_to_lps((2, 2, 2)))
    assert half.volume_id != volume.volume_id


def test_mean_pyramid_volume_is_cell_means_placed_at_the_cells_centres():
    volume = make_phantom(0, 10, 32)
    half = subsample_volume(volume, 2, "mean")
    assert half.shape == (5, 16, 16) and half.hu.dtype == volume.hu.dtype
    np.testing.assert_array_equal(half.hu, np.rint(mean_pool(volume.hu, 2)).astype(volume.hu.dtype))
    assert half.spacing_mm == tuple(2 * s for s in volume.spacing_mm)
    cell = [(k, j, i) for k in (2, 3) for j in (2, 3) for i in (2, 3)]  # the fine voxels of coarse voxel (1, 1, 1)
    np.testing.assert_allclose(half.index_to_lps((1, 1, 1)), volume.index_to_lps(cell).mean(axis=0), atol=1e-9)
    assert half.volume_id not in (volume.volume_id, subsample_volume(volume, 2).volume_id)


@pytest.mark.parametrize("pyramid", ["subsample", "mean"])
def test_conversion_at_a_level_stores_the_subsampled_volume(tmp_path, pyramid):
    import tensorflow as tf

    from cgan_ct.data import schema
    from cgan_ct.data.conversion import convert

    phantom = make_phantom(0, 16, 64)
    write_nifti(phantom, tmp_path / "p.nii.gz")
    config = conversion_config("smoke", test_fraction=0.0, subsample=2, pyramid=pyramid)
    manifest = convert([tmp_path / "p.nii.gz"], tmp_path / "ds", config, workers=1).manifest.to_json()
    assert manifest["subsample"] == 2 and manifest.get("pyramid", "subsample") == pyramid
    assert manifest["volumes"][0]["shape_zyx"] == [8, 32, 32]
    level = subsample(phantom.hu, 2) if pyramid == "subsample" else np.rint(mean_pool(phantom.hu, 2))
    m, s = manifest["margin"], manifest["stored_size"]
    padded = np.pad(level, [(m, m + 16)] * 3, constant_values=manifest["pad_hu"])
    shard = tmp_path / "ds" / manifest["splits"]["train"]["shards"][0]["name"]
    records = [schema.decode_block(r, s) for r in tf.data.TFRecordDataset(str(shard))]
    assert records
    for record in records:
        z, y, x = record["origin_zyx"].numpy().tolist()
        np.testing.assert_array_equal(record["hu"].numpy(), padded[z : z + s, y : y + s, x : x + s])
    with pytest.raises(ValueError, match="subsample"):
        conversion_config("smoke", subsample=0)
    with pytest.raises(ValueError, match="pyramid"):
        conversion_config("smoke", pyramid="median")


def test_coarse_generator_draws_any_depth_reproducibly(tmp_path):
    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_export import CoarseModel, save_coarse_model
    from cgan_ct.synthesis.coarse_networks import build_coarse_generator

    config = coarse_config("smoke", size=16)
    generator = build_coarse_generator(config)
    save_coarse_model(generator, linear_mapping(), config, tmp_path / "coarse")
    model = CoarseModel(tmp_path / "coarse")
    a, b = model.draw(3, 5), model.draw(3, 5)
    assert a.shape == (5, 16, 16) and model.draw(3, 11).shape == (11, 16, 16)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - model.draw(4, 5)).max() > 0
    assert a.min() >= -1024 and a.max() <= 3071
    with pytest.raises(InputError, match="not a coarse generator"):
        CoarseModel(tmp_path)


def _chest(seed: int, depth: int = 6, size: int = 32, lung_scale: float = 1.0) -> np.ndarray:
    """A crude coarse chest: air, a body of soft tissue with two lungs and a bright spine, some noise (HU)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2 + 0.5
    hu = np.full((depth, size, size), -1024.0, np.float32)
    body = (y / (0.35 * size)) ** 2 + (x / (0.45 * size)) ** 2 < 1
    lungs = ((y / (0.22 * size)) ** 2 + ((np.abs(x) - 0.2 * size) / (0.13 * size)) ** 2) < lung_scale
    spine = (np.abs(x) < 0.06 * size) & (y > 0.18 * size) & (y < 0.3 * size)
    plane = np.where(body, 40.0, -1024.0) + np.where(lungs, -900.0, 0.0) + np.where(spine, 500.0, 0.0)
    hu[:] = plane + np.where(body, rng.normal(0, 10, (depth, size, size)), 0)
    return hu


def test_calibration_undoes_a_monotone_intensity_bias():
    """The coarse calibration (issue 33: tissue medians): draws whose body HU are a monotone distortion of the
    real ones' come back to the real intensities; air outside the body stays air; numpy and TensorFlow agree."""
    from cgan_ct.synthesis.calibration import Calibration, fit_calibration

    real = [_chest(seed) for seed in range(3)]

    def distort(hu):  # grey lungs, bright soft tissue, duller bone: inside the body only
        return np.where(hu > -1000, 0.7 * hu + 0.0002 * hu**2 + 40, hu).astype(np.float32)

    draws = [distort(_chest(seed)) for seed in range(10, 14)]
    calibration = fit_calibration(draws, real)
    assert (calibration.draws, calibration.volumes) == (4, 3)
    test = _chest(99)
    body = test > -1000
    before, after = distort(test), calibration.apply(distort(test))
    assert np.abs(after[body] - test[body]).mean() < 0.2 * np.abs(before[body] - test[body]).mean()
    for low, high in ((-1000, -500), (-200, 200), (300, 3000)):  # lung, soft tissue, bone
        inside = body & (test > low) & (test < high)
        assert abs(np.median(after[inside]) - np.median(test[inside])) < 15
    np.testing.assert_array_equal(after[~body], -1024)  # air stays air
    np.testing.assert_allclose(calibration.apply_tf(distort(test)).numpy(), after, atol=0.05)
    beyond = calibration.source_hu[-1] + np.array([10.0, 500.0])  # slope 1 past the last knot
    np.testing.assert_allclose(np.diff(calibration.apply(beyond)), 490, atol=1e-3)
    assert Calibration.from_json(json.loads(json.dumps(calibration.to_json()))) == calibration
    same = fit_calibration(real, real)  # draws already real: nearly the identity
    assert np.abs(same.apply(test)[body] - test[body]).max() < 1
    with pytest.raises(ValueError, match="no draw has a body"):
        fit_calibration([np.full((2, 16, 16), -1024.0, np.float32)], real)
    with pytest.raises(ValueError, match="increase strictly"):
        Calibration((0.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError, match="never fall"):
        Calibration((0.0, 1.0), (2.0, 1.0))
    with pytest.raises(ValueError, match=">= 2 knots"):
        Calibration((0.0,), (0.0,))


def test_split_calibration_keeps_the_lung_amount_and_fixes_its_density():
    """The output calibration (issue 33: lung HU): draws with bigger, greyer lungs than real. One map over the
    body trades amount for density (the draws' extra lung becomes soft tissue, the rest stays grey); split at
    -400 HU, each side is matched apart: as much lung as drawn, at the real lung's and soft tissue's HU."""
    from cgan_ct.synthesis.calibration import Calibration, fit_calibration

    real = [_chest(seed) for seed in range(3)]

    def grey_big_lungs(seed):  # a quarter more lung at -700 HU, soft tissue at 60 HU
        hu = _chest(seed, lung_scale=1.25)
        inside = hu > -1000
        return np.where(inside & (hu < -400), hu + 200, np.where(inside, hu + 20, hu)).astype(np.float32)

    draws = [grey_big_lungs(seed) for seed in range(10, 14)]
    test, truth = grey_big_lungs(99), _chest(99)
    body, lung, tissue = test > -1000, (test > -1000) & (test < -400), (truth > -200) & (truth < 200)
    split = fit_calibration(draws, real, splits_hu=(-400,))
    assert split.splits_hu == (-400.0,) and (split.draws, split.volumes) == (4, 3)
    assert Calibration.from_json(json.loads(json.dumps(split.to_json()))) == split
    after = split.apply(test)
    assert ((after < -400) & body).sum() == lung.sum()  # the lung amount is the draw's
    assert abs(np.median(after[lung]) - np.median(truth[(truth > -1000) & (truth < -400)])) < 15
    assert abs(np.median(after[tissue & ~lung]) - np.median(truth[tissue])) < 15
    np.testing.assert_array_equal(after[~body], -1024)
    single = fit_calibration(draws, real).apply(test)  # one map: a part of the lung becomes tissue
    assert ((single < -400) & body).sum() < 0.9 * lung.sum()
    with pytest.raises(ValueError, match="no volume has body voxels below -400 HU"):
        fit_calibration(draws, [np.where(r < -400, 40.0, r).astype(np.float32) for r in real], splits_hu=(-400,))
    with pytest.raises(ValueError, match="no draw has body voxels in \\[-400, -190\\) HU"):
        fit_calibration(draws, real, splits_hu=(-400, -190))  # the phantoms have nothing between lung and fat
    with pytest.raises(ValueError, match="above air"):
        fit_calibration(draws, real, splits_hu=(-2000,))
    with pytest.raises(ValueError, match="must increase"):
        fit_calibration(draws, real, splits_hu=(-190, -400))


def test_calibrated_coarse_model_serves_calibrated_draws(tmp_path):
    """save_coarse_model with a calibration: the SavedModel's signature applies it (TF Serving gets calibrated
    HU), and CoarseModel says which calibration it serves; without one, it says None."""
    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.calibration import Calibration
    from cgan_ct.synthesis.coarse_export import CoarseModel, CoarseModule, save_coarse_model
    from cgan_ct.synthesis.coarse_networks import build_coarse_generator

    config = coarse_config("smoke", size=16)
    generator = build_coarse_generator(config)
    calibration = Calibration((-1024.0, -100.0, 100.0), (-1024.0, -300.0, 0.0), draws=2, volumes=1)
    save_coarse_model(generator, linear_mapping(), config, tmp_path / "plain")
    save_coarse_model(generator, linear_mapping(), config, tmp_path / "calibrated", {"levels": 2}, calibration)
    plain, calibrated = CoarseModel(tmp_path / "plain"), CoarseModel(tmp_path / "calibrated")
    assert plain.calibration is None and calibrated.calibration == calibration
    assert calibrated.info["levels"] == 2
    drawn = CoarseModule(generator, linear_mapping(), config).draw(5, 3)
    np.testing.assert_allclose(plain.draw(5, 3), drawn, atol=1e-3)
    np.testing.assert_allclose(calibrated.draw(5, 3), calibration.apply(drawn), atol=1e-2)
    assert np.abs(calibrated.draw(5, 3) - plain.draw(5, 3)).max() > 1


def test_coarse_crops_carry_their_relative_height():
    from cgan_ct.synthesis.coarse_training import crop_batches

    config = coarse_config("smoke", size=8, crop_depth=4, batch_size=3)
    volumes = [np.full((6, 8, 8), 0.5, np.float32), np.zeros((2, 8, 8), np.float32)]
    volumes_batch, positions = next(crop_batches(volumes, config, seed=0))
    assert volumes_batch.shape == (3, 4, 8, 8, 1) and positions.shape == (3, 4)
    assert (np.diff(positions, axis=1) > 0).all()
    for volume, position in zip(volumes_batch[..., 0], positions, strict=True):
        if volume.min() == -1:  # the 2-slice volume, padded with air above its top: past +1 there
            np.testing.assert_array_equal(volume[2:], -1)
            np.testing.assert_allclose(position, [-0.5, 0.5, 1.5, 2.5])
        else:
            assert (np.abs(position) < 1).all()
    with pytest.raises(ValueError, match="expected"):
        next(crop_batches([np.zeros((4, 9, 9), np.float32)], config, seed=0))


def test_discriminator_augmentation_shifts_with_air_and_cuts_out_a_square():
    import tensorflow as tf

    from cgan_ct.synthesis.coarse_training import augment_for_discriminator

    volumes = np.full((6, 3, 16, 16, 1), -1.0, np.float32)
    volumes[:, :, 8, 8] = 1.0  # one bright column per example
    shifted = augment_for_discriminator(tf.constant(volumes), tf.constant([1, 2]), max_shift=2, cutout=0).numpy()
    moves = set()
    for example in shifted[..., 0]:
        z, y, x = np.nonzero(example == 1.0)
        assert list(z) == [0, 1, 2] and len(set(y)) == len(set(x)) == 1  # every slice moved alike
        assert abs(y[0] - 8) <= 2 and abs(x[0] - 8) <= 2
        assert np.count_nonzero(example != -1.0) == 3  # air filled in, nothing else changed
        moves.add((y[0], x[0]))
    assert len(moves) > 1  # examples get their own shifts

    flat = tf.constant(np.full((4, 2, 16, 16, 1), 0.5, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        cut = augment_for_discriminator(flat, tf.constant([3, 4]), max_shift=0, cutout=4)
        total = tf.reduce_sum(cut)
    for example in cut.numpy()[..., 0]:
        rows, cols = np.nonzero(example[0] == 0.0)
        assert len(rows) == 16 and np.ptp(rows) == 3 and np.ptp(cols) == 3  # one 4 x 4 square
        np.testing.assert_array_equal(example[0] == 0.0, example[1] == 0.0)  # through every slice
    gradient = tape.gradient(total, flat).numpy()  # differentiable: G learns through it
    np.testing.assert_array_equal(gradient == 0.0, cut.numpy() == 0.0)


def test_discriminator_colour_augmentation_changes_brightness_and_contrast_differentiably():
    import tensorflow as tf

    from cgan_ct.synthesis.coarse_training import augment_for_discriminator

    rng = np.random.default_rng(0)
    volumes = tf.constant(rng.uniform(-0.5, 0.5, (8, 2, 16, 16, 1)).astype(np.float32))
    plain = augment_for_discriminator(volumes, tf.constant([5, 6]), max_shift=0, cutout=0).numpy()
    np.testing.assert_array_equal(plain, volumes.numpy())  # off by default
    with tf.GradientTape() as tape:
        tape.watch(volumes)
        out = augment_for_discriminator(volumes, tf.constant([5, 6]), max_shift=0, cutout=0, color=True)
        total = tf.reduce_sum(out)
    again = augment_for_discriminator(volumes, tf.constant([5, 6]), max_shift=0, cutout=0, color=True)
    np.testing.assert_array_equal(out.numpy(), again.numpy())  # the seed decides: real and fake get their own draws
    gains, offsets = [], []
    for before, after in zip(volumes.numpy(), out.numpy(), strict=True):
        gain, offset = np.polyfit(before.ravel(), after.ravel(), 1)  # a linear change per example
        np.testing.assert_allclose(after, gain * before + offset, atol=1e-5)
        gains.append(gain)
        offsets.append(after.mean() - before.mean())
    assert min(gains) >= 0.8 and max(gains) <= 1.2 and np.ptp(gains) > 0.05
    assert max(np.abs(offsets)) <= 0.2 + 1e-6 and np.ptp(offsets) > 0.02
    assert np.isfinite(tape.gradient(total, volumes).numpy()).all()


def test_coarse_crops_zoom_and_shift_as_asked():
    from cgan_ct.synthesis.coarse_training import crop_batches

    size = 32
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.where(np.hypot(yy, xx) < 8, 0.0, -1.0).astype(np.float32)  # a body of radius 8 in air
    volumes = [np.repeat(disc[None], 6, axis=0)]
    plain = coarse_config("smoke", size=size, crop_depth=4, batch_size=16)
    base, _ = next(crop_batches(volumes, plain, seed=0))
    np.testing.assert_array_equal(base[0, ..., 0], volumes[0][:4])
    zoomed, _ = next(
        crop_batches(volumes, coarse_config("smoke", size=size, crop_depth=4, batch_size=16, scale_augment=0.2), seed=0)
    )
    areas = [np.count_nonzero(crop[0, ..., 0] > -0.5) / np.count_nonzero(disc > -0.5) for crop in zoomed]
    assert min(areas) >= 0.8**2 - 0.1 and max(areas) <= 1.2**2 + 0.1 and np.ptp(areas) > 0.2
    for crop in zoomed[..., 0]:
        np.testing.assert_array_equal(crop[0], crop[-1])  # in-plane only: every slice alike
        assert crop[:, 0, 0].max() == -1.0  # air fills in at the border
    per_hu = 2 / 4095
    shifted, _ = next(
        crop_batches(
            volumes,
            coarse_config("smoke", size=size, crop_depth=4, batch_size=16, shift_augment_hu=50.0),
            seed=0,
            per_hu=per_hu,
        )
    )
    offsets = [crop[..., 0][disc[None].repeat(4, 0) == 0.0] / per_hu for crop in shifted]
    for offset in offsets:
        assert np.ptp(offset) < 1e-3 and abs(offset[0]) <= 50.0 + 1e-3  # one offset per crop, within range
    assert np.ptp([offset[0] for offset in offsets]) > 20
    np.testing.assert_array_equal(shifted[..., 0][:, disc[None].repeat(4, 0) == -1.0], -1.0)  # air stays air
    with pytest.raises(ValueError, match="scale_augment"):
        coarse_config("smoke", scale_augment=0.6)
    with pytest.raises(ValueError, match="shift_augment_hu"):
        coarse_config("smoke", shift_augment_hu=-1.0)


def test_coarse_crops_deform_elastically_as_asked():
    """Issue 33, item 1: body shapes the cohort lacks, by a smooth in-plane field alike on every slice."""
    from cgan_ct.synthesis.coarse_training import crop_batches, elastic_slices

    size = 64
    point = np.full((3, size, size), -1.0, np.float32)
    point[:, 32, 32] = 1.0  # a bright point moves by at most the amplitude
    for seed in range(10):
        moved = elastic_slices(point, np.random.default_rng(seed), 4.0)
        np.testing.assert_array_equal(moved[0], moved[-1])
        ys, xs = np.nonzero(moved[0] > -1.0)
        assert len(ys) and np.abs(ys - 32).max() <= 5 and np.abs(xs - 32).max() <= 5
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.where(np.hypot(yy, xx) < 16, 0.0, -1.0).astype(np.float32)
    volumes = [np.repeat(disc[None], 6, axis=0)]
    config = coarse_config("smoke", size=size, crop_depth=4, batch_size=16, elastic_augment=4.0)
    deformed, _ = next(crop_batches(volumes, config, seed=0))
    changed = [np.count_nonzero((crop[0, ..., 0] > -0.5) != (disc > -0.5)) for crop in deformed]
    assert min(changed) > 0 and len({c for c in changed}) > 1  # each crop its own shape
    assert all(crop[:, 0, 0, 0].max() == -1.0 for crop in deformed)  # the border stays air
    with pytest.raises(ValueError, match="elastic_augment must be in"):
        coarse_config("smoke", size=64, elastic_augment=7.0)


def test_coarse_discriminator_width_is_its_own():
    from cgan_ct.synthesis.coarse_networks import build_coarse_discriminator, build_coarse_generator

    def widths(model):
        return [layer.filters for layer in model.layers if hasattr(layer, "filters")]

    same = coarse_config("smoke", size=16, filters=32)
    narrow = coarse_config("smoke", size=16, filters=32, disc_filters=16)
    assert max(widths(build_coarse_discriminator(same))) == 32
    assert max(widths(build_coarse_discriminator(narrow))) == 16
    assert widths(build_coarse_generator(narrow)) == widths(build_coarse_generator(same))


def log_recorder(history: list):
    """A Keras callback appending each training step's logs (as floats) to ``history``."""
    import keras

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append({k: float(v) for k, v in logs.items()})

    return Record()


def test_coarse_training_applies_the_r1_penalty():

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_training import train_coarse

    rng = np.random.default_rng(0)
    volumes = [rng.uniform(-1000, 200, (6, 8, 8)).astype(np.float32) for _ in range(3)]

    def train(gamma):
        history = []
        config = coarse_config("smoke", size=8, steps=4, r1_every=2, r1_gamma=gamma)
        return train_coarse(volumes, linear_mapping(), config, seed=0, callbacks=[log_recorder(history)]), history

    generator, history = train(10.0)
    assert len(history) == 4 and all(np.isfinite(v) for log in history for v in log.values())
    assert history[0]["r1"] > 0  # computed on step 0 (then every 2nd step; the metric is a running mean)
    # the penalty enters D's loss: same seeds, same step-0 logits, d_loss larger by gamma/2 * r1_every * r1
    _, unpenalized = train(0.0)
    assert history[0]["d_loss"] - unpenalized[0]["d_loss"] == pytest.approx(10.0 * history[0]["r1"], rel=1e-3)
    assert generator.output_shape == (None, None, 8, 8, 1)
    with pytest.raises(ValueError, match="r1_every"):
        coarse_config("smoke", r1_every=0)


def test_coarse_moving_average_follows_the_generator_without_changing_its_training():
    """With ema_decay, train_coarse returns the moving average of G's weights (warmed up as (1 + t) / (10 + t)),
    computed here again from G's weights after each step; G itself trains exactly as without it."""
    import keras

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_training import CoarseGAN, train_coarse

    rng = np.random.default_rng(0)
    volumes = [rng.uniform(-1000, 200, (6, 8, 8)).astype(np.float32) for _ in range(3)]
    steps, decay = 5, 0.5

    def train(ema_decay):
        history = []

        class Record(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                assert isinstance(self.model, CoarseGAN)
                history.append([np.copy(w) for w in self.model.generator.get_weights()])

            def on_train_batch_end(self, batch, logs=None):
                history.append([np.copy(w) for w in self.model.generator.get_weights()])

        config = coarse_config("smoke", size=8, steps=steps, ema_decay=ema_decay)
        return train_coarse(volumes, linear_mapping(), config, seed=0, callbacks=[Record()]), history

    averaged, history = train(decay)
    plain, plain_history = train(0.0)
    assert len(history) == steps + 1
    for ours, theirs in zip(history[-1], plain_history[-1], strict=True):  # G trained the same
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(plain.get_weights(), plain_history[-1], strict=True):  # no average: G itself
        np.testing.assert_array_equal(ours, theirs)
    expected = [np.copy(w) for w in history[0]]
    for t in range(1, steps + 1):
        d = min(decay, (1 + t) / (10 + t))
        expected = [d * a + (1 - d) * w for a, w in zip(expected, history[t], strict=True)]
    got = averaged.get_weights()
    assert averaged is not None and len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(ours, last) for ours, last in zip(got, history[-1], strict=True))  # not G's
    with pytest.raises(ValueError, match="ema_decay"):
        coarse_config("smoke", ema_decay=1.0)


def test_mode_seeking_loss_counts_body_scale_differences_between_codes():
    """MSGAN's term: mean over pairs (i, i + B/2) of 1 / (d_volume / d_code + eps), d_volume taken on 4 x 4 means."""
    import tensorflow as tf

    from cgan_ct.synthesis.coarse_training import MODE_SEEKING_EPSILON, mode_seeking_loss

    rng = np.random.default_rng(0)
    code = tf.constant(rng.uniform(-1, 1, (4, 6)), tf.float32)
    d_code = np.abs(code.numpy()[:2] - code.numpy()[2:]).mean(axis=1)
    body = rng.uniform(-1, 1, (2, 3, 8, 8, 1)).astype(np.float32)
    shifts = np.array([0.2, 0.5], np.float32)[:, None, None, None, None]  # pair 0 differs by 0.2, pair 1 by 0.5
    volumes = tf.constant(np.concatenate([body, body + shifts]))
    expected = np.mean(1 / (np.array([0.2, 0.5]) / d_code + MODE_SEEKING_EPSILON))
    assert float(mode_seeking_loss(volumes, code)) == pytest.approx(expected, rel=1e-4)
    # voxel noise that cancels in every 4 x 4 square is not a different body: the pair counts as the same
    checker = 0.3 * np.where((np.indices((8, 8)).sum(axis=0) % 2) == 0, 1.0, -1.0).astype(np.float32)
    noisy = tf.constant(np.concatenate([body, body + checker[None, None, :, :, None]]))
    assert float(mode_seeking_loss(noisy, code)) == pytest.approx(1 / MODE_SEEKING_EPSILON, rel=0.01)  # float32


def test_coarse_mode_seeking_pushes_draws_of_different_codes_apart():
    """The same training with the term draws pairs of codes further apart (at body scale) than without it."""
    import tensorflow as tf

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_networks import draw_noise, positions
    from cgan_ct.synthesis.coarse_training import mode_seeking_loss, train_coarse

    rng = np.random.default_rng(0)
    volumes = [rng.uniform(-1000, 200, (6, 8, 8)).astype(np.float32) for _ in range(3)]

    def train(weight):
        history = []
        config = coarse_config("smoke", size=8, steps=30, batch_size=3, mode_seeking=weight)  # odd: one pair
        generator = train_coarse(volumes, linear_mapping(), config, seed=0, callbacks=[log_recorder(history)])
        code, latent = draw_noise(tf.constant([5, 6]), 8, 4, config.latent_channels)
        where = tf.tile(tf.reshape(positions(4), [1, 4, 1, 1, 1]), [8, 1, 4, 4, 1])
        return float(mode_seeking_loss(generator([code, latent, where]), code)), history

    pushed, history = train(10.0)
    plain, plain_history = train(0.0)
    assert "mode_seeking" in history[-1] and "mode_seeking" not in plain_history[-1]
    assert np.isfinite(history[-1]["mode_seeking"])
    assert pushed < 0.5 * plain  # lower: draws of different codes differ more (measured 2.5 against 6.7)
    # the term's second draws take no noise from G's stream and D never sees them: at a weight too small
    # to move G, the GAN trains step for step as without the term
    _, unmoved = train(1e-30)
    assert [(h["d_loss"], h["g_loss"]) for h in unmoved] == [(h["d_loss"], h["g_loss"]) for h in plain_history]
    with pytest.raises(ValueError, match="at least 2"):
        coarse_config("smoke", batch_size=1, mode_seeking=1.0)
    with pytest.raises(ValueError, match="mode_seeking"):
        coarse_config("smoke", mode_seeking=-1.0)


def test_bounded_mode_seeking_term_and_its_target_from_real_pairs():
    """The hinge: 1 - d / target per pair, 0 beyond the target; the target: a quantile of the distances between
    crops of two different training volumes."""
    import tensorflow as tf

    from cgan_ct.synthesis.coarse_training import CoarseGAN, bounded_mode_seeking_loss, real_pair_distance

    rng = np.random.default_rng(0)
    body = rng.uniform(-1, 1, (2, 3, 8, 8, 1)).astype(np.float32)
    shifts = np.array([0.1, 0.5], np.float32)[:, None, None, None, None]  # pair 0 differs by 0.1, pair 1 by 0.5
    volumes = tf.constant(np.concatenate([body, body + shifts]))
    assert float(bounded_mode_seeking_loss(volumes, 0.2)) == pytest.approx((0.5 + 0.0) / 2, rel=1e-4)
    assert float(bounded_mode_seeking_loss(volumes, 0.05)) == 0.0
    # three flat bodies 0.1, 0.2 and 0.3 apart (no augmentation in the smoke preset): the 10 % quantile is the
    # closest pair's distance, the 90 % the furthest's
    config = coarse_config("smoke", size=8, mode_seeking=1.0, mode_seeking_bounded=True)
    flat = [np.full((depth, 8, 8), value, np.float32) for depth, value in ((6, 0.0), (9, 0.1), (7, 0.3))]
    assert real_pair_distance(flat, config, 0, 1.0) == pytest.approx(0.1, abs=1e-6)
    assert real_pair_distance(flat, config, 0, 1.0, quantile=0.9) == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError, match="2 or more"):
        real_pair_distance(flat[:1], config, 0, 1.0)
    with pytest.raises(ValueError, match="positive target"):
        CoarseGAN(None, None, config)
    with pytest.raises(ValueError, match="needs mode_seeking > 0"):
        coarse_config("smoke", mode_seeking_bounded=True)


def test_bounded_mode_seeking_pushes_only_pairs_closer_than_real_ones(monkeypatch):
    """Against the real pairs' distance the term pushes draws apart; against a target every pair already
    exceeds, it has no gradient and the GAN trains step for step as without it."""
    import tensorflow as tf

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis import coarse_training
    from cgan_ct.synthesis.coarse_networks import draw_noise, positions

    rng = np.random.default_rng(0)
    # three bodies of very different HU: real pairs far apart, further than an untrained G's draws
    volumes = [(hu + rng.normal(0, 50, (6, 8, 8))).astype(np.float32) for hu in (-900, -100, 700)]
    measured = coarse_training.real_pair_distance(
        [linear_mapping().forward(v) for v in volumes], coarse_config("smoke", size=8), 3, 1.0
    )

    def train(weight, bounded=True):
        history = []
        config = coarse_config(
            "smoke", size=8, steps=30, batch_size=3, mode_seeking=weight, mode_seeking_bounded=bounded
        )
        generator = coarse_training.train_coarse(
            volumes, linear_mapping(), config, seed=0, callbacks=[log_recorder(history)], say=lambda line: None
        )
        code, latent = draw_noise(tf.constant([5, 6]), 8, 4, config.latent_channels)
        where = tf.tile(tf.reshape(positions(4), [1, 4, 1, 1, 1]), [8, 1, 4, 4, 1])
        return float(coarse_training.bounded_mode_seeking_loss(generator([code, latent, where]), measured)), history

    pushed, history = train(10.0)
    plain, plain_history = train(0.0, bounded=False)
    assert 0 < history[0]["mode_seeking"] <= 1
    assert pushed < 0.5 * plain  # the pairs of draws nearer real pairs' distance (measured 0.14 against 0.65)
    monkeypatch.setattr(coarse_training, "real_pair_distance", lambda *args: 1e-6)
    _, beyond = train(10.0)
    assert all(h["mode_seeking"] == 0 for h in beyond)
    assert [(h["d_loss"], h["g_loss"]) for h in beyond] == [(h["d_loss"], h["g_loss"]) for h in plain_history]


def test_diversity_monitor_can_watch_the_training_generator_but_not_keep_it():
    from types import SimpleNamespace

    import tensorflow as tf

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_diversity import DiversityMonitor

    body = np.where(np.hypot(*np.mgrid[-8:8, -8:8]) < 6, 0.05, -1.0).astype(np.float32)
    rng = np.random.default_rng(0)
    real = [np.where(body > 0, 40.0, -1000.0) + rng.normal(0, 200, (6, 16, 16)) for _ in range(3)]

    def collapsed(inputs, training=False):
        depth = tf.shape(inputs[1])[1]
        return tf.tile(tf.constant(body)[None, None, :, :, None], [1, depth, 1, 1, 1])

    def diverse(inputs, training=False):
        return tf.repeat(tf.repeat(inputs[1][..., :1], 4, axis=2), 4, axis=3)

    config = coarse_config("smoke", size=16)
    monitors = [DiversityMonitor(linear_mapping(), config, real, 2, training_generator=raw) for raw in (True, False)]
    for monitor in monitors:
        monitor.set_model(SimpleNamespace(generator=collapsed, sampler=diverse))
        monitor.set_params({"steps": 2})
        monitor.on_train_batch_end(1)
    watching_training, watching_sampler = (m.rows[0]["synthetic_ms_ssim"] for m in monitors)
    assert watching_training == pytest.approx(1.0) and watching_sampler < 0.5
    with pytest.raises(ValueError, match="keep_diverse"):
        DiversityMonitor(linear_mapping(), config, real, 2, keep_diverse=True, training_generator=True)


def _monitor_rows(generator, real):
    """Two rows of a DiversityMonitor on ``generator`` (a callable standing in for the coarse network)."""
    from types import SimpleNamespace

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_diversity import DiversityMonitor

    monitor = DiversityMonitor(linear_mapping(), coarse_config("smoke", size=16), real, every=2)
    monitor.set_model(SimpleNamespace(generator=None, sampler=generator))  # it draws from the sampler
    monitor.set_params({"steps": 3})
    for batch in range(3):
        monitor.on_train_batch_end(batch)
    return monitor.rows


def test_diversity_monitor_tells_a_collapsed_generator_from_a_diverse_one():
    import tensorflow as tf

    from cgan_ct.synthesis.coarse_diversity import diversity_line, measurable

    body = np.where(np.hypot(*np.mgrid[-8:8, -8:8]) < 6, 0.05, -1.0).astype(np.float32)  # a disc of water in air

    def collapsed(inputs, training=False):  # the same body whatever the noise
        depth = tf.shape(inputs[1])[1]
        return tf.tile(tf.constant(body)[None, None, :, :, None], [1, depth, 1, 1, 1])

    def diverse(inputs, training=False):  # the latent noise itself, 4x4 blocks up to 16 x 16
        latent = inputs[1][..., :1]
        return tf.repeat(tf.repeat(latent, 4, axis=2), 4, axis=3)

    rng = np.random.default_rng(0)
    real = [np.where(body > 0, 40.0, -1000.0) + rng.normal(0, 200, (6, 16, 16)) for _ in range(3)]
    same, varied = _monitor_rows(collapsed, real), _monitor_rows(diverse, real)
    assert [r["step"] for r in same] == [2, 3]  # every 2 steps, and the last
    assert same[0]["synthetic_ms_ssim"] == pytest.approx(1.0) and varied[0]["synthetic_ms_ssim"] < 0.5
    assert same[0]["real_ms_ssim"] == varied[0]["real_ms_ssim"] < 0.9
    assert "above real + 0.05" in diversity_line(same[0]) and "within real + 0.05" in diversity_line(varied[0])
    # diversity is not realism: noise is diverse, and far from the real body HU (1126 HU water-coloured discs too)
    assert same[0]["real_w1_hu"] < 100 and varied[0]["synthetic_w1_hu"] > 300 and same[0]["synthetic_w1_hu"] > 300
    assert "body HU W1" in diversity_line(same[0])
    # size, lungs, bone: the disc is the real bodies' size, but 1126 HU throughout (no lung, all bone)
    assert same[0]["real_body_fraction"][0] <= same[0]["synthetic_body_fraction"] <= same[0]["real_body_fraction"][1]
    assert same[0]["synthetic_lung_fraction"] == 0.0 and same[0]["synthetic_bone_fraction"] == 1.0
    assert "lung / body 0.000" in diversity_line(same[0]) and "outside the real range" in diversity_line(same[0])

    def copying(inputs, training=False):  # the first real volume again (in the linear window's [-1, 1])
        depth = tf.shape(inputs[1])[1]
        first = tf.constant(((np.clip(real[0], -1024, 3071) + 1024) / 4095 * 2 - 1).astype(np.float32))
        return tf.tile(first[None, :, :, :, None], [tf.shape(inputs[1])[0], 1, 1, 1, 1])[:, :depth]

    assert _monitor_rows(copying, real)[0]["synthetic_w1_hu"] < 2 * same[0]["real_w1_hu"] + 10
    assert _monitor_rows(collapsed, real[:1])[0]["gap"] is None  # one real volume: no real pairs
    assert not measurable(coarse_config("smoke")) and measurable(coarse_config("smoke", size=16))  # 8 x 8: no window


def test_diversity_monitor_keeps_the_most_diverse_realistic_generator_when_asked():
    """A generator that draws different real bodies at step 2 and collapses to one by the last step: kept
    diverse, it ends holding its step-2 weights; not kept, its last. Noise, however diverse, is never kept."""
    from types import SimpleNamespace

    import tensorflow as tf

    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.coarse_diversity import (
        STRUCTURE,
        STRUCTURE_MARGIN,
        W1_LIMIT,
        DiversityMonitor,
        diversity_line,
        like_real,
        most_diverse,
    )

    rng = np.random.default_rng(1)
    body = np.hypot(*np.mgrid[-8:8, -8:8]) < 6
    real = [np.where(body, 40.0 * k, -1000.0) + rng.normal(0, 150, (6, 16, 16)) for k in range(4)]
    scaled = tf.constant(np.stack([(np.clip(v, -1024, 3071) + 1024) / 4095 * 2 - 1 for v in real]).astype(np.float32))

    class Switching:
        """Stands in for the coarse network: its one weight says whether it draws a real body chosen by the
        noise (1: diverse) or always the first (0: collapsed)."""

        def __init__(self):
            self.mode = np.array(1.0)

        def get_weights(self):
            return [self.mode]

        def set_weights(self, weights):
            self.mode = np.array(weights[0])

        def __call__(self, inputs, training=False):
            latent = inputs[1]
            pick = tf.cast(tf.math.floormod(tf.reduce_sum(tf.abs(latent)) * 1000.0, 4.0), tf.int32)
            index = pick if float(self.mode) else 0
            depth = tf.shape(latent)[1]
            return tf.tile(scaled[index][None, :, :, :, None], [tf.shape(latent)[0], 1, 1, 1, 1])[:, :depth]

    def run(keep):
        generator = Switching()
        monitor = DiversityMonitor(linear_mapping(), coarse_config("smoke", size=16), real, 2, keep_diverse=keep)
        monitor.set_model(SimpleNamespace(generator=None, sampler=generator))  # keeps the sampler's weights
        monitor.set_params({"steps": 4})
        for batch in range(4):
            generator.mode = np.array(1.0 if batch < 2 else 0.0)  # collapses after step 2
            monitor.on_train_batch_end(batch)
        monitor.on_train_end()
        return monitor, generator

    kept, generator = run(True)
    assert [r["step"] for r in kept.rows] == [2, 4]
    assert kept.rows[0]["gap"] < kept.rows[1]["gap"] and kept.rows[1]["synthetic_ms_ssim"] == pytest.approx(1.0)
    assert kept.kept_step == 2 and float(generator.mode) == 1.0
    last, generator = run(False)
    assert last.kept_step == 4 and float(generator.mode) == 0.0
    assert like_real(kept.rows[0]) and like_real(kept.rows[1])  # real bodies, drawn again
    assert "outside the real range" not in diversity_line(kept.rows[0])
    noise = {**kept.rows[0], "step": 6, "gap": -0.2, "synthetic_w1_hu": W1_LIMIT * kept.rows[0]["real_w1_hu"] + 1}
    assert most_diverse([*kept.rows, noise]) is kept.rows[0]  # more diverse, but its HU far from real
    for key in STRUCTURE:  # more diverse and near in HU, but its bodies too small / lungless / too bony
        low, high = kept.rows[0][f"real_{key}"]
        margin = STRUCTURE_MARGIN * (high - low)
        for value in (low - margin - 0.001, high + margin + 0.001):
            unlike = {**kept.rows[0], "step": 8, "gap": -0.3, f"synthetic_{key}": value}
            assert not like_real(unlike) and most_diverse([*kept.rows, unlike]) is kept.rows[0]
        near = {**kept.rows[0], "step": 8, "gap": -0.3, f"synthetic_{key}": high + margin / 2}  # within the margin
        assert like_real(near) and most_diverse([*kept.rows, near]) is near
    assert most_diverse([{k: v for k, v in kept.rows[0].items() if "fraction" not in k}]) is None  # rows before
    assert most_diverse([{**kept.rows[0], "gap": None}]) is None  # one real volume: nothing to pick by


@pytest.fixture(scope="module")
def tiny_cascade(tmp_path_factory):
    """A two-level cascade trained for a few steps on four 64 x 64 phantoms (about a minute)."""
    from cgan_ct.synthesis.cascade_training import CascadeSettings, train_cascade

    root = tmp_path_factory.mktemp("cascade")
    (root / "in").mkdir()
    for seed in range(4):
        write_nifti(make_phantom(seed, 24, 64), root / "in" / f"p{seed}.nii.gz")
    settings = CascadeSettings(
        levels=2,
        size=64,
        stage=model_config("smoke", spectral_weight=5.0),
        stage_steps=3,
        # draws from the moving average of its weights; pairs of codes pushed apart (MSGAN)
        coarse=coarse_config("smoke", ema_decay=0.9, mode_seeking=1.0),
        conversion=conversion_config("smoke", test_fraction=0.25),
        stage_augmentation={"mirror_axes": ()},  # the handedness kept (issue 33, item 1)
        spectral_levels=(0,),  # the texture term in the full-resolution stage only
        placement=True,  # the training volumes' fields of view recorded (experimental; off by default)
    )
    messages = []
    cascade = train_cascade([root / "in"], root / "out", settings, say=messages.append, workers=1)
    return root, settings, cascade, messages


@pytest.mark.slow
def test_tiny_cascade_synthesizes_reproducible_volumes(tiny_cascade):
    from cgan_ct.model.precision import matrix_features
    from cgan_ct.runtime import cpu_model
    from cgan_ct.synthesis.calibration import Calibration
    from cgan_ct.synthesis.cascade_spec import CascadeSpec
    from cgan_ct.synthesis.coarse_diversity import STRUCTURE, like_real
    from cgan_ct.synthesis.coarse_export import CoarseModel
    from cgan_ct.synthesis.grain import Grain
    from cgan_ct.synthesis.synthesis import Cascade

    _, settings, folder, messages = tiny_cascade
    assert any("coarse" in m for m in messages) and sum("training the x2" in m for m in messages) == 2
    info = json.loads((folder / "cascade.json").read_text())
    assert info["stages"] == ["stage1", "stage0"] and info["training"]["volumes"] == 3
    # the coarse generator trains first; the stages train on its measured blur and noise
    assert [m.split(":")[0] for m in messages if "training" in m] == ["coarse", "degradation", "stage0", "stage1"]
    measured = json.loads((folder.parent / "runs" / "degradation.json").read_text())
    diversity = json.loads((folder.parent / "runs" / "coarse_diversity.json").read_text())
    rows = diversity["rows"]
    assert rows and rows[-1]["step"] == settings.coarse.steps and 0 < rows[-1]["synthetic_ms_ssim"] <= 1
    assert (diversity["keep"], diversity["kept_step"]) == ("last", settings.coarse.steps)
    assert (info["training"]["coarse_keep"], info["training"]["coarse_kept_step"]) == ("last", settings.coarse.steps)
    assert any(m.startswith("coarse: diversity at step") for m in messages)
    # with a moving average, the generator being trained is checked too, at the same steps
    assert [r["step"] for r in diversity["training_generator_rows"]] == [r["step"] for r in rows]
    assert any(m.startswith("coarse: the generator being trained, at step") for m in messages)
    assert info["training"]["coarse_model"]["ema_decay"] == 0.9
    assert info["training"]["coarse_model"]["mode_seeking"] == 1.0
    # each check's draws beside the real volumes' size, lung and bone share; a kept generator outside: a warning
    assert all(f"synthetic_{key}" in row and len(row[f"real_{key}"]) == 2 for row in rows for key in STRUCTURE)
    assert any(m.startswith("coarse: warning:") for m in messages) == (not like_real(rows[-1]))
    # the CPU that trained it (GAN training need not repeat on another)
    assert info["training"]["cpu"] == {"model": cpu_model(), "matrix_features": matrix_features()}
    assert info["training"]["condition_degradation"] == measured
    for name in ("stage0", "stage1"):
        pipeline = json.loads((folder.parent / "runs" / name / "run.json").read_text())["pipeline"]
        assert (pipeline["condition_blur"], pipeline["condition_noise_hu"]) == (
            measured["blur_sigma"],
            measured["noise_hu"],
        )
        assert pipeline["mirror_axes"] == [] and pipeline["quarter_turns"] is True
        model = json.loads((folder.parent / "runs" / name / "run.json").read_text())["model"]
        assert model["spectral_weight"] == (5.0 if name == "stage0" else 0.0)
    assert info["training"]["stage_spectral_weight"] == {"stage0": 5.0, "stage1": 0.0}
    # the coarse model serves calibrated draws, fitted before the degradation was measured on them
    fit = json.loads((folder.parent / "runs" / "coarse_calibration.json").read_text())
    assert info["training"]["coarse_calibration"] == {"draws": settings.calibration_samples, "volumes": 3}
    assert fit["calibration"]["draws"] == settings.calibration_samples and fit["w1_before_hu"] is not None
    calibrated = next(i for i, m in enumerate(messages) if m.startswith("coarse: intensities calibrated"))
    assert calibrated < next(i for i, m in enumerate(messages) if m.startswith("degradation"))
    assert CoarseModel(folder / "coarse").calibration == Calibration.from_json(fit["calibration"])
    augmentation = {"mirror_axes": [], "quarter_turns": True, "max_rotation_deg": 0.0, "elastic_voxels": 0.0}
    augmentation["elastic_sampling"] = "trilinear"
    assert info["training"]["stage_augmentation"] == augmentation
    # last, the whole volumes are calibrated (lung and the rest apart): cascade.json holds the map, which
    # synthesis applies to every slab
    output = json.loads((folder.parent / "runs" / "output_calibration.json").read_text())
    assert info["output_calibration"] == output["calibration"] and output["calibration"]["splits_hu"] == [
        -400,
        -190,
        300,
    ]
    assert output["calibration"]["draws"] == settings.output_calibration_samples
    assert list(output["medians_hu"]) == ["lung", "partial", "fat to soft tissue", "bone"]
    assert [m.split(":")[0] for m in messages][-3:] == ["output", "output", "output"]
    assert "intensities calibrated" in messages[-3]
    # then the grain; 64 x 64 phantoms have no 32 x 32 patch of uniform soft tissue to fit it to: said, none
    assert messages[-2] == "output: no grain (no real volume has uniform soft tissue: no noise power to match)"
    assert info["output_grain"] is None and not (folder.parent / "runs" / "output_grain.json").exists()
    # last, the three training volumes' placements (numbers only), which synthesis draws each volume's grid from
    assert messages[-1].startswith("output: 3 placements recorded, one per volume trained on (in-plane spacing ")
    assert len(info["placements"]) == 3
    assert all(set(p) == {"spacing_mm", "offset_mm"} for p in info["placements"])
    cascade = Cascade(folder, placement=False)  # the cascade's own grid: the calibration and grain as fitted
    assert cascade.calibration == Calibration.from_json(info["output_calibration"]) and cascade.grain is None
    assert cascade.placements is None and cascade.output_spacing(1, 20) == tuple(info["spacing_mm"])
    raw = Cascade(folder, dataclasses.replace(CascadeSpec.load(folder), output_calibration=None), placement=False)
    served, drawn = (np.concatenate(list(c.slabs(1, 20))) for c in (cascade, raw))
    np.testing.assert_allclose(served, cascade.calibration.apply(drawn), atol=1e-3)
    assert np.abs(served - drawn).max() > 1  # the map moves the volume
    # a cascade with a grain serves it after the calibration, unless asked not to
    grain = Grain((0.1, 0.5), (50.0, 50.0), smooth_radius=2, smooth_hu=20.0)
    grained = dataclasses.replace(CascadeSpec.load(folder), output_grain=grain.to_json())
    with_grain, without = Cascade(folder, grained, placement=False), Cascade(folder, grained, False, False)
    assert with_grain.grain == grain and without.grain is None
    np.testing.assert_allclose(
        np.concatenate(list(with_grain.slabs(1, 20))), grain.apply(served, info["spacing_mm"], 1), atol=1e-3
    )
    np.testing.assert_allclose(np.concatenate(list(without.slabs(1, 20))), served, atol=1e-3)
    bad = dataclasses.replace(grained, output_grain={"nps": [1.0]})
    with pytest.raises(InputError, match="output_grain is malformed"):
        Cascade(folder, bad)
    assert cascade.level_shapes(20) == [(10, 32, 32), (20, 64, 64)]
    assert cascade.synthesize(1, 20).spacing_mm == tuple(info["spacing_mm"])
    # served as a user gets it: on a placement drawn by the seed (its spacing in the volume), the same each time
    placed = Cascade(folder)
    calls = []
    volume = placed.synthesize(1, 20, progress=lambda *a: calls.append(a))
    assert volume.shape == (20, 64, 64) and volume.hu.dtype == np.int16
    assert volume.spacing_mm == placed.output_spacing(1, 20) != tuple(info["spacing_mm"])
    assert volume.spacing_mm[0] == info["spacing_mm"][0]  # in-plane only
    assert {c[0] for c in calls} == {0, 1}
    np.testing.assert_array_equal(volume.hu, placed.synthesize(1, 20).hu)
    assert not np.array_equal(volume.hu, placed.synthesize(2, 20).hu)
    # the coarse draw moved to the drawn offset by whole coarse pixels (a small offset may round to none)
    assert any(not np.array_equal(placed.plan(s, 20)[0], cascade.plan(s, 20)[0]) for s in range(10))
    assert placed.synthesize(1, 37).shape == (37, 64, 64)
    bad = [{"spacing_mm": [-1, 1], "offset_mm": [0, 0]}]
    bad = dataclasses.replace(CascadeSpec.load(folder), placements=bad)
    with pytest.raises(InputError, match="placements are malformed"):
        Cascade(folder, bad)


@pytest.mark.slow
def test_training_again_resumes_without_retraining(tiny_cascade):
    from cgan_ct.synthesis.cascade_training import train_cascade

    root, settings, folder, _ = tiny_cascade
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    messages = []
    train_cascade([root / "in"], root / "out", settings, say=messages.append, workers=1)
    assert messages == []
    assert before == {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_calibrate_coarse_experiment_calibrates_a_trained_cascade(tiny_cascade, tmp_path):
    """experiments/calibrate_coarse.py gives a cascade trained without calibration the one the trainer fits:
    its coarse model then serves the draws of the trainer's own calibrated model; it refuses a calibrated one."""
    import shutil

    import keras

    from cgan_ct.data.manifest import load_manifest
    from cgan_ct.io.sources import discover
    from cgan_ct.ops.intensity import IntensityMapping
    from cgan_ct.synthesis.coarse_export import CoarseModel, save_coarse_model

    root, _, folder, _ = tiny_cascade
    copy = tmp_path / "cascade"
    shutil.copytree(folder, copy)
    trained = CoarseModel(copy / "coarse")
    generator = keras.models.load_model(root / "out" / "runs" / "coarse.keras")
    mapping = IntensityMapping.from_json(trained.info["intensity"])
    config = coarse_config("smoke", size=trained.size)
    save_coarse_model(generator, mapping, config, copy / "coarse", {"levels": 2})  # as if trained without it
    info = json.loads((copy / "cascade.json").read_text())
    info["training"]["coarse_calibration"] = None
    (copy / "cascade.json").write_text(json.dumps(info))
    train_ids = {v.volume_id for v in load_manifest(root / "out" / "datasets" / "level0").volumes_in("train")}
    train = [str(s.file) for s in discover([root / "in"])[0] if s.volume_id in train_ids]  # as the trainer's
    script = [sys.executable, str(REPO / "experiments" / "calibrate_coarse.py"), "--coarse_keras"]
    script += [str(root / "out" / "runs" / "coarse.keras"), "--input", ",".join(train)]
    result = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "intensities calibrated (16 draws matched to 3 real volumes)" in result.stdout
    recalibrated = CoarseModel(copy / "coarse")
    assert recalibrated.calibration is not None and recalibrated.info["levels"] == 2
    np.testing.assert_allclose(recalibrated.draw(3, 4), trained.draw(3, 4), atol=0.5)
    assert json.loads((copy / "cascade.json").read_text())["training"]["coarse_calibration"] == {
        "draws": 16,
        "volumes": 3,
    }
    again = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "already calibrated" in again.stderr + again.stdout


def _cascade_without(tiny_cascade, tmp_path, key: str):
    """A copy of the tiny cascade with cascade.json's ``key`` set to None, what it held, and the training inputs
    as the trainer took them: (copy, trained value, cascade.json as changed, training input paths)."""
    import shutil

    from cgan_ct.data.manifest import load_manifest
    from cgan_ct.io.sources import discover

    root, _, folder, _ = tiny_cascade
    copy = tmp_path / "cascade"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "cascade.json").read_text())
    trained, info[key] = info[key], None
    (copy / "cascade.json").write_text(json.dumps(info))
    train_ids = {v.volume_id for v in load_manifest(root / "out" / "datasets" / "level0").volumes_in("train")}
    return copy, trained, info, [str(s.file) for s in discover([root / "in"])[0] if s.volume_id in train_ids]


@pytest.mark.slow
def test_calibrate_output_experiment_calibrates_a_trained_cascade(tiny_cascade, tmp_path):
    """experiments/calibrate_output.py gives a cascade trained without an output calibration the one the
    trainer fits (the same draws, the same training volumes), and refuses a calibrated one."""
    copy, trained, _, train = _cascade_without(tiny_cascade, tmp_path, "output_calibration")
    script = [sys.executable, str(REPO / "experiments" / "calibrate_output.py"), "--input", ",".join(train)]
    result = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "output: intensities calibrated (8 volumes matched to 3 real ones" in result.stdout
    fitted = json.loads((copy / "cascade.json").read_text())["output_calibration"]
    assert fitted["splits_hu"] == trained["splits_hu"] and len(fitted["source_hu"]) == len(trained["source_hu"])
    np.testing.assert_allclose(fitted["target_hu"], trained["target_hu"], atol=0.01)
    np.testing.assert_allclose(fitted["source_hu"], trained["source_hu"], atol=0.01)
    assert (tmp_path / "runs" / "output_calibration.json").is_file()
    again = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "already calibrated" in again.stderr + again.stdout


@pytest.mark.slow
def test_record_placements_experiment_gives_an_older_cascade_the_trainers_placements(tiny_cascade, tmp_path):
    """experiments/record_placements.py measures the training volumes' placements as the trainer does (the same
    numbers, sorted), writes only them into cascade.json, and refuses a cascade that has them."""
    copy, trained, info, train = _cascade_without(tiny_cascade, tmp_path, "placements")
    script = [sys.executable, str(REPO / "experiments" / "record_placements.py"), "--input", ",".join(train)]
    result = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "output: 3 placements recorded, one per volume trained on (in-plane spacing" in result.stdout
    recorded = json.loads((copy / "cascade.json").read_text())
    assert recorded["placements"] == trained and {**recorded, "placements": None} == info
    again = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "has placements already" in again.stderr + again.stdout


@pytest.mark.slow
def test_fit_grain_experiment_says_why_it_fits_none_and_refuses_a_grained_cascade(tiny_cascade, tmp_path):
    """experiments/fit_grain.py on the tiny cascade: its 64 x 64 phantoms have no uniform soft tissue, so it
    fits no grain and says so (the fit itself: tests/test_grain.py); a cascade with a grain is refused."""
    import shutil

    root, _, folder, _ = tiny_cascade
    copy = tmp_path / "cascade"
    shutil.copytree(folder, copy)
    script = [sys.executable, str(REPO / "experiments" / "fit_grain.py"), "--input", str(root / "in" / "p0.nii.gz")]
    result = subprocess.run([*script, "--cascade", str(copy), "--samples", "1"], capture_output=True, text=True)
    assert result.returncode != 0 and "output: no grain (no real volume has uniform soft tissue" in result.stdout
    assert (
        f"{copy}: no grain fitted" in result.stderr
        and json.loads((copy / "cascade.json").read_text())["output_grain"] is None
    )
    info = json.loads((copy / "cascade.json").read_text())
    info["output_grain"] = {"frequencies_per_mm": [0.1], "nps": [1.0], "smooth_radius": 0, "smooth_hu": 0.0}
    info["output_grain"] |= {"draws": 1, "volumes": 1}
    (copy / "cascade.json").write_text(json.dumps(info))
    again = subprocess.run([*script, "--cascade", str(copy)], capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "has an output grain already" in again.stderr + again.stdout


@pytest.mark.slow
def test_level_texture_measures_the_volume_synthesis_writes(tiny_cascade):
    """experiments/level_texture.py's last level is what cgan-ct-synthesize writes: through the output
    calibration (its own process: the script defines absl flags at import); --smooth blurs the level it names
    and the stage after it refines the blurred level."""
    _, _, folder, _ = tiny_cascade
    code = (
        "import sys; sys.path.insert(0, 'experiments'); import level_texture, numpy as np\n"
        "from cgan_ct.synthesis.synthesis import Cascade\n"
        f"cascade = Cascade({str(folder)!r}, placement=False); assert cascade.calibration is not None\n"
        "levels = level_texture.synthetic_levels(cascade, 2, 20)\n"
        "written = np.concatenate(list(cascade.slabs(2, 20)))\n"
        "np.testing.assert_allclose(levels[-1], written, atol=1e-3)\n"
        "print('levels', [level.shape for level in levels])\n"
        "probed = level_texture.synthetic_levels(cascade, 2, 20, level_texture.parse_smoothing(['1:1.5'], 2))\n"
        "np.testing.assert_allclose(probed[0], levels[0])  # the coarse draw as it was\n"
        "assert probed[1].std(axis=(1, 2)).mean() < levels[1].std(axis=(1, 2)).mean()  # level 1 blurred\n"
        "assert np.abs(probed[2] - levels[2]).max() > 1  # and stage0 refined the blurred level\n"
        "for bad in (['3:1'], ['1:0'], ['1']):\n"
        "    try:\n"
        "        level_texture.parse_smoothing(bad, 2)\n"
        "    except ValueError as error:\n"
        "        print('refused', bad, error)\n"
    )
    result = _python(code)
    assert "levels [(5, 16, 16), (10, 32, 32), (20, 64, 64)]" in result.stdout
    assert result.stdout.count("refused") == 3 and "level:sigma pairs" in result.stdout


@pytest.mark.slow
def test_stage_augment_experiment_retrains_a_stage_per_variant(tiny_cascade, tmp_path):
    """experiments/stage_augment.py (issue 33, items 1 and 3) on the tiny cascade's run: each variant trains the
    stage with its own augmentation and loss (its run.json says so) and is scored at the stage's level beside the
    condition."""
    root, _, _, _ = tiny_cascade
    command = [sys.executable, str(REPO / "experiments" / "stage_augment.py"), "--run", str(root / "out")]
    command += [
        "--level",
        "1",
        "--steps",
        "2",
        "--variants",
        "paper,nomirror+noturn+elastic1+keepnoise+spec50+smoothbase1",
        "--slices",
        "4",
    ]
    command += ["--ct_dir", str(root / "in"), "--heldout", "p3.nii.gz", "--output_dir", str(tmp_path / "w")]
    command += ["--output", str(tmp_path / "rows.jsonl")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(
        r"\| model \(nomirror\+noturn\+elastic1\+keepnoise\+spec50\+smoothbase1\) \| [\d.-]+ \| [\d.-]+ \| [\d.-]+ \| "
        + GRID_CELL
        + r" \| [\d.]+ \|",
        result.stdout,
    )
    condition_row = r"\| condition \| [\d.-]+ \| [\d.-]+ \| [\d.-]+ \| " + GRID_CELL + r" \| [\d.]+ \|"
    assert re.search(condition_row, result.stdout)
    changed = json.loads(
        (tmp_path / "w" / "nomirror+noturn+elastic1+keepnoise+spec50+smoothbase1" / "run.json").read_text()
    )
    pipeline = changed["pipeline"]
    assert changed["model"]["spectral_weight"] == 50.0  # item 3: the texture term, the stage's L1 weight kept
    assert (changed["model"]["residual_base"], changed["model"]["residual_sigma"]) == ("smooth", 1.0)  # no cells
    assert (
        changed["model"]["l1_weight"]
        == json.loads((tmp_path / "w" / "paper" / "run.json").read_text())["model"]["l1_weight"]
    )
    assert (pipeline["mirror_axes"], pipeline["quarter_turns"], pipeline["elastic_voxels"]) == ([], False, 1.0)
    assert pipeline["elastic_sampling"] == "noise_preserving"
    paper = json.loads((tmp_path / "w" / "paper" / "run.json").read_text())["pipeline"]
    assert (paper["mirror_axes"], paper["quarter_turns"], paper["elastic_voxels"]) == ([0, 1, 2], True, 0.0)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"paper", "nomirror+noturn+elastic1+keepnoise+spec50+smoothbase1"} and {
        r["level"] for r in rows
    } == {1}


@pytest.mark.slow
def test_synthesize_cli_applies_a_cascades_grain_unless_told_not_to(tiny_cascade, tmp_path):
    import shutil

    from cgan_ct.synthesis.grain import Grain
    from cgan_ct.synthesis.synthesis import Cascade
    from cgan_ct.synthesis.writing import write_synthetic_volumes

    _, _, folder, _ = tiny_cascade
    copy = tmp_path / "cascade"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "cascade.json").read_text())
    grain = Grain((0.1, 0.5), (400.0, 400.0), smooth_radius=2, smooth_hu=20.0)
    info["output_grain"] = grain.to_json()
    (copy / "cascade.json").write_text(json.dumps(info))
    # the cascade without a grain, in this process, as the CLI writes it; the grained copy through the CLI
    write_synthetic_volumes(Cascade(folder), tmp_path / "plain", slices=8, formats=("nifti",))
    for name, extra in [("grained", []), ("nograin", ["--nograin"])]:
        command = [sys.executable, "-m", "pipelines.synthesize", "--model_dir", str(copy), "--slices", "8"]
        command += ["--output_dir", str(tmp_path / name), "--format", "nifti", *extra]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
    volumes = {}
    for name in ("plain", "grained", "nograin"):
        assert json.loads((tmp_path / name / "synthesis.json").read_text())["grain"] is (name == "grained")
        volumes[name] = read_volume(tmp_path / name / "synthetic_000" / "volume.nii.gz").hu
    np.testing.assert_array_equal(volumes["nograin"], volumes["plain"])
    added = grain.noise(volumes["plain"].shape, info["spacing_mm"], 0).std()  # grain alone; and smoothed
    assert (volumes["grained"].astype(float) - volumes["plain"]).std() > 0.7 * added > 1


@pytest.mark.slow
def test_synthesize_cli_places_volumes_and_the_report_searches_them_on_the_cascades_grid(tiny_cascade, tmp_path):
    """cgan-ct-synthesize puts each volume on a training placement (its spacing in the NIfTI and the DICOM series)
    unless --noplacement; synthesis.json says which. cgan-ct-synthesis-report refuses placed volumes without
    --model_dir, and with it searches the same draws on the cascade's own grid for copies of training voxels."""
    from cgan_ct.synthesis.synthesis import Cascade

    root, _, folder, _ = tiny_cascade
    info = json.loads((folder / "cascade.json").read_text())
    for name, extra in [("placed", []), ("fixed", ["--noplacement"])]:
        command = [sys.executable, "-m", "pipelines.synthesize", "--model_dir", str(folder), "--slices", "24"]
        command += ["--output_dir", str(tmp_path / name), "--count", "2", *extra]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((tmp_path / name / "synthesis.json").read_text())["placement"] is (name == "placed")
    for seed in (0, 1):
        placed = read_volume(tmp_path / "placed" / f"synthetic_{seed:03d}" / "volume.nii.gz")
        fixed = read_volume(tmp_path / "fixed" / f"synthetic_{seed:03d}" / "volume.nii.gz")
        series = read_volume(tmp_path / "placed" / f"synthetic_{seed:03d}" / "dicom")
        assert placed.spacing_mm == pytest.approx(Cascade(folder).output_spacing(seed, 24), abs=1e-4)
        assert series.spacing_mm == pytest.approx(placed.spacing_mm, abs=1e-4)
        assert fixed.spacing_mm == pytest.approx(tuple(info["spacing_mm"]), abs=1e-4)
        # the voxels the library draws for that seed on its placement (moved by whole coarse pixels: a small
        # offset may round to none, so placed and fixed volumes can be the same voxels on two grids)
        np.testing.assert_array_equal(placed.hu, Cascade(folder).synthesize(seed, 24).hu)
    report = ["--synthetic", str(tmp_path / "placed"), "--input", str(root / "in"), "--size", "64", "--block", "16"]
    report += ["--dataset_dir", str(root / "out" / "datasets" / "level0"), "--norealism", "--noanatomy"]
    program = [sys.executable, "-m", "pipelines.synthesis_report", *report]
    refused = subprocess.run([*program, "--output_dir", str(tmp_path / "r0")], capture_output=True, text=True)
    assert refused.returncode == 2 and "synthesis.json: says its volumes were placed" in refused.stderr
    assert "--model_dir" in refused.stderr and not (tmp_path / "r0").exists()
    searched = subprocess.run(
        [*program, "--output_dir", str(tmp_path / "r1"), "--model_dir", str(folder)], capture_output=True, text=True
    )
    assert searched.returncode in (0, 3), searched.stderr[-2000:] + searched.stdout[-2000:]
    assert "memorization: drawing the 2 volumes again on the cascade's own grid (they were placed)" in searched.stdout


@pytest.mark.slow
def test_synthesize_cli_writes_marked_dicom_that_passes_dciodvfy(tiny_cascade, tmp_path):
    _, _, folder, _ = tiny_cascade
    out = tmp_path / "syn"
    command = [sys.executable, "-m", "pipelines.synthesize", "--model_dir", str(folder), "--output_dir", str(out)]
    result = subprocess.run([*command, "--count", "2", "--slices", "12"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "synthesis.json").read_text())
    assert [v["seed"] for v in record["volumes"]] == [0, 1]
    volume = read_volume(out / "synthetic_000" / "volume.nii.gz")
    series = read_volume(out / "synthetic_000" / "dicom")
    assert volume.shape == (12, 64, 64)
    np.testing.assert_array_equal(series.hu, volume.hu)
    files = sorted((out / "synthetic_000" / "dicom").glob("*.dcm"))
    first, other = pydicom.dcmread(files[0]), pydicom.dcmread(sorted((out / "synthetic_001" / "dicom").glob("*"))[0])
    assert "SYNTHETIC" in first.ImageComments and "SYNTHETIC" in first.DerivationDescription
    assert first.SyntheticData == "YES" and first[0x0008, 0x001C].VR == "CS"
    assert first.StudyInstanceUID != other.StudyInstanceUID and first.PatientID != other.PatientID
    assert first.PatientName == "" and "DERIVED" in first.ImageType
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)  # other slices: refused
    assert again.returncode == 2 and "synthetic_000: exists, not from a run with these settings" in again.stderr
    before = {p: p.stat().st_mtime_ns for p in (out / "synthetic_000").rglob("*")}
    more = subprocess.run([*command, "--count", "3", "--slices", "12"], capture_output=True, text=True, cwd=REPO)
    assert more.returncode == 0, more.stderr[-2000:]
    assert more.stdout.count("kept ") == 2 and f"wrote {out / 'synthetic_002'}" in more.stdout  # resumed
    assert before == {p: p.stat().st_mtime_ns for p in (out / "synthetic_000").rglob("*")}
    dciodvfy = require_tool("dciodvfy")
    report = subprocess.run([dciodvfy, str(files[0])], capture_output=True, text=True)
    text = report.stdout + report.stderr
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    # the only Error allowed: an older dciodvfy (Debian 12's) that predates Synthetic Data (0008,001C)
    assert "CTImage" in text and [e for e in errors if DCIODVFY_UNKNOWN_SYNTHETIC not in e] == [], text


def test_cascade_folder_errors_name_the_folder(tmp_path):
    from cgan_ct.synthesis.synthesis import Cascade

    with pytest.raises(InputError, match="not a synthesis cascade"):
        Cascade(tmp_path)


@pytest.mark.slow
def test_report_flags_a_planted_training_block(tiny_cascade, tmp_path):
    from cgan_ct.synthesis.cascade_training import fit_plane
    from cgan_ct.synthesis.synthesis import Cascade

    root, _, folder, _ = tiny_cascade
    cascade = Cascade(folder)
    syn = tmp_path / "syn"
    honest = cascade.synthesize(5, 24)
    planted = cascade.synthesize(6, 24)
    training = read_volume(root / "in" / "p0.nii.gz")  # p0 is in the training split (seed 0, 1 of 4 held out)
    manifest = json.loads((root / "out" / "datasets" / "level0" / "manifest.json").read_text())
    assert {v["volume_id"]: v["split"] for v in manifest["volumes"]}[training.volume_id] == "train"
    hu = planted.hu.copy()
    hu[8:24, 16:32, 16:32] = fit_plane(training.hu, 64)[8:24, 16:32, 16:32]
    for i, volume in enumerate((honest, planted.replace(hu=hu))):
        (syn / f"synthetic_{i:03d}").mkdir(parents=True)
        write_nifti(volume, syn / f"synthetic_{i:03d}" / "volume.nii.gz")
    report = tmp_path / "report"
    args = ["--synthetic", str(syn), "--input", str(root / "in"), "--output_dir", str(report)]
    args += ["--dataset_dir", str(root / "out" / "datasets" / "level0"), "--size", "64", "--block", "16"]
    args += ["--levels", "1", "--norealism"]  # the tiny cascade's level 2 is too small for the coarse blocks
    result = subprocess.run([sys.executable, "-m", "pipelines.synthesis_report", *args], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr[-2000:] + result.stdout[-2000:]
    memo = json.loads((report / "memorization.json").read_text())
    flagged = memo["full_resolution"]["flagged"]
    assert [(b["synthetic_volume"], b["origin_zyx"], b["distance"]) for b in flagged] == [(1, [8, 16, 16], 0.0)]
    assert [c["detected"] for c in memo["full_resolution"]["control"]] == [True]
    # one 24 x 64 x 64 held-out phantom has no coarse block passing the body/spread filter: said, not hidden
    assert "no blocks" in memo["coarse"]["skipped"] and "coarse level not checked" in (report / "report.md").read_text()
    text = (report / "report.md").read_text()
    assert "Flagged: 1 of" in text and "![synthetic_001](figures/synthetic_001.png)" in text
    summary = json.loads((report / "summary.json").read_text())
    assert summary["flagged_blocks"] == 1 and summary["control_detected"]
    assert summary["goals"]["memorization: positive controls flagged, no synthetic block flagged"] is False
    assert (report / "figures" / "synthetic_000.png").stat().st_size > 1000
    anatomy = "anatomy: every synthetic volume inside the real range (lungs, bone, ribs, airway, heart side)"
    assert anatomy in summary["goals"] and "## Anatomy" in text  # phantoms with no ribs or airway: it fails
    assert len(json.loads((report / "anatomy.json").read_text())["synthetic"]) == 2


def test_report_counts_a_volume_outside_the_dataset_as_held_out():
    """A cascade trained with no test split on a cohort's training series is compared with the held-out series,
    which its dataset never held: never trained on, so held out (and said how many)."""
    from types import SimpleNamespace

    from cgan_ct.realism.synthesis_report import split_real

    volumes = [SimpleNamespace(volume_id=v) for v in ("vol-a", "vol-b", "vol-c", "vol-d")]
    training, heldout, outside = split_real(volumes, {"vol-a": "train", "vol-b": "test", "vol-c": "train"})
    assert [v.volume_id for v in training] == ["vol-a", "vol-c"]
    assert [v.volume_id for v in heldout] == ["vol-b", "vol-d"] and outside == 1


_NO_HANDEDNESS_CHANGE = ("--mirror_axes", "none", "--noquarter_turns", "--elastic_voxels", "2")
_KEEP_NOISE = ("--elastic_sampling", "noise_preserving")


_COMMAND_CASES = [  # (flags, (L1 weight, texture weight), augmentation given)
    ((), (10.0, 0.0), {}),
    (("--stage_l1_weight", "1000"), (1000.0, 0.0), {}),
    (("--stage_spectral_weight", "30"), (10.0, 30.0), {}),
    (("--pyramid", "mean"), (10.0, 0.0), {}),
    (("--pyramid", "mean", "--stage_residual_base", "smooth", "--stage_residual_sigma", "1.5"), (10.0, 0.0), {}),
    (("--stage_upsample", "resize"), (10.0, 0.0), {}),
    (("--stage_spectral_weight", "30", "--stage_spectral_levels", "0"), (10.0, 30.0), {}),
    (_NO_HANDEDNESS_CHANGE, (10.0, 0.0), {"mirror_axes": (), "quarter_turns": False, "elastic_voxels": 2.0}),
    (
        _NO_HANDEDNESS_CHANGE + _KEEP_NOISE,
        (10.0, 0.0),
        {"mirror_axes": (), "quarter_turns": False, "elastic_voxels": 2.0} | {"elastic_sampling": "noise_preserving"},
    ),
    (("--nocoarse_calibration", "--nooutput_calibration", "--nooutput_grain", "--placement"), (10.0, 0.0), {}),
    (("--coarse_augment_color", "--coarse_keep", "diverse"), (10.0, 0.0), {}),
    (("--coarse_ema_decay", "0.99", "--coarse_mode_seeking", "0.5", "--coarse_mode_seeking_bounded"), (10.0, 0.0), {}),
]


def test_train_cascade_command_gives_the_stages_its_l1_weight(tmp_path):
    """Issue 33, item 3: the stages train with L1 weight 10 unless told otherwise (the cpu preset's is 1000),
    without the texture term unless --stage_spectral_weight, on the subsampling pyramid unless --pyramid (its
    residual then corrects the condition; --stage_residual_base smooth: the condition blurred), with
    transposed up-sampling unless --stage_upsample, the texture term in every stage unless
    --stage_spectral_levels; item 1: the augmentation flags reach the stages' settings, and only those given;
    both calibrations and the output grain on unless switched off, the placements only when asked; item 2:
    colour augmentation of the coarse discriminator's inputs only when asked, the rest of the coarse preset as it
    was, the last coarse generator kept unless --coarse_keep diverse, the moving average and the (bounded)
    mode-seeking term only when asked.
    Every command line parsed in one process (the flags reset between them), which prints what the trainer
    would be given."""
    stub = (
        "import cgan_ct.synthesis.cascade_training as training\n"
        "def seen(inputs, output_dir, settings, **kw):\n"
        "    stage = settings.stage\n"
        "    print('STAGE_L1', stage.l1_weight, 'PRESET_L1_FILTERS', stage.base_filters, stage.spectral_weight)\n"
        "    print('AUGMENT', repr(settings.stage_augmentation))\n"
        "    base = training.stage_model(settings)\n"
        "    print('PYRAMID', settings.pyramid, base.residual_base, base.residual_sigma)\n"
        "    print('UPSAMPLE', stage.upsample)\n"
        "    print('LEVELS', *[training.stage_model(settings, j).spectral_weight for j in range(settings.levels)])\n"
        "    print('CALIBRATE', settings.calibrate_coarse, settings.calibrate_output, settings.output_grain)\n"
        "    print('PLACEMENT', settings.placement)\n"
        "    coarse = settings.coarse\n"
        "    print('KEEP', settings.coarse_keep, settings.diversity_checks)\n"
        "    print('COARSE', coarse.augment_color, coarse.steps, coarse.r1_gamma, coarse.augment, coarse.ema_decay,\n"
        "          coarse.mode_seeking, coarse.mode_seeking_bounded, flush=True)\n"
        "    raise SystemExit(0)\n"
        "training.train_cascade = seen\n"
    )
    program = ["cgan-ct-train-cascade", "--input", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    program += ["--preset", "cpu"]
    runs = runs_in_one_process("pipelines.train_cascade", [[*program, *case[0]] for case in _COMMAND_CASES], stub)
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    printed = [run.stdout.splitlines() for run in runs]
    for (extra, expected, augmentation), lines in zip(_COMMAND_CASES, printed, strict=True):
        said = {line.split()[0]: line for line in lines if line.split()}
        line = said["STAGE_L1"]
        assert (float(line.split()[1]), float(line.split()[4])) == expected, extra
        assert int(line.split()[3]) == model_config("cpu").base_filters  # the rest of the preset unchanged
        assert ast.literal_eval(said["AUGMENT"][len("AUGMENT ") :]) == augmentation, extra
        base = "smooth" if "--stage_residual_base" in extra else "condition" if "--pyramid" in extra else "auto"
        sigma = "1.5" if "--stage_residual_sigma" in extra else "1.0"
        assert said["PYRAMID"].split()[1:] == ["mean" if "--pyramid" in extra else "subsample", base, sigma], extra
        assert said["UPSAMPLE"].split()[1] == ("resize" if "--stage_upsample" in extra else "transpose")
        per_stage = [float(v) for v in said["LEVELS"].split()[1:]]
        assert per_stage == ([expected[1], 0.0, 0.0] if "--stage_spectral_levels" in extra else [expected[1]] * 3)
        calibrated = "--nooutput_calibration" not in extra
        assert said["CALIBRATE"].split()[1:] == [str(calibrated)] * 3, extra
        assert said["PLACEMENT"].split()[1:] == [str("--placement" in extra)], extra
        preset = coarse_config("cpu")
        coarse = [str("--coarse_augment_color" in extra), str(preset.steps), str(preset.r1_gamma), "True"]
        bounded = "--coarse_mode_seeking_bounded" in extra
        coarse += ["0.99", "0.5", "True"] if bounded else [str(preset.ema_decay), str(preset.mode_seeking), "False"]
        assert said["COARSE"].split()[1:] == coarse, extra
        assert said["KEEP"].split()[1:] == ["diverse" if "--coarse_keep" in extra else "last", "10"], extra


def test_cascade_settings_check_the_texture_term_stages():
    from cgan_ct.synthesis.cascade_training import CascadeSettings, stage_model

    textured = model_config("smoke", spectral_weight=5.0)
    settings = CascadeSettings(levels=3, stage=textured, spectral_levels=(2, 0))
    assert settings.spectral_levels == (0, 2)
    assert [stage_model(settings, j).spectral_weight for j in range(3)] == [5.0, 0.0, 5.0]
    assert stage_model(settings).spectral_weight == 5.0  # the shared setting, as cascade.json's stage_model
    with pytest.raises(ValueError, match="distinct stages in 0..2"):
        CascadeSettings(levels=3, stage=textured, spectral_levels=(3,))
    with pytest.raises(ValueError, match="distinct stages"):
        CascadeSettings(levels=3, stage=textured, spectral_levels=(0, 0))
    with pytest.raises(ValueError, match="whose weight is 0"):
        CascadeSettings(levels=3, stage=model_config("smoke"), spectral_levels=(0,))
    with pytest.raises(ValueError, match="coarse_keep must be one of last, diverse"):
        CascadeSettings(coarse_keep="best")
    with pytest.raises(ValueError, match="diversity_checks must be >= 1"):
        CascadeSettings(coarse_keep="diverse", diversity_checks=0)
