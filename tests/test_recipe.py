"""The training recipe's options: L1 in HU, a moving average of G's weights, a cosine learning rate."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.config import model_config
from cgan_ct.constants import DATA_RANGE_HU
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN
from cgan_ct.model.networks import build_discriminator, build_generator
from cgan_ct.model.run_record import RunRecord
from cgan_ct.ops.intensity import fit_equalization, hu_histogram
from tests.conftest import REPO


def _equalization():
    rng = np.random.default_rng(0)
    hu = np.concatenate([np.full(20000, -1024), rng.normal(-850, 60, 30000), rng.normal(40, 30, 40000)])
    return fit_equalization(hu_histogram(np.clip(hu, -1024, 3071).astype(np.int16).reshape(90, 100, 10)))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(tf.constant(rng.uniform(-1, 1, (4, 16, 16, 16, 1)).astype("float32")) for _ in range(2))


def test_l1_in_hu_is_the_mean_absolute_hu_error_over_2048():
    mapping = _equalization()
    config = model_config("smoke", l1_space="hu")
    gan = build_gan(config, hu_mapping=mapping)
    y, x = _batch()
    g = gan.generator([y, tf.zeros_like(y)], training=False)
    _, _, l1 = gan.generator_losses(tf.zeros([4, 2, 2, 2, 1]), x, g, 4)
    expected = np.abs(mapping.inverse(x.numpy()) - mapping.inverse(g.numpy())).mean() / (DATA_RANGE_HU / 2)
    assert float(l1) == pytest.approx(expected, rel=1e-4)
    normalized = build_gan(model_config("smoke"), hu_mapping=mapping)
    _, _, l1_normalized = normalized.generator_losses(tf.zeros([4, 2, 2, 2, 1]), x, g, 4)
    assert float(l1_normalized) == pytest.approx(np.abs(x.numpy() - g.numpy()).mean(), rel=1e-4)
    assert abs(float(l1) - float(l1_normalized)) > 0.01  # equalization weighs differently


def test_l1_in_hu_needs_the_mapping():
    with pytest.raises(ValueError, match="hu_mapping"):
        build_gan(model_config("smoke", l1_space="hu"))


def test_moving_average_follows_the_warm_up_formula_and_is_what_evaluation_and_export_use():
    gan = build_gan(model_config("smoke", ema_decay=0.9))
    y, x = _batch(1)

    def weights():
        return gan.generator.trainable_weights

    expected = [w.numpy().copy() for w in weights()]
    for step in range(3):
        gan.train_on_batch(y, x)
        decay = min(0.9, (1 + step + 1) / (10 + step + 1))  # the optimizer's iterations after the G update
        expected = [decay * e + (1 - decay) * w.numpy() for e, w in zip(expected, weights(), strict=True)]
    for average, want in zip(gan.ema_weights, expected, strict=True):
        np.testing.assert_allclose(average.numpy(), want, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a.numpy(), w.numpy()) for a, w in zip(gan.ema_weights, weights(), strict=True))
    z = tf.random.uniform(tf.shape(y), -1, 1, seed=3)
    exported = gan.export_generator()
    np.testing.assert_allclose(exported([y, z]), gan.evaluation_generate(y, z), rtol=1e-5, atol=1e-5)
    assert not np.allclose(exported([y, z]), gan.generator([y, z], training=False), atol=1e-5)


def test_moving_average_is_saved_with_the_resume_point(tmp_path):
    gan = build_gan(model_config("smoke", ema_decay=0.9))
    y, x = _batch(2)
    gan.train_on_batch(y, x)
    gan.save_weights(tmp_path / "w.weights.h5")
    other = build_gan(model_config("smoke", ema_decay=0.9))
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(gan.ema_weights, other.ema_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_cosine_schedule_decays_to_a_tenth():
    gan = build_gan(model_config("smoke", lr_schedule="cosine"), total_steps=100)
    for optimizer in (gan.g_optimizer, gan.d_optimizer):
        rate = optimizer._learning_rate  # the schedule (``learning_rate`` is its value now)
        assert float(rate(0)) == pytest.approx(2e-4) and float(rate(100)) == pytest.approx(2e-5)
    with pytest.raises(ValueError, match="total steps"):
        build_gan(model_config("smoke", lr_schedule="cosine"))


def test_runs_recorded_before_the_recipe_options_compare_as_trained():
    record = RunRecord(
        model={"block_size": 16, "epochs": 1},
        task="denoise",
        seed=0,
        pipeline={"peak": 512.0},
        dataset_dir="/d",
        dataset_fingerprint="f",
        intensity={},
    )
    same = RunRecord(
        model={"block_size": 16, "epochs": 3, "ema_decay": 0.0, "l1_space": "normalized", "lr_schedule": "constant"},
        task="denoise",
        seed=0,
        pipeline={"peak": 512.0, "air_keep": 1.0},
        dataset_dir="/d",
        dataset_fingerprint="f",
        intensity={},
    )
    assert record.differences(same) == []
    changed = RunRecord(**{**same.to_json(), "pipeline": {"peak": 512.0, "air_keep": 0.1}})
    assert record.differences(changed) == ["air_keep: 1.0 -> 0.1"]
    # issue 31: runs before outer_normalization had every level normalized; "auto" keeps that but for
    # autoencode (no residual output), whose old runs therefore cannot resume
    new = RunRecord(**{**same.to_json(), "model": {**same.model, "outer_normalization": "auto", "residual": True}})
    assert record.differences(new) == ["residual: None -> True"]
    old_autoencode = RunRecord(**{**record.to_json(), "model": {**record.model, "residual": False}})
    new_autoencode = RunRecord(**{**new.to_json(), "model": {**new.model, "residual": False}})
    assert old_autoencode.differences(new_autoencode) == ["outer_normalization: 'on' -> 'off'"]


def test_runs_recorded_before_the_augmentation_switches_resume_with_the_defaults():
    """Issue 33: a run.json without mirror_axes, quarter_turns, elastic_voxels and elastic_sampling trained with
    turns and three mirrors; today's defaults (a tuple, recorded as a list) match it, a changed switch does not."""
    import dataclasses

    from cgan_ct.data.input_pipeline import PipelineOptions

    base = dict(model={"block_size": 16}, task="depixelate", seed=0, dataset_dir="/d", dataset_fingerprint="f")
    today = RunRecord(pipeline=dataclasses.asdict(PipelineOptions(air_keep=0.1)), intensity={}, **base)
    new = ("mirror_axes", "quarter_turns", "elastic_voxels", "elastic_sampling")
    before = RunRecord(pipeline={k: v for k, v in today.pipeline.items() if k not in new}, intensity={}, **base)
    assert before.differences(today) == []
    kept = RunRecord(pipeline=dataclasses.asdict(PipelineOptions(air_keep=0.1, mirror_axes=())), intensity={}, **base)
    assert before.differences(kept) == ["mirror_axes: [0, 1, 2] -> []"]


@pytest.mark.slow
def test_moving_average_under_two_replicas_follows_the_formula():
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cgan_ct.config import model_config
        from cgan_ct.model.build import build_gan

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            gan = build_gan(model_config("smoke", ema_decay=0.9), seed=1)
        rng = np.random.default_rng(0)
        y, x = (rng.uniform(-1, 1, (4, 16, 16, 16, 1)).astype("float32") for _ in range(2))
        data = tf.data.Dataset.from_tensor_slices((y, x)).batch(4)
        expected = [w.numpy().copy() for w in gan.generator.trainable_weights]
        for step in range(1, 4):
            gan.fit(data, epochs=1, verbose=0)
            decay = min(0.9, (1 + step) / (10 + step))
            expected = [decay * e + (1 - decay) * w.numpy() for e, w in zip(expected, gan.generator.trainable_weights)]
        for average, want in zip(gan.ema_weights, expected):
            np.testing.assert_allclose(average.numpy(), want, rtol=1e-5, atol=1e-6)
        pairs = zip(gan.ema_weights, gan.generator.trainable_weights)
        assert any(not np.allclose(a.numpy(), w.numpy()) for a, w in pairs)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_evaluation_without_moving_average_is_the_generator():
    config = model_config("smoke")
    gan = ConditionalGAN(build_generator(config), build_discriminator(config))
    gan.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
    assert not gan.uses_ema and gan.export_generator() is gan.generator


def test_residual_base_is_resolved_per_task():
    from cgan_ct.model.training import model_for_task

    auto = model_config("smoke", residual_base="auto")
    assert model_for_task(auto, "depixelate", 4).residual_base == "cubic"
    assert model_for_task(auto, "depixelate", 4).residual_factor == 4
    assert model_for_task(auto, "denoise").residual_base == "condition"
    assert model_for_task(auto, "autoencode").residual is False
    with pytest.raises(ValueError, match="for depixelate, not denoise"):
        model_for_task(model_config("smoke", residual_base="cubic"), "denoise")
