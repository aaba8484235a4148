"""A 3-D convolution whose kernel gradient is computed as a forward convolution, for AVX2-only CPUs.

On CPUs without AVX-512, oneDNN computes the kernel gradient of a 3-D
convolution with few channels (this project's full-resolution U-Net levels:
2 -> 8 and 16 -> 8 channels on 32^3 voxels) through its im2col + GEMM path, at
8-17 GFLOP/s against 80-100 for the forward pass of the same layer; it was two
thirds of a cpu-preset train step (BUILD_NOTES.md, "CPU runtime"). The same
gradient is a forward convolution with the roles exchanged:

    dK[a, b, c, i, o] = sum_{n, z, y, x} X_pad[n, z + a, y + b, x + c, i] * dY[n, z, y, x, o]

is conv3d(X_pad seen as [i, Z + 2p, Y + 2p, X + 2p, n], dY seen as a kernel
[Z, Y, X, n, o], VALID), which oneDNN runs with its direct kernels, 1.8-2.5x
faster there (and 4x slower than the native gradient on AVX-512 CPUs, where
this path is therefore off). Same mathematics, other summation order: results
agree to float32 rounding.

``FastKernelGradConv3D`` is a ``keras.layers.Conv3D`` (stride 1, "same"
padding, odd cubic kernel, no bias) that takes this path only where it pays:
TensorFlow backend, oneDNN on, no GPU, no AVX-512 (``use_transposed_kernel_grad``),
at most 16 channels in and out and at least 32^3 voxels (measured on AVX2: 16 -> 8
channels 129 -> 85 ms, 2 -> 8 31 -> 24 ms for batch 8; with 32 or more channels
it gains nothing or loses). Elsewhere it is the plain layer.
"""

from __future__ import annotations

import functools
import os
import pathlib

import keras


@functools.cache
def use_transposed_kernel_grad() -> bool:
    """Whether this process should compute conv kernel gradients as forward convolutions."""
    if os.environ.get("CGAN_CT_TRANSPOSED_KERNEL_GRAD") in ("0", "1"):
        return os.environ["CGAN_CT_TRANSPOSED_KERNEL_GRAD"] == "1"  # for tests and benchmarks
    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if isa and not isa.startswith("AVX512") and isa not in ("ALL", "AVX10_1_512", "AVX10_1_512_AMX"):
        return True  # oneDNN was told to use at most AVX2
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " avx512f" not in flags


def _conv_same_with_forward_kernel_grad(x, kernel):
    import tensorflow as tf

    size = kernel.shape[0]
    pad = size // 2
    ones = [1, 1, 1, 1, 1]

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.raw_ops.Conv3DBackpropInputV2(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=ones, padding="SAME"
            )
            padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [pad, pad], [0, 0]])
            # [n, z, y, x, i] -> [i, z, y, x, n]: channels become the batch, the batch the channels
            as_input = tf.transpose(padded, [4, 1, 2, 3, 0])
            as_kernel = tf.transpose(dy, [1, 2, 3, 0, 4])  # [z, y, x, n, o]
            dk = tf.nn.conv3d(as_input, as_kernel, ones, "VALID")  # [i, a, b, c, o]
            return dx, tf.transpose(dk, [1, 2, 3, 0, 4])

        return tf.nn.conv3d(x, kernel, ones, "SAME"), grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="cgan_ct")
class FastKernelGradConv3D(keras.layers.Conv3D):
    """Conv3D (stride 1, "same", odd cubic kernel, no bias) with the fast kernel gradient where it pays."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        size = self.kernel_size
        if (
            self.strides != (1, 1, 1)
            or self.padding != "same"
            or self.use_bias
            or len(set(size)) != 1
            or size[0] % 2 == 0
            or self.dilation_rate != (1, 1, 1)
            or self.groups != 1
            or self.data_format != "channels_last"
        ):
            raise ValueError(
                "FastKernelGradConv3D needs stride 1, 'same' padding, an odd cubic kernel, no bias, "
                "no dilation or groups, channels last"
            )

    def build(self, input_shape):
        super().build(input_shape)
        voxels = 1
        for n in input_shape[1:4]:
            voxels *= n if n is not None else 0
        self.transposed_kernel_grad = max(input_shape[-1], self.filters) <= 16 and voxels >= 32**3

    def call(self, inputs):
        if not (self.transposed_kernel_grad and use_transposed_kernel_grad()):
            return super().call(inputs)
        import tensorflow as tf

        kernel = tf.cast(tf.convert_to_tensor(self.kernel), inputs.dtype)
        outputs = _conv_same_with_forward_kernel_grad(inputs, kernel)
        return self.activation(outputs) if self.activation is not None else outputs
