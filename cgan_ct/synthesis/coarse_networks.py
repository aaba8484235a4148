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

This module holds the two networks and their noise and position inputs;
``coarse_training`` trains them, ``coarse_export`` saves and serves the generator.
"""

from __future__ import annotations

import keras
from keras import layers

from cgan_ct.config import CoarseConfig

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


def _filters(config: CoarseConfig, upsampled: int, discriminator: bool = False) -> int:
    first = config.disc_filters if discriminator and config.disc_filters else config.filters
    return max(8, first // 2**upsampled)


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
    """(code [B, C], latent [B, D, 4, 4, C]) ~ U[-1, 1] from a stateless seed int [2].

    TensorFlow's stateless generator (what every trained cascade drew with); the coarse GAN trains on
    TensorFlow only, the networks themselves are keras.ops and run on any backend.
    """
    import tensorflow as tf

    seed = tf.cast(seed, tf.int64)
    code = tf.random.stateless_uniform([batch, channels], seed, -1.0, 1.0)
    latent_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    latent = tf.random.stateless_uniform([batch, depth, LATENT_SIZE, LATENT_SIZE, channels], latent_seed, -1.0, 1.0)
    return code, latent


def build_coarse_discriminator(config: CoarseConfig) -> keras.Model:
    volume = keras.Input((None, config.size, config.size, 1), name="volume")
    position = keras.Input((None, config.size, config.size, 1), name="position")
    x = layers.Concatenate(name="volume_and_position")([volume, position])
    for level in reversed(range(config.upsamplings)):
        x = layers.Conv3D(_filters(config, level + 1, True), 3, padding="same", name=f"d{level}_conv")(x)
        x = layers.LeakyReLU(0.2, name=f"d{level}_act")(x)
        x = layers.Conv3D(_filters(config, level, True), 3, strides=(1, 2, 2), padding="same", name=f"d{level}_down")(x)
        x = layers.LeakyReLU(0.2, name=f"d{level}_down_act")(x)
    x = MinibatchStd(name="d_batch_std")(x)
    x = layers.Conv3D(_filters(config, 0, True), 3, padding="same", name="d_out_conv")(x)
    x = layers.LeakyReLU(0.2, name="d_out_act")(x)
    logits = layers.Conv3D(1, 1, dtype="float32", name="logits")(x)
    return keras.Model([volume, position], logits, name="coarse_discriminator")


def positions(depth, start=0, total=None):
    """Relative heights [depth] of slices start..start+depth-1 of a volume of ``total`` slices, in [-1, 1]."""
    total = depth if total is None else total
    k = keras.ops.cast(keras.ops.arange(depth) + start, "float32")
    return -1.0 + 2.0 * (k + 0.5) / keras.ops.cast(total, "float32")


def broadcast_position(position, size: int):
    """[B, D] -> [B, D, size, size, 1]."""
    return keras.ops.tile(position[:, :, None, None, None], [1, 1, size, size, 1])
