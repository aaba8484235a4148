"""The synthesis cascade's first stage: a GAN that draws whole coarse chest
volumes from noise alone.

Shapes (B = batch, D = coarse slices, S = CoarseConfig.size, C = latent channels):
- generator inputs: code [B, C] ~ U[-1, 1], one per volume (the patient:
  size, shape, position; a dense layer maps it to a 4 x 4 in-plane layout
  shared by every slice), latent [B, D, 4, 4, C] ~ U[-1, 1], fresh per slice
  (local detail), and position [B, D, 4, 4, 1], each slice's relative height
  in its volume (-1 at the first slice, +1 at the last, constant in-plane);
  output [B, D, S, S, 1] in [-1, 1] (the linear intensity window). Fully
  convolutional along z: a volume of any depth can be drawn, the position
  input telling each slice where in the chest it is.
- discriminator inputs: a volume [B, D, S, S, 1] and its position
  [B, D, S, S, 1]; output: logits [B, D, 4, 4, 1]. A minibatch standard
  deviation channel lets it see a lack of variety (mode collapse).

A hospital cohort gives a few dozen volumes, a few hundred coarse crops: a
discriminator memorizes them within a thousand steps and the generator
collapses onto one noisy volume (seen on 13 phantoms before these measures).
Two measures from the small-data GAN literature keep it learning: the
discriminator sees real and generated volumes through the same random
translation and cutout (differentiable augmentation), and an R1 penalty on
its gradient at real volumes.

Trained on random z crops of ``crop_depth`` slices of the training volumes at
the coarse level (cgan_ct.ops.pyramid), single device: the model is small.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from cgan_ct.config import CoarseConfig
from cgan_ct.errors import VolumeError
from cgan_ct.model import losses
from cgan_ct.model.export import save_module_atomic
from cgan_ct.ops.intensity import IntensityMapping

COARSE_INFO = "cgan_ct_coarse.json"
LATENT_SIZE = 4


@keras.saving.register_keras_serializable(package="cgan_ct")
class PixelNorm(layers.Layer):
    """Scales each voxel's feature vector to unit root mean square (ProGAN's pixel norm)."""

    def call(self, x):
        return x * keras.ops.rsqrt(keras.ops.mean(keras.ops.square(x), axis=-1, keepdims=True) + 1e-8)


@keras.saving.register_keras_serializable(package="cgan_ct")
class MinibatchStd(layers.Layer):
    """Appends one channel: the standard deviation over the batch, averaged over everything else."""

    def call(self, x):
        std = keras.ops.sqrt(keras.ops.var(x, axis=0) + 1e-8)
        mean = keras.ops.mean(std)
        return keras.ops.concatenate([x, keras.ops.ones_like(x[..., :1]) * mean], axis=-1)


def _filters(config: CoarseConfig, upsampled: int) -> int:
    return max(8, config.filters // 2**upsampled)


@keras.saving.register_keras_serializable(package="cgan_ct")
class AcrossDepth(layers.Layer):
    """[B, 4, 4, F] in-plane layout, [B, D, 4, 4, 1] reference -> [B, D, 4, 4, F] (the layout on every slice)."""

    def call(self, layout, reference):
        return layout[:, None] * keras.ops.ones_like(reference)


def build_coarse_generator(config: CoarseConfig) -> keras.Model:
    code = keras.Input((config.latent_channels,), name="code")
    latent = keras.Input((None, LATENT_SIZE, LATENT_SIZE, config.latent_channels), name="latent")
    position = keras.Input((None, LATENT_SIZE, LATENT_SIZE, 1), name="position")
    filters = _filters(config, 0)
    layout = layers.Dense(LATENT_SIZE * LATENT_SIZE * filters, name="g_layout")(code)
    layout = layers.Reshape((LATENT_SIZE, LATENT_SIZE, filters), name="g_layout_grid")(layout)
    layout = AcrossDepth(name="g_layout_slices")(layout, position)
    x = layers.Concatenate(name="layout_latent_position")([layout, latent, position])
    x = layers.Conv3D(filters, 3, padding="same", name="g_in")(x)
    x = PixelNorm(name="g_in_norm")(layers.LeakyReLU(0.2, name="g_in_act")(x))
    for level in range(config.upsamplings):
        x = layers.UpSampling3D((1, 2, 2), name=f"g_up{level}")(x)
        for conv in range(2):
            x = layers.Conv3D(_filters(config, level + 1), 3, padding="same", name=f"g{level}_conv{conv}")(x)
            x = PixelNorm(name=f"g{level}_norm{conv}")(layers.LeakyReLU(0.2, name=f"g{level}_act{conv}")(x))
    volume = layers.Conv3D(1, 3, padding="same", activation="tanh", dtype="float32", name="volume")(x)
    return keras.Model([code, latent, position], volume, name="coarse_generator")


def draw_noise(seed, batch, depth, channels: int):
    """(code [B, C], latent [B, D, 4, 4, C]) ~ U[-1, 1] from a stateless seed int [2]."""
    seed = tf.cast(seed, tf.int64)
    code = tf.random.stateless_uniform([batch, channels], seed, -1.0, 1.0)
    latent_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    latent = tf.random.stateless_uniform([batch, depth, LATENT_SIZE, LATENT_SIZE, channels], latent_seed, -1.0, 1.0)
    return code, latent


def augment_for_discriminator(volumes, seed, max_shift: int, cutout: int):
    """Random in-plane translation (air fills what moves in) and a cutout square, per example.

    volumes [B, D, S, S, 1] in [-1, 1]; shifts in [-max_shift, max_shift];
    the cutout (a cutout x cutout square through all slices) is set to 0.
    """
    batch, size = tf.shape(volumes)[0], volumes.shape[2]
    shift_seed, cut_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    shifts = tf.random.stateless_uniform([batch, 2], shift_seed, -max_shift, max_shift + 1, dtype=tf.int32)
    out = volumes
    for axis in (2, 3):
        index = tf.range(size)[None] - shifts[:, axis - 2 : axis - 1]  # [B, S]
        inside = (index >= 0) & (index < size)
        moved = tf.gather(out, tf.clip_by_value(index, 0, size - 1), axis=axis, batch_dims=1)
        mask = inside[:, None, :, None, None] if axis == 2 else inside[:, None, None, :, None]
        out = tf.where(mask, moved, -1.0)
    corner = tf.random.stateless_uniform([batch, 2], cut_seed, 0, size - cutout + 1, dtype=tf.int32)
    grid = tf.range(size)[None]
    rows = (grid >= corner[:, :1]) & (grid < corner[:, :1] + cutout)
    cols = (grid >= corner[:, 1:]) & (grid < corner[:, 1:] + cutout)
    hole = rows[:, None, :, None, None] & cols[:, None, None, :, None]
    return tf.where(hole, 0.0, out)


def build_coarse_discriminator(config: CoarseConfig) -> keras.Model:
    volume = keras.Input((None, config.size, config.size, 1), name="volume")
    position = keras.Input((None, config.size, config.size, 1), name="position")
    x = layers.Concatenate(name="volume_and_position")([volume, position])
    for level in reversed(range(config.upsamplings)):
        x = layers.Conv3D(_filters(config, level + 1), 3, padding="same", name=f"d{level}_conv")(x)
        x = layers.LeakyReLU(0.2, name=f"d{level}_act")(x)
        x = layers.Conv3D(_filters(config, level), 3, strides=(1, 2, 2), padding="same", name=f"d{level}_down")(x)
        x = layers.LeakyReLU(0.2, name=f"d{level}_down_act")(x)
    x = MinibatchStd(name="d_batch_std")(x)
    x = layers.Conv3D(_filters(config, 0), 3, padding="same", name="d_out_conv")(x)
    x = layers.LeakyReLU(0.2, name="d_out_act")(x)
    logits = layers.Conv3D(1, 1, dtype="float32", name="logits")(x)
    return keras.Model([volume, position], logits, name="coarse_discriminator")


def positions(depth, start=0, total=None):
    """Relative heights [depth] of slices start..start+depth-1 of a volume of ``total`` slices, in [-1, 1]."""
    total = depth if total is None else total
    k = tf.cast(tf.range(depth) + start, tf.float32)
    return -1.0 + 2.0 * (k + 0.5) / tf.cast(total, tf.float32)


def _broadcast_position(position, size: int):
    """[B, D] -> [B, D, size, size, 1]."""
    return tf.tile(position[:, :, None, None, None], [1, 1, size, size, 1])


class CoarseGAN(keras.Model):
    """Trains the coarse generator against its discriminator (non-saturating loss)."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, config: CoarseConfig, seed=0, **kw):
        super().__init__(**kw)
        self.generator, self.discriminator, self.config = generator, discriminator, config
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.augment_seed = keras.random.SeedGenerator(seed + 1)
        names = ("d_loss", "g_loss", "r1", "real_score")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.built = True

    def compile(self, g_optimizer, d_optimizer, **kw):
        super().compile(optimizer=None, **kw)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer

    @property
    def metrics(self):
        return list(self.trackers.values())

    def generate(self, position, training=False):
        """position [B, D] -> volumes [B, D, S, S, 1] with fresh noise."""
        batch, depth = tf.shape(position)[0], tf.shape(position)[1]
        code, latent = draw_noise(self.noise_seed.next(), batch, depth, self.config.latent_channels)
        return self.generator([code, latent, _broadcast_position(position, LATENT_SIZE)], training=training)

    def _discriminate(self, volumes, position):
        if self.config.augment:
            size = self.config.size
            volumes = augment_for_discriminator(volumes, self.augment_seed.next(), size // 8, size // 4)
        return self.discriminator([volumes, position], training=True)

    def _r1(self, volumes, position):
        """Mean over the batch of the squared gradient norm of D's mean logit at real volumes.

        The mean over D's patches (its loss averages them): a sum would scale
        the penalty with the number of patches, and silence D.
        """
        with tf.GradientTape() as tape:
            tape.watch(volumes)
            total = tf.reduce_sum(tf.reduce_mean(self._discriminate(volumes, position), axis=[1, 2, 3, 4]))
        slopes = tape.gradient(total, volumes)
        return tf.reduce_mean(tf.reduce_sum(tf.square(slopes), axis=[1, 2, 3, 4]))

    def train_step(self, data):
        volumes, position = data
        batch = tf.shape(volumes)[0]
        full_position = _broadcast_position(position, self.config.size)
        with tf.GradientTape() as g_tape:
            fake = self.generate(position, training=True)
            with tf.GradientTape() as d_tape:
                real_logits = self._discriminate(volumes, full_position)
                fake_logits = self._discriminate(tf.stop_gradient(fake), full_position)
                d_loss = losses.discriminator_loss(real_logits, fake_logits, batch)
                # lazy R1 (StyleGAN2): every r1_every-th step, weighted by r1_every
                every = self.config.r1_every
                r1 = tf.cond(
                    self.d_optimizer.iterations % every == 0,
                    lambda: self._r1(volumes, full_position),
                    lambda: tf.zeros([]),
                )
                d_loss += 0.5 * self.config.r1_gamma * every * r1
            d_vars = self.discriminator.trainable_variables
            self.d_optimizer.apply(d_tape.gradient(d_loss, d_vars), d_vars)
            g_loss = losses.generator_adversarial_loss(self._discriminate(fake, full_position), batch)
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply(g_tape.gradient(g_loss, g_vars), g_vars)
        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["r1"].update_state(r1)
        self.trackers["real_score"].update_state(tf.reduce_mean(tf.sigmoid(real_logits)))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def crop_batches(volumes_norm: list[np.ndarray], config: CoarseConfig, seed: int):
    """Endless (volumes [B, crop, S, S, 1], positions [B, crop]) batches of random z crops.

    ``volumes_norm``: coarse volumes [D_i, S, S] in [-1, 1]; shorter than the
    crop, they are padded with air (-1) above their last slice, whose
    positions then run past +1 (above the volume).
    """
    for v in volumes_norm:
        if v.ndim != 3 or v.shape[1:] != (config.size, config.size):
            raise ValueError(
                f"coarse training volume has shape {v.shape}; expected [slices, {config.size}, {config.size}]"
            )
    rng = np.random.default_rng(seed)
    crop = config.crop_depth
    while True:
        batch_volumes, batch_positions = [], []
        for index in rng.integers(0, len(volumes_norm), config.batch_size):
            v = volumes_norm[index]
            depth = len(v)
            if depth < crop:
                v = np.concatenate([v, np.full((crop - depth, *v.shape[1:]), -1.0, np.float32)])
            start = int(rng.integers(0, max(1, depth - crop + 1)))
            batch_volumes.append(v[start : start + crop])
            batch_positions.append(-1.0 + 2.0 * (np.arange(start, start + crop) + 0.5) / depth)
        yield np.stack(batch_volumes)[..., None].astype(np.float32), np.stack(batch_positions).astype(np.float32)


def train_coarse(
    volumes_hu: list[np.ndarray],
    mapping: IntensityMapping,
    config: CoarseConfig,
    seed: int = 0,
    callbacks=None,
    verbose: int = 0,
) -> keras.Model:
    """Trains a coarse generator on ``volumes_hu`` (coarse-level [D, S, S] HU arrays); returns it."""
    if not volumes_hu:
        raise ValueError("no coarse training volumes")
    keras.utils.set_random_seed(seed)
    volumes = [mapping.forward(v) for v in volumes_hu]
    spec = (
        tf.TensorSpec([config.batch_size, config.crop_depth, config.size, config.size, 1], tf.float32),
        tf.TensorSpec([config.batch_size, config.crop_depth], tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(lambda: crop_batches(volumes, config, seed), output_signature=spec)
    gan = CoarseGAN(build_coarse_generator(config), build_coarse_discriminator(config), config, seed)
    gan.compile(
        keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
        keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
    )
    gan.fit(
        dataset.prefetch(2),
        epochs=1,
        steps_per_epoch=config.steps,
        callbacks=callbacks or [],
        verbose=verbose,
        shuffle=False,
    )
    return gan.generator


class CoarseModule(tf.Module):
    """The coarse generator with its intensity mapping: ``generate(seed int64 [2], depth int32 [])``
    -> {"volume_hu": float32 [depth, S, S]}, reproducible for a seed."""

    def __init__(self, generator: keras.Model, mapping: IntensityMapping, config: CoarseConfig):
        super().__init__(name="coarse_generator")
        self.generator, self.mapping, self.config = generator, mapping, config
        self.generate = tf.function(
            self._generate, input_signature=[tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)]
        )

    def _generate(self, seed, depth):
        code, latent = draw_noise(seed, 1, depth, self.config.latent_channels)
        position = _broadcast_position(positions(depth)[None], LATENT_SIZE)
        volume = self.generator([code, latent, position], training=False)[0, ..., 0]
        return {"volume_hu": self.mapping.inverse_tf(volume)}


def save_coarse_model(
    generator: keras.Model, mapping: IntensityMapping, config: CoarseConfig, output_dir, info: dict | None = None
) -> pathlib.Path:
    """Writes the coarse generator as a SavedModel folder (signature ``generate``), atomically."""
    module = CoarseModule(generator, mapping, config)
    record = {**(info or {}), "size": config.size, "intensity": mapping.to_json(), "signatures": ["generate"]}
    return save_module_atomic(module, {"generate": module.generate}, output_dir, COARSE_INFO, record)


class CoarseModel:
    """A saved coarse generator: ``draw(seed, depth)`` -> float32 HU [depth, S, S]."""

    def __init__(self, model_dir):
        model_dir = pathlib.Path(model_dir)
        if not (model_dir / COARSE_INFO).exists() or not (model_dir / "saved_model.pb").exists():
            raise VolumeError(model_dir, "not a coarse generator saved by cgan-ct (no cgan_ct_coarse.json)")
        self.info = json.loads((model_dir / COARSE_INFO).read_text())
        self._generate = tf.saved_model.load(str(model_dir)).signatures["generate"]
        self.size = int(self.info["size"])

    def draw(self, seed: int, depth: int) -> np.ndarray:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        out = self._generate(seed=tf.constant([seed, 0x5EED], tf.int64), depth=tf.constant(depth, tf.int32))
        return out["volume_hu"].numpy()
