"""serving_default of a block model as TF Serving runs it, beside the same model through tf.saved_model.load.

TF Serving's C++ server loads a SavedModel into a TF1 session (the graph's
restore op, signatures fed by name); cgan-ct's own inference loads it with
tf.saved_model.load (the TF2 object graph). This times serving_default both
ways, in the same process, on the same HU blocks, at each batch size: blocks/s
from the median of ``--repeats`` calls after one warm-up call each, and the
session path as a ratio of the tf.saved_model.load path (the limit measured in
the same run). Prints the CPU model, its matrix features and the thread
settings in force, as every figure here depends on them.

  python benchmarks/serving_bench.py [--model pretrained:denoise] [--batches 1,8,64] [--repeats 5]
"""

from __future__ import annotations

import os
import pathlib
import statistics
import time

import numpy as np
from absl import app, flags

from cgan_ct import runtime
from cgan_ct.constants import SERVING_SIGNATURE
from cgan_ct.model import pretrained
from cgan_ct.model.export import ModelInfo, resolve_model_dir
from cgan_ct.model.session_loader import SessionModel

_MODEL = flags.DEFINE_string("model", "pretrained:denoise", "An exported block model, or pretrained:NAME.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8", "64"], "Blocks per call, comma-separated.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per batch size and path (after one warm-up call).")

# CPU flags (as /proc/cpuinfo names them) of the matrix and low-precision dot-product units oneDNN can use.
MATRIX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni")


def matrix_features() -> list[str]:
    """The CPU's matrix features among MATRIX_FLAGS, in that order; [] where /proc/cpuinfo is absent."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    present = set(flags_line.split(":", 1)[-1].split())
    return [name for name in MATRIX_FLAGS if name in present]


def _median_seconds(call, repeats: int) -> float:
    call()  # warm-up: the first call builds kernels (and, for tf.function, traces)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    model_dir, _ = resolve_model_dir(pretrained.resolve(_MODEL.value))
    n = ModelInfo.load(model_dir).block_size
    batches = [int(b) for b in _BATCHES.value]
    status = runtime.status()
    features = matrix_features()
    amx = "yes" if any(f.startswith("amx") for f in features) else "no"
    print(f"serving_default of {_MODEL.value} (block {n}^3), median of {_REPEATS.value} calls after a warm-up")
    print(f"CPU: {status['cpu']}; matrix features: {' '.join(features) or 'none'} (AMX: {amx})")
    print(f"threads: intra-op {status['intra_op_threads']}, inter-op {status['inter_op_threads']}; "
          f"oneDNN {status['onednn']}; usable cores {status['usable_cores']}; "
          f"load average {os.getloadavg()[0]:.1f} (other processes share these cores)")  # fmt: skip
    serve_tf2 = tf.saved_model.load(str(model_dir)).signatures[SERVING_SIGNATURE]
    rng = np.random.default_rng(0)
    with SessionModel(model_dir) as session:
        for batch in batches:
            blocks = rng.uniform(-1024, 1500, (batch, n, n, n, 1)).astype(np.float32)
            tensor = tf.constant(blocks)
            tf1_s = _median_seconds(lambda b=blocks: session.run(SERVING_SIGNATURE, blocks_hu=b), _REPEATS.value)
            tf2_s = _median_seconds(lambda t=tensor: serve_tf2(blocks_hu=t)["blocks_hu"].numpy(), _REPEATS.value)
            print(
                f"batch {batch:3d}  session loader {batch / tf1_s:8.1f} blocks/s   "
                f"tf.saved_model.load {batch / tf2_s:8.1f} blocks/s   ratio {tf2_s / tf1_s:.2f}"
            )


if __name__ == "__main__":
    app.run(main)
