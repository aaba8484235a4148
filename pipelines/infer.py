"""cgan-ct-infer: run an exported generator over a whole CT scan.

  cgan-ct-infer --model MODEL_DIR|pretrained:NAME --input PATH --output_dir OUT [--task TASK]
                [--condition simulate|as_is] [--overlap 0.25] [--window gaussian|linear|none]
                [--format dicom,nifti] [--batch 16] [--seed 0] [--precision auto|float32|bfloat16|float16]
                [--overwrite]

PATH is a DICOM folder or a volume file. OUT receives the condition and the
generated volume as NIfTI (condition.nii.gz, generated.nii.gz) and/or derived
DICOM series (condition_dicom/, generated_dicom/), de-identified, and
infer.json, the record of the run that wrote them (a keyed fingerprint of
model, input and settings; no paths).

OUT is checked before the model is loaded. An output already there is an error
that names it, unless an earlier run with the same model, input and settings
wrote it: then it is kept, and when all of them are there the job says so and
exits 0 without computing. --overwrite replaces them instead. Each output is
written into a hidden OUT/.tmp-infer-<pid>-<hex>/ folder and moved into place
once complete, so a run that is stopped, even by kill -9, leaves no
half-written output under a final name; the next run removes that folder and
writes what is missing.
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job
from cgan_ct.constants import CONDITION_MODES, VOLUME_FORMATS

_MODEL = flags.DEFINE_string(
    "model",
    None,
    "A SavedModel folder, a folder of its version folders (cgan-ct-export: the highest is used), "
    "a training run folder, or pretrained:NAME (shipped).",
)
_INPUT = flags.DEFINE_string("input", None, "A DICOM folder or a volume file.")
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
_VOLUMES = ("condition", "generated")


def main(argv: list[str]) -> int | None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.formats import output_names, parse_formats, write_volume_as
    from cgan_ct.cli.output_set import OutputSet

    formats = parse_formats(_FORMAT.value)
    files = {name: output_names(name, formats) for name in _VOLUMES}
    outputs = OutputSet(_OUTPUT.value, "infer", [f for v in files.values() for f in v.values()], _request())
    todo = _plan(outputs)
    if not todo:
        print(f"{outputs.folder}: every output is there from an earlier run with the same settings; nothing to do")
        return 0
    with outputs.staging(keep=() if _OVERWRITE.value else outputs.kept) as staging:
        volumes = dict(zip(_VOLUMES, _generate(), strict=True))
        for name, volume in volumes.items():
            for fmt, file in files[name].items():
                if file in todo:
                    write_volume_as(volume, staging / file, fmt, name)
                    print(f"wrote {outputs.place(file)}")
    return 0


def _request() -> str:
    """The fingerprint of what makes the outputs: model, input (with their files' stamps) and settings."""
    from cgan_ct.cli.output_set import request_key

    model = _MODEL.value if _MODEL.value.startswith("pretrained:") else None
    inputs = [_INPUT.value] + ([] if model else [_MODEL.value])
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


def _generate():
    """The condition and the generated volume, from the flags."""
    from cgan_ct import read_volume
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.inference.inference import BlockModel, infer_volume

    model = BlockModel(_MODEL.value, precision=_PRECISION.value)
    print(f"model: {model.precision.describe()}")
    if model.version is not None:
        print(f"model: version {model.version} ({model.model_dir}), the highest in {_MODEL.value}")
    volume = read_volume(_INPUT.value, series=_SERIES.value)
    bar = ProgressBar(0, "blocks")

    def progress(done, total):
        bar.total = total
        bar.update(done)

    return infer_volume(
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
    job.run(main, __name__, required=("model", "input", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
