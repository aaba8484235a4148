"""Evaluation outputs for a person: CSV and Markdown tables (paper Tables I and II), verdicts; the figures
they link are drawn by ``figures``."""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np

TIE_DB = 0.1  # PSNR differences below this are ties: under the run-to-run spread of the measurement
_COLUMNS = (
    "patient",
    "volume",
    "task",
    "method",
    "region",
    "psnr_slices_db",
    "ssim_slices",
    "mae_hu",
    "psnr_volume_db",
    "seam_score",
    "z_std_hu",  # the model's output spread over noise draws (model rows only)
)


def write_csv(rows: list[dict], path: pathlib.Path, columns=_COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def patient_mean(rows: list[dict], key: str) -> float:
    """Mean of ``key`` over patients, each patient's volumes averaged first (rows carry ``patient``,
    the pseudonymous patient key): a patient scanned twice weighs as much as one scanned once."""
    per_patient: dict[str, list[float]] = {}
    for r in rows:
        per_patient.setdefault(r["patient"], []).append(float(r[key]))
    return float(np.mean([np.mean(values) for values in per_patient.values()]))


def markdown_table(rows: list[dict], region: str) -> str:
    """Per task and method: distinct patients, volumes, and the mean over patients (each patient's volumes
    averaged first) of PSNR and SSIM (slice means), MAE and seam score."""
    lines = [
        "| task | method | patients | volumes | PSNR (dB) | SSIM | MAE (HU) | seam score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["task"], r["method"]) for r in rows if r["region"] == region})
    for task, method in keys:
        group = [r for r in rows if r["region"] == region and r["task"] == task and r["method"] == method]
        mean = {k: patient_mean(group, k) for k in _COLUMNS[5:]}
        seam = "-" if math.isnan(mean["seam_score"]) else f"{mean['seam_score']:.3f}"
        patients, volumes = len({r["patient"] for r in group}), len({r["volume"] for r in group})
        lines.append(
            f"| {task} | {method} | {patients} | {volumes} | {mean['psnr_slices_db']:.2f} | "
            f"{mean['ssim_slices']:.4f} | {mean['mae_hu']:.1f} | {seam} |"
        )
    return "\n".join(lines)


def verdict(model_db: float, other_db: float, tie_db: float = TIE_DB) -> str:
    """ "beats", "ties with" or "loses to": the model's PSNR against another's; |difference| < tie_db is a tie."""
    difference = model_db - other_db
    if abs(difference) < tie_db:
        return "ties with"
    return "beats" if difference > 0 else "loses to"


def best_baseline(psnr_db_by_method: dict) -> str:
    """The classical method with the highest PSNR (neither the model nor the condition); "condition"
    where the task has no other (autoencode)."""
    classical = {m: v for m, v in psnr_db_by_method.items() if m not in ("model", "condition")}
    return max(classical, key=classical.get) if classical else "condition"


def comparison(rows: list[dict], region: str = "volume") -> dict:
    """Per task: mean slice PSNR (over patients, as ``patient_mean``) of the model, its condition and the
    best baseline, with verdicts."""
    summary = {}
    for task in sorted({r["task"] for r in rows if r["region"] == region}):
        by_method: dict = {}
        for r in rows:
            if r["task"] == task and r["region"] == region:
                by_method.setdefault(r["method"], []).append(r)
        mean = {method: patient_mean(group, "psnr_slices_db") for method, group in by_method.items()}
        if "model" not in mean:
            continue
        best = best_baseline(mean)
        summary[task] = {
            "model_db": mean["model"],
            "condition_db": mean["condition"],
            "best_baseline": best,
            "best_baseline_db": mean[best],
            "vs_condition": verdict(mean["model"], mean["condition"]),
            "vs_best_baseline": verdict(mean["model"], mean[best]),
        }
    return summary


def verdict_lines(rows: list[dict], region: str = "volume") -> list[str]:
    """One sentence per task: the model against its condition and the best classical baseline."""
    lines = []
    for task, c in comparison(rows, region).items():
        line = f"{task}: model {c['model_db']:.2f} dB {c['vs_condition']} its condition ({c['condition_db']:.2f} dB)"
        if c["best_baseline"] != "condition":  # autoencode has no baseline but its condition
            line += (
                f" and {c['vs_best_baseline']} the best baseline, {c['best_baseline']} ({c['best_baseline_db']:.2f} dB)"
            )
        lines.append(line)
    return lines


def write_report(rows: list[dict], output_dir, notes=()) -> pathlib.Path:
    """results.csv and report.md (verdicts, tables, ``notes`` and the figures found in output_dir/figures)."""
    out = pathlib.Path(output_dir)
    write_csv(rows, out / "results.csv")
    figures = sorted((out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    text = [
        "# cgan-ct evaluation",
        "PSNR and SSIM per axial slice, averaged; HU clipped to [-1024, 3071], data range 4096 HU. "
        "Tables and verdicts are means over patients, each patient's volumes averaged first. "
        "Seam score: the jumps across the planes where stitched tiles begin or end, against the planes beside "
        "them, relative to the original's; 1.0: no seams added; -: undefined (the volume or the original is "
        "constant beside the tile edges, e.g. a pixelated condition).",
        *notes,
        "## Verdicts",
        f"Mean slice PSNR; a difference under {TIE_DB} dB is a tie.",
        "\n".join(f"- {line}" for line in verdict_lines(rows, "volume")),
        "Lungs:",
        "\n".join(f"- {line}" for line in verdict_lines(rows, "lungs")),
        "## Whole volume (Table I)",
        markdown_table(rows, "volume"),
        "## Lungs (Table II)",
        markdown_table(rows, "lungs"),
        "## Figures",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(text) + "\n")
    return path
