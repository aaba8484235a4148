"""Evaluation outputs for a person: CSV, Markdown tables (paper Tables I and II) and PNG figures."""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from cgan_ct.constants import LUNG_WINDOW as _LUNG

TIE_DB = 0.1  # PSNR differences below this are ties: under the run-to-run spread of the measurement
LUNG_WINDOW = _LUNG.range_hu  # (low, high) HU of the figures
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
        baselines = {m: v for m, v in mean.items() if m not in ("model", "condition")}
        best = max(baselines, key=baselines.get) if baselines else "condition"
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


def _window(image: np.ndarray, window) -> np.ndarray:
    low, high = window
    return (np.clip((np.asarray(image, np.float32) - low) / (high - low), 0, 1) * 255).astype(np.uint8)


_CAPTION_PX = 14  # a band above the panels for their labels, and one below for the difference scale
_GAP_PX = 4


def _save(
    panels: list[np.ndarray], path: pathlib.Path, captions: list[str], scale: int = 1, scale_bar=None
) -> pathlib.Path:
    """The panels side by side, each labelled above; ``scale_bar`` = (panel index, low, high, unit) draws
    the grey ramp of that panel's values below it."""
    gap = np.full((panels[0].shape[0], _GAP_PX), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    image = Image.fromarray(row)
    if scale > 1:
        image = image.resize((row.shape[1] * scale, row.shape[0] * scale), Image.NEAREST)
    bands = 2 if scale_bar else 1
    canvas = Image.new("L", (image.width, image.height + bands * _CAPTION_PX), 255)
    canvas.paste(image, (0, _CAPTION_PX))
    draw = ImageDraw.Draw(canvas)
    starts = np.cumsum([0] + [(panel.shape[1] + _GAP_PX) * scale for panel in panels[:-1]])
    for start, caption in zip(starts, captions, strict=True):
        draw.text((int(start) + 2, 1), caption, fill=0)
    if scale_bar:
        index, low, high, unit = scale_bar
        x0, width = int(starts[index]), panels[index].shape[1] * scale
        top = _CAPTION_PX + image.height
        ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (4, 1))
        canvas.paste(Image.fromarray(ramp), (x0, top + 1))
        draw.text((x0 + 2, top + 4), f"{low:g}", fill=0)
        label = f"{high:g} {unit}"
        draw.text((x0 + width - 6 * len(label) - 2, top + 4), label, fill=0)
    canvas.save(path)
    return path


def _window_label(window) -> str:
    return f"{window[0]:g}..{window[1]:g} HU"


def scan_figure(original, generated, path: pathlib.Path, window=LUNG_WINDOW) -> pathlib.Path:
    """Middle axial slice: original | generated | |difference| (0..200 HU), like the paper's Figs 2-3,
    each labelled, with the window and a scale for the difference."""
    k = original.shape[0] // 2
    difference = np.abs(np.asarray(generated[k], np.float32) - original[k])
    panels = [_window(original[k], window), _window(generated[k], window), _window(difference, (0, 200))]
    captions = [f"original ({_window_label(window)})", "generated", "|generated - original|"]
    return _save(panels, path, captions, scale_bar=(2, 0, 200, "HU"))


def closeup_figure(original, condition, generated, path: pathlib.Path, size: int = 32, window=LUNG_WINDOW):
    """A size x size region at the centre of the middle slice: condition | generated | original (Figs 4-5), 8x."""
    k, cy, cx = (n // 2 for n in original.shape)
    region = (k, slice(cy - size // 2, cy + size // 2), slice(cx - size // 2, cx + size // 2))
    panels = [_window(v[region], window) for v in (condition, generated, original)]
    captions = [f"condition ({_window_label(window)})", "generated", "original"]
    return _save(panels, path, captions, scale=8)


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
        "them, relative to the original's; 1.0: no seams added.",
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
