"""Train-step and inference throughput of the model presets in each precision, against conv3d peaks of the same.

For each preset and precision (float32, bfloat16, float16: Keras' mixed policies, as ``--precision`` sets
them for training): FLOPs per block counted from layer shapes (forward convolutions of G and D; a train
step is counted as 3 x G + 9 x D: one G forward and three D forwards, with backward passes at twice their
forward), train-step blocks/s (ConditionalGAN.train_on_batch on an in-memory batch), inference blocks/s
(generator forward), and the GFLOP/s they achieve divided by two limits timed in the same run on the same
device (benchmarks/peaks.py): a large Conv3D in THAT precision (64 -> 64 channels, 3^3 kernel, 32^3
voxels: the practical convolution peak; a bfloat16 step is judged against the bfloat16 peak) and a large
float32 matmul (4096^2: the CPU's practical FMA peak). The header names the CPU, its matrix features
(AMX, AVX-512-BF16, ...), ONEDNN_MAX_CPU_ISA, what precision ``auto`` picks here and why, whether
TensorFlow's oneDNN kernels are on, and the thread settings. On a CPU without bfloat16 matrix
instructions (AVX2 only) TensorFlow emulates bfloat16 and its figures are ~20x below float32's: keep
``--seconds`` short there.

  python benchmarks/model_bench.py [--presets cpu,paper] [--precisions float32,bfloat16] [--seconds 10]
                                   [--batch N] [--mixed_precision] [--jit_compile] [--output FILE]
                                   [--matmul 4096] [--conv 8] [--conv_edge 32]

``--mixed_precision`` is the old switch, kept: it means ``--precisions float16``.
"""

from __future__ import annotations

import json
import pathlib
import sys

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import tensorflow as tf
from absl import app, flags
from tensorflow.python.util import _pywrap_util_port

from cgan_ct import runtime
from cgan_ct.config import FLOAT16, FLOAT32, model_config
from cgan_ct.model.build import build_gan
from cgan_ct.model.gan import ConditionalGAN

HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:  # run as a script it is there already; loaded by path (the tests) it is not
    sys.path.insert(0, HERE)
import peaks  # noqa: E402

_PRESETS = flags.DEFINE_list("presets", ["cpu", "paper"], "Model presets to measure.")
_PRECISIONS = flags.DEFINE_list(
    "precisions",
    ["float32", "bfloat16"],
    f"Precisions to measure each preset in ({', '.join(peaks.PRECISIONS)}; auto: this machine's choice).",
)
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Seconds of timing per figure (after warm-up).")
_BATCH = flags.DEFINE_integer("batch", None, "Batch (default: the preset's global batch).")
_MIXED = flags.DEFINE_bool("mixed_precision", False, "Mixed float16: the same as --precisions float16.")
_XLA = flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the figures as JSON lines (one a preset and precision).")
_MATMUL = flags.DEFINE_integer("matmul", 4096, "Edge of the matmul peak's square matrices.")
_CONV = flags.DEFINE_integer("conv", 8, "Batch of the conv3d peak (64 -> 64 channels).")
_CONV_EDGE = flags.DEFINE_integer("conv_edge", 32, "Edge of the conv3d peak's volume, in voxels.")

# The length of a preset's learning-rate schedule (the cpu preset's cosine needs one): the loops here run for
# a time, not a step count, and the rate a schedule sets does not change what a step costs.
SCHEDULE_STEPS = 1000


def build(preset: str, steps: int, precision: str = FLOAT32, jit_compile: bool = False) -> ConditionalGAN:
    """The preset's compiled GAN as cgan-ct-train builds it, in ``precision`` (never ``auto``), its schedule
    (if any) ``steps`` long."""
    return build_gan(model_config(preset, precision=precision, jit_compile=jit_compile), total_steps=steps)


def measure(preset: str, precision: str, seconds: float) -> dict:
    gan = build(preset, SCHEDULE_STEPS, precision, _XLA.value)
    config = model_config(preset)
    batch = _BATCH.value or config.global_batch_size
    g_flops, step_flops = peaks.step_flops(gan)
    n = config.block_size
    data = tf.random.uniform([batch, n, n, n, 1], -1, 1)
    noise = tf.random.uniform([batch, n, n, n, 1], -1, 1)
    train = peaks.rate(lambda: gan.train_on_batch(data, data), batch, seconds)
    infer_fn = tf.function(lambda: gan.generator([data, noise], training=False), jit_compile=_XLA.value)
    infer = peaks.rate(lambda: infer_fn().numpy(), batch, seconds)
    return {
        "preset": preset,
        "precision": gan.precision.name,
        "batch": batch,
        "params_generator": int(gan.generator.count_params()),
        "params_discriminator": int(gan.discriminator.count_params()),
        "gflop_per_block_generator": g_flops / 1e9,
        "gflop_per_block_train_step": step_flops / 1e9,
        "train_blocks_per_s": train,
        "infer_blocks_per_s": infer,
        "train_gflops": train * step_flops / 1e9,
        "infer_gflops": infer * g_flops / 1e9,
    }


def precisions() -> list[str]:
    """--precisions, or float16 for --mixed_precision (which contradicts any other --precisions)."""
    values = peaks.check_precisions(_PRECISIONS.value)
    if _MIXED.value:
        if flags.FLAGS["precisions"].present and values != [FLOAT16]:
            raise ValueError(f"--mixed_precision means --precisions float16, not {','.join(values)}")
        values = [FLOAT16]
    return values


def _row(r: dict, peak: float, fma: float) -> str:
    return (
        f"{r['preset']:<6} {r['precision']:<8} | train {r['train_blocks_per_s']:8.1f} blocks/s "
        f"{r['train_gflops']:7.1f} GFLOP/s {r['train_gflops'] / peak:5.0%} of {r['precision']} conv3d peak, "
        f"{r['train_gflops'] / fma:4.0%} of matmul | inference {r['infer_blocks_per_s']:8.1f} blocks/s "
        f"{r['infer_gflops']:7.1f} GFLOP/s {r['infer_gflops'] / peak:5.0%} of {r['precision']} conv3d peak, "
        f"{r['infer_gflops'] / fma:4.0%} of matmul"
    )


def main(argv: list[str]) -> None:
    del argv
    try:
        measured = precisions()
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    status = {**runtime.status(), "onednn_in_effect": bool(_pywrap_util_port.IsMklEnabled())}
    machine = peaks.machine()
    devices = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")]
    print(peaks.machine_line(machine))
    print(
        f"oneDNN {'on' if status['onednn_in_effect'] else 'off'} (TF_ENABLE_ONEDNN_OPTS={status['onednn']}); "
        f"threads intra {status['intra_op_threads']}, inter {status['inter_op_threads']}; "
        f"{status['usable_cores']} usable cores; devices {devices}; jit_compile={_XLA.value}"
    )
    conv = {p: peaks.conv_peak_gflops(p, _SECONDS.value, _CONV.value, _CONV_EDGE.value, _XLA.value) for p in measured}
    fma = peaks.matmul_peak_gflops(_SECONDS.value, _MATMUL.value, _XLA.value)
    shape = f"{_CONV.value} x {_CONV_EDGE.value}^3 x 64 -> 64"
    print(
        f"large conv3d ({shape}) peak: {', '.join(f'{p} {g:.1f}' for p, g in conv.items())} GFLOP/s; "
        f"float32 matmul ({_MATMUL.value}^2, FMA) peak: {fma:.1f} GFLOP/s",
        flush=True,
    )
    for preset in _PRESETS.value:
        for i, precision in enumerate(measured):
            r = measure(preset, precision, _SECONDS.value)
            if i == 0:
                print(
                    f"{preset:<6} G {r['params_generator'] / 1e6:.2f} M params, "
                    f"D {r['params_discriminator'] / 1e6:.2f} M; {r['gflop_per_block_generator']:.2f} GFLOP/block "
                    f"forward, {r['gflop_per_block_train_step']:.2f} per train step"
                )
            print(_row(r, conv[precision], fma), flush=True)
            r.update(
                peak_gflops=conv[precision],
                conv_peaks_gflops=conv,
                conv_peak_batch_edge=[_CONV.value, _CONV_EDGE.value],
            )
            r.update(matmul_peak_gflops=fma, jit_compile=_XLA.value, machine=machine, runtime=status, devices=devices)
            if _OUTPUT.value:
                with open(_OUTPUT.value, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    app.run(main)
