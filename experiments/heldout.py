"""The held-out protocol every experiment here reports by: scoring a model on the cohort's held-out series
(``score_heldout``), the per-series table of PSNR / SSIM, the goal lines (the best classical method + 1 dB,
SSIM not below) and the JSON-lines record. One copy, so that every table and every "goal met / missed" line
in BUILD_NOTES.md and the model cards is computed the same way.
"""

from __future__ import annotations

import json
import pathlib

import cohort  # experiments/cohort.py, beside this module

GOAL_DB = 1.0  # the models issue's goal: the best classical method + 1 dB
NOISE_GOAL_BASELINES = ("non_local_means", "bm3d")  # the goal's classical methods for the noise tasks
GOAL_BASELINES = {"denoise": NOISE_GOAL_BASELINES, "lowdose": NOISE_GOAL_BASELINES, "depixelate": ("tricubic",)}
STAGE_PATCH = 32  # NPS patch of a stage at full resolution; level j uses STAGE_PATCH / 2^j (>= 8): same mm


def score_heldout(heldout, task: str, model, slices: int, bm3d: bool, texture: bool = False) -> tuple[list[dict], list]:
    """The rows of every held-out series (its central ``slices`` slices, 0: all) and each one's figure.

    The protocol every script here scores by: the model beside its condition and the classical baselines
    (BM3D too when ``bm3d``, for the noise tasks; it is no depixelation baseline), overlap 0.25.
    ``texture``: the model's and the condition's whole-volume rows also get ``texture``
    (cgan_ct.realism.texture: noise power and edge sharpness as ratios to the real scan) and ``real_texture``.
    """
    from cgan_ct.inference.baselines import SLOW_BASELINES, check_available
    from cgan_ct.inference.evaluation import evaluate_volume
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.tasks import task_spec

    skip = () if bm3d and "bm3d" in task_spec(task).baselines else SLOW_BASELINES
    check_available(skip)  # before the first scan is read
    rows, figures = [], []
    for path in heldout:
        volume = read_volume(path)
        if slices:
            volume = cohort.central_slices(volume, slices)
        result = evaluate_volume(volume, task, model, overlap=0.25, skip_baselines=skip)
        if texture:
            add_texture(result, volume.spacing_mm)
        rows += result.rows
        figures.append(result.figure)
    return rows, figures


def add_texture(result, spacing_mm, patch: int = 32) -> None:
    """Adds ``texture`` and ``real_texture`` to the model's and the condition's whole-volume rows of an
    ``evaluate_volume`` result (NPS in ``patch`` x ``patch`` voxel patches)."""
    from cgan_ct.realism.texture import texture_against

    outputs = {"model": result.generated, "condition": result.condition}
    measured = texture_against(result.original, outputs, spacing_mm, patch=patch)
    for row in result.rows:
        if row["region"] == "volume" and row["method"] in outputs:
            row.update(texture=measured[row["method"]], real_texture=measured["real"])


def _mean_cell(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    return f"{sum(values) / len(values):.{digits}f}" if values else "-"


def texture_table(rows: list[dict], label=lambda row: row["method"]) -> str:
    """Mean texture ratios (real = 1) per ``label`` over the rows that carry them, beside PSNR."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if "texture" in row:
            groups.setdefault(label(row), []).append(row)
    ratios = ("nps_noise_ratio", "nps_frequency_ratio", "edge_sharpness_ratio")
    lines = [
        "| output | noise / real | NPS mean frequency / real | edge sharpness / real | share at Nyquist (real) "
        "| PSNR dB |",
        "|---|---|---|---|---|---|",
    ]
    for name, chosen in groups.items():
        cells = [_mean_cell([r["texture"].get(key) for r in chosen], 2) for key in ratios]
        grid = _mean_cell([r["texture"].get("nps_grid_share") for r in chosen], 4)
        real = _mean_cell([r["real_texture"].get("nps_grid_share") for r in chosen], 4)
        cells.append(grid if real == "-" else f"{grid} ({real})")
        psnr = sum(r["psnr_slices_db"] for r in chosen) / len(chosen)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {psnr:.2f} |")
    return "\n".join(lines)


def reused_rows(rows: list[dict], previous: list[dict], methods) -> list[dict]:
    """``previous`` rows of ``methods`` (a baseline: it does not depend on the model) to stand beside ``rows``.

    Taken only where the two scorings saw the same thing: for every patient and region, the condition rows
    must agree (the same scan, slab, seed and simulation) to 1e-6 dB and SSIM. Anything else is an error
    naming what differs, so a stale row never reaches a card (score afresh instead).
    """

    def conditions(found: list[dict]) -> dict:
        return {(r["patient"], r["region"]): r for r in found if r["method"] == "condition"}

    now, before = conditions(rows), conditions(previous)
    if set(now) != set(before):
        raise ValueError(f"the previous scores cover {sorted(before)}, this scoring {sorted(now)}")
    for key, row in now.items():
        old = before[key]
        if any(abs(row[k] - old[k]) > 1e-6 for k in ("psnr_slices_db", "ssim_slices")):
            raise ValueError(
                f"{key}: the condition scored {row['psnr_slices_db']:.6f} dB now and {old['psnr_slices_db']:.6f} before"
            )
    kept = [r for r in previous if r["method"] in methods]
    missing = {(p, r, m) for p, r in now for m in methods} - {(r["patient"], r["region"], r["method"]) for r in kept}
    if missing:
        raise ValueError(f"the previous scores lack {sorted(methods)} for {sorted(missing)}")
    return kept


def describe_scanners(paths) -> list[str]:
    """One line per distinct scanner, kernel and slice thickness among the series at ``paths``, from their
    headers, with the range of pixel sizes (a patient's field of view): "SIEMENS SOMATOM Scope (kernel D40s,
    2 mm slices, 0.59-0.75 mm pixels)". What a card's input domain says was seen."""
    from cgan_ct.io.volume_reader import read_volume

    pixels: dict[str, list[float]] = {}
    for path in paths:
        volume = read_volume(path)
        a = volume.acquisition
        name = " ".join(x for x in (a.manufacturer, a.model) if x) or "unknown scanner"
        thickness = a.slice_thickness_mm or volume.spacing_mm[0]
        key = f"{name} ({f'kernel {a.kernel}, ' if a.kernel else ''}{thickness:g} mm slices"
        pixels.setdefault(key, []).append(volume.spacing_mm[1])
    lines = []
    for key, sizes in pixels.items():
        low, high = f"{min(sizes):.2f}", f"{max(sizes):.2f}"
        lines.append(f"{key}, {low if low == high else f'{low}-{high}'} mm pixels)")
    return lines


def per_column(rows: list[dict], region: str, column: str = "patient") -> dict:
    """``column`` value (the pseudonymous patient, or the series folder) -> method -> (PSNR, SSIM)."""
    out: dict = {}
    for r in rows:
        if r["region"] == region:
            out.setdefault(r[column], {})[r["method"]] = (r["psnr_slices_db"], r["ssim_slices"])
    return out


def table(rows: list[dict], column: str = "patient") -> str:
    """Region x method rows (the model first), one PSNR / SSIM column per held-out ``column`` value."""
    keys = sorted({r[column] for r in rows})
    lines = ["| region | method | " + " | ".join(f"{k[:14]} PSNR / SSIM" for k in keys) + " |"]
    lines.append("|---|---|" + "---|" * len(keys))
    for region in ("volume", "lungs"):
        found = per_column(rows, region, column)
        methods = sorted({m for v in found.values() for m in v}, key=lambda m: (m != "model", m))
        for method in methods:
            cells = []
            for k in keys:
                value = found.get(k, {}).get(method)
                cells.append(f"{value[0]:.2f} / {value[1]:.4f}" if value else "-")
            lines.append(f"| {region} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(rows: list[dict], baselines, column: str = "patient") -> list[str]:
    """Per held-out ``column`` value: the goal (PSNR >= the best of ``baselines`` + 1 dB, SSIM not below) met
    or missed, with the figures; a value where none of ``baselines`` was scored gets no line."""
    lines = []
    for key, methods in sorted(per_column(rows, "volume", column).items()):
        present = [m for m in baselines if m in methods]
        if not present or "model" not in methods:
            continue
        baseline = max(present, key=lambda m: methods[m][0])
        (psnr, ssim), (base_psnr, base_ssim) = methods["model"], methods[baseline]
        if psnr < base_psnr + GOAL_DB:
            verdict = f"missed by {base_psnr + GOAL_DB - psnr:.2f} dB"
        else:
            verdict = "met" if ssim >= base_ssim else "missed on SSIM"
        condition = f", condition {methods['condition'][0]:.2f} dB" if "condition" in methods else ""
        lines.append(
            f"{key}: model {psnr:.2f} dB / SSIM {ssim:.4f}, {baseline} {base_psnr:.2f} dB / {base_ssim:.4f}"
            f"{condition}: goal (>= {baseline} + {GOAL_DB:.0f} dB, SSIM not below) {verdict}"
        )
    return lines


def level_slabs(spec, level: int, volumes, slices: int) -> list:
    """Each real volume taken to the cascade's plane and to ``level`` by the cascade's pyramid (its cascade.json
    training record; "subsample" without one), its central ``slices`` slices."""
    import numpy as np

    from cgan_ct.ops.pyramid import downsample
    from cgan_ct.synthesis.cascade_training import fit_plane

    factor = 2**level
    pyramid = (getattr(spec, "training", None) or {}).get("pyramid", "subsample")
    slabs = []
    for volume in volumes:
        hu = np.rint(downsample(fit_plane(volume.hu, spec.size), factor, pyramid)).astype(volume.hu.dtype)
        start = max(0, len(hu) // 2 - slices // 2)
        spacing = tuple(s * factor for s in volume.spacing_mm)
        slabs.append(volume.replace(hu=hu[start : start + slices], spacing_mm=spacing))
    return slabs


def score_stage(model, level: int, slabs: list) -> list[dict]:
    """Rows of a level-``level`` stage on its 2x pixelation of each slab: PSNR beside the condition, texture."""
    from cgan_ct.constants import DEPIXELATE
    from cgan_ct.inference.baselines import SLOW_BASELINES
    from cgan_ct.inference.evaluation import evaluate_volume

    rows = []
    for slab in slabs:
        result = evaluate_volume(slab, DEPIXELATE, model, overlap=0.25, skip_baselines=SLOW_BASELINES)
        add_texture(result, slab.spacing_mm, patch=max(8, STAGE_PATCH // 2**level))
        rows += [{**row, "level": level, "slices": len(slab.hu)} for row in result.rows]
    return rows


def append_jsonl(path, rows: list[dict]) -> None:
    """``rows`` appended to ``path`` as JSON lines (nothing when ``path`` is empty)."""
    if path:
        with pathlib.Path(path).open("a") as f:
            for row in rows:
                f.write(json.dumps(row, default=float) + "\n")
