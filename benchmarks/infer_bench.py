"""Whole-scan inference against the model's pure block throughput, in the same run.

Saves an (untrained: throughput does not depend on the weights) generator of a
preset as a SavedModel, then times
- infer_volume on the shared chest series (512 x 512 x 64): condition,
  tiling, batched prediction, stitching, HU conversion;
- the same number of blocks pushed through the same SavedModel from memory
  (the limit: pure block throughput).
The ratio is the stitching and I/O overhead (goal <= 1.2 for the same number
of blocks). Also reports the process's peak RSS growth during the inference.

  python benchmarks/infer_bench.py [--preset cpu] [--overlap 0] [--batch 16] [--condition simulate|as_is]
"""

from __future__ import annotations

import pathlib
import resource
import shutil
import tempfile
import time

import numpy as np
from absl import app, flags

from cgan_ct import read_volume
from cgan_ct.config import model_config
from cgan_ct.constants import DENOISE
from cgan_ct.inference.inference import BlockModel, infer_volume
from cgan_ct.model.export import ModelInfo, save_block_model
from cgan_ct.model.networks import build_generator
from cgan_ct.ops.blocks import sliding_origins
from cgan_ct.ops.intensity import linear_mapping

_CHEST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "lung-pet-ct-dx-A0001"
_SERIES = flags.DEFINE_string("series_dir", str(_CHEST), "The scan to infer.")
_PRESET = flags.DEFINE_string("preset", "cpu", "Model preset.")
_OVERLAP = flags.DEFINE_float("overlap", 0.0, "Tile overlap (0: the paper's tiling).")
_BATCH = flags.DEFINE_integer("batch", 16, "Blocks per prediction call.")
_CONDITION = flags.DEFINE_enum(
    "condition", "simulate", ["simulate", "as_is"], "Simulate the condition, or use the scan."
)


def _rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


def main(argv: list[str]) -> None:
    del argv
    config = model_config(_PRESET.value)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="infer-bench-"))
    try:
        info = ModelInfo(config.block_size, DENOISE, linear_mapping().to_json())
        model = BlockModel(save_block_model(build_generator(config), info, scratch / "model"))
        volume = read_volume(_SERIES.value)
        n, b = volume.shape, config.block_size
        stride = max(1, int(round(b * (1 - _OVERLAP.value))))
        blocks = int(np.prod([len(sliding_origins(max(s, b), b, stride)) for s in n]))
        predict = model.predictor(0)
        batch = np.random.default_rng(0).uniform(-1024, 1500, (_BATCH.value, b, b, b, 1)).astype(np.float32)
        predict(batch)  # warm-up: tracing
        start = time.perf_counter()
        for _ in range(-(-blocks // _BATCH.value)):
            predict(batch)
        pure = time.perf_counter() - start
        rss_before = _rss_mb()
        start = time.perf_counter()
        infer_volume(volume, model, condition_mode=_CONDITION.value, overlap=_OVERLAP.value, batch_size=_BATCH.value)
        whole = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    volume_mb = volume.hu.size * 4 / 2**20
    print(
        f"scan {'x'.join(map(str, n))}, preset {_PRESET.value}, overlap {_OVERLAP.value}, "
        f"condition {_CONDITION.value}: {blocks} blocks"
    )
    print(f"  pure block throughput (limit) {pure:7.2f} s  ({blocks / pure:.0f} blocks/s)")
    print(f"  infer_volume                  {whole:7.2f} s")
    print(f"  ratio = {whole / pure:.2f}  (goal <= 1.2)")
    print(f"  peak RSS growth {peak:.0f} MB = {peak / volume_mb:.1f} float32 volumes")


if __name__ == "__main__":
    app.run(main)
