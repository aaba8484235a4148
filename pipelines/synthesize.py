"""cgan-ct-synthesize: full-resolution CT volumes of patients who do not exist.

  cgan-ct-synthesize --model_dir CASCADE --output_dir OUT [--count 1] [--seed 0] [--slices N]
                     [--format nifti,dicom] [--overlap 0.25] [--batch 16]

CASCADE is the cascade/ folder of cgan-ct-train-cascade. Volume i is drawn
from seed + i and written to OUT/synthetic_<i>/ as volume.nii.gz and/or a
DICOM series (dicom/) marked as synthetic (image comments, derivation), with new
UIDs and no patient attributes. OUT/synthesis.json records the seeds and the
time per volume.
"""

from __future__ import annotations

import pathlib
import sys
import time

from absl import app, flags

from cgan_ct import write_dicom_series, write_nifti
from cgan_ct.cli.progress import ProgressBar
from cgan_ct.errors import VolumeError
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.synthesis.synthesis import Cascade

_MODEL = flags.DEFINE_string("model_dir", None, "The cascade folder (cgan-ct-train-cascade OUT/cascade).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for the synthetic volumes.")
_COUNT = flags.DEFINE_integer("count", 1, "Number of volumes.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first volume (volume i uses seed + i).")
_SLICES = flags.DEFINE_integer("slices", None, "Slices per volume (default: the training volumes' median).")
_FORMAT = flags.DEFINE_list("format", ["nifti", "dicom"], "Output formats: nifti, dicom.")
_OVERLAP = flags.DEFINE_float("overlap", 0.25, "Fraction of a block shared by neighbouring tiles.")
_BATCH = flags.DEFINE_integer("batch", 16, "Blocks per prediction call.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_MODEL.value and _OUTPUT.value):
        raise app.UsageError("--model_dir and --output_dir are required")
    formats = {f.strip().lower() for f in _FORMAT.value}
    if not formats or formats - {"nifti", "dicom"}:
        raise app.UsageError(f"--format takes nifti and/or dicom, got {_FORMAT.value}")
    if _COUNT.value < 1:
        raise app.UsageError("--count must be >= 1")
    out = pathlib.Path(_OUTPUT.value)
    try:
        cascade = Cascade(_MODEL.value)
        slices = _SLICES.value or int(cascade.info["default_slices"])
        out.mkdir(parents=True, exist_ok=True)
        record = {"cascade_id": cascade.info.get("cascade_id"), "slices": slices, "volumes": []}
        for i in range(_COUNT.value):
            seed = _SEED.value + i
            folder = out / f"synthetic_{i:03d}"
            if folder.exists():
                raise VolumeError(folder, "exists; choose another --output_dir or remove it")
            bar = ProgressBar(0, f"volume {i + 1}/{_COUNT.value}")

            def progress(stage, done, total, bar=bar, i=i):
                bar.label = f"volume {i + 1}/{_COUNT.value} stage {stage + 1}/{cascade.levels}"
                bar.total = total
                bar.update(done)

            start = time.monotonic()
            volume = cascade.synthesize(seed, slices, _OVERLAP.value, _BATCH.value, progress)
            seconds = time.monotonic() - start
            tmp = out / f".tmp-synthetic_{i:03d}"
            tmp.mkdir(exist_ok=True)
            if "nifti" in formats:
                write_nifti(volume, tmp / "volume.nii.gz", overwrite=True)
            if "dicom" in formats:
                write_dicom_series(volume, tmp / "dicom", "cgan-ct synthetic CT", overwrite=True, synthetic=True)
            tmp.rename(folder)
            record["volumes"].append({"folder": folder.name, "seed": seed, "seconds": round(seconds, 2)})
            write_json_atomic(out / "synthesis.json", record)
            print(f"wrote {folder} ({seconds:.1f} s)")
    except (VolumeError, ValueError) as exc:
        print(f"cgan-ct-synthesize: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
