"""Seconds per synthetic volume and peak memory of the cascade, for several slice counts.

Builds a cascade of untrained models of a preset (time and memory do not
depend on the weights): a coarse generator and ``levels`` depixelation
stages, as cgan-ct-train-cascade would save them. Then, per slice count, in a
fresh process:
- synthesizes one size x size x slices volume (Cascade.synthesize: coarse
  draw, block-wise streamed refinement, int16 result), timing it;
- samples the process's RSS every 10 ms: the peak above the RSS after the
  models were loaded and warmed up is the synthesis's working memory (the
  int16 result, 2 bytes a voxel, is part of it and reported apart);
- pushes the same number of blocks through the finest stage's SavedModel from
  memory: the limit. Ratio = (blocks / synthesis seconds) / limit throughput.
On a GPU it also reports TensorFlow's peak GPU memory.

  python benchmarks/synthesis_bench.py [--preset cpu] [--levels 3] [--size 512] [--slices 64,128]
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
from absl import app, flags

_PRESET = flags.DEFINE_string("preset", "cpu", "Model preset of the stages and of the coarse generator.")
_LEVELS = flags.DEFINE_integer("levels", 3, "x2 stages.")
_SIZE = flags.DEFINE_integer("size", 512, "In-plane size of the volumes.")
_SLICES = flags.DEFINE_list("slices", ["64", "128"], "Slice counts to measure.")
_BATCH = flags.DEFINE_integer("batch", 16, "Blocks per prediction call.")
_OVERLAP = flags.DEFINE_float("overlap", 0.25, "Tile overlap.")
_OUTPUT = flags.DEFINE_string("output", None, "Append one JSON line per slice count to this file.")
_CHILD = flags.DEFINE_string("child", None, "(internal) measure this cascade folder in this process.")


def build_cascade(folder: pathlib.Path, preset: str, levels: int, size: int) -> None:
    from cgan_ct.config import coarse_config, model_config
    from cgan_ct.constants import DEPIXELATE
    from cgan_ct.model.export import ModelInfo, save_block_model
    from cgan_ct.model.networks import build_generator
    from cgan_ct.ops.intensity import linear_mapping
    from cgan_ct.synthesis.cascade_spec import CascadeSpec
    from cgan_ct.synthesis.coarse_export import save_coarse_model
    from cgan_ct.synthesis.coarse_networks import build_coarse_generator

    mapping = linear_mapping()
    config = model_config(preset)
    names = []
    for level in range(levels):
        info = ModelInfo(config.block_size, DEPIXELATE, mapping.to_json(), model=dataclasses.asdict(config))
        save_block_model(build_generator(config), info, folder / f"stage{level}")
        names.append(f"stage{level}")
    coarse = coarse_config(preset, size=size // 2**levels)
    save_coarse_model(build_coarse_generator(coarse), mapping, coarse, folder / "coarse")
    CascadeSpec(levels, size, (2.5, 0.8, 0.8), 64, coarse="coarse", stages=tuple(names[::-1])).save(folder)


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` since ``reset``."""

    def __init__(self):
        self.process, self.peak, self._stop = psutil.Process(), 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def reset(self) -> int:
        time.sleep(0.05)
        self.peak = self.process.memory_info().rss
        return self.peak

    def stop(self) -> int:
        self._stop = True
        self.thread.join()
        return self.peak


def measure(folder: str, slices: int, batch: int, overlap: float) -> dict:
    import tensorflow as tf

    from cgan_ct.synthesis.synthesis import Cascade

    gpus = tf.config.list_physical_devices("GPU")
    cascade = Cascade(folder)
    cascade.synthesize(1, 8, overlap, batch)  # warm-up: every signature has run once
    rss = PeakRss()
    baseline = rss.reset()
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    start = time.monotonic()
    volume = cascade.synthesize(0, slices, overlap, batch)
    seconds = time.monotonic() - start
    peak = rss.stop()
    gpu_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpus else None
    total_blocks = _count_blocks(cascade, slices, overlap)
    finest = cascade.stages[-1]
    predict = finest.predictor(0)
    n = finest.block_size
    data = np.random.default_rng(0).uniform(-1000, 500, (batch, n, n, n, 1)).astype(np.float32)
    predict(data)
    calls = max(2, min(total_blocks // batch, 200))
    start = time.monotonic()
    for _ in range(calls):
        predict(data)
    limit = calls * batch / (time.monotonic() - start)
    return {
        "slices": slices,
        "shape": list(volume.shape),
        "device": "GPU" if gpus else "CPU",
        "seconds_per_volume": round(seconds, 2),
        "blocks": total_blocks,
        "blocks_per_s": round(total_blocks / seconds, 1),
        "limit_blocks_per_s": round(limit, 1),
        "ratio_to_limit": round(total_blocks / seconds / limit, 3),
        "peak_rss_growth_mb": round((peak - baseline) / 2**20, 1),
        "int16_result_mb": round(volume.hu.nbytes / 2**20, 1),
        "peak_gpu_memory_mb": None if gpu_peak is None else round(gpu_peak / 2**20, 1),
    }


def _count_blocks(cascade, slices: int, overlap: float) -> int:
    from cgan_ct.ops.blocks import sliding_origins

    total = 0
    for (depth, height, width), stage in zip(cascade.level_shapes(slices), cascade.stages, strict=True):
        n = stage.block_size
        stride = max(1, int(round(n * (1 - overlap))))
        counts = [len(sliding_origins(max(length, n), n, stride)) for length in (depth, height, width)]
        total += int(np.prod(counts))
    return total


def main(argv):
    del argv
    if _CHILD.value:
        print("RESULT " + json.dumps(measure(_CHILD.value, int(_SLICES.value[0]), _BATCH.value, _OVERLAP.value)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "cascade"
        build_cascade(folder, _PRESET.value, _LEVELS.value, _SIZE.value)
        for slices in _SLICES.value:
            command = [sys.executable, __file__, "--child", str(folder), "--slices", slices]
            command += ["--batch", str(_BATCH.value), "--overlap", str(_OVERLAP.value)]
            result = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
            if result.returncode or not lines:
                print(result.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"measuring {slices} slices failed")
            figures = {"preset": _PRESET.value, "levels": _LEVELS.value, **json.loads(lines[0][7:])}
            print(json.dumps(figures))
            if _OUTPUT.value:
                with open(_OUTPUT.value, "a") as f:
                    f.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    app.run(main)
