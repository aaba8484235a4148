"""GAN and L1 losses as pure functions, reduced replica-safely.

Each loss is a mean per example (over its voxels or patches), summed over the
local batch and divided by the *global* batch size, as
``tf.nn.compute_average_loss`` does: under a strategy, summing the replicas'
losses (which the optimizer does with their gradients) gives the mean over the
global batch, so lambda * L1 means the same on one GPU and on eight.

Logits are the discriminator's raw patch outputs. Written in ``keras.ops`` only,
so the TensorFlow and the JAX train steps compute the same numbers.
"""

from __future__ import annotations

import itertools

import numpy as np
from keras import ops


def _per_example_mean(values):
    values = ops.cast(values, "float32")
    return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def _reduce(per_example, global_batch_size):
    # tf.nn.compute_average_loss's arithmetic, in keras.ops (the same on the TensorFlow and JAX backends)
    return ops.sum(per_example) / ops.cast(global_batch_size, "float32")


def _bce(logits, label: float):
    """Sigmoid cross-entropy of ``logits`` against a constant label, in its overflow-free form."""
    logits = ops.cast(logits, "float32")
    return ops.maximum(logits, 0.0) - logits * label + ops.log1p(ops.exp(-ops.abs(logits)))


def discriminator_loss(real_logits, fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """D's loss: real patches toward 1, generated toward 0."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(real_logits, 1.0)) + _per_example_mean(_bce(fake_logits, 0.0))
    elif kind == "least_squares":
        real, fake = ops.cast(real_logits, "float32"), ops.cast(fake_logits, "float32")
        per_example = 0.5 * (_per_example_mean(ops.square(real - 1.0)) + _per_example_mean(ops.square(fake)))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def generator_adversarial_loss(fake_logits, global_batch_size, kind: str = "nonsaturating"):
    """G's adversarial loss: -log D(G(Y, Z)) (non-saturating), or least squares toward 1."""
    if kind == "nonsaturating":
        per_example = _per_example_mean(_bce(fake_logits, 1.0))
    elif kind == "least_squares":
        per_example = 0.5 * _per_example_mean(ops.square(ops.cast(fake_logits, "float32") - 1.0))
    else:
        raise ValueError(f"unknown adversarial loss {kind!r}")
    return _reduce(per_example, global_batch_size)


def l1_loss(target, generated, global_batch_size):
    """Mean absolute difference per block, averaged over the global batch."""
    return _reduce(
        _per_example_mean(ops.abs(ops.cast(target, "float32") - ops.cast(generated, "float32"))), global_batch_size
    )


SPECTRAL_BAND_EDGES = (0.125, 0.25, 0.375)  # cycles per voxel: in-plane radial bands, the last to the corners


def _band_masks(height: int, width: int):
    """[K, height, width] float32 one-hot of each in-plane frequency's radial band (DC in none), and the
    number of frequencies in each band [K]; bands without a frequency (planes under 8 x 8) left out."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.hypot(fy, fx)
    edges = (0.0, *SPECTRAL_BAND_EDGES, np.inf)
    masks = np.stack([(radius > lo) & (radius <= hi) for lo, hi in itertools.pairwise(edges)]).astype(np.float32)
    masks = masks[masks.sum(axis=(1, 2)) > 0]
    return masks, masks.sum(axis=(1, 2))


def band_amplitudes(blocks, patch: int = 0):
    """[B, K] (``patch`` 0) or [B, P, K]: the root-mean-square amplitude of each block's axial-plane detail in
    each radial frequency band (K = 4 from 8 x 8 planes up), over the whole plane or, with ``patch``, in each
    of its P in-plane ``patch`` x ``patch`` tiles (a column of the block: the tile through every slice).

    Per axial slice (tile) the mean is removed and the 2-D power spectrum taken; the power of the frequencies
    in a band, averaged over them and over the block's slices, is that band's variance (Parseval), its square
    root the band's amplitude in the blocks' own units. Phase-free: two independent noise fields with one
    spectrum have the same amplitudes, which L1 (rewarding the mean) cannot say. Over the whole plane the
    amplitudes do not say *where* the detail is: an output short of edge detail can make up the band's power
    with noise in uniform tissue. Tiles say where, at the cost of the lowest frequencies (a tile of p voxels
    resolves nothing below 1/p cycles per voxel).
    """
    x = ops.cast(blocks, "float32")[..., 0]  # [B, Z, Y, X]
    depth, height, width = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    if patch:
        if height % patch or width % patch:
            raise ValueError(f"spectral patch {patch} must divide the block's plane {height} x {width}")
        ny, nx = height // patch, width // patch
        x = ops.reshape(x, [-1, depth, ny, patch, nx, patch])
        x = ops.reshape(ops.transpose(x, [0, 2, 4, 1, 3, 5]), [-1, ny * nx, depth, patch, patch])  # [B, P, Z, p, p]
        height = width = patch
    x = x - ops.mean(x, axis=(-2, -1), keepdims=True)
    real, imag = ops.fft2((x, ops.zeros_like(x)))
    power = (ops.square(real) + ops.square(imag)) / float(height * width)  # per frequency: variance share
    masks, counts = _band_masks(height, width)
    pattern = "bpzyx,kyx->bpk" if patch else "bzyx,kyx->bk"
    per_band = ops.einsum(pattern, power, ops.convert_to_tensor(masks))
    per_band = per_band / ops.convert_to_tensor(counts * float(depth))
    return ops.sqrt(per_band + 1e-12)


def spectral_loss(target, generated, global_batch_size, patch: int = 0):
    """Mean absolute difference of the band amplitudes (``band_amplitudes``, over the plane or per ``patch``
    tile) per block, over the global batch: how far the output's texture (noise grain, fine detail) is from
    the target's, whatever its phase."""
    difference = ops.abs(band_amplitudes(target, patch) - band_amplitudes(generated, patch))
    per_block = ops.mean(ops.reshape(difference, [ops.shape(difference)[0], -1]), axis=1)
    return _reduce(per_block, global_batch_size)


def generator_loss(
    fake_logits,
    target,
    generated,
    global_batch_size,
    l1_weight: float = 100.0,
    kind: str = "nonsaturating",
    spectral_weight: float = 0.0,
    spectral_patch: int = 0,
):
    """(total, adversarial, l1) with total = adversarial + l1_weight * l1 (+ spectral_weight * spectral, the
    spectral term per ``spectral_patch`` tile where not 0)."""
    adversarial = generator_adversarial_loss(fake_logits, global_batch_size, kind)
    l1 = l1_loss(target, generated, global_batch_size)
    total = adversarial + l1_weight * l1
    if spectral_weight:
        total = total + spectral_weight * spectral_loss(target, generated, global_batch_size, spectral_patch)
    return total, adversarial, l1
