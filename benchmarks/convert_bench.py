"""Conversion of one series against reading it alone (the practical limit).

Times, in one process, ``convert`` of the series into a fresh dataset folder
(discovery, reading, tiling with margins, encoding, writing and fsyncing the
shard, histogram, manifest) against two limits measured in the same run:

- read: ``read_volume`` of the series alone (conversion must at least read it);
- read + write: that, plus writing and fsyncing as many bytes as the
  conversion writes (with a margin, a block is stored with its neighbours, so
  the output is (1 + 2 * margin / block)^3 times the volume: 3.4x at 8 / 32).

Reports medians and both ratios. With ``--lowdose`` it also times the
conversion that simulates the lowdose condition (``--condition lowdose``: a
projection-domain simulation of every slice, threads on every core) against
the plain conversion in the same run (issue 17's goal: <= 3x).

  python benchmarks/convert_bench.py [--series_dir DIR] [--repeats 5] [--margin 8] [--lowdose]
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import statistics
import tempfile
import time

from absl import app, flags

from cgan_ct import read_volume
from cgan_ct.config import ConversionConfig
from cgan_ct.data.conversion import convert

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "lung-pet-ct-dx-A0001"
_SERIES_DIR = flags.DEFINE_string("series_dir", str(_DEFAULT), "A folder holding one DICOM series.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs of each (after one warm-up).")
_MARGIN = flags.DEFINE_integer("margin", 8, "Margin of the stored blocks.")
_LOWDOSE = flags.DEFINE_bool("lowdose", False, "Also time conversion with the simulated lowdose condition.")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    series = pathlib.Path(_SERIES_DIR.value)
    config = ConversionConfig(margin=_MARGIN.value)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="convert-bench-"))

    def run_convert(config=config):
        out = scratch / "ds"
        shutil.rmtree(out, ignore_errors=True)
        report = convert([series], out, config, workers=1)
        assert report.complete
        return report

    try:
        report = run_convert()  # warm-up: file cache, imports
        read_volume(series)
        size = sum(s.bytes for s in report.manifest.splits["train"].shards)
        payload = bytes(size)

        def read_and_write():
            read_volume(series)
            with open(scratch / "raw", "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())

        reads = [_time(lambda: read_volume(series)) for _ in range(_REPEATS.value)]
        read_writes = [_time(read_and_write) for _ in range(_REPEATS.value)]
        converts = [_time(run_convert) for _ in range(_REPEATS.value)]
        lowdose_config = dataclasses.replace(config, condition="lowdose")
        lowdoses = [_time(lambda: run_convert(lowdose_config)) for _ in range(_REPEATS.value if _LOWDOSE.value else 0)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    m = report.manifest
    size_mb = sum(s.bytes for s in m.splits["train"].shards) / 2**20
    read_s, convert_s = statistics.median(reads), statistics.median(converts)
    read_write_s = statistics.median(read_writes)
    print(f"series: {series}; {m.counts['blocks']} blocks of {m.block_size}^3 + margin {m.margin}")
    print(f"  written: {size_mb:.0f} MB; median of {_REPEATS.value} runs")
    print(f"  read_volume alone (limit) {read_s:8.3f} s")
    print(f"  read + write same bytes   {read_write_s:8.3f} s")
    print(f"  convert                   {convert_s:8.3f} s   ({size_mb / convert_s:.0f} MB/s written)")
    print(f"  ratio convert / read         = {convert_s / read_s:.2f}  (issue goal <= 1.5)")
    print(f"  ratio convert / read + write = {convert_s / read_write_s:.2f}")
    if lowdoses:
        lowdose_s = statistics.median(lowdoses)
        slices = m.volumes[0].shape_zyx[0]
        print(
            f"  convert --condition lowdose {lowdose_s:8.3f} s   "
            f"({lowdose_s / slices * 1000:.0f} ms a slice, {os.cpu_count()} cores)"
        )
        print(f"  ratio lowdose / convert      = {lowdose_s / convert_s:.2f}  (issue goal <= 3)")


if __name__ == "__main__":
    app.run(main)
