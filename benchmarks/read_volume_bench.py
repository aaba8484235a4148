"""Reading a DICOM series with read_volume against pydicom alone (the practical limit).

The limit: pydicom reads and decodes every file of the series to a numpy
array, nothing more. read_volume does that too, plus sorting, validation,
rescale to HU, pseudonyms and orientation. Each variant runs in a fresh
process, several times; we report the median seconds and the peak resident
memory above the process's baseline after imports, and their ratios.

  python benchmarks/read_volume_bench.py [--series_dir DIR] [--repeats 5]
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys

from absl import app, flags

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "lung-pet-ct-dx-A0001"
_SERIES_DIR = flags.DEFINE_string("series_dir", str(_DEFAULT), "A folder holding one DICOM series.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Runs of each variant (fresh process each).")
_MEMORY_RESOLUTION_MB = 1.0  # below it the memory ratio is not printed: it would divide by (nearly) zero

# Runs in a child process: prints {"seconds": ..., "peak_mb": ...}.
_CHILD = r"""
import json, pathlib, resource, sys, time
import numpy as np, pydicom
import cgan_ct
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
variant, folder = sys.argv[1], pathlib.Path(sys.argv[2])
base = rss_mb()
start = time.perf_counter()
if variant == "pydicom":
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    arrays = [pydicom.dcmread(p).pixel_array for p in files]
    volume = np.stack(arrays)
else:
    volume = cgan_ct.read_volume(folder).hu
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak - base, "voxels": int(volume.size)}))
"""


def _run(variant: str, folder: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, variant, folder], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    folder = _SERIES_DIR.value
    if not pathlib.Path(folder).is_dir():
        raise app.UsageError(f"{folder}: not a folder (give --series_dir)")
    runs = {v: [_run(v, folder) for _ in range(_REPEATS.value)] for v in ("pydicom", "read_volume")}
    seconds = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
    peak = {v: statistics.median(r["peak_mb"] for r in rs) for v, rs in runs.items()}
    voxels = runs["read_volume"][0]["voxels"]
    print(f"series: {folder} ({voxels / 1e6:.1f} M voxels), median of {_REPEATS.value} fresh processes")
    print(f"{'variant':<28}{'seconds':>10}{'peak MB':>10}")
    print(f"{'pydicom read+decode (limit)':<28}{seconds['pydicom']:>10.3f}{peak['pydicom']:>10.1f}")
    print(f"{'cgan_ct.read_volume':<28}{seconds['read_volume']:>10.3f}{peak['read_volume']:>10.1f}")
    print(f"ratio time   read_volume / limit = {seconds['read_volume'] / seconds['pydicom']:.2f}")
    if peak["pydicom"] >= _MEMORY_RESOLUTION_MB:
        print(f"ratio memory read_volume / limit = {peak['read_volume'] / peak['pydicom']:.2f}")
    else:  # the peak is the process's lifetime maximum: a small series' read can stay under what imports reached
        print(
            f"ratio memory read_volume / limit = n/a (the limit's peak above the baseline is "
            f"{peak['pydicom']:.1f} MB, under {_MEMORY_RESOLUTION_MB} MB: too small a series to measure)"
        )


if __name__ == "__main__":
    app.run(main)
