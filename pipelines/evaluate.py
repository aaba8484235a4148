"""cgan-ct-evaluate: models and baselines on whole scans, as the paper's Tables I and II.

  cgan-ct-evaluate --model TASK=MODEL [--model ...] --input PATH [--input ...] --output_dir REPORT_DIR
                   [--overlap 0.25] [--seed 0] [--bm3d] [--no_reference] [--precision auto|float32|bfloat16]

MODEL is an exported model folder (a version folder, or cgan-ct-export's
--output_dir: its highest version), a training run folder or a shipped model
(pretrained:denoise, pretrained:denoise-peak128, pretrained:depixelate,
pretrained:lowdose);
"TASK=" may be left out (the model's task).

Writes REPORT_DIR/results.csv (one row per patient, task, method, region),
report.md (tables averaged over patients, whole volume and lungs) and
figures/ (condition | model | best baseline | original in the lung and
soft-tissue windows, both errors on one scale, and a 32 x 32 close-up where
the model's error differs most from the baseline's), and
says whether each model uses its noise input (output spread over two draws).
--bm3d adds BM3D to the denoising baselines (about 8 s per 512 x 512 slice;
needs pip install 'cgan-ct[bm3d]': its licence allows non-commercial use only).

With --no_reference the inputs are real noisy scans (e.g. low-dose) denoised
as they are: no_reference.md / .csv give the soft-tissue and air noise and the
body/air and lung/vessel edge widths before and after (no ground truth needed).
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from cgan_ct.cli import job

_MODELS = flags.DEFINE_multi_string("model", None, "[TASK=]MODEL: a folder or pretrained:NAME (repeatable).")
_INPUTS = flags.DEFINE_multi_string("input", None, "A DICOM folder or volume file (repeatable).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Report folder.")
_OVERLAP = flags.DEFINE_float("overlap", 0.25, "Tile overlap for inference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of conditions and noise.")
_NO_REFERENCE = flags.DEFINE_bool(
    "no_reference",
    False,
    "The inputs are real noisy scans, denoised as they are: report noise and edge sharpness before and after "
    "(no ground truth), not PSNR / SSIM against a simulated condition.",
)
_PRECISION = job.define_inference_precision()
_BM3D = flags.DEFINE_bool("bm3d", False, "Also score BM3D (denoise, lowdose): about 8 s per 512 x 512 slice.")


def _models() -> dict:
    from cgan_ct.inference.inference import BlockModel  # TensorFlow: not at the top (fast --help)

    models = {}
    for spec in _MODELS.value:
        task, _, folder = spec.rpartition("=")
        if not folder:
            raise app.UsageError(f"--model takes [TASK=]MODEL, got {spec!r}")
        model = BlockModel(folder, precision=_PRECISION.value)
        task = task or model.task
        if task != model.task:
            raise app.UsageError(f"--model {spec}: the model was trained for {model.task!r}, not {task!r}")
        if task in models:
            raise app.UsageError(f"--model: two models for {task!r}")
        models[task] = model
        if model.version is not None:
            print(f"model {task}: version {model.version} ({model.model_dir}), the highest in {folder}")
    return models


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.inference import report
    from cgan_ct.inference.baselines import SLOW_BASELINES
    from cgan_ct.inference.evaluation import evaluate_inputs, evaluate_no_reference, no_reference_markdown

    models = _models()
    bar = ProgressBar(len(_INPUTS.value) * len(models), "evaluated")
    if _NO_REFERENCE.value:
        rows = evaluate_no_reference(
            _INPUTS.value, models, _OUTPUT.value, _OVERLAP.value, _SEED.value, lambda done, total: bar.update(done)
        )
        print(no_reference_markdown(rows))
        print(f"report: {pathlib.Path(_OUTPUT.value) / 'no_reference.md'}")
        return
    rows = evaluate_inputs(
        _INPUTS.value,
        models,
        _OUTPUT.value,
        _OVERLAP.value,
        _SEED.value,
        lambda done, total: bar.update(done),
        skip_baselines=() if _BM3D.value else SLOW_BASELINES,
    )
    print(report.markdown_table(rows, "volume"))
    for line in report.verdict_lines(rows, "volume"):
        print(line)
    print(f"report: {pathlib.Path(_OUTPUT.value) / 'report.md'}")


def run() -> None:
    job.run(main, __name__, required=("model", "input", "output_dir"), patients=True)


if __name__ == "__main__":
    run()
