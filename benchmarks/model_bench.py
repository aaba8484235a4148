"""Train-step and inference throughput of the model presets, against a large conv3d peak.

For each preset: FLOPs per block counted from layer shapes (forward convolutions
of G and D; a train step is counted as 3 x G + 9 x D: one G forward and three
D forwards, with backward passes at twice their forward), train-step blocks/s
(ConditionalGAN.train_on_batch on an in-memory batch), inference blocks/s
(generator forward), and the GFLOP/s they achieve divided by two limits timed in
the same run on the same device: a large Conv3D (64 -> 64 channels, 3^3 kernel,
32^3 voxels: the practical convolution peak) and a large float32 matmul
(4096^2: the CPU's practical FMA peak). The header names the CPU, whether
TensorFlow's oneDNN kernels are on, and the thread settings.

  python benchmarks/model_bench.py [--presets cpu,paper] [--seconds 10] [--batch N]
                                   [--mixed_precision] [--jit_compile] [--output FILE] [--matmul 4096] [--conv 8]
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
from cgan_ct.model.gan import ConditionalGAN
from cgan_ct.model.networks import build_discriminator, build_generator, conv_flops_per_block

_PRESETS = flags.DEFINE_list("presets", ["cpu", "paper"], "Model presets to measure.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Seconds of timing per figure (after warm-up).")
_BATCH = flags.DEFINE_integer("batch", None, "Batch (default: the preset's global batch).")
_MIXED = flags.DEFINE_bool("mixed_precision", False, "Mixed float16.")
_XLA = flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the figures as one JSON line to this file.")
_MATMUL = flags.DEFINE_integer("matmul", 4096, "Edge of the matmul peak's square matrices.")
_CONV = flags.DEFINE_integer("conv", 8, "Batch of the conv3d peak (32^3 voxels, 64 -> 64 channels).")

# The length of a preset's learning-rate schedule (the cpu preset's cosine needs one): the loops here run for
# a time, not a step count, and the rate a schedule sets does not change what a step costs.
SCHEDULE_STEPS = 1000


def _rate(fn, items: int, seconds: float) -> float:
    fn()
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count == 0:
        fn()
        count += items
    return count / (time.perf_counter() - start)


def conv_peak_gflops(seconds: float, batch: int = 8) -> float:
    """GFLOP/s of a large Conv3D forward pass (the practical compute peak)."""
    layer = keras.layers.Conv3D(64, 3, padding="same", use_bias=False)
    x = tf.random.uniform([batch, 32, 32, 32, 64])
    layer(x)
    step = tf.function(lambda: layer(x), jit_compile=_XLA.value)
    flops = 2 * batch * 32**3 * 27 * 64 * 64
    return _rate(lambda: step().numpy(), 1, seconds) * flops / 1e9


def matmul_peak_gflops(seconds: float, n: int = 4096) -> float:
    """GFLOP/s of a large float32 matmul (the practical FMA peak)."""
    a, b = tf.random.uniform([n, n]), tf.random.uniform([n, n])
    step = tf.function(lambda: tf.matmul(a, b), jit_compile=_XLA.value)
    return _rate(lambda: step().numpy(), 1, seconds) * 2 * n**3 / 1e9


def build(preset: str, steps: int, mixed_precision: bool = False, jit_compile: bool = False) -> ConditionalGAN:
    """The preset's compiled GAN as cgan-ct-train builds it, its schedule (if any) ``steps`` long."""
    config = model_config(preset, mixed_precision=mixed_precision, jit_compile=jit_compile)
    return build_gan(config, total_steps=steps)


def measure(preset: str, seconds: float) -> dict:
    config = model_config(preset, mixed_precision=_MIXED.value, jit_compile=_XLA.value)
    batch = _BATCH.value or config.global_batch_size
    g_flops = conv_flops_per_block(build_generator(config))
    d_flops = conv_flops_per_block(build_discriminator(config))
    gan = build(preset, SCHEDULE_STEPS, _MIXED.value, _XLA.value)
    n = config.block_size
    data = tf.random.uniform([batch, n, n, n, 1], -1, 1)
    noise = tf.random.uniform([batch, n, n, n, 1], -1, 1)
    train = _rate(lambda: gan.train_on_batch(data, data), batch, seconds)
    infer_fn = tf.function(lambda: gan.generator([data, noise], training=False), jit_compile=config.jit_compile)
    infer = _rate(lambda: infer_fn().numpy(), batch, seconds)
    return {
        "preset": preset,
        "batch": batch,
        "params_generator": int(gan.generator.count_params()),
        "params_discriminator": int(gan.discriminator.count_params()),
        "gflop_per_block_generator": g_flops / 1e9,
        "gflop_per_block_train_step": (3 * g_flops + 9 * d_flops) / 1e9,
        "train_blocks_per_s": train,
        "infer_blocks_per_s": infer,
        "train_gflops": train * (3 * g_flops + 9 * d_flops) / 1e9,
        "infer_gflops": infer * g_flops / 1e9,
    }


def main(argv: list[str]) -> None:
    del argv
    status = runtime.status()
    status["onednn_in_effect"] = bool(_pywrap_util_port.IsMklEnabled())
    peak = conv_peak_gflops(_SECONDS.value, _CONV.value)
    fma = matmul_peak_gflops(_SECONDS.value, _MATMUL.value)
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")]
    print(
        f"cpu: {status['cpu']}; oneDNN {'on' if status['onednn_in_effect'] else 'off'} "
        f"(TF_ENABLE_ONEDNN_OPTS={status['onednn']}); threads intra {status['intra_op_threads']}, "
        f"inter {status['inter_op_threads']}; {status['usable_cores']} usable cores"
    )
    print(f"devices {devices}; mixed_precision={_MIXED.value} jit_compile={_XLA.value}")
    print(f"large conv3d peak: {peak:.1f} GFLOP/s; float32 matmul (FMA) peak: {fma:.1f} GFLOP/s")
    for preset in _PRESETS.value:
        r = measure(preset, _SECONDS.value)
        r.update(peak_gflops=peak, matmul_peak_gflops=fma, runtime=status, devices=devices)
        r.update(mixed_precision=_MIXED.value, jit_compile=_XLA.value)
        print(
            f"{preset:<6} G {r['params_generator'] / 1e6:.2f} M params, D {r['params_discriminator'] / 1e6:.2f} M; "
            f"{r['gflop_per_block_generator']:.2f} GFLOP/block forward, {r['gflop_per_block_train_step']:.2f} per "
            f"train step | train {r['train_blocks_per_s']:.1f} blocks/s "
            f"({r['train_gflops'] / peak:.0%} of conv3d peak, "
            f"{r['train_gflops'] / fma:.0%} of matmul) | inference {r['infer_blocks_per_s']:.1f} blocks/s "
            f"({r['infer_gflops'] / peak:.0%} of conv3d peak, {r['infer_gflops'] / fma:.0%} of matmul)"
        )
        if _OUTPUT.value:
            with open(_OUTPUT.value, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    app.run(main)
