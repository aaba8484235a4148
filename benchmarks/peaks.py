"""The limits that model_bench.py and step_profile.py measure against, timed in their own run; not a script.

- ``conv_peak_gflops``: a large Conv3D forward pass (64 -> 64 channels, 3^3 kernel, ``edge``^3 voxels, batch
  N) in one precision's compute dtype (float32, bfloat16 or float16: Keras' ``float32``, ``mixed_bfloat16``,
  ``mixed_float16`` policies, the networks' own): the practical convolution peak of that precision;
- ``matmul_peak_gflops``: a large float32 matmul, the practical FMA peak;
- ``machine_line``: the CPU, its matrix features, ``ONEDNN_MAX_CPU_ISA`` and what precision ``auto`` picks here;
- ``step_flops``: FLOPs per block of a GAN's generator forward pass and of its train step, as both count them.

Imported by its neighbours (``import peaks``); runs through their tiny runs (tests/test_benchmarks.py).
"""

from __future__ import annotations

import os
import time

import keras
import tensorflow as tf

from cgan_ct.config import BFLOAT16, FLOAT16, FLOAT32
from cgan_ct.model.networks import conv_flops_per_block
from cgan_ct.model.precision import POLICIES, matrix_features, resolve_precision
from cgan_ct.runtime import cpu_model

# what a benchmark measures in: never "auto" (that is one of these, by the machine: the header says which)
PRECISIONS = (FLOAT32, BFLOAT16, FLOAT16)
CONV_CHANNELS = 64


def check_precisions(values: list[str]) -> list[str]:
    """``values`` without repeats, in order, ``auto`` replaced by what it picks on this machine (float32 on
    CPUs that would emulate bfloat16, where a bfloat16 train step of the paper preset takes many minutes);
    ValueError naming the first that is not in PRECISIONS."""
    values = [resolve_precision("auto").name if value == "auto" else value for value in values]
    for value in values:
        if value not in PRECISIONS:
            raise ValueError(f"--precisions: {value!r} is not one of {', '.join(PRECISIONS)} or auto")
    if not values:
        raise ValueError(f"--precisions: give one or more of {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(values))


def rate(fn, items: int, seconds: float) -> float:
    """``items`` per second over calls of ``fn`` for ``seconds`` (at least one call), after two warm-up calls."""
    fn()
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count == 0:
        fn()
        count += items
    return count / (time.perf_counter() - start)


def conv_flops(batch: int, edge: int) -> int:
    return 2 * batch * edge**3 * 27 * CONV_CHANNELS * CONV_CHANNELS


def conv_peak_gflops(
    precision: str, seconds: float, batch: int = 8, edge: int = 32, jit_compile: bool = False
) -> float:
    """GFLOP/s of a large Conv3D forward pass whose input and compute are in ``precision``."""
    layer = keras.layers.Conv3D(CONV_CHANNELS, 3, padding="same", use_bias=False, dtype=POLICIES[precision])
    # the input already in the compute dtype, as inside the networks: no cast is timed
    x = tf.cast(tf.random.uniform([batch, edge, edge, edge, CONV_CHANNELS]), layer.compute_dtype)
    layer(x)
    step = tf.function(lambda: layer(x), jit_compile=jit_compile)
    return rate(lambda: step().numpy(), 1, seconds) * conv_flops(batch, edge) / 1e9


def matmul_peak_gflops(seconds: float, n: int = 4096, jit_compile: bool = False) -> float:
    """GFLOP/s of a large float32 matmul (the practical FMA peak)."""
    a, b = tf.random.uniform([n, n]), tf.random.uniform([n, n])
    step = tf.function(lambda: tf.matmul(a, b), jit_compile=jit_compile)
    return rate(lambda: step().numpy(), 1, seconds) * 2 * n**3 / 1e9


def step_flops(gan) -> tuple[int, int]:
    """FLOPs per block: the generator's forward pass, and a train step counted as 3 x G + 9 x D (one G forward
    and three D forwards, each backward pass at twice its forward)."""
    g_flops = conv_flops_per_block(gan.generator)
    d_flops = conv_flops_per_block(gan.discriminator)
    return g_flops, 3 * g_flops + 9 * d_flops


def machine() -> dict:
    """The CPU, its matrix features, ONEDNN_MAX_CPU_ISA and what ``auto`` resolves to here (for JSON)."""
    return {
        "cpu": cpu_model(),
        "matrix_features": matrix_features(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "auto_precision": resolve_precision("auto").to_json(),
    }


def machine_line(info: dict) -> str:
    """``machine()`` as the header line."""
    isa = info["onednn_max_cpu_isa"] or "unset (all the CPU has)"
    auto = info["auto_precision"]
    return (
        f"cpu: {info['cpu']}; matrix features: {info['matrix_features']}; ONEDNN_MAX_CPU_ISA={isa}; "
        f"precision auto -> {auto['used']}: {auto['reason']}"
    )
