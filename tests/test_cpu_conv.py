"""The conv whose kernel gradient is a forward convolution: same outputs and gradients as keras Conv3D."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cgan_ct.model import cpu_conv
from cgan_ct.model.cpu_conv import FastKernelGradConv3D


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("CGAN_CT_TRANSPOSED_KERNEL_GRAD", "1")
    cpu_conv.use_transposed_kernel_grad.cache_clear()
    yield
    cpu_conv.use_transposed_kernel_grad.cache_clear()


def _gradients(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.cos(y))
    return [y, *tape.gradient(loss, [x, layer.kernel])]


@pytest.mark.parametrize(("channels_in", "filters", "size"), [(2, 8, 3), (5, 3, 5)])
def test_same_outputs_and_gradients_as_the_plain_layer(forced, channels_in, filters, size):
    x = tf.random.uniform([2, 32, 32, 32, channels_in], -1, 1, seed=1)
    fast = FastKernelGradConv3D(filters, size, padding="same", use_bias=False)
    plain = keras.layers.Conv3D(filters, size, padding="same", use_bias=False)
    fast.build(x.shape)
    plain.build(x.shape)
    plain.kernel.assign(fast.kernel)
    assert fast.transposed_kernel_grad and cpu_conv.use_transposed_kernel_grad()
    graph = tf.function(lambda: _gradients(fast, x)).get_concrete_function().graph
    assert not any("BackpropFilter" in op.type for op in graph.get_operations())  # the other path is taken
    for a, b in zip(_gradients(fast, x), _gradients(plain, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(b))))


def test_the_path_is_taken_only_where_it_pays(forced):
    small = FastKernelGradConv3D(8, 3, padding="same", use_bias=False)
    small.build((None, 32, 32, 32, 16))
    wide = FastKernelGradConv3D(32, 3, padding="same", use_bias=False)
    wide.build((None, 32, 32, 32, 2))
    coarse = FastKernelGradConv3D(8, 3, padding="same", use_bias=False)
    coarse.build((None, 16, 16, 16, 8))
    assert small.transposed_kernel_grad and not wide.transposed_kernel_grad and not coarse.transposed_kernel_grad


@pytest.mark.parametrize("kwargs", [{"strides": 2}, {"padding": "valid"}, {"use_bias": True}])
def test_other_convolutions_are_refused(kwargs):
    options = {"padding": "same", "use_bias": False, **kwargs}
    with pytest.raises(ValueError, match="stride 1"):
        FastKernelGradConv3D(4, 3, **options)


def test_an_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd cubic"):
        FastKernelGradConv3D(4, 2, padding="same", use_bias=False)


def test_saved_and_loaded_as_part_of_the_generator(tmp_path):
    from cgan_ct.config import model_config
    from cgan_ct.model.networks import build_generator

    generator = build_generator(model_config("smoke"))
    generator.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras")
    x = tf.random.uniform([1, 16, 16, 16, 1], -1, 1, seed=3)
    np.testing.assert_allclose(loaded([x, x]), generator([x, x]), atol=1e-6)
