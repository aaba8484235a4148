"""The generator (a 3-D U-Net) and the discriminator (a conditional 3-D PatchGAN).

Shapes (B = batch, N = block_size):
- generator inputs: condition Y [B, N, N, N, 1] and noise Z [B, N, N, N, 1],
  both in [-1, 1] (Z uniform, one channel at full resolution, concatenated
  with Y); output G(Y, Z) [B, N, N, N, 1] in [-1, 1] (tanh). With
  ``config.residual`` (the default) the output is Y + s tanh(D), D the U-Net's
  last layer (initialised to zero) and s the room on the side it moves to
  (1 - Y upward, 1 + Y downward): still in [-1, 1], every value in [-1, 1]
  reachable from every condition, and the untrained generator returns its
  condition, so training starts from the condition's quality instead of from noise.
- ``config.residual_base = "cubic"`` (depixelate): the correction starts from
  the cubic interpolation of the condition's samples (every factor-th voxel,
  Keys' kernel, a = -0.5) instead of from Y itself, as super-resolution
  networks start from bicubic up-sampling; the U-Net sees Y, Z and that base.
- ``config.residual_base = "smooth"`` (noise tasks): the correction starts from the condition blurred by a
  Gaussian of ``residual_sigma`` voxels (edges replicated), so the untrained generator is a Gaussian
  denoiser and training adds back the edges the blur took; the U-Net sees Y, Z and that base.
- ``config.upsample``: the decoder doubles its grid by a stride-2 transposed convolution ("transpose", the
  default) or by nearest-neighbour doubling and a 3 x 3 x 3 convolution ("resize": no period-2 grid in the
  output; see ModelConfig).
- discriminator inputs: condition Y and a block X (real or generated), each
  [B, N, N, N, 1]; output: one logit per patch, [B, N / 2**L, ...same..., 1]
  for L strided layers.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from cgan_ct.config import ModelConfig, outer_normalization_used
from cgan_ct.model.cpu_conv import FastKernelGradConv3D


@keras.saving.register_keras_serializable(package="cgan_ct")
class ResidualRange(layers.Layer):
    """[Y, D] -> Y + s * tanh(D), s = 1 - Y where D > 0 (room above), 1 + Y where D < 0 (room below).

    In [-1, 1] for Y in [-1, 1]; Y itself when D = 0; tanh(D) -> +-1 reaches +-1 from any Y, so any
    target is reachable (the older ``ResidualTanh`` could not move a voxel at Y = -1, air, at all). At
    D = 0 the slope is 1 + |Y| (the side with room), so no voxel starts with a zero gradient.
    """

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})

    def call(self, inputs):
        condition, delta = (keras.ops.cast(t, "float32") for t in inputs)
        step = keras.ops.tanh(delta)
        at_zero = 1.0 + keras.ops.abs(condition)
        room = keras.ops.where(delta > 0, 1.0 - condition, keras.ops.where(delta < 0, 1.0 + condition, at_zero))
        return condition + room * step


@keras.saving.register_keras_serializable(package="cgan_ct")
class ResidualTanh(ResidualRange):
    """[Y, D] -> Y + (1 - |Y|) * tanh(D). Superseded by ResidualRange; kept so older checkpoints load."""

    def call(self, inputs):
        condition, delta = (keras.ops.cast(t, "float32") for t in inputs)
        return condition + (1.0 - keras.ops.abs(condition)) * keras.ops.tanh(delta)


@keras.saving.register_keras_serializable(package="cgan_ct")
class ChannelBias(layers.Layer):
    """x + b, one learned b per channel (initialised to zero)."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias, inputs.dtype)


def keys_weights(t: float) -> tuple[float, float, float, float]:
    """Keys' cubic convolution weights (a = -0.5) of samples i-1, i, i+1, i+2 at position i + t, t in [0, 1)."""
    return (
        -0.5 * t**3 + t**2 - 0.5 * t,
        1.5 * t**3 - 2.5 * t**2 + 1.0,
        -1.5 * t**3 + 2.0 * t**2 + 0.5 * t,
        0.5 * t**3 - 0.5 * t**2,
    )


@keras.saving.register_keras_serializable(package="cgan_ct")
class CubicUpsample(layers.Layer):
    """[B, N, N, N, C] -> the same shape: keeps every ``factor``-th voxel (from 0) along each spatial axis and
    interpolates between them with Keys' cubic kernel (edges replicated), clipped to [-1, 1].

    On a nearest-neighbour pixelated block this is the cubic interpolation of its samples.
    """

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.factor = int(factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}

    def _along(self, x, axis: int):
        ops = keras.ops
        f = self.factor
        n = x.shape[axis]
        first = ops.take(x, [0], axis=axis)
        last = ops.take(x, [n - 1], axis=axis)
        padded = ops.concatenate([first, x, last, last], axis=axis)  # samples i-1 .. i+2 for every i

        def window(offset):
            return ops.take(padded, list(range(offset, offset + n)), axis=axis)

        taps = [window(j) for j in range(4)]
        phases = []
        for k in range(f):
            w = keys_weights(k / f)
            phases.append(sum(wj * tap for wj, tap in zip(w, taps, strict=True)))
        stacked = ops.stack(phases, axis=axis + 1)  # [..., n, f, ...]
        shape = list(x.shape)
        shape[axis] = n * f
        return ops.reshape(stacked, [-1 if d is None else d for d in shape])

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")[:, :: self.factor, :: self.factor, :: self.factor, :]
        for axis in (1, 2, 3):
            x = self._along(x, axis)
        return keras.ops.clip(x, -1.0, 1.0)


def _normalization(kind: str, name: str):
    if kind == "instance":
        return layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)  # one group per channel
    if kind == "batch":
        return layers.BatchNormalization(name=name)
    return layers.Identity(name=name)


def _conv_unit(x, filters: int, config: ModelConfig, name: str, strides: int = 1, normalize: bool = True):
    # stride 1: the same convolution, with a faster kernel gradient on AVX2-only CPUs (cgan_ct.model.cpu_conv)
    conv = FastKernelGradConv3D if strides == 1 else layers.Conv3D
    x = conv(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # unnormalized: the bias a normalization's offset stands for (the fast kernel takes none of its own)
    x = _normalization(config.normalization, f"{name}_norm")(x) if normalize else ChannelBias(name=f"{name}_bias")(x)
    return layers.LeakyReLU(0.2, name=f"{name}_act")(x)


def upsample(x, filters: int, kind: str, name: str):
    """The decoder's x2: a stride-2 transposed convolution ("transpose") or nearest doubling and a 3 x 3 x 3
    convolution ("resize"); see ModelConfig.upsample."""
    if kind == "resize":  # every output voxel computed alike: no period-2 grid
        x = layers.UpSampling3D(2, name=f"{name}_nearest")(x)
        return layers.Conv3D(filters, 3, padding="same", name=name)(x)
    return layers.Conv3DTranspose(filters, 2, strides=2, name=name)(x)


def outer_normalized(config: ModelConfig) -> bool:
    """Whether the U-Net's outermost level is normalized ("auto": only with the residual output).

    Instance normalization after the first convolution removes each block's mean per channel, and so the
    block's level; everything after it sees only the block's shape. A residual generator adds its output
    to the condition, which keeps the level; one without (autoencode) had to guess it, and learned a grid
    of block-sized offsets (issue 31: a shift of the input by 205 HU moved its output's mean by 1-4 HU).
    """
    return outer_normalization_used(config.outer_normalization, config.residual) == "on"


@keras.saving.register_keras_serializable(package="cgan_ct")
class GaussianSmooth(layers.Layer):
    """[B, N, N, N, 1] -> the same shape: a separable Gaussian blur of ``sigma`` voxels along each spatial
    axis (radius ceil(3 sigma), taps summing to 1, edges replicated), clipped to [-1, 1]. A constant block
    stays itself."""

    def __init__(self, sigma: float = 1.0, **kwargs):
        super().__init__(dtype="float32", **{k: v for k, v in kwargs.items() if k != "dtype"})
        self.sigma = float(sigma)
        radius = max(1, math.ceil(3 * self.sigma))
        taps = [math.exp(-0.5 * (i / self.sigma) ** 2) for i in range(-radius, radius + 1)]
        self.radius, self.taps = radius, [t / sum(taps) for t in taps]

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma}

    def _along(self, x, axis: int):
        ops = keras.ops
        n, r = x.shape[axis], self.radius
        first = ops.repeat(ops.take(x, [0], axis=axis), r, axis=axis)
        last = ops.repeat(ops.take(x, [n - 1], axis=axis), r, axis=axis)
        padded = ops.concatenate([first, x, last], axis=axis)
        return sum(w * ops.take(padded, list(range(k, k + n)), axis=axis) for k, w in enumerate(self.taps))

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        for axis in (1, 2, 3):
            x = self._along(x, axis)
        return keras.ops.clip(x, -1.0, 1.0)


def build_generator(config: ModelConfig) -> keras.Model:
    """The 3-D U-Net G(Y, Z); see the module docstring for shapes."""
    n = config.block_size
    condition = keras.Input((n, n, n, 1), name="condition")
    noise = keras.Input((n, n, n, 1), name="noise")
    base = condition
    if config.residual and config.residual_base in ("cubic", "smooth"):
        if config.residual_base == "cubic":
            base = CubicUpsample(config.residual_factor, name="cubic_base")(condition)
        else:
            base = GaussianSmooth(config.residual_sigma, name="smooth_base")(condition)
        x = layers.Concatenate(name="condition_noise_and_base")([condition, noise, base])
    else:
        x = layers.Concatenate(name="condition_and_noise")([condition, noise])
    skips = []
    outer = outer_normalized(config)
    for level in range(config.depth):
        filters = config.base_filters * 2**level
        x = _conv_unit(x, filters, config, f"enc{level}", normalize=outer or level > 0)
        skips.append(x)
        x = _conv_unit(x, filters * 2, config, f"down{level}", strides=2)
    x = _conv_unit(x, config.base_filters * 2**config.depth, config, "bottleneck")
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2**level
        x = upsample(x, filters, config.upsample, f"up{level}")
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_unit(x, filters, config, f"dec{level}", normalize=outer or level > 0)
        if config.dropout and level >= config.depth - 2:
            x = layers.Dropout(config.dropout, name=f"dropout{level}")(x)
    if config.residual:
        delta = layers.Conv3D(1, 1, kernel_initializer="zeros", dtype="float32", name="correction")(x)
        output = ResidualRange(name="generated")([base, delta])
    else:
        output = layers.Conv3D(1, 1, activation="tanh", dtype="float32", name="generated")(x)
    return keras.Model([condition, noise], output, name="generator")


def build_discriminator(config: ModelConfig) -> keras.Model:
    """The conditional PatchGAN D(Y, X) -> patch logits; see the module docstring."""
    n = config.block_size
    condition = keras.Input((n, n, n, 1), name="condition")
    block = keras.Input((n, n, n, 1), name="block")
    x = layers.Concatenate(name="condition_and_block")([condition, block])
    for layer in range(config.disc_layers):
        filters = config.disc_filters * 2**layer
        x = layers.Conv3D(filters, 4, strides=2, padding="same", use_bias=layer == 0, name=f"d{layer}_conv")(x)
        if layer > 0:
            x = _normalization(config.normalization, f"d{layer}_norm")(x)
        x = layers.LeakyReLU(0.2, name=f"d{layer}_act")(x)
    logits = layers.Conv3D(1, 3, padding="same", dtype="float32", name="patch_logits")(x)
    return keras.Model([condition, block], logits, name="discriminator")


def conv_flops_per_block(model: keras.Model) -> int:
    """Multiply-adds x 2 of the convolutions for one block, counted from layer shapes."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv3D, layers.Conv3DTranspose)):
            kernel = layer.kernel.shape  # (k, k, k, in, out)
            out_voxels = 1
            for dim in layer.output.shape[1:4]:
                out_voxels *= dim
            k3 = kernel[0] * kernel[1] * kernel[2]
            if isinstance(layer, layers.Conv3DTranspose):  # each input voxel scatters a k^3 x out kernel
                in_voxels = 1
                for dim in layer.input.shape[1:4]:
                    in_voxels *= dim
                total += 2 * in_voxels * k3 * kernel[3] * kernel[4]
            else:
                total += 2 * out_voxels * k3 * kernel[3] * kernel[4]
    return int(total)
