"""cgan-ct-convert: CT volumes -> sharded TFRecords of blocks with a manifest.

  cgan-ct-convert --input PATH [--input PATH ...] --output_dir DIR
                  [--block_size 32] [--margin 8] [--test_fraction 0.2] [--seed 0]
                  [--workers N] [--overwrite] [--preset paper|cpu|smoke] ...
                  [--condition lowdose [--dose 0.25] | --condition_input LOW_DOSE_PATH ...]
                  [--patients FILE.csv] [--nonfinite error|air] [--salt_file KEY_FILE]

Each PATH is a DICOM folder, a volume file or a root folder holding many.
With --engine beam the same conversion runs as an Apache Beam pipeline
(pip install 'cgan-ct[beam]'); Beam options follow a lone --, e.g.
  cgan-ct-convert --engine beam --input ... --output_dir ... -- --runner=DataflowRunner ...
--patients names the patient of each volume file (CSV rows: file,patient), so
that two scans of one patient never land in both splits; DICOM series carry
their PatientID. Exit status: 0 when every input converted, 1 when some were
skipped (the dataset is still written; the reasons are listed), 2 on an error
(nothing converted: each input is named with the reason; nothing is left in
the output folder that a rerun would need --overwrite for).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

from absl import app, flags

from cgan_ct.cli import job
from cgan_ct.config import LowDoseConfig, conversion_config
from cgan_ct.errors import InputError

# The conversion library is imported by _run_beam and _run_local, not here: --help and --version stay fast.

_INPUT = flags.DEFINE_multi_string("input", None, "DICOM folder, volume file or root folder (repeatable).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Dataset folder to write.")
_PRESET = flags.DEFINE_string("preset", "paper", "Configuration preset: paper, cpu or smoke.")
_BLOCK = flags.DEFINE_integer("block_size", None, "Block edge in voxels (default 32).")
_MARGIN = flags.DEFINE_integer("margin", None, "Context voxels stored on each side of a block (default 8).")
_TEST = flags.DEFINE_float("test_fraction", None, "Fraction of patients in the test split (default 0.2).")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the patient split (default 0).")
_SHARD_MB = flags.DEFINE_float("shard_mb", None, "Target shard size in MB (default 150).")
_SPACING = flags.DEFINE_list("spacing_mm", None, "Resample volumes to z,y,x mm (default: native).")
_BODY = flags.DEFINE_bool("drop_outside_body", None, "Drop blocks entirely outside the body.")
_INTENSITY = flags.DEFINE_enum("intensity", None, ["equalize", "linear"], "Intensity mapping to record.")
_UNET_DEPTH = flags.DEFINE_integer("unet_depth", None, "Generator down-sampling levels (block must divide).")
_WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard what the output folder holds and redo.")
_ENGINE = flags.DEFINE_enum("engine", "local", ["local", "beam"], "Run locally, or as an Apache Beam pipeline.")
_CONDITION = flags.DEFINE_enum(
    "condition", None, ["lowdose"], "Store a paired condition with each block: lowdose (simulated; --task lowdose)."
)
_CONDITION_INPUT = flags.DEFINE_multi_string(
    "condition_input", None, "The same patients' low-dose series (repeatable): stored paired with --input's."
)
_DOSE = flags.DEFINE_float("dose", None, "lowdose: simulated dose, a fraction of the scan's (default 0.25).")
_I0 = flags.DEFINE_float(
    "i0", None, "lowdose: photons per ray and view at full dose (default: calibrated on each scan's own noise)."
)
_ELECTRONIC = flags.DEFINE_float("electronic_variance", None, "lowdose: electronic noise variance (default 10).")
_VIEWS = flags.DEFINE_integer("views", None, "lowdose: projection angles over 180 degrees (default 360).")
job.define_salt_file()  # --salt_file, read by job.salt_from_flags()
_PATIENTS = flags.DEFINE_string(
    "patients", None, "CSV of file,patient rows: the patient of each volume file (NIfTI...), to split by patient."
)
_NONFINITE = flags.DEFINE_enum(
    "nonfinite", "error", ["error", "air"], "NaN / infinite voxels: skip the volume (error) or set them to air."
)


def _lowdose():
    base = LowDoseConfig()
    given = {"dose": _DOSE.value, "i0": _I0.value, "electronic_variance": _ELECTRONIC.value, "views": _VIEWS.value}
    if _CONDITION.value != "lowdose" and any(v is not None for v in given.values()):
        raise app.UsageError("--dose, --i0, --electronic_variance and --views go with --condition lowdose")
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


def _config():
    if _CONDITION.value and _CONDITION_INPUT.value:
        raise app.UsageError("--condition lowdose simulates the condition; --condition_input reads it: give one")
    condition = "paired" if _CONDITION_INPUT.value else _CONDITION.value
    spacing = None
    if _SPACING.value:
        values = [float(v) for v in _SPACING.value]
        spacing = tuple(values * 3 if len(values) == 1 else values)
    return conversion_config(
        _PRESET.value,
        block_size=_BLOCK.value,
        margin=_MARGIN.value,
        test_fraction=_TEST.value,
        seed=_SEED.value,
        shard_target_mb=_SHARD_MB.value,
        spacing_mm=spacing,
        drop_outside_body=_BODY.value,
        intensity=_INTENSITY.value,
        unet_depth=_UNET_DEPTH.value,
        condition=condition,
        lowdose=_lowdose(),
        nonfinite=_NONFINITE.value,
    )


def _summary(report) -> str:
    m = report.manifest
    lines = [f"dataset: {report.output_dir}  (shards written {report.shards_written}, reused {report.shards_reused})"]
    for split, info in m.splits.items():
        lines.append(
            f"  {split:<5} {info.patients} patients  {info.volumes} volumes  "
            f"{info.blocks} blocks  {len(info.shards)} shards"
        )
    lines.append(f"  blocks of {m.block_size}^3 stored with margin {m.margin}; intensity {m.intensity['kind']}")
    if m.condition:
        settings = ", ".join(
            f"{k} {'calibrated per scan' if v is None else format(v, 'g')}"
            for k, v in m.condition.items()
            if k != "kind"
        )
        lines.append(f"  paired condition: {m.condition['kind']}" + (f" ({settings})" if settings else ""))
    if m.counts["dropped_outside_body"]:
        lines.append(f"  dropped {m.counts['dropped_outside_body']} blocks outside the body")
    for where, reason in report.skipped:
        lines.append(f"  skipped {where}: {reason}")
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def _run_beam(config, beam_args):
    from cgan_ct.data.conversion import ConversionReport
    from cgan_ct.io.sources import read_patients_table

    try:
        from cgan_ct.data.beam_conversion import convert_with_beam
    except ImportError:
        raise InputError(None, "--engine beam needs Apache Beam: pip install 'cgan-ct[beam]'") from None
    patients = read_patients_table(_PATIENTS.value) if _PATIENTS.value else None
    manifest = convert_with_beam(
        _INPUT.value, _OUTPUT.value, config, salt=job.salt_from_flags(), beam_args=beam_args, patients=patients
    )
    return ConversionReport(
        pathlib.Path(_OUTPUT.value), manifest, [(s.source, s.reason) for s in manifest.skipped], 0, 0
    )


def _run_local(config):
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.data.conversion import convert
    from cgan_ct.io.sources import read_patients_table

    totals = {"volumes": 0, "blocks": 0}
    bar = ProgressBar(0, "shards")

    def progress(receipt, done, total):
        totals["volumes"] += len(receipt["volumes"])
        totals["blocks"] += receipt["records"]
        bar.total = total
        bar.update(done, **totals)

    return convert(
        _INPUT.value,
        _OUTPUT.value,
        config,
        salt=job.salt_from_flags(),
        workers=_WORKERS.value,
        overwrite=_OVERWRITE.value,
        progress=progress,
        condition_inputs=_CONDITION_INPUT.value,
        patients=read_patients_table(_PATIENTS.value) if _PATIENTS.value else None,
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1 and _ENGINE.value != "beam":
        raise app.UsageError(f"unexpected arguments: {argv[1:]}; give inputs with --input")
    config = _config()
    report = _run_beam(config, argv[1:]) if _ENGINE.value == "beam" else _run_local(config)
    print(_summary(report))
    if not report.complete:
        print(f"cgan-ct-convert: {len(report.skipped)} input(s) skipped; see above", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    job.run(main, __name__, required=("input", "output_dir"), positional=True, patients=True)


if __name__ == "__main__":
    run()
