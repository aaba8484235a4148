"""cgan-ct-infer: run an exported generator over a whole CT scan.

  cgan-ct-infer --model MODEL_DIR|pretrained:NAME --input PATH --output_dir OUT [--task TASK]
                [--condition simulate|as_is] [--overlap 0.25] [--window gaussian|linear|none]
                [--format dicom,nifti] [--batch 16] [--seed 0] [--precision auto|float32|bfloat16|float16]

PATH is a DICOM folder or a volume file. OUT receives the condition and the
generated volume as NIfTI (condition.nii.gz, generated.nii.gz) and/or derived
DICOM series (condition_dicom/, generated_dicom/), de-identified.
"""

from __future__ import annotations

import pathlib

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
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for the outputs (must not hold them already).")
_TASK = flags.DEFINE_string("task", None, "Task (default: the model's).")
_CONDITION = flags.DEFINE_enum(
    "condition", "simulate", list(CONDITION_MODES), "Simulate the condition, or use the input as it is."
)
_OVERLAP = flags.DEFINE_float(
    "overlap", 0.25, "Fraction of a block shared by neighbouring tiles (0: the paper's tiling)."
)
_WINDOW = flags.DEFINE_enum("window", "gaussian", ["gaussian", "linear", "none"], "Blending of overlapping tiles.")
_FORMAT = flags.DEFINE_list("format", list(VOLUME_FORMATS), "Output formats: nifti, dicom.")
_BATCH = flags.DEFINE_integer("batch", 16, "Blocks per prediction call.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulated condition and of the noise.")
_SERIES = flags.DEFINE_string("series", None, "Series to read from a folder holding several.")
_PRECISION = job.define_inference_precision()


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct import read_volume
    from cgan_ct.cli.formats import parse_formats, write_volume
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.inference.inference import BlockModel, infer_volume

    formats = parse_formats(_FORMAT.value)
    model = BlockModel(_MODEL.value, precision=_PRECISION.value)
    print(f"model: {model.precision.describe()}")
    if model.version is not None:
        print(f"model: version {model.version} ({model.model_dir}), the highest in {_MODEL.value}")
    volume = read_volume(_INPUT.value, series=_SERIES.value)
    bar = ProgressBar(0, "blocks")

    def progress(done, total):
        bar.total = total
        bar.update(done)

    condition, generated = infer_volume(
        volume,
        model,
        _TASK.value,
        _CONDITION.value,
        _OVERLAP.value,
        _WINDOW.value,
        _BATCH.value,
        _SEED.value,
        progress,
    )
    out = pathlib.Path(_OUTPUT.value)
    out.mkdir(parents=True, exist_ok=True)
    written = write_volume(condition, out, "condition", formats) + write_volume(generated, out, "generated", formats)
    for path in written:
        print(f"wrote {path}")


def run() -> None:
    job.run(main, __name__, required=("model", "input", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
