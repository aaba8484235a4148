"""make_dataset: shapes, determinism, per-epoch draws, target untouched, alignment, distribution."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from cgan_ct.config import ConversionConfig
from cgan_ct.data.conversion import convert
from cgan_ct.data.input_pipeline import PipelineOptions, make_dataset
from tests.conftest import REPO
from tests.volume_factory import numpy_depixelate, phantom_hu


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    for i in range(4):
        image = sitk.GetImageFromArray(phantom_hu(i))
        sitk.WriteImage(image, str(root / f"v{i}.nii"))
    config = ConversionConfig(shard_target_mb=0.5)  # one shard per volume
    manifest = convert([root], root / "ds", config, workers=1).manifest.to_json()
    assert len(manifest["splits"]["train"]["shards"]) == 3 and manifest["splits"]["test"]["blocks"] == 8
    return root / "ds"


def _batches(ds, n):
    return [tuple(t.numpy() for t in batch) for _, batch in zip(range(n), ds, strict=False)]


@pytest.mark.parametrize("task", ["autoencode", "denoise", "depixelate"])
def test_shapes_and_range(dataset, task):
    condition, target = next(iter(make_dataset(dataset, "train", task, 4)))
    assert condition.shape == target.shape == (4, 32, 32, 32, 1)
    assert condition.dtype == target.dtype == tf.float32
    assert tf.reduce_min(target) >= -1 and tf.reduce_max(target) <= 1
    assert tf.reduce_min(condition) >= -1 and tf.reduce_max(condition) <= 1


def test_same_seed_same_batches_new_epoch_new_draws(dataset):
    a = make_dataset(dataset, "train", "denoise", 4, seed=5)
    b = make_dataset(dataset, "train", "denoise", 4, seed=5)
    first, again = _batches(a, 3), _batches(b, 3)
    for (ya, xa), (yb, xb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    second_epoch = _batches(a, 1)[0]
    assert not np.array_equal(second_epoch[1], first[0][1])
    other_seed = _batches(make_dataset(dataset, "train", "denoise", 4, seed=6), 1)[0]
    assert not np.array_equal(other_seed[1], first[0][1])


def test_corruption_never_touches_the_target_and_stays_aligned(dataset):
    batches = {t: _batches(make_dataset(dataset, "train", t, 4, seed=9), 2) for t in corruption_tasks()}
    for i in range(2):
        auto_y, auto_x = batches["autoencode"][i]
        np.testing.assert_array_equal(auto_y, auto_x)
        for task in ("denoise", "depixelate"):
            np.testing.assert_array_equal(batches[task][i][1], auto_x)  # same target for every task
        depix_y = batches["depixelate"][i][0]
        np.testing.assert_array_equal(depix_y[..., 0], numpy_depixelate(auto_x[..., 0], 2))
        noisy = batches["denoise"][i][0]
        assert 0 < np.abs(noisy - auto_x).mean() < 0.2


def corruption_tasks():
    return ("autoencode", "denoise", "depixelate")


def test_evaluation_split_is_deterministic_centre_crops(dataset):
    ds = make_dataset(dataset, "test", "denoise", 3)
    first, second = _batches(ds, 3), _batches(ds, 3)
    assert [b[0].shape[0] for b in first] == [3, 3, 2]  # 8 blocks, last batch kept
    for (y1, x1), (y2, x2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(_batches(make_dataset(dataset, "test", "denoise", 3), 1)[0][0], first[0][0])


def test_augment_copies_multiply_the_epoch(dataset):
    options = PipelineOptions(augment_copies=3)
    count = sum(int(x.shape[0]) for _, x in make_dataset(dataset, "train", "autoencode", 1, options=options))
    plain = sum(int(x.shape[0]) for _, x in make_dataset(dataset, "train", "autoencode", 1))
    assert plain == 24 and count == 3 * plain


def test_augment_copies_work_under_a_global_seed_of_zero(dataset):
    """keras.utils.set_random_seed(0), as users (and the coarse GAN's training) call it, before the pipeline."""
    options = PipelineOptions(augment_copies=2)
    runs = []
    try:
        for _ in range(2):
            keras.utils.set_random_seed(0)
            runs.append(
                [y.numpy() for _, y in make_dataset(dataset, "train", "autoencode", 4, seed=3, options=options)]
            )
    finally:
        tf.random.set_seed(None)
    assert len(runs[0]) == len(runs[1]) == 12  # was: OperatorNotAllowedInGraphError
    np.testing.assert_array_equal(np.concatenate(runs[0]), np.concatenate(runs[1]))  # still reproducible


def test_small_rotations_option(dataset):
    options = PipelineOptions(max_rotation_deg=10)
    condition, target = next(iter(make_dataset(dataset, "train", "autoencode", 2, options=options)))
    assert target.shape == (2, 32, 32, 32, 1)


def test_augmentation_switches(dataset):
    """No mirrors, no turns and elastic deformation reach the blocks; bad values are refused by name."""
    options = PipelineOptions(mirror_axes=[], quarter_turns=False, elastic_voxels=2.0)
    assert options.mirror_axes == ()
    condition, target = next(iter(make_dataset(dataset, "train", "depixelate", 2, options=options)))
    assert target.shape == condition.shape == (2, 32, 32, 32, 1)
    plain = next(iter(make_dataset(dataset, "train", "depixelate", 2, options=PipelineOptions())))[1]
    assert not np.array_equal(target.numpy(), plain.numpy())
    with pytest.raises(ValueError, match="mirror_axes"):
        PipelineOptions(mirror_axes=(3,))
    with pytest.raises(ValueError, match="elastic_voxels"):
        PipelineOptions(elastic_voxels=-1)
    with pytest.raises(ValueError, match="elastic_sampling must be one of"):
        PipelineOptions(elastic_sampling="cubic")
    kept = PipelineOptions(mirror_axes=[], quarter_turns=False, elastic_voxels=2.0, elastic_sampling="noise_preserving")
    kept_target = next(iter(make_dataset(dataset, "train", "depixelate", 2, options=kept)))[1]
    assert kept_target.shape == target.shape and not np.array_equal(kept_target.numpy(), target.numpy())


def test_mean_pyramid_condition(dataset):
    """A mean-pyramid stage's condition (issue 33): each 2-cube holds one value, the mean of the target's cube
    where the intensity window does not clip."""
    from cgan_ct.data.manifest import load_manifest

    plain = PipelineOptions(mirror_axes=[], quarter_turns=False)
    mean = PipelineOptions(mirror_axes=[], quarter_turns=False, pyramid="mean")
    condition, target = next(iter(make_dataset(dataset, "train", "depixelate", 2, options=mean)))
    condition, target = condition.numpy()[..., 0], target.numpy()[..., 0]
    cells = condition[:, ::2, ::2, ::2]
    np.testing.assert_array_equal(condition, np.repeat(np.repeat(np.repeat(cells, 2, 1), 2, 2), 2, 3))
    mapping = load_manifest(dataset).mapping
    hu = mapping.inverse(target)
    cells = hu.reshape(2, 16, 2, 16, 2, 16, 2).mean(axis=(2, 4, 6))
    inside = np.abs(mapping.forward(cells)) < 0.99
    np.testing.assert_allclose(condition[:, ::2, ::2, ::2][inside], mapping.forward(cells)[inside], atol=1e-4)
    subsampled = next(iter(make_dataset(dataset, "train", "depixelate", 2, options=plain)))[0].numpy()[..., 0]
    assert not np.array_equal(condition, subsampled)
    with pytest.raises(ValueError, match="pyramid must be one of"):
        PipelineOptions(pyramid="median")


def test_rejects_bad_arguments(dataset):
    with pytest.raises(ValueError, match="unknown task"):
        make_dataset(dataset, "train", "colorize", 4)
    with pytest.raises(ValueError, match="split must be"):
        make_dataset(dataset, "validation", "denoise", 4)


@pytest.mark.slow
def test_works_under_mirrored_strategy_on_two_cpu_devices(dataset):
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cgan_ct.data.input_pipeline import make_dataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = strategy.distribute_datasets_from_function(
            lambda ctx: make_dataset({str(dataset)!r}, "train", "denoise", 4, seed=1, input_context=ctx))
        steps = 0
        for condition, target in dist:
            local = strategy.experimental_local_results(target)
            assert len(local) == 2 and all(t.shape == (2, 32, 32, 32, 1) for t in local), [t.shape for t in local]
            steps += 1
        print("steps", steps)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steps" in result.stdout


def test_epoch_streams_can_be_rebuilt_and_skipped_into(dataset):
    full = _batches(make_dataset(dataset, "train", "denoise", 2, seed=3, epoch=4), 3)
    again = _batches(make_dataset(dataset, "train", "denoise", 2, seed=3, epoch=4), 3)
    resumed = _batches(make_dataset(dataset, "train", "denoise", 2, seed=3, epoch=4, skip_batches=2), 1)
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(resumed[0][0], full[2][0])
    np.testing.assert_array_equal(resumed[0][1], full[2][1])
    other_epoch = _batches(make_dataset(dataset, "train", "denoise", 2, seed=3, epoch=5), 1)
    assert not np.array_equal(other_epoch[0][1], full[0][1])


@pytest.fixture(scope="module")
def half_air_dataset(tmp_path_factory):
    """Four 64 x 64 x 128 volumes whose right half (x >= 64) is air around 0 HU noise: 8 of 16 blocks are air."""
    root = tmp_path_factory.mktemp("half-air")
    rng = np.random.default_rng(0)
    for i in range(4):
        hu = np.full((64, 64, 128), -1000.0) + rng.normal(0, 20, (64, 64, 128))
        hu[:, :, :64] = phantom_hu(i)[:, :, :64]
        sitk.WriteImage(sitk.GetImageFromArray(np.clip(hu, -1024, 3071).astype(np.int16)), str(root / f"v{i}.nii"))
    convert([root], root / "ds", ConversionConfig(shard_target_mb=0.5), workers=1)
    return root / "ds"


def _content(block_hu_normalized_target, manifest_dir) -> float:
    from cgan_ct.data.input_pipeline import load_intensity

    hu = load_intensity(manifest_dir).inverse(block_hu_normalized_target)
    return float((hu > -500).mean())


def test_training_blocks_are_sampled_by_content_evaluation_keeps_all(half_air_dataset):
    def targets(split, air_keep, **kw):
        options = PipelineOptions(air_keep=air_keep)
        return [x[0, ..., 0] for _, x in make_dataset(half_air_dataset, split, "autoencode", 1, 1, options, **kw)]

    every, content_only, default = targets("train", 1.0), targets("train", 0.0), targets("train", 0.1)
    assert len(every) == 48 and len(content_only) == 24  # 3 training volumes x 16 blocks, 8 of them air
    assert min(_content(t, half_air_dataset) for t in content_only) > 0.05
    assert sum(_content(t, half_air_dataset) == 0 for t in every) >= 20  # the air blocks were there
    assert 24 <= len(default) < 36  # a few air blocks kept (binomial(24, 0.1): below 12 extra, p > 0.9999)
    assert len(targets("test", 0.0)) == 16  # evaluation covers the whole scan
    # resuming inside an epoch skips the batches the filtered stream gave, not raw records
    full = targets("train", 0.5, epoch=2)
    assert len(full) > 30
    resumed = targets("train", 0.5, epoch=2, skip_batches=7)
    assert len(resumed) == len(full) - 7
    np.testing.assert_array_equal(resumed[0], full[7])


def test_air_keep_must_be_a_probability():
    with pytest.raises(ValueError, match="air_keep"):
        PipelineOptions(air_keep=1.5)
    with pytest.raises(ValueError, match="augment_copies"):
        PipelineOptions(augment_copies=0)


def _unbatched(ds, batches: int):
    return [x for _, batch in zip(range(batches), ds, strict=False) for x in batch[1].numpy()]


@pytest.mark.parametrize(
    ("pipelines", "replicas"),
    [(1, 2), (2, 4)],  # MirroredStrategy on two local devices; MultiWorkerMirroredStrategy, 2 workers x 2
)
def test_resume_skips_the_batches_of_every_replica_the_pipeline_feeds(dataset, pipelines, replicas):
    # one input pipeline feeds all the replicas on its machine: a step takes one per-replica batch per replica
    context = tf.distribute.InputContext(pipelines, 0, replicas)
    kw = {"seed": 3, "epoch": 1, "input_context": context}
    full = _unbatched(make_dataset(dataset, "train", "denoise", 2 * replicas, **kw), 3 * replicas // pipelines)
    resumed = _unbatched(make_dataset(dataset, "train", "denoise", 2 * replicas, skip_batches=2, **kw), 1)
    consumed = 2 * (2 * replicas // pipelines)  # two steps of this worker's share of the global batch
    np.testing.assert_array_equal(resumed[0], full[consumed])


@pytest.mark.slow
def test_resume_skips_what_two_mirrored_cpu_devices_consumed(dataset):
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cgan_ct.data.input_pipeline import make_dataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

        def steps(skip, n):
            dist = strategy.distribute_datasets_from_function(
                lambda ctx: make_dataset({str(dataset)!r}, "train", "denoise", 4, seed=1, input_context=ctx,
                                         epoch=2, skip_batches=skip))
            out = []
            for _, (condition, target) in zip(range(n), dist):
                out.append(np.concatenate([t.numpy() for t in strategy.experimental_local_results(target)]))
            return out

        full, resumed = steps(0, 3), steps(2, 1)
        np.testing.assert_array_equal(resumed[0], full[2])
        print("resumed at step 2")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed at step 2" in result.stdout


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory):
    """Four 64^3 volumes of eight 32^3 blocks, each block a distinct level (-300, -200, ... HU) plus a
    +-20 HU pattern, so a training block's source can be read off its centre after any augmentation."""
    root = tmp_path_factory.mktemp("labelled")
    z, y, x = np.meshgrid(*(np.arange(64),) * 3, indexing="ij")
    pattern = 20 * np.sin(x / 3.0) * np.cos(y / 5.0 + z / 7.0)
    for i in range(4):
        label = 8 * i + 4 * (z // 32) + 2 * (y // 32) + x // 32
        hu = -300 + 100 * label + pattern
        sitk.WriteImage(sitk.GetImageFromArray(hu.astype(np.int16)), str(root / f"v{i}.nii"))
    convert([root], root / "ds", ConversionConfig(shard_target_mb=0.5), workers=1)
    return root / "ds"


def _sources(targets, dataset_dir) -> list[int]:
    from cgan_ct.data.input_pipeline import load_intensity

    centre = load_intensity(dataset_dir).inverse(np.stack(targets)[:, 16, 16, 16, 0])
    return [int(v) for v in np.round((centre + 300) / 100)]


def test_augmented_copies_are_spread_over_the_epoch_with_their_own_draws(labelled_dataset):
    options = PipelineOptions(augment_copies=4, air_keep=1.0)

    def epoch(**kw):
        return [b[1] for b in _batches(make_dataset(labelled_dataset, "train", "autoencode", 4, 2, options, **kw), 99)]

    batches = epoch(epoch=0)
    assert len(batches) == 24  # 3 training volumes x 8 blocks x 4 copies, batches of 4
    sources = [_sources(list(b), labelled_dataset) for b in batches]
    counts = np.bincount([s for b in sources for s in b])
    assert np.count_nonzero(counts) == 24 and set(counts[counts > 0]) == {4}  # every block, four times
    distinct = [len(set(b)) for b in sources]
    assert np.mean(distinct) > 3.0, distinct  # copies side by side gave 1 source a batch
    assert not any(len(set(b)) == 1 for b in sources)
    targets = {}
    for batch, labels in zip(batches, sources, strict=True):
        for block, label in zip(batch, labels, strict=True):
            targets.setdefault(label, []).append(block)
    for copies in targets.values():  # each copy its own crop, turns and flips
        assert all(not np.array_equal(copies[0], other) for other in copies[1:])
    again = epoch(epoch=0)
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a, b)
    resumed = epoch(epoch=0, skip_batches=5)
    assert len(resumed) == 19
    np.testing.assert_array_equal(resumed[0], batches[5])
    assert [_sources(list(b), labelled_dataset) for b in epoch(epoch=1)] != sources


def test_noise_scale_range_scales_each_blocks_noise_and_keeps_the_rest(dataset):
    # issue 31: one denoiser for every level from the task's down to none; evaluation keeps the task's level
    full = _batches(make_dataset(dataset, "train", "denoise", 4, seed=3), 3)
    options = PipelineOptions(noise_scale_min=0.0)
    ranged = _batches(make_dataset(dataset, "train", "denoise", 4, seed=3, options=options), 3)
    scales = []
    for (y_full, x_full), (y_ranged, x_ranged) in zip(full, ranged, strict=True):
        np.testing.assert_array_equal(x_ranged, x_full)  # the same blocks, crops and Poisson draws
        for k in range(len(x_full)):
            noise_full, noise_ranged = (y_full[k] - x_full[k]).ravel(), (y_ranged[k] - x_ranged[k]).ravel()
            scale = float(noise_ranged @ noise_full / (noise_full @ noise_full))
            np.testing.assert_allclose(noise_ranged, scale * noise_full, atol=2e-3)  # one factor per block
            scales.append(scale)
    assert min(scales) >= 0.0 and max(scales) <= 1.0 and max(scales) - min(scales) > 0.3
    evaluation = _batches(make_dataset(dataset, "test", "denoise", 4, options=options), 1)[0]
    reference = _batches(make_dataset(dataset, "test", "denoise", 4), 1)[0]
    np.testing.assert_array_equal(evaluation[0], reference[0])
    with pytest.raises(ValueError, match="noise_scale_min"):
        PipelineOptions(noise_scale_min=1.5)


def test_mirror_axes_flag_names():
    from absl import app

    from cgan_ct.cli.augmentation import parse_axes

    assert parse_axes(["z", "y", "x"]) == (0, 1, 2) and parse_axes(["x", "z"]) == (0, 2)
    assert parse_axes(["none"]) == () and parse_axes([]) == ()
    for bad in (["q"], ["z", "z"], ["none", "x"]):
        with pytest.raises(app.UsageError, match="--mirror_axes takes"):
            parse_axes(bad)
