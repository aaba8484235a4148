"""Where a train step spends its time, in each precision: per layer of G and D, and per part of the step.

For each precision (float32, bfloat16, float16: Keras' mixed policies, as ``--precision`` sets them for
training) the preset's GAN is built in it and each layer of the generator and the discriminator is timed
alone on its own input shape and in its own compute dtype (forward, and forward + backward with the
gradients a train step needs: to the weights and, except for the first layer, to the input), each part of
the step in its own tf.function (G forward + backward, D passes, G inference, the PSNR / SSIM metrics), and
the whole ConditionalGAN.train_step, all in the same run. For the convolutions it also times the backward
pass to the kernel alone (Conv3DBackpropFilterV2), the part that oneDNN runs through a slow GEMM path on
AVX2-only CPUs for small channel counts (BUILD_NOTES.md, "CPU runtime"). The whole step and G's inference
are also given in GFLOP/s (FLOPs counted as benchmarks/model_bench.py counts them) against the conv3d peak
of the same precision, timed in the same run (benchmarks/peaks.py: 64 -> 64 channels, 3^3 kernel, 32^3
voxels). The header names the CPU, its matrix features, ONEDNN_MAX_CPU_ISA and what precision ``auto``
picks here and why. On AVX2 alone TensorFlow emulates bfloat16 (~20x slower than float32): keep
``--seconds`` short there.

  python benchmarks/step_profile.py [--preset cpu] [--precisions float32,bfloat16] [--batch 8] [--seconds 1.5]
                                    [--conv 8] [--conv_edge 32] [--output FILE]
"""

from __future__ import annotations

import json
import pathlib
import sys

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import keras
import tensorflow as tf
from absl import app, flags
from tensorflow.python.util import _pywrap_util_port

from cgan_ct import runtime
from cgan_ct.config import FLOAT32, model_config
from cgan_ct.model.block_metrics import block_psnr, block_ssim
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN

HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:  # run as a script it is there already; loaded by path (the tests) it is not
    sys.path.insert(0, HERE)
import peaks  # noqa: E402

_PRESET = flags.DEFINE_string("preset", "cpu", "Model preset.")
_PRECISIONS = flags.DEFINE_list(
    "precisions",
    ["float32", "bfloat16"],
    f"Precisions to profile the preset in ({', '.join(peaks.PRECISIONS)}; auto: this machine's choice).",
)
_BATCH = flags.DEFINE_integer("batch", 8, "Batch.")
_SECONDS = flags.DEFINE_float("seconds", 1.5, "Seconds of timing per figure.")
_CONV = flags.DEFINE_integer("conv", 8, "Batch of the conv3d peak (64 -> 64 channels).")
_CONV_EDGE = flags.DEFINE_integer("conv_edge", 32, "Edge of the conv3d peak's volume, in voxels.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the figures as JSON to this file.")

# The length of the preset's learning-rate schedule (the cpu preset's cosine needs one): each figure is timed
# for a while, not a step count, and the rate a schedule sets does not change what a step costs.
SCHEDULE_STEPS = 1000


def build(preset: str, steps: int, precision: str = FLOAT32) -> ConditionalGAN:
    """The preset's compiled GAN as cgan-ct-train builds it, in ``precision`` (never ``auto``), its schedule
    (if any) ``steps`` long."""
    return build_gan(model_config(preset, precision=precision), total_steps=steps)


def _ms(fn) -> float:
    return 1000 / peaks.rate(fn, 1, _SECONDS.value)


def _layer_times(model: keras.Model, batch: int) -> list[dict]:
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or isinstance(layer.input, list):
            continue  # inputs, concatenations and the residual output (two inputs) are cheap
        # in the layer's compute dtype, as the layer before hands it on (bfloat16 inside a mixed_bfloat16 net)
        x = tf.cast(tf.random.uniform([batch, *layer.input.shape[1:]], -1, 1), layer.compute_dtype)
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
            real, fake = gan.real_and_fake_logits(y, x, z)
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
        "G inference (training=False)": _ms(tf.function(lambda: g([y, z], training=False))),
        "D update pass (real + generated)": _ms(tf.function(d_forward_backward)),
        "D pass for G's loss": _ms(tf.function(d_for_g)),
        "PSNR (every step)": _ms(tf.function(lambda: block_psnr(x, y))),
        "SSIM (evaluation only)": _ms(tf.function(lambda: block_ssim(x, y))),
        "whole train step": _ms(lambda: step((y, x))),
    }


def _layer_table(name: str, rows: list[dict]) -> None:
    print(f"\n{name}: layer | input | forward ms | forward+backward ms | kernel gradient alone ms")
    for r in rows:
        kernel = f"{r['kernel_grad_ms']:7.1f}" if "kernel_grad_ms" in r else "      -"
        print(
            f"  {r['layer']:<16} {str(r['input']):<20} {r['forward_ms']:7.1f} {r['forward_backward_ms']:7.1f} {kernel}"
        )
    print(f"  sum {sum(r['forward_ms'] for r in rows):.1f} / {sum(r['forward_backward_ms'] for r in rows):.1f}")


def profile(preset: str, precision: str, batch: int, peak_gflops: float) -> dict:
    """One precision's layer tables and step parts, printed and returned; the step and G's inference in
    GFLOP/s against ``peak_gflops`` (the conv3d peak of this precision)."""
    gan = build(preset, SCHEDULE_STEPS, precision)
    print(f"\n=== {preset} in {gan.precision.name} (policy {gan.precision.policy}), batch {batch}")
    result = {"precision": gan.precision.name, "peak_gflops": peak_gflops}
    for name, model in (("generator", gan.generator), ("discriminator", gan.discriminator)):
        result[name] = _layer_times(model, batch)
        _layer_table(name, result[name])
    parts = _step_parts(gan, batch, model_config(preset).block_size)
    whole = parts["whole train step"]
    print("\nparts of a train step (each alone):")
    for name, ms in parts.items():
        print(f"  {name:<34} {ms:7.1f} ms  ({ms / whole:.0%} of the step)")
    g_flops, step_flops = peaks.step_flops(gan)
    result.update(parts_ms=parts, gflop_per_block_generator=g_flops / 1e9, gflop_per_block_train_step=step_flops / 1e9)
    result["train_gflops"] = batch * step_flops / whole / 1e6
    result["infer_gflops"] = batch * g_flops / parts["G inference (training=False)"] / 1e6
    return result


def main(argv: list[str]) -> None:
    del argv
    try:
        precisions = peaks.check_precisions(_PRECISIONS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    status = {**runtime.status(), "onednn_in_effect": bool(_pywrap_util_port.IsMklEnabled())}
    machine = peaks.machine()
    print(peaks.machine_line(machine))
    print(f"oneDNN {'on' if status['onednn_in_effect'] else 'off'}; preset {_PRESET.value}; batch {_BATCH.value}")
    conv = {p: peaks.conv_peak_gflops(p, _SECONDS.value, _CONV.value, _CONV_EDGE.value) for p in precisions}
    shape = f"{_CONV.value} x {_CONV_EDGE.value}^3 x 64 -> 64"
    print(f"large conv3d ({shape}) peak: {', '.join(f'{p} {g:.1f}' for p, g in conv.items())} GFLOP/s", flush=True)
    runs = [profile(_PRESET.value, p, _BATCH.value, conv[p]) for p in precisions]
    print("\nprecision | conv3d peak GFLOP/s | train step ms, GFLOP/s, of peak | G inference ms, GFLOP/s, of peak")
    for r in runs:
        step_ms, infer_ms = r["parts_ms"]["whole train step"], r["parts_ms"]["G inference (training=False)"]
        print(
            f"  {r['precision']:<8} {r['peak_gflops']:8.1f} | {step_ms:8.1f} {r['train_gflops']:7.1f} "
            f"{r['train_gflops'] / r['peak_gflops']:5.0%} | {infer_ms:8.1f} {r['infer_gflops']:7.1f} "
            f"{r['infer_gflops'] / r['peak_gflops']:5.0%}"
        )
    if _OUTPUT.value:
        result = {"machine": machine, "runtime": status, "preset": _PRESET.value, "batch": _BATCH.value}
        result["conv_peak"] = {"batch": _CONV.value, "edge": _CONV_EDGE.value, "gflops": conv}
        with open(_OUTPUT.value, "w") as f:
            json.dump({**result, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
