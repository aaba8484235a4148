"""PSNR, SSIM and noise spread of batches of blocks, in keras.ops: the same numbers on TensorFlow and JAX.

Blocks are [B, D, H, W, 1]; each is scored as its D axial slices (images
[H, W, 1]) and the batch's slices averaged. PSNR and SSIM follow
``tf.image.psnr`` and ``tf.image.ssim`` (Gaussian window of 11 pixels, sigma
1.5, k1 0.01, k2 0.03, valid convolution; tested equal to them), so the
TensorFlow backend logs what it logged before these were moved out of TF ops.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from cgan_ct.constants import CLIP_HU, DATA_RANGE_HU
from cgan_ct.ops.intensity import IntensityMapping

_PSNR_CAP_DB = 100.0  # identical slices have an infinite PSNR


def _slices(blocks):
    """[B, D, H, W, 1] -> [B * D, H, W, 1]: axial slices as images."""
    blocks = ops.cast(blocks, "float32")
    shape = ops.shape(blocks)
    return ops.reshape(blocks, (-1, shape[2], shape[3], 1))


def _psnr(a, b, max_val: float):
    mse = ops.mean(ops.square(a - b), axis=(1, 2, 3))
    psnr = 20.0 * np.log10(max_val) - 10.0 * ops.log(mse) / np.log(10.0)
    return ops.mean(ops.where(ops.isfinite(psnr), psnr, _PSNR_CAP_DB))


def block_psnr(target, generated):
    """Mean PSNR over the axial slices of a batch, for values in [-1, 1]."""
    return _psnr(_slices(target), _slices(generated), 2.0)


def _gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * coords**2 / sigma**2)
    window = np.outer(g, g)
    return (window / window.sum()).astype(np.float32)[:, :, None, None]


def block_ssim(target, generated, max_val: float = 2.0):
    """Mean SSIM over the axial slices of a batch, for values in [-1, 1]."""
    size = min(11, int(target.shape[2]))
    window = _gaussian_window(size)
    x, y = _slices(target), _slices(generated)

    def blur(image):
        return ops.conv(image, window, strides=1, padding="valid")

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mean_x, mean_y = blur(x), blur(y)
    luminance_num = 2.0 * mean_x * mean_y
    luminance_den = ops.square(mean_x) + ops.square(mean_y)
    luminance = (luminance_num + c1) / (luminance_den + c1)
    contrast = (2.0 * blur(x * y) - luminance_num + c2) / (blur(ops.square(x) + ops.square(y)) - luminance_den + c2)
    return ops.mean(luminance * contrast)


def block_psnr_ssim(target, generated):
    """Mean PSNR and SSIM over the axial slices of a batch, for values in [-1, 1]."""
    return block_psnr(target, generated), block_ssim(target, generated)


def block_psnr_hu(target, generated, mapping: IntensityMapping):
    """Mean PSNR in HU over the axial slices of a batch of normalized blocks: the project's protocol."""
    low, high = (float(h) for h in CLIP_HU)

    def hu(blocks):
        return ops.clip(mapping.inverse_ops(_slices(blocks)), low, high) - low

    return _psnr(hu(target), hu(generated), DATA_RANGE_HU)


def noise_std_hu(generated, other, mapping: IntensityMapping):
    """Per-voxel standard deviation over noise draws, in HU, estimated from two draws of the same batch."""
    difference = mapping.inverse_ops(generated) - mapping.inverse_ops(other)
    return ops.sqrt(ops.mean(ops.square(difference)) / 2.0)
