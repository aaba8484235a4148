"""Where a train step spends its time: per layer of G and D, and the step's parts, against the whole step.

Each layer of the generator and the discriminator is timed alone on its own
input shape (forward, and forward + backward with the gradients a train step
needs: to the weights and, except for the first layer, to the input), each
part of the step in its own tf.function (G forward + backward, D passes, the
PSNR / SSIM metrics), and the whole ConditionalGAN.train_step, all in the same
run. For the convolutions it also times the backward pass to the kernel alone
(Conv3DBackpropFilterV2), the part that oneDNN runs through a slow GEMM path
on AVX2-only CPUs for small channel counts (BUILD_NOTES.md, "CPU runtime").

  python benchmarks/step_profile.py [--preset cpu] [--batch 8] [--seconds 1.5] [--output FILE]
"""

from __future__ import annotations

import json
import time

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import keras
import tensorflow as tf
from absl import app, flags
from tensorflow.python.util import _pywrap_util_port

from cgan_ct import runtime
from cgan_ct.config import model_config
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN, block_psnr, block_ssim

_PRESET = flags.DEFINE_string("preset", "cpu", "Model preset.")
_BATCH = flags.DEFINE_integer("batch", 8, "Batch.")
_SECONDS = flags.DEFINE_float("seconds", 1.5, "Seconds of timing per figure.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures as JSON to this file.")

# The length of the preset's learning-rate schedule (the cpu preset's cosine needs one): each figure is timed
# for a while, not a step count, and the rate a schedule sets does not change what a step costs.
SCHEDULE_STEPS = 1000


def build(preset: str, steps: int) -> ConditionalGAN:
    """The preset's compiled GAN as cgan-ct-train builds it, its schedule (if any) ``steps`` long."""
    return build_gan(model_config(preset), total_steps=steps)


def _ms(fn) -> float:
    fn()
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < _SECONDS.value or count == 0:
        fn()
        count += 1
    return (time.perf_counter() - start) / count * 1000


def _layer_times(model: keras.Model, batch: int) -> list[dict]:
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or isinstance(layer.input, list):
            continue  # inputs, concatenations and the residual output (two inputs) are cheap
        x = tf.random.uniform([batch, *layer.input.shape[1:]], -1, 1)
        needs_input_grad = bool(rows)  # the first layer after the inputs gets no input gradient in training

        def forward(layer=layer, x=x):
            return layer(x, training=True)

        def backward(layer=layer, x=x, needs_input_grad=needs_input_grad):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = layer(x, training=True)
                loss = tf.reduce_sum(out * out)
            return tape.gradient(loss, ([x] if needs_input_grad else []) + layer.trainable_variables)

        row = {"layer": layer.name, "kind": type(layer).__name__, "input": list(x.shape[1:])}
        row["forward_ms"] = _ms(tf.function(forward))
        row["forward_backward_ms"] = _ms(tf.function(backward))
        if isinstance(layer, keras.layers.Conv3D) and not isinstance(layer, keras.layers.Conv3DTranspose):
            y = layer(x)
            strides = [1, *layer.strides, 1]

            def kernel_grad(layer=layer, x=x, y=y, strides=strides):
                return tf.raw_ops.Conv3DBackpropFilterV2(
                    input=x,
                    filter_sizes=tf.shape(layer.kernel),
                    out_backprop=y,
                    strides=strides,
                    padding=layer.padding.upper(),
                )

            row["kernel_grad_ms"] = _ms(tf.function(kernel_grad))
        rows.append(row)
    return rows


def _step_parts(gan, batch: int, n: int) -> dict:
    g, d = gan.generator, gan.discriminator
    y, x, z = (tf.random.uniform([batch, n, n, n, 1], -1, 1, seed=s) for s in (1, 2, 3))

    def g_forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(g([y, z], training=True) - x))
        return tape.gradient(loss, g.trainable_variables)

    def d_forward_backward():  # D's update: real and generated in one pass
        with tf.GradientTape() as tape:
            real, fake = gan._real_and_fake_logits(y, x, z)
            loss = tf.reduce_mean(real) - tf.reduce_mean(fake)
        return tape.gradient(loss, d.trainable_variables)

    def d_for_g():  # G's adversarial term: D forward + backward to its input
        with tf.GradientTape() as tape:
            tape.watch(z)
            loss = tf.reduce_mean(d([y, z], training=True))
        return tape.gradient(loss, z)

    step = tf.function(gan.train_step)
    return {
        "G forward": _ms(tf.function(lambda: g([y, z], training=True))),
        "G forward + backward": _ms(tf.function(g_forward_backward)),
        "D update pass (real + generated)": _ms(tf.function(d_forward_backward)),
        "D pass for G's loss": _ms(tf.function(d_for_g)),
        "PSNR (every step)": _ms(tf.function(lambda: block_psnr(x, y))),
        "SSIM (evaluation only)": _ms(tf.function(lambda: block_ssim(x, y))),
        "whole train step": _ms(lambda: step((y, x))),
    }


def main(argv: list[str]) -> None:
    del argv
    config = model_config(_PRESET.value)
    gan = build(_PRESET.value, SCHEDULE_STEPS)
    status = {**runtime.status(), "onednn_in_effect": bool(_pywrap_util_port.IsMklEnabled())}
    print(f"cpu: {status['cpu']}; oneDNN {'on' if status['onednn_in_effect'] else 'off'}; preset {_PRESET.value}")
    result = {"runtime": status, "preset": _PRESET.value, "batch": _BATCH.value}
    for name, model in (("generator", gan.generator), ("discriminator", gan.discriminator)):
        rows = _layer_times(model, _BATCH.value)
        result[name] = rows
        print(f"\n{name}: layer | input | forward ms | forward+backward ms | kernel gradient alone ms")
        for r in rows:
            kernel = f"{r['kernel_grad_ms']:7.1f}" if "kernel_grad_ms" in r else "      -"
            print(
                f"  {r['layer']:<16} {str(r['input']):<20} {r['forward_ms']:7.1f} {r['forward_backward_ms']:7.1f} "
                f"{kernel}"
            )
        print(f"  sum {sum(r['forward_ms'] for r in rows):.1f} / {sum(r['forward_backward_ms'] for r in rows):.1f}")
    parts = _step_parts(gan, _BATCH.value, config.block_size)
    result["parts_ms"] = parts
    whole = parts["whole train step"]
    print("\nparts of a train step (each alone):")
    for name, ms in parts.items():
        print(f"  {name:<34} {ms:7.1f} ms  ({ms / whole:.0%} of the step)")
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
