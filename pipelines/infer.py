"""cgan-ct-infer: run an exported generator over CT scans: one scan, or a whole archive in one run.

  cgan-ct-infer --model MODEL_DIR|pretrained:NAME --input PATH [--input PATH ...] [--inputs_from FILE]
                --output_dir OUT [--task TASK] [--condition simulate|as_is] [--overlap 0.25]
                [--window gaussian|linear|none] [--format dicom,nifti] [--batch 16] [--seed 0]
                [--precision auto|float32|bfloat16|float16] [--device auto|cpu|gpu:N]
                [--num_parts N --part_id K] [--engine local|beam] [--salt_file KEY_FILE] [--overwrite]
                [-- BEAM_OPTIONS]

Each PATH is a DICOM folder, a volume file, or a folder holding many of both
(searched as cgan-ct-convert searches); --inputs_from FILE lists more, one
per line (relative to FILE's folder; # comments). What is written:

- One scan (a single --input that holds one series or volume file, or a
  --series chosen in it): OUT receives the condition and the generated volume
  as NIfTI (condition.nii.gz, generated.nii.gz) and/or derived DICOM series
  (condition_dicom/, generated_dicom/), de-identified, and infer.json, the
  record of the run that wrote them (a keyed fingerprint of model, input and
  settings; no paths). An output already there is an error that names it,
  unless an earlier run with the same model, input and settings wrote it: it
  is kept (all there: nothing to do, exit 0); --overwrite replaces them. Each
  output is written into a hidden OUT/.tmp-infer-<pid>-<hex>/ folder and moved
  into place once complete.
- Several scans (an archive): the model is loaded once, and each scan gets
  OUT/<pseudonym>/ (the scan's keyed vol-... id, never its path or UIDs) with
  the same files and scan.json (model name and version, precision, settings,
  seconds, the soft-tissue noise of condition and output). A scan folder
  appears only complete (written in a hidden OUT/.partial-<pseudonym>-... and
  renamed): a rerun after a crash or kill -9 keeps the finished scans and
  redoes the rest; one from other settings is an error before any work,
  unless --overwrite. A scan that fails is reported (one line on stderr) and
  skipped; OUT/summary.json lists every scan with its status and reason.
  --num_parts N --part_id K takes the K-th of N shares (stable, by pseudonym),
  for N workers writing into one OUT (then summary-partK-of-N.json each).
  --engine beam runs the same per-scan step as an Apache Beam pipeline (pip
  install 'cgan-ct[beam]'; the model is loaded once per worker); Beam options
  follow a lone --, e.g. -- --runner=FlinkRunner ... (OUT must be a folder
  every worker can write).

Derived DICOM: ImageType DERIVED, a DerivationDescription naming the model and
its version, Synthetic Data YES where the content is made (the generated
volume, a simulated condition), new UIDs, the pseudonymous patient id.
Exit status: 0 when every scan is done, 1 when some failed (the others are
written), 2 on an error before any scan (nothing written).
"""

from __future__ import annotations

import pathlib
import sys
import time

from absl import app, flags

from cgan_ct.cli import job
from cgan_ct.constants import CONDITION_MODES, VOLUME_FORMATS

_MODEL = flags.DEFINE_string(
    "model",
    None,
    "A SavedModel folder, a folder of its version folders (cgan-ct-export: the highest is used), "
    "a training run folder, or pretrained:NAME (shipped).",
)
_INPUT = flags.DEFINE_multi_string(
    "input", [], "A DICOM folder, a volume file, or a folder holding many (repeat for more)."
)
_INPUTS_FROM = flags.DEFINE_string(
    "inputs_from", None, "A text file listing inputs, one per line (relative to its folder; # comments)."
)
_OUTPUT = flags.DEFINE_string(
    "output_dir",
    None,
    "Folder for the outputs (an output already there is an error, unless a run with the same "
    "settings wrote it: it is kept).",
)
_TASK = flags.DEFINE_string("task", None, "Task (default: the model's).")
_CONDITION = flags.DEFINE_enum(
    "condition", "simulate", list(CONDITION_MODES), "Simulate the condition, or use the input as it is."
)
_OVERLAP = flags.DEFINE_float(
    "overlap", 0.25, "Fraction of a block shared by neighbouring tiles (0: the paper's tiling)."
)
_WINDOW = flags.DEFINE_enum("window", "gaussian", ["gaussian", "linear", "none"], "Blending of overlapping tiles.")
_FORMAT = flags.DEFINE_list("format", list(VOLUME_FORMATS), "Output formats: nifti, dicom.")
_BATCH = job.define_batch()
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulated condition and of the noise.")
_SERIES = flags.DEFINE_string("series", None, "Series to read from a folder holding several.")
_PRECISION = job.define_inference_precision()
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace outputs already in --output_dir.")
_DOSE = flags.DEFINE_float(
    "dose",
    None,
    "Lowdose models: the input's dose as a fraction of full dose (simulated at that dose with --condition "
    "simulate). The model's correction is scaled to the noise that dose adds: all of it at the model's own "
    "dose, none at 1 (a scan at full dose comes back as it is). Default: the model's own dose.",
)
_DEVICE = flags.DEFINE_string("device", "auto", "Where the model runs: auto, cpu or gpu:N.")
_NUM_PARTS = flags.DEFINE_integer("num_parts", 1, "Split the scans into this many parts (workers).", lower_bound=1)
_PART_ID = flags.DEFINE_integer("part_id", 0, "The part this process runs (0 .. num_parts - 1).", lower_bound=0)
_ENGINE = flags.DEFINE_enum("engine", "local", ["local", "beam"], "Run the scans here, or as an Apache Beam pipeline.")
_SALT_FILE = job.define_salt_file()
_VOLUMES = ("condition", "generated")
_SOME_FAILED = 1


def main(argv: list[str]) -> int | None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.formats import parse_formats

    if len(argv) > 1 and _ENGINE.value != "beam":
        raise app.UsageError(f"unexpected arguments: {argv[1:]}; give inputs with --input")
    inputs = _inputs()
    formats = parse_formats(_FORMAT.value)
    scans = _archive_scans(inputs)
    if scans is not None:
        return _run_archive(*scans, formats, argv[1:])
    return _run_one(inputs[0], formats)


def _inputs() -> list[str]:
    """--input values and the lines of --inputs_from, in order; a usage error for none."""
    inputs = list(_INPUT.value)
    if _INPUTS_FROM.value:
        from cgan_ct.errors import InputError

        listing = pathlib.Path(_INPUTS_FROM.value)
        try:
            lines = listing.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise InputError(listing, f"cannot read the list of inputs ({reason})") from None
        inputs += [str(listing.parent / x.strip()) for x in lines if x.strip() and not x.strip().startswith("#")]
    if not inputs:
        raise app.UsageError("give the scans with --input PATH (repeatable) or --inputs_from FILE")
    return inputs


def _archive_scans(inputs: list[str]):
    """(scans of this part, inputs that are not scans) for an archive run; None for one scan (the flat layout)."""
    from cgan_ct.errors import InputError
    from cgan_ct.inference.archive import find_scans, part_of

    several = len(inputs) > 1 or bool(_INPUTS_FROM.value) or _NUM_PARTS.value > 1 or _ENGINE.value == "beam"
    if _SERIES.value is not None:
        if several:
            raise app.UsageError("--series chooses among the series of one --input; it does not apply to an archive")
        return None
    if not several and not pathlib.Path(inputs[0]).is_dir():
        return None
    if _PART_ID.value >= _NUM_PARTS.value:
        raise app.UsageError(f"--part_id {_PART_ID.value} is not below --num_parts {_NUM_PARTS.value}")
    found, skipped = find_scans(inputs, job.salt_from_flags())
    if not several and len(found) <= 1:
        return None  # a folder holding one scan: its outputs straight into --output_dir, as before (none: its error)
    if not found:
        raise InputError(None, "no scan to run: nothing under the inputs is a CT scan that cgan-ct reads")
    return [s for s in found if part_of(s.volume_id, _NUM_PARTS.value) == _PART_ID.value], skipped


def _run_one(path: str, formats) -> int:
    """One scan's outputs, straight into --output_dir."""
    from cgan_ct.cli.output_set import OutputSet
    from cgan_ct.inference.archive import ModelRef, derivation
    from cgan_ct.io.volume_formats import output_names, write_volume_as

    files = {name: output_names(name, formats) for name in _VOLUMES}
    outputs = OutputSet(_OUTPUT.value, "infer", [f for v in files.values() for f in v.values()], _request())
    todo = _plan(outputs)
    if not todo:
        print(f"{outputs.folder}: every output is there from an earlier run with the same settings; nothing to do")
        return 0
    with outputs.staging(keep=() if _OVERWRITE.value else outputs.kept) as staging:
        model, made = _generate(path)
        ref = ModelRef(_MODEL.value, _PRECISION.value)
        for name, volume in zip(_VOLUMES, made, strict=True):
            text, synthetic = derivation(name, ref.name, ref.version(model), model.task, _CONDITION.value)
            for fmt, file in files[name].items():
                if file in todo:
                    write_volume_as(volume, staging / file, fmt, name, derivation=text, synthetic_data=synthetic)
                    print(f"wrote {outputs.place(file)}")
    return 0


def _run_archive(sources, skipped, formats, beam_args) -> int:
    """Every scan of this part into its own folder under --output_dir, then the summary; 1 when any failed."""
    from cgan_ct import runtime
    from cgan_ct.errors import InputError
    from cgan_ct.inference import archive

    out = pathlib.Path(_OUTPUT.value)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    ref = archive.ModelRef(_MODEL.value, _PRECISION.value)
    settings = _settings(formats)
    requests = {s.volume_id: archive.scan_request(s, ref, settings) for s in sources}
    foreign = [] if _OVERWRITE.value else archive.foreign_scans(out, requests)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        problem = f"already exists{more}, not from a run with these settings; --overwrite replaces it"
        raise InputError(out / foreign[0], problem)
    part = f", part {_PART_ID.value} of {_NUM_PARTS.value}" if _NUM_PARTS.value > 1 else ""
    print(f"{len(sources)} scans{part}; {len(skipped)} inputs hold no scan cgan-ct reads")
    for item in skipped:
        print(f"cgan-ct-infer: not a scan: {item.path}: {item.reason}", file=sys.stderr)
    print(f"device: {runtime.use_device(_DEVICE.value)}")
    start = time.monotonic()
    run = _beam_rows if _ENGINE.value == "beam" else _local_rows
    rows, model = run(sources, ref, settings, out, beam_args) if sources else ([], {"name": ref.name})
    extra = {"engine": _ENGINE.value, "num_parts": _NUM_PARTS.value, "part_id": _PART_ID.value}
    data = archive.summary(rows, skipped, model, settings, {**extra, "seconds": round(time.monotonic() - start, 3)})
    path = archive.write_summary(out, archive.summary_name(_NUM_PARTS.value, _PART_ID.value), data)
    counts = data["counts"]
    print(f"{counts['done']} done, {counts['kept']} kept from an earlier run, {counts['failed']} failed: {path}")
    return _SOME_FAILED if counts["failed"] else 0


def _settings(formats):
    from cgan_ct.inference.archive import ScanSettings

    flags_ = (_TASK, _CONDITION, _OVERLAP, _WINDOW, _BATCH, _SEED, _DOSE)
    return ScanSettings(*(f.value for f in flags_), formats=tuple(sorted(formats)))


def _local_rows(sources, ref, settings, out, beam_args=()):
    """The scans one after another in this process (one model load), a line per scan with an ETA."""
    from cgan_ct.inference.archive import DONE, ScanRunner
    from cgan_ct.inference.inference import BlockModel

    del beam_args
    model = BlockModel(ref.spec, precision=ref.precision)
    print(f"model: {model.precision.describe()}")
    runner = ScanRunner(model, ref, settings, out, job.salt_from_flags(), _OVERWRITE.value)
    rows, spent = [], []
    for i, source in enumerate(sources, 1):
        rows.append(runner.run(source))
        if rows[-1]["status"] == DONE:
            spent.append(rows[-1]["seconds"])
        left = sum(spent) / len(spent) * (len(sources) - i) if spent and i < len(sources) else None
        _say(rows[-1], f"[{i}/{len(sources)}] ", "" if left is None else f"; about {_duration(left)} left")
    return rows, runner.describe()


def _beam_rows(sources, ref, settings, out, beam_args):
    """The scans as an Apache Beam pipeline (the model loaded once per worker)."""
    from cgan_ct.errors import InputError

    try:
        from cgan_ct.inference.beam_inference import infer_with_beam
    except ImportError:
        raise InputError(None, "--engine beam needs Apache Beam: pip install 'cgan-ct[beam]'") from None
    rows, model = infer_with_beam(sources, ref, settings, out, job.salt_from_flags(), _OVERWRITE.value, beam_args)
    for row in rows:
        _say(row)
    return rows, model  # the model as the workers loaded it


def _say(row: dict, prefix: str = "", suffix: str = "") -> None:
    """A scan's line on stdout; a failure's reason also as one line on stderr."""
    said = f"done in {row['seconds']:.1f} s" if row["status"] == "done" else row["status"]
    print(f"{prefix}{row['scan']} {said}{suffix}", flush=True)
    if row["status"] == "failed":
        print(f"cgan-ct-infer: {row['scan']}: failed: {row['reason']}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _request() -> str:
    """The fingerprint of what makes the outputs: model, input (with their files' stamps) and settings."""
    from cgan_ct.io.fingerprint import request_key

    model = _MODEL.value if _MODEL.value.startswith("pretrained:") else None
    inputs = [_INPUT.value[0] if _INPUT.value else None] + ([] if model else [_MODEL.value])
    settings = {
        "model": model,
        "series": _SERIES.value,
        "task": _TASK.value,
        "condition": _CONDITION.value,
        "overlap": _OVERLAP.value,
        "window": _WINDOW.value,
        "seed": _SEED.value,
        "precision": _PRECISION.value,
    }
    if _DOSE.value is not None:  # only when given: outputs of earlier versions keep their fingerprint
        settings["dose"] = _DOSE.value
    return request_key(settings, inputs)


def _plan(outputs) -> tuple[str, ...]:
    """The outputs to write, decided before any compute; an error naming an output in the way."""
    from cgan_ct.errors import InputError

    missing = outputs.plan()
    if _OVERWRITE.value:
        return outputs.names
    if outputs.foreign:
        more = f" (and {len(outputs.foreign) - 1} more)" if len(outputs.foreign) > 1 else ""
        raise InputError(
            outputs.folder / outputs.foreign[0],
            f"already exists{more}, not from a run with these settings; --overwrite replaces it",
        )
    for name in outputs.kept if missing else ():
        print(f"kept {outputs.folder / name} (from an earlier run with the same settings)")
    return missing


def _generate(path: str):
    """The model, and the condition and the generated volume of the scan at ``path``, from the flags."""
    from cgan_ct import read_volume, runtime
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.inference.inference import BlockModel, infer_volume

    print(f"device: {runtime.use_device(_DEVICE.value)}")
    model = BlockModel(_MODEL.value, precision=_PRECISION.value)
    print(f"model: {model.precision.describe()}")
    if model.version is not None:
        print(f"model: version {model.version} ({model.model_dir}), the highest in {_MODEL.value}")
    volume = read_volume(path, series=_SERIES.value)
    bar = ProgressBar(0, "blocks")

    def progress(done, total):
        bar.total = total
        bar.update(done)

    return model, infer_volume(
        volume,
        model,
        _TASK.value,
        _CONDITION.value,
        _OVERLAP.value,
        _WINDOW.value,
        _BATCH.value,
        _SEED.value,
        progress,
        dose=_DOSE.value,
    )


def run() -> None:
    job.run(main, __name__, required=("model", "output_dir"), positional=True, patients=True)


if __name__ == "__main__":
    run()
