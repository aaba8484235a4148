"""Losses (golden values), networks (shapes, validation), ConditionalGAN (steps, replicas)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from cgan_ct.config import ModelConfig, model_config
from cgan_ct.model import losses, networks
from cgan_ct.model.block_metrics import block_psnr_ssim
from cgan_ct.model.gan import ConditionalGAN
from cgan_ct.model.networks import build_discriminator, build_generator, conv_flops_per_block
from cgan_ct.model.training import model_for_task
from tests.conftest import REPO

LOG2 = math.log(2.0)


def test_nonsaturating_losses_golden():
    zeros = tf.zeros([2, 4, 4, 4, 1])
    assert float(losses.discriminator_loss(zeros, zeros, 2)) == pytest.approx(2 * LOG2, rel=1e-6)
    assert float(losses.generator_adversarial_loss(zeros, 2)) == pytest.approx(LOG2, rel=1e-6)
    confident = tf.fill([2, 4, 4, 4, 1], 10.0)
    assert float(losses.generator_adversarial_loss(confident, 2)) == pytest.approx(math.log1p(math.exp(-10)), rel=1e-4)
    # D sure and right: real +10, fake -10
    assert float(losses.discriminator_loss(confident, -confident, 2)) == pytest.approx(
        2 * math.log1p(math.exp(-10)), rel=1e-4
    )


def test_least_squares_losses_golden():
    ones, zeros = tf.ones([3, 2, 2, 2, 1]), tf.zeros([3, 2, 2, 2, 1])
    assert float(losses.discriminator_loss(ones, zeros, 3, "least_squares")) == 0.0
    assert float(losses.discriminator_loss(zeros, ones, 3, "least_squares")) == pytest.approx(1.0)
    assert float(losses.generator_adversarial_loss(zeros, 3, "least_squares")) == pytest.approx(0.5)


def test_generator_loss_golden_and_global_batch_reduction():
    target = tf.zeros([2, 4, 4, 4, 1])
    generated = tf.concat([tf.fill([1, 4, 4, 4, 1], 0.5), tf.fill([1, 4, 4, 4, 1], -0.25)], axis=0)
    logits = tf.zeros([2, 2, 2, 2, 1])
    total, adversarial, l1 = losses.generator_loss(logits, target, generated, 2, l1_weight=100.0)
    assert float(l1) == pytest.approx(0.375)
    assert float(adversarial) == pytest.approx(LOG2, rel=1e-6)
    assert float(total) == pytest.approx(LOG2 + 37.5, rel=1e-6)
    # the same two examples on a replica of a global batch of 4: half the contribution
    _, _, l1_half = losses.generator_loss(logits, target, generated, 4)
    assert float(l1_half) == pytest.approx(0.375 / 2)


def test_unknown_adversarial_loss():
    with pytest.raises(ValueError):
        losses.discriminator_loss(tf.zeros([1, 1]), tf.zeros([1, 1]), 1, "wasserstein")


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_network_shapes_and_ranges(preset):
    config = model_config(preset)
    n = config.block_size
    generator, discriminator = build_generator(config), build_discriminator(config)
    y = tf.random.uniform([2, n, n, n, 1], -1, 1)
    out = generator([y, tf.random.uniform([2, n, n, n, 1], -1, 1)])
    assert out.shape == (2, n, n, n, 1) and float(tf.reduce_max(tf.abs(out))) <= 1.0
    patches = n // 2**config.disc_layers
    assert discriminator([y, out]).shape == (2, patches, patches, patches, 1)
    assert conv_flops_per_block(generator) > 0


def test_flops_count_golden():
    inputs = keras.Input((8, 8, 8, 2))
    x = keras.layers.Conv3D(4, 3, padding="same")(inputs)  # 512 voxels * 27 * 2 * 4 * 2
    x = keras.layers.Conv3DTranspose(1, 2, strides=2)(x)  # 512 input voxels * 8 * 4 * 1 * 2
    model = keras.Model(inputs, x)
    assert conv_flops_per_block(model) == 512 * 27 * 2 * 4 * 2 + 512 * 8 * 4 * 1 * 2


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth"):
        ModelConfig(block_size=32, depth=6)
    with pytest.raises(ValueError, match="normalization"):
        ModelConfig(normalization="layer")


def test_noise_is_an_input_and_changes_the_output():
    config = model_config("smoke", dropout=0.0, residual=False)  # residual starts as the identity
    generator = build_generator(config)
    y = tf.random.uniform([1, 16, 16, 16, 1], -1, 1)
    a = generator([y, tf.zeros_like(y)])
    b = generator([y, tf.ones_like(y)])
    assert float(tf.reduce_mean(tf.abs(a - b))) > 0


def test_psnr_ssim_of_identical_and_different_blocks():
    x = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=1)
    psnr, ssim = block_psnr_ssim(x, x)
    assert float(psnr) == 100.0 and float(ssim) == pytest.approx(1.0)
    psnr, _ = block_psnr_ssim(x, x + 0.02)
    assert float(psnr) == pytest.approx(20 * math.log10(2 / 0.02), abs=0.01)


def _smoke_gan():
    config = model_config("smoke")
    gan = ConditionalGAN(build_generator(config), build_discriminator(config), seed=1)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5), g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5)
    )
    return gan


def test_train_step_updates_both_networks_and_reports_metrics():
    gan = _smoke_gan()
    y = tf.random.uniform([4, 16, 16, 16, 1], -1, 1, seed=2)
    x = tf.random.uniform([4, 16, 16, 16, 1], -1, 1, seed=3)
    gan.train_on_batch(y, x)
    g_before = [v.numpy().copy() for v in gan.generator.trainable_variables]
    d_before = [v.numpy().copy() for v in gan.discriminator.trainable_variables]
    logs = gan.train_on_batch(y, x, return_dict=True)
    assert set(logs) == {"g_total", "g_adversarial", "g_l1", "d_loss", "d_real", "d_fake", "psnr"}  # SSIM: evaluation
    assert logs["g_total"] == pytest.approx(logs["g_adversarial"] + 100 * logs["g_l1"], rel=0.05)
    assert any(
        not np.array_equal(a, v.numpy()) for a, v in zip(g_before, gan.generator.trainable_variables, strict=False)
    )
    assert any(
        not np.array_equal(a, v.numpy()) for a, v in zip(d_before, gan.discriminator.trainable_variables, strict=False)
    )
    assert gan.g_optimizer.iterations.numpy() == 2 and gan.d_optimizer.iterations.numpy() == 2
    evaluation = gan.test_on_batch(y, x, return_dict=True)
    assert "ssim" in evaluation and np.isfinite(list(evaluation.values())).all()


@pytest.mark.parametrize("normalization", ["instance", "none"])
def test_one_discriminator_pass_over_real_and_generated_gives_the_two_passes_logits(normalization):
    config = model_config("smoke", normalization=normalization)
    gan = ConditionalGAN(build_generator(config), build_discriminator(config), seed=1)
    assert gan.joint_d_pass
    y, x, g = (tf.random.uniform([3, 16, 16, 16, 1], -1, 1, seed=s) for s in (4, 5, 6))
    real, fake = gan.real_and_fake_logits(y, x, g)
    np.testing.assert_allclose(real, gan.discriminator([y, x], training=True), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fake, gan.discriminator([y, g], training=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(real, fake)


def test_batch_normalization_keeps_two_discriminator_passes():
    config = model_config("smoke", normalization="batch")
    assert not ConditionalGAN(build_generator(config), build_discriminator(config)).joint_d_pass


@pytest.mark.slow
def test_one_and_two_replicas_give_the_same_loss():
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from cgan_ct.config import model_config
        from cgan_ct.model.gan import ConditionalGAN
        from cgan_ct.model.networks import build_discriminator, build_generator

        def losses_with(strategy, weights, y, x, z):
            with strategy.scope():
                config = model_config("smoke")
                gan = ConditionalGAN(build_generator(config), build_discriminator(config))
                gan.compile(d_optimizer=keras.optimizers.Adam(), g_optimizer=keras.optimizers.Adam())
                gan.generator.set_weights(weights[0]); gan.discriminator.set_weights(weights[1])
            data = tf.data.Dataset.from_tensor_slices((y, x, z)).batch(4)
            dist = strategy.experimental_distribute_dataset(data)
            @tf.function
            def step(batch):
                out = gan.compute_losses(batch[0], batch[1], batch[2], training=False)
                return [getattr(out, k) for k in ("d_loss", "g_total", "g_adversarial", "g_l1")]
            per_replica = strategy.run(step, args=(next(iter(dist)),))
            return [float(strategy.reduce("SUM", v, axis=None)) for v in per_replica]

        config = model_config("smoke")
        weights = [build_generator(config).get_weights(), build_discriminator(config).get_weights()]
        rng = np.random.default_rng(0)
        y, x, z = (rng.uniform(-1, 1, (4, 16, 16, 16, 1)).astype("float32") for _ in range(3))
        one = losses_with(tf.distribute.OneDeviceStrategy("/cpu:0"), weights, y, x, z)
        two = losses_with(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), weights, y, x, z)
        print("one", one); print("two", two)
        assert np.allclose(one, two, rtol=1e-5), (one, two)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]


def test_untrained_residual_generator_returns_its_condition():
    generator = build_generator(model_config("smoke"))
    y = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=4)
    out = generator([y, tf.random.uniform([2, 16, 16, 16, 1], -1, 1)], training=False)
    np.testing.assert_allclose(out.numpy(), y.numpy(), atol=1e-6)


def test_resize_upsampling_has_no_period_two_grid_and_builds_the_whole_generator():
    """A stride-2 transposed kernel gives each voxel of a 2-cell its own weights: a constant input comes out
    as a period-2 pattern (the cross-hatch of issue 33's synthetic slices). Nearest doubling and a
    convolution compute every voxel alike: constant away from the zero-padded border."""
    features = keras.Input((6, 6, 6, 4))
    constant = np.ones((1, 6, 6, 6, 4), np.float32)
    outputs = {}
    for kind in ("transpose", "resize"):
        keras.utils.set_random_seed(1)
        layer_model = keras.Model(features, networks.upsample(features, 3, kind, f"up_{kind}"))
        outputs[kind] = layer_model(constant).numpy()[0]
        assert outputs[kind].shape == (12, 12, 12, 3)
    cells = outputs["transpose"].reshape(6, 2, 6, 2, 6, 2, 3)
    assert np.ptp(cells, axis=(0, 2, 4)).max() < 1e-5  # the same 2 x 2 x 2 pattern in every cell ...
    assert np.ptp(cells[0, :, 0, :, 0, :], axis=(0, 1, 2)).min() > 1e-3  # ... which is not flat
    interior = outputs["resize"][1:-1, 1:-1, 1:-1]
    assert np.ptp(interior, axis=(0, 1, 2)).max() < 1e-5
    with pytest.raises(ValueError, match="upsample must be one of"):
        model_config("smoke", upsample="bilinear")
    generator = build_generator(model_config("smoke", upsample="resize"))
    assert not any(isinstance(layer, keras.layers.Conv3DTranspose) for layer in generator.layers)
    y = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=5)
    out = generator([y, tf.random.uniform([2, 16, 16, 16, 1], -1, 1)], training=False)
    np.testing.assert_allclose(out.numpy(), y.numpy(), atol=1e-6)  # still the residual form: starts as Y
    assert conv_flops_per_block(generator) > conv_flops_per_block(build_generator(model_config("smoke")))


def test_residual_output_reaches_the_whole_range_from_any_condition():
    from cgan_ct.model.networks import ResidualRange

    layer = ResidualRange()
    y = np.array([-1.0, -0.999, -0.5, 0.0, 0.7, 1.0], np.float32)
    for target in (-1.0, -0.99, -0.3, 0.0, 0.5, 0.99, 1.0):
        # the D that maps each Y to ``target``: tanh(D) = (target - Y) / room, room on the side it moves to
        room = np.where(target > y, 1.0 - y, 1.0 + y)
        step = np.divide(target - y, room, out=np.zeros_like(y), where=room > 0)
        delta = np.arctanh(np.clip(step, -1 + 1e-7, 1 - 1e-7)).astype(np.float32)
        out = layer([y, delta]).numpy()
        np.testing.assert_allclose(out, target, atol=2e-6)
    extremes = layer([np.repeat(y, 2), np.tile(np.float32([-30.0, 30.0]), len(y))]).numpy()
    np.testing.assert_allclose(extremes, np.tile([-1.0, 1.0], len(y)), atol=1e-6)
    np.testing.assert_array_equal(layer([y, np.zeros_like(y)]).numpy(), y)  # the identity at D = 0
    with tf.GradientTape() as tape:
        delta = tf.zeros_like(y)
        tape.watch(delta)
        out = layer([tf.constant(y), delta])
    np.testing.assert_allclose(tape.gradient(out, delta).numpy(), 1.0 + np.abs(y))  # no voxel starts stuck


def test_psnr_in_hu_follows_the_evaluation_protocol():
    from cgan_ct.inference.metrics import quality
    from cgan_ct.model.block_metrics import block_psnr_hu
    from cgan_ct.ops.intensity import linear_mapping

    mapping = linear_mapping()
    rng = np.random.default_rng(3)
    target_hu = rng.uniform(-1100, 3200, (2, 8, 8, 8)).astype(np.float32)  # beyond the clip range too
    generated_hu = target_hu + rng.normal(0, 40, target_hu.shape).astype(np.float32)
    normalized = [mapping.forward(v)[..., None] for v in (target_hu, generated_hu)]
    measured = float(block_psnr_hu(tf.constant(normalized[0]), tf.constant(normalized[1]), mapping))
    expected = np.mean([quality(t, g).psnr_slices_db for t, g in zip(target_hu, generated_hu, strict=True)])
    assert measured == pytest.approx(expected, abs=0.02)


def test_noise_spread_is_the_per_voxel_standard_deviation_in_hu():
    from cgan_ct.model.block_metrics import noise_std_hu
    from cgan_ct.ops.intensity import linear_mapping

    mapping = linear_mapping()
    rng = np.random.default_rng(5)
    a_hu = rng.uniform(-1000, 1000, (2, 8, 8, 8, 1)).astype(np.float32)
    b_hu = a_hu + np.where(rng.random(a_hu.shape) < 0.5, 30.0, -30.0).astype(np.float32)  # |a - b| = 30 HU
    spread = float(noise_std_hu(tf.constant(mapping.forward(a_hu)), tf.constant(mapping.forward(b_hu)), mapping))
    assert spread == pytest.approx(30.0 / math.sqrt(2.0), rel=1e-3)


def test_checkpoint_selection_prefers_psnr_in_hu_then_l1():
    from cgan_ct.model.training import selection_score

    assert selection_score({"val_psnr_hu": 31.0, "val_g_l1": 0.2, "g_l1": 0.1}) == ("val_psnr_hu", 31.0)
    assert selection_score({"val_g_l1": 0.2, "g_l1": 0.1}) == ("val_g_l1", -0.2)
    assert selection_score({"g_l1": 0.1}) == ("g_l1", -0.1)
    assert selection_score({"d_loss": 1.0}) is None


def test_mixed_precision_step_runs_and_stays_finite():
    from cgan_ct.model.build import build_gan

    try:
        gan = build_gan(model_config("smoke", mixed_precision=True))
        assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
        y = tf.random.uniform([4, 16, 16, 16, 1], -1, 1, seed=5)
        logs = gan.train_on_batch(y, y, return_dict=True)
        assert np.isfinite(list(logs.values())).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_building_a_mixed_precision_gan_leaves_the_global_dtype_policy_as_it_was():
    from cgan_ct.model.build import build_gan

    try:
        gan = build_gan(model_config("smoke", mixed_precision=True))
        assert keras.config.dtype_policy().name == "float32"
        policies = {layer.dtype_policy.name for layer in gan.generator.layers + gan.discriminator.layers}
        assert "mixed_float16" in policies  # the networks themselves compute in float16
    finally:
        keras.config.set_dtype_policy("float32")


def test_cubic_base_keeps_the_samples_and_interpolates_smooth_blocks():
    from cgan_ct.model.networks import CubicUpsample, keys_weights

    for t in (0.0, 0.25, 0.5, 0.75):
        assert sum(keys_weights(t)) == pytest.approx(1.0)
    assert keys_weights(0.5) == pytest.approx((-1 / 16, 9 / 16, 9 / 16, -1 / 16))
    z, y, x = np.meshgrid(*(np.linspace(0, 1, 32),) * 3, indexing="ij")
    smooth = (0.5 * np.sin(3 * x + 2 * y) * np.cos(2 * z)).astype(np.float32)
    pixelated = np.repeat(np.repeat(np.repeat(smooth[::2, ::2, ::2], 2, 0), 2, 1), 2, 2)
    out = CubicUpsample(2)(pixelated[None, ..., None])[0, ..., 0].numpy()
    np.testing.assert_allclose(out[::2, ::2, ::2], smooth[::2, ::2, ::2], atol=1e-6)
    inner = (slice(2, -3),) * 3
    assert np.abs(out - smooth)[inner].mean() < 0.01 * np.abs(pixelated - smooth)[inner].mean()


def test_untrained_cubic_residual_generator_returns_the_cubic_base_and_reloads(tmp_path):
    from cgan_ct.model.networks import CubicUpsample

    config = model_config("smoke", residual_base="cubic")
    generator = build_generator(config)
    y = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=4)
    z = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=5)
    np.testing.assert_allclose(generator([y, z]), CubicUpsample(2)(y), atol=1e-6)
    generator.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras", compile=False)
    np.testing.assert_allclose(again([y, z]), generator([y, z]), atol=1e-6)
    with pytest.raises(ValueError, match="residual_base"):
        model_config("smoke", residual_base="bicubic")


def _level_error_after_l1_training(outer_normalization: str, steps: int = 120) -> float:
    """Mean |block level error| of a non-residual smoke generator trained by L1 alone to reproduce blocks
    of random levels (uniform in [-0.8, 0.8]: guessing gives about 0.4)."""
    config = model_config("smoke", residual=False, outer_normalization=outer_normalization)
    n = config.block_size
    keras.utils.set_random_seed(0)
    generator, optimizer = build_generator(config), keras.optimizers.Adam(2e-3)
    rng = np.random.default_rng(0)

    def blocks(count):
        level = rng.uniform(-0.8, 0.8, (count, 1, 1, 1, 1))
        wave = 0.1 * np.sin(np.linspace(0, 6, n))[None, :, None, None, None] * rng.uniform(-1, 1, level.shape)
        y = (level + wave + rng.normal(0, 0.02, (count, n, n, n, 1))).astype("float32")
        return y, rng.uniform(-1, 1, y.shape).astype("float32")

    @tf.function
    def step(y, z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(generator([y, z], training=True) - y))
        weights = generator.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))

    for _ in range(steps):
        step(*blocks(8))
    y, z = blocks(64)
    out = generator([y, z], training=False).numpy()
    return float(np.mean(np.abs(out.mean(axis=(1, 2, 3, 4)) - y.mean(axis=(1, 2, 3, 4)))))


def test_autoencoder_sees_the_blocks_level_only_without_outer_normalization():
    # issue 31: instance normalization after the first convolution removes each block's level, so an
    # autoencoder (no residual output) could only guess it: a grid of block-sized offsets in its scans
    assert not networks.outer_normalized(model_config("cpu", residual=False))
    assert networks.outer_normalized(model_config("cpu"))
    assert _level_error_after_l1_training("on") > 0.25  # measured 0.36: the level is guessed
    assert _level_error_after_l1_training("off") < 0.08  # measured 0.03 after 200 steps


def test_smooth_base_keeps_constants_blurs_noise_and_reloads(tmp_path):
    """residual_base "smooth" (issue 31, item 2's candidate for the noise tasks): the untrained generator is a
    Gaussian denoiser of its condition; the base keeps a constant block, and the model saves and reloads."""
    import dataclasses

    from cgan_ct.model.networks import GaussianSmooth

    constant = tf.fill([1, 16, 16, 16, 1], 0.3)
    np.testing.assert_allclose(GaussianSmooth(1.0)(constant).numpy(), 0.3, atol=1e-6)
    noise = tf.random.stateless_normal([1, 16, 16, 16, 1], [1, 2], stddev=0.1)
    smoothed = GaussianSmooth(1.0)(noise).numpy()[:, 4:-4, 4:-4, 4:-4]  # inside: no edge replication
    # a 3-D Gaussian of sigma 1 voxel keeps 1 / (2 sqrt(pi))^3 of white noise's variance: std x 0.212
    assert smoothed.std() == pytest.approx(0.1 * (2 * np.sqrt(np.pi)) ** -1.5, rel=0.15)
    config = dataclasses.replace(model_config("smoke"), residual_base="smooth", residual_sigma=1.0)
    generator = build_generator(config)
    y = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=5)
    z = tf.random.uniform([2, 16, 16, 16, 1], -1, 1, seed=6)
    np.testing.assert_allclose(generator([y, z]), GaussianSmooth(1.0)(y), atol=1e-6)
    generator.save(tmp_path / "g.keras")
    again = keras.saving.load_model(tmp_path / "g.keras")
    np.testing.assert_allclose(again([y, z]), generator([y, z]), atol=1e-6)
    with pytest.raises(ValueError, match="for the noise tasks and depixelate, not autoencode"):
        model_for_task(dataclasses.replace(config, residual=True), "autoencode")
    assert model_for_task(config, "denoise").residual_base == "smooth"
    # depixelate too (issue 33): a nearest-neighbour condition's cell edges blurred away, the factor not used
    assert model_for_task(config, "depixelate").residual_base == "smooth"
    cells = tf.repeat(tf.repeat(tf.repeat(tf.random.uniform([1, 8, 8, 8, 1], -1, 1, seed=7), 2, 1), 2, 2), 2, 3)
    edges = np.abs(np.diff(GaussianSmooth(1.0)(cells).numpy()[0, 4:-4, 4:-4, 4:-4, 0], axis=2))
    # the odd steps are the cells' edges, the even ones inside a cell: 0 in the condition, comparable in the base
    assert 0 < edges[:, :, 1::2].mean() < 2 * edges[:, :, 0::2].mean()


def _band_amplitudes_numpy(blocks):
    """losses.band_amplitudes written out with numpy's FFT: the reference."""
    x = blocks[..., 0].astype(np.float64)
    x = x - x.mean(axis=(2, 3), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2 / (x.shape[2] * x.shape[3])
    radius = np.hypot(np.fft.fftfreq(x.shape[2])[:, None], np.fft.fftfreq(x.shape[3])[None, :])
    edges = (0.0, *losses.SPECTRAL_BAND_EDGES, np.inf)
    return np.stack(
        [np.sqrt(power[..., (radius > lo) & (radius <= hi)].mean(axis=(1, 2))) for lo, hi in itertools.pairwise(edges)],
        axis=1,
    )


def test_band_amplitudes_match_numpy_and_read_white_noise_as_its_std():
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.1, (3, 8, 32, 32, 1)).astype(np.float32)
    ours = np.asarray(losses.band_amplitudes(noise))
    np.testing.assert_allclose(ours, _band_amplitudes_numpy(noise), rtol=1e-4)
    assert ours.shape == (3, 4) and np.all(np.abs(ours - 0.1) < 0.01)  # white: the same amplitude in every band
    # a constant offset and a per-slice level are not texture
    np.testing.assert_allclose(np.asarray(losses.band_amplitudes(noise + 0.3)), ours, rtol=1e-4)


def test_spectral_loss_is_phase_free_and_sees_blur():
    rng = np.random.default_rng(6)
    target = rng.normal(0, 0.1, (2, 8, 32, 32, 1)).astype(np.float32)
    other_draw = rng.normal(0, 0.1, target.shape).astype(np.float32)  # the same grain, other voxels
    blurred = ndimage.uniform_filter(target, size=(1, 1, 3, 3, 1)).astype(np.float32)
    same_grain = float(losses.spectral_loss(target, other_draw, 2))
    assert float(losses.spectral_loss(target, target, 2)) == pytest.approx(0.0, abs=1e-6)
    assert same_grain < 0.006  # L1 between the two draws is ~0.11: it would ask for their mean
    assert float(losses.spectral_loss(target, blurred, 2)) > 5 * same_grain
    assert float(losses.l1_loss(target, other_draw, 2)) > 0.1


def test_tiled_band_amplitudes_are_each_tiles_own_and_say_where_the_detail_is():
    """spectral_patch: each in-plane tile's amplitudes are those of that tile alone (numpy reference on the
    cut-out column); noise spread evenly and the same noise power gathered in half the plane score the same
    over the whole plane, but not tile by tile."""
    rng = np.random.default_rng(9)
    blocks = rng.normal(0, 0.1, (2, 4, 32, 32, 1)).astype(np.float32)
    tiled = np.asarray(losses.band_amplitudes(blocks, 16))
    assert tiled.shape == (2, 4, 4)
    for p, (y, x) in enumerate((y, x) for y in (0, 16) for x in (0, 16)):
        np.testing.assert_allclose(tiled[:, p], _band_amplitudes_numpy(blocks[:, :, y : y + 16, x : x + 16]), rtol=1e-4)
    even = rng.normal(0, 0.1, (1, 4, 32, 32, 1)).astype(np.float32)
    gathered = np.zeros_like(even)
    gathered[:, :, :, :16] = np.sqrt(2) * rng.normal(0, 0.1, (1, 4, 32, 16, 1))
    assert float(losses.spectral_loss(even, gathered, 1)) < 0.02
    assert float(losses.spectral_loss(even, gathered, 1, patch=16)) > 0.05
    with pytest.raises(ValueError, match="must divide"):
        losses.band_amplitudes(blocks, 12)
    with pytest.raises(ValueError, match="spectral_patch"):
        model_config("smoke", spectral_patch=6)


def test_spectral_weight_enters_the_generator_total_only():
    rng = np.random.default_rng(7)
    target = rng.normal(0, 0.1, (2, 4, 16, 16, 1)).astype(np.float32)
    generated = np.zeros_like(target)
    logits = np.zeros((2, 2, 2, 2, 1), np.float32)
    plain = [float(v) for v in losses.generator_loss(logits, target, generated, 2, l1_weight=10.0)]
    weighted = [float(v) for v in losses.generator_loss(logits, target, generated, 2, 10.0, spectral_weight=20.0)]
    spectral = float(losses.spectral_loss(target, generated, 2))
    assert spectral > 0.05
    assert weighted[0] == pytest.approx(plain[0] + 20.0 * spectral, rel=1e-5)
    assert weighted[1:] == pytest.approx(plain[1:])
    with pytest.raises(ValueError, match="spectral"):
        model_config("smoke", spectral_weight=-1.0)


def test_a_gan_with_the_spectral_term_trains_and_counts_it_in_its_total():
    """build_gan passes ModelConfig.spectral_weight through compile to the train step (graph mode)."""
    from cgan_ct.model.build import build_gan

    config = model_config("smoke", spectral_weight=50.0, spectral_patch=8, l1_weight=10.0, precision="float32")
    gan = build_gan(config, seed=3)
    assert gan.spectral_weight == 50.0 and gan.spectral_patch == 8
    y = tf.random.uniform([4, 16, 16, 16, 1], -1, 1, seed=8)
    x = tf.random.uniform([4, 16, 16, 16, 1], -1, 1, seed=9)
    logs = gan.train_on_batch(y, x, return_dict=True)
    assert np.isfinite(list(logs.values())).all()
    # the spectral term is not logged apart; it is the part of the total beyond adversarial + L1
    assert logs["g_total"] > logs["g_adversarial"] + 10.0 * logs["g_l1"] + 1e-3
