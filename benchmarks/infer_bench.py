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

With ``--archive N`` (issue 34) it times cgan-ct-infer itself, as a user runs it, on N shared series (their
central ``--slices`` slices, as NIfTI files; 0: whole scans): N single-scan processes (the limit: each pays
Python's and TensorFlow's start and the model's load), one process over the N scans (the archive run),
and the same as an Apache Beam pipeline on the DirectRunner. It prints scans per hour of each, the archive
run's speed-up over the N processes (goal >= 1.3 on 5 scans) and Beam's time over the local loop's.

  python benchmarks/infer_bench.py --archive 5 [--slices 16] [--model pretrained:denoise] [--ct_dir DIR]
"""

from __future__ import annotations

import pathlib
import resource
import shutil
import subprocess
import sys
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

_REPO = pathlib.Path(__file__).resolve().parents[1]
_CT_DIR = _REPO.parent / "shared" / "data" / "ct"
_CHEST = _CT_DIR / "lung-pet-ct-dx-A0001"
_SERIES = flags.DEFINE_string("series_dir", str(_CHEST), "The scan to infer.")
_PRESET = flags.DEFINE_string("preset", "cpu", "Model preset.")
_OVERLAP = flags.DEFINE_float("overlap", 0.0, "Tile overlap (0: the paper's tiling).")
_BATCH = flags.DEFINE_integer("batch", 16, "Blocks per prediction call.")
_CONDITION = flags.DEFINE_enum(
    "condition", "simulate", ["simulate", "as_is"], "Simulate the condition, or use the scan."
)
_ARCHIVE = flags.DEFINE_integer("archive", 0, "Time cgan-ct-infer over this many shared series (0: the block bench).")
_SLICES = flags.DEFINE_integer("slices", 16, "With --archive: central slices of each series (0: whole scans).")
_MODEL = flags.DEFINE_string("model", "pretrained:denoise", "With --archive: the model cgan-ct-infer runs.")
_CT = flags.DEFINE_string("ct_dir", str(_CT_DIR), "With --archive: the folder of shared series.")
_BEAM = flags.DEFINE_bool("beam", True, "With --archive: also time --engine beam (DirectRunner).")


def _rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20


def _archive_inputs(folder: pathlib.Path) -> list[pathlib.Path]:
    """The first --archive DICOM series of --ct_dir (by name), their central --slices slices as NIfTI files."""
    from cgan_ct.io.image_files import write_nifti

    series = sorted(p for p in pathlib.Path(_CT.value).iterdir() if p.is_dir() and any(p.glob("*.dcm")))
    if len(series) < _ARCHIVE.value:
        raise SystemExit(f"{_CT.value} holds {len(series)} DICOM series, fewer than --archive {_ARCHIVE.value}")
    folder.mkdir(parents=True)
    paths = []
    for i, path in enumerate(series[: _ARCHIVE.value]):
        volume = read_volume(path)
        if _SLICES.value:
            start = max(0, (volume.shape[0] - _SLICES.value) // 2)
            volume = volume.replace(hu=volume.hu[start : start + _SLICES.value])
        paths.append(write_nifti(volume, folder / f"scan{i}.nii.gz"))
    return paths


def _infer_seconds(inputs: list[pathlib.Path], out: pathlib.Path, *extra: str) -> float:
    """Wall time of one cgan-ct-infer process over ``inputs`` (start, model load and all)."""
    command = [sys.executable, "-m", "pipelines.infer", "--model", _MODEL.value, "--output_dir", str(out)]
    command += [f"--input={p}" for p in inputs] + ["--format", "nifti", "--batch", str(_BATCH.value), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=_REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cgan-ct-infer failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def archive_bench() -> None:
    """N single-scan processes against one archive process (and Beam), as a user runs cgan-ct-infer."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="infer-archive-bench-"))
    try:
        inputs = _archive_inputs(scratch / "inputs")
        n = len(inputs)
        single = sum(_infer_seconds([p], scratch / f"single{i}") for i, p in enumerate(inputs))
        local = _infer_seconds(inputs, scratch / "archive")
        beam = (
            _infer_seconds(inputs, scratch / "beam", "--engine", "beam", "--", "--direct_num_workers=1")
            if _BEAM.value
            else None
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    size = f"central {_SLICES.value} slices" if _SLICES.value else "whole scans"
    print(f"{n} shared series ({size}), model {_MODEL.value}, batch {_BATCH.value}")
    print(f"  {n} single-scan processes (limit) {single:7.1f} s  ({3600 * n / single:.0f} scans/hour)")
    print(f"  one archive process            {local:7.1f} s  ({3600 * n / local:.0f} scans/hour)")
    print(f"  speed-up = {single / local:.2f}  (goal >= 1.3 on 5 scans)")
    print(f"  per-scan start and load saved  {(single - local) / max(n - 1, 1):7.1f} s")
    if beam is not None:
        print(f"  Beam DirectRunner              {beam:7.1f} s  ({3600 * n / beam:.0f} scans/hour)")
        print(f"  beam / local = {beam / local:.2f}")


def main(argv: list[str]) -> None:
    del argv
    if _ARCHIVE.value:
        archive_bench()
        return
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
