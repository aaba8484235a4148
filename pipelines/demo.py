"""cgan-ct-demo: from nothing to a report in one command.

  cgan-ct-demo --output_dir OUT [--budget_minutes 15] [--data PATH] [--smoke] [--pretrained]

Synthesizes a chest CT cohort (or takes --data: a DICOM folder, a volume file or
a root folder of them), converts it, trains the three tasks (cpu preset) within
the time budget, exports the models, and evaluates them on held-out scans
against classical baselines. Running again into OUT resumes or skips what is done.
With --pretrained it trains nothing: the models shipped with the package
(trained on real chest CT) are evaluated on two phantoms (or on --data) in minutes.
"""

from __future__ import annotations

from absl import flags

from cgan_ct.cli import job

_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for everything the demo makes.")
_BUDGET = flags.DEFINE_float("budget_minutes", None, "Time budget for all stages (default 15).")
_DATA = flags.DEFINE_string("data", None, "Your own CT instead of the synthetic cohort.")
_SMOKE = flags.DEFINE_bool("smoke", False, "A tiny, fast run (checks that everything works).")
_PRETRAINED = flags.DEFINE_bool("pretrained", False, "Evaluate the shipped pretrained models; train nothing.")


def main(argv: list[str]) -> None:
    # The library is imported here, not at the top: --help and --version stay fast (no TensorFlow).
    from cgan_ct.cli.fit_progress import FitProgress
    from cgan_ct.cli.progress import ProgressBar
    from cgan_ct.demo.run import DemoSettings, run_demo

    settings = DemoSettings.smoke() if _SMOKE.value else DemoSettings()
    if _BUDGET.value:
        settings = DemoSettings(**{**settings.__dict__, "budget_minutes": _BUDGET.value})
    if _PRETRAINED.value:
        settings = DemoSettings(**{**settings.__dict__, "pretrained": True})
    if _DATA.value:
        job.check_pseudonym_key("cgan-ct-demo")  # the user's own scans: their pseudonyms need the user's key
    bars = []

    def progress(done, total):
        if not bars:  # started at the first report, so its clock counts the evaluation only
            bars.append(ProgressBar(total, "cgan-ct-demo: evaluation (scans x tasks)"))
        bars[0].update(done)

    summary = run_demo(
        _OUTPUT.value,
        settings,
        _DATA.value,
        say=lambda m: print(f"cgan-ct-demo: {m}", flush=True),
        training_callbacks=lambda task, steps: [FitProgress(f"cgan-ct-demo: {task} (steps)", steps=steps)],
        progress=progress,
    )
    out = summary["output_dir"]
    print(f"\ncgan-ct-demo: done in {summary['minutes']:.1f} minutes.")
    print(f"  report (tables: model against baselines, figures): {summary['report']}")
    print("  PSNR on held-out scans (whole volume, mean over axial slices; under 0.1 dB apart is a tie):")
    for task, c in summary["comparison"].items():
        baseline = (
            f"; {c['vs_best_baseline']} the best baseline, {c['best_baseline']} {c['best_baseline_db']:.2f} dB"
            if c["best_baseline"] != "condition"
            else ""
        )
        print(
            f"    {task:<11} model {c['model_db']:.2f} dB "
            f"({c['vs_condition']} its condition, {c['condition_db']:.2f} dB{baseline})"
        )
    if _PRETRAINED.value:
        from cgan_ct.demo.run import PRETRAINED_MODELS

        shipped = ", ".join(PRETRAINED_MODELS.values())
        print(f"  models: the shipped {shipped} (cgan-ct-infer --model pretrained:NAME)")
    else:
        print(f"  models (SavedModels, TF Serving layout): {out}/models/<task>/1/    training runs: {out}/runs/<task>")
    print(f"  stitched volumes (NIfTI, DICOM): {out}/volumes/<task>/")
    print(
        "  next, on your own data: cgan-ct-convert --input YOUR_CT --output_dir DATASET; "
        "cgan-ct-train --dataset_dir DATASET --task denoise --output_dir RUN; cgan-ct-export ...; cgan-ct-evaluate ..."
    )


def run() -> None:
    job.run(main, __name__, required=("output_dir",))


if __name__ == "__main__":
    run()
