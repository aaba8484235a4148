"""Numeric precision of the networks: float32, bfloat16 or float16, or ``auto`` (by the hardware).

``bfloat16`` and ``float16`` are Keras' mixed policies (``mixed_bfloat16``, ``mixed_float16``): the
convolutions compute in 16 bits while the variables, the losses, the generator's output layer, its
residual sum and everything in HU stay float32 (cgan_ct.model.networks builds those layers float32).
Loss scaling is for float16 only: bfloat16 has float32's exponent range.

``auto`` picks bfloat16 where the hardware multiplies bfloat16 matrices fast and float32 elsewhere:

- a GPU of compute capability >= 8.0 (Ampere and later: bfloat16 tensor cores): bfloat16;
- a CPU with AMX-BF16 (Intel Sapphire Rapids and later), which oneDNN may use: bfloat16
  (measured 2.1-4.6x float32 for conv3d, 1.3-2.4x for a train step: BUILD_NOTES.md, "Precision");
- anything else, AVX-512-BF16 without AMX included (AMD Zen 4, Cooper Lake: not measured faster here;
  ``--precision bfloat16`` and benchmarks/model_bench.py tell on such a machine): float32. On AVX2
  alone TensorFlow's bfloat16 conv3d runs ~20x slower than float32 (measured: BUILD_NOTES.md).

``ONEDNN_MAX_CPU_ISA`` below AMX (e.g. ``AVX512_CORE``, ``AVX2``) keeps oneDNN off AMX, so ``auto`` then
counts the CPU as one without it. Imports neither TensorFlow nor JAX until a GPU has to be looked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib

from cgan_ct.config import AUTO, BFLOAT16, FLOAT16, FLOAT32, PRECISIONS

POLICIES = {FLOAT32: "float32", BFLOAT16: "mixed_bfloat16", FLOAT16: "mixed_float16"}
# CPU flags (as /proc/cpuinfo names them) that decide or explain the choice, in the order they are named
MATRIX_FLAGS = ("amx_tile", "amx_bf16", "amx_fp16", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")
# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) that still allow AMX; any other value keeps oneDNN off it
_AMX_ISAS = {"ALL", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16"}


@dataclasses.dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` (float32, bfloat16, float16), what was asked and why this."""

    name: str
    requested: str
    reason: str

    @property
    def policy(self) -> str:
        """The Keras dtype policy the networks are built with."""
        return POLICIES[self.name]

    @property
    def loss_scaling(self) -> bool:
        return self.name == FLOAT16

    def describe(self) -> str:
        asked = "" if self.requested == self.name else f" (asked: {self.requested})"
        return f"precision {self.name}{asked}: {self.reason}"

    def to_json(self) -> dict:
        return {"used": self.name, "requested": self.requested, "reason": self.reason}


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Keras' global dtype policy set to ``policy`` while the block runs, restored after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_precision(value: str, name: str = "precision") -> str:
    if value not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")
    return value


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s first ``flags`` line; empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def usable_cpu_flags(flags: frozenset[str] | None = None, environ=None) -> frozenset[str]:
    """``flags`` (default: this CPU's) less what ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN from using."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    cap = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper() or "ALL"
    if cap not in _AMX_ISAS:
        flags = frozenset(f for f in flags if not f.startswith("amx"))
        if not cap.startswith(("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10")):
            flags = flags - {"avx512_bf16", "avx512_fp16"}
    return flags


def matrix_features(flags: frozenset[str] | None = None) -> str:
    """The CPU's matrix-relevant flags as one line, e.g. ``amx_tile amx_bf16 avx512_bf16 avx512f avx2``."""
    flags = cpu_flags() if flags is None else flags
    named = [f for f in MATRIX_FLAGS if f in flags]
    return " ".join(named) or "none of " + ", ".join(MATRIX_FLAGS)


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each visible GPU, by the Keras backend in use ([] on CPUs)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        out = []
        for device in jax.devices():
            if device.platform == "gpu":
                major, _, minor = str(getattr(device, "compute_capability", "0.0")).partition(".")
                out.append((int(major or 0), int(minor or 0)))
        return out
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
        out.append(tuple(int(c) for c in capability))
    return out


def resolve_precision(
    requested: str, flags: frozenset[str] | None = None, gpus: list[tuple[int, int]] | None = None, environ=None
) -> Precision:
    """``requested`` as a Precision; ``auto`` by the hardware (``flags`` and ``gpus`` default to this machine's)."""
    check_precision(requested)
    if requested != AUTO:
        return Precision(requested, requested, "asked for")
    gpus = gpu_compute_capabilities() if gpus is None else gpus
    if gpus:
        lowest = min(gpus)
        cc = f"{lowest[0]}.{lowest[1]}"
        if lowest >= (8, 0):
            return Precision(BFLOAT16, AUTO, f"GPU compute capability {cc} >= 8.0 has bfloat16 tensor cores")
        return Precision(FLOAT32, AUTO, f"GPU compute capability {cc} < 8.0 has no bfloat16 tensor cores")
    flags = usable_cpu_flags(flags, environ)
    if "amx_bf16" in flags:
        return Precision(BFLOAT16, AUTO, "the CPU has AMX-BF16 (bfloat16 matrix units)")
    if "avx512_bf16" in flags:
        return Precision(FLOAT32, AUTO, "the CPU has AVX512-BF16 but no AMX: bfloat16 not measured faster")
    return Precision(FLOAT32, AUTO, "the CPU has no bfloat16 matrix instructions (bfloat16 would be emulated)")


# Inference in bfloat16 against float32 on real scans (experiments/precision_hu.py; BUILD_NOTES.md, "Precision"):
# whether it met the goal of mean |difference| <= 0.5 HU and max <= 5 HU inside the body. ``auto`` serves
# in bfloat16 only if it did; an explicit --precision bfloat16 is always honoured.
INFERENCE_BFLOAT16_MEETS_GOAL = False


def resolve_inference_precision(requested: str, **hardware) -> Precision:
    """As ``resolve_precision`` for the generator at inference, where ``auto`` keeps float32 unless
    bfloat16 inference met its HU goal (INFERENCE_BFLOAT16_MEETS_GOAL)."""
    chosen = resolve_precision(requested, **hardware)
    if requested == AUTO and chosen.name == BFLOAT16 and not INFERENCE_BFLOAT16_MEETS_GOAL:
        reason = f"{chosen.reason}, but bfloat16 inference missed its HU goal against float32 (BUILD_NOTES.md)"
        return Precision(FLOAT32, AUTO, reason)
    return chosen
