"""Cost and sensitivity of the memorization check at every shift, on real chest CT.

Volumes from ../shared/data/ct (``--ct_dir``), centre-cropped or padded to 512 x 512 (``--size``; ``fit_plane``):
three training volumes (80-100 slices), one held-out patient (its middle 64 slices, ``--slices``) and one more
patient as the "synthetic" volume (64 slices: a 512 x 512 x 64 synthetic volume, novel by construction). It measures:

1. seconds per synthetic volume against N = 1, 2, 3 training volumes (the search of the synthetic blocks
   alone), against the 120 s target;
2. the shifted-copy experiment: copies of the training volumes shifted 2-8 slices in z and 4-16 voxels in x
   (one mirrored), with 15 HU noise, checked by the old grid check and by ``memorization_report`` (flagged n of m),
   with a positive control;
3. the false-flag rate: the novel patient, checked as "synthetic", must have 0 flagged blocks;
4. the coarse level (every 8th voxel) on the same volumes.

  python benchmarks/memorization_bench.py [--copy_slices 40] [--ct_dir ../shared/data/ct] [--size 512] [--slices 64]
"""

from __future__ import annotations

import pathlib
import resource
import subprocess
import time

import memorization_grid  # benchmarks/memorization_grid.py, beside this script: the grid search, the reference
import numpy as np
from absl import app, flags

from cgan_ct import read_volume
from cgan_ct.realism.memorization_report import (
    COARSE_BLOCK,
    coarse_memorization_report,
    memorization_report,
    positive_control,
)
from cgan_ct.realism.memorization_search import grid_blocks, nearest_at_every_shift
from cgan_ct.synthesis.cascade_training import fit_plane

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct"

_COPY_SLICES = flags.DEFINE_integer("copy_slices", 40, "Slices of each shifted copy.")
_TARGET_S = flags.DEFINE_float("target_s", 120.0, "Seconds per synthetic volume against 3 training volumes.")
_CT = flags.DEFINE_string("ct_dir", str(DATA), "Folder of the real CT series (the names below).")
_SIZE = flags.DEFINE_integer("size", 512, "In-plane size every volume is centre-cropped or padded to.")
_SLICES = flags.DEFINE_integer("slices", 64, "Middle slices of the held-out and the 'synthetic' volume.")
TRAINING = ("covid-ct-md-P001", "covid-ct-md-cap001", "lidc-idri-0001")
HELDOUT = "covid-ct-md-normal001"
NOVEL = "lung-pet-ct-dx-A0001"
SHIFTS = ((2, 0, 4), (5, 0, 11), (8, 0, 16))  # (z, y, x); the second copy is mirrored left-right
AIR_HU = -1024


def _load(name: str, slices: int | None = None) -> np.ndarray:
    hu = fit_plane(read_volume(str(pathlib.Path(_CT.value) / name)).hu, _SIZE.value)
    if slices is not None and hu.shape[0] > slices:
        start = (hu.shape[0] - slices) // 2
        hu = hu[start : start + slices]
    return np.ascontiguousarray(hu)


def _shifted_copy(hu: np.ndarray, shift, slices: int, mirror: bool, seed: int) -> np.ndarray:
    dz, dy, dx = shift
    out = np.full((slices, hu.shape[1], hu.shape[2]), AIR_HU, np.float32)
    out[:, : hu.shape[1] - dy, : hu.shape[2] - dx] = hu[dz : dz + slices, dy:, dx:]
    out = out[:, :, ::-1] if mirror else out
    out += np.random.default_rng(seed).normal(0, 15, out.shape).astype(np.float32)
    return np.rint(out).astype(np.int16)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _scaling(training, novel) -> list[str]:
    queries = grid_blocks([novel], 32, "synthetic")
    rows = [
        "| training volumes | slices | positions searched | wall s | CPU s | wall / target |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in (1, 2, 3):
        found, wall, cpu = _timed(lambda n=n: nearest_at_every_shift(queries, training[:n]))
        slices = "+".join(str(t.shape[0]) for t in training[:n])
        rows.append(f"| {n} | {slices} | {found.positions:,} | {wall:.1f} | {cpu:.1f} | {wall / _TARGET_S.value:.2f} |")
    shape = " x ".join(str(n) for n in novel.shape[::-1])
    rows.append(f"\n{len(queries)} synthetic blocks (32^3) of one {shape} volume, mirrors: none and left-right.")
    return rows


def _sensitivity(training, heldout, novel) -> list[str]:
    copies = [
        _shifted_copy(t, s, _COPY_SLICES.value, mirror=k == 1, seed=k)
        for k, (t, s) in enumerate(zip(training, SHIFTS, strict=True))
    ]
    old = memorization_grid.memorization_check(
        memorization_grid.blocks_from_volumes(copies),
        memorization_grid.blocks_from_volumes(training),
        memorization_grid.blocks_from_volumes([heldout]),
    )
    control = positive_control(training, seed=0)
    report, wall, cpu = _timed(lambda: memorization_report([novel, *copies], training, [heldout], control=[control]))
    control_result = report.control[0]
    per_volume = np.bincount([f.synthetic_volume for f in report.flagged], minlength=len(copies) + 1)
    counts = np.bincount(grid_blocks([novel, *copies], 32, "synthetic").volume_index, minlength=len(copies) + 1)
    lines = [
        "| query | blocks | grid check (before) | every shift (now) |",
        "|---|---:|---:|---:|",
        f"| shifted copies {SHIFTS} (2nd mirrored), 15 HU noise | {counts[1:].sum()} | {len(old.flagged)} "
        f"| {per_volume[1:].sum()} |",
        f"| held-out patient as 'synthetic' (false flags) | {counts[0]} | - | {per_volume[0]} |",
        f"| positive control (offset 3, 5, 7, mirrored) | {control_result.blocks} | - | {control_result.flagged} |",
        "",
        f"Full report: {wall:.1f} s wall, {cpu:.1f} s CPU, {report.search.positions:,} positions, threshold "
        f"{report.threshold:.4f} ({report.threshold * 1024:.0f} HU).",
        "",
        report.markdown(max_rows=5),
    ]
    return lines


def _coarse(training, heldout, novel) -> list[str]:
    control = positive_control(training, seed=0, offset=(3, 5, 7), block=COARSE_BLOCK, grid=8)
    report, wall, cpu = _timed(lambda: coarse_memorization_report([novel], training, [heldout], control=[control]))
    return [
        f"Coarse level (every 8th voxel, blocks {COARSE_BLOCK}): {wall:.1f} s wall, {cpu:.1f} s CPU, "
        f"{report.search.positions:,} positions; novel patient flagged {len(report.flagged)} of "
        f"{report.synthetic_distance.size}; control flagged {report.control[0].flagged} of {report.control[0].blocks}.",
    ]


def main(argv) -> None:
    del argv
    if not pathlib.Path(_CT.value).is_dir():
        raise SystemExit(f"real CT sample not found at {_CT.value}")
    cpu_model = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    training = [_load(name) for name in TRAINING]
    heldout, novel = _load(HELDOUT, _SLICES.value), _load(NOVEL, _SLICES.value)
    print(f"# Memorization check at every shift\n\n{cpu_model}\n")
    sections = (
        lambda: _scaling(training, novel),
        lambda: _sensitivity(training, heldout, novel),
        lambda: _coarse(training, heldout, novel),
    )
    for section in sections:  # each printed as it is done
        print("\n".join(section()) + "\n", flush=True)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"Peak resident memory of the process: {peak_gib:.2f} GiB.")


if __name__ == "__main__":
    app.run(main)
