"""How synthetic volumes compare with real ones, without human raters.

Writes a report folder:
  report.md           goals, one realism table (FRD, MS-SSIM diversity, tissue
                      HU and fractions, soft-tissue NPS), the anatomy checks
                      (lungs, ribs, airway, heart side against the real
                      range: realism.anatomy), the distribution
                      statistics (HU histogram W1, spectra), the memorization
                      check at full resolution and at the coarse level (with
                      positive controls and costs), figures
  summary.json        every figure of report.md and the goal verdicts (no ids, no paths)
  statistics.csv      one row per synthetic, held-out and (leave-one-out) training volume
  memorization.json   both memorization checks: quantiles, threshold, flagged blocks, controls, cost
  realism.json        the realism table's figures
  anatomy.json        every volume's anatomy measures and each synthetic volume's checks
  figures/            axial, coronal and sagittal slices, lung and soft-tissue
                      windows: a real held-out volume above each synthetic one

References for every synthetic figure: the real held-out volumes (patients
outside training, each against the pooled training volumes) and, stricter, each
training volume against the other training volumes (leave one out: same
scanners as the training set, so scanner differences do not flatter the
synthetic volumes when the held-out patients come from other scanners).
"""

from __future__ import annotations

import csv
import json
import pathlib
import time

import numpy as np
from PIL import Image

from cgan_ct.constants import LUNG_WINDOW, MEDIASTINAL_WINDOW
from cgan_ct.errors import InputError
from cgan_ct.io.volume import Volume
from cgan_ct.realism.anatomy import anatomy_report
from cgan_ct.realism.memorization_report import (
    COARSE_BLOCK,
    coarse_memorization_report,
    memorization_report,
    positive_control,
)
from cgan_ct.realism.synthesis_stats import compare, markdown_table, volume_statistics

LUNG_RANGE_HU = LUNG_WINDOW.range_hu  # (low, high) HU
SOFT_TISSUE_RANGE_HU = MEDIASTINAL_WINDOW.range_hu  # W 400, L 40: (-160, 240) HU
W1_GOAL_RATIO = 2.0
LEAVE_ONE_OUT = "training (leave one out)"


def orthogonal_views(volume: Volume, window=LUNG_RANGE_HU, height: int = 256) -> np.ndarray:
    """Middle axial, coronal and sagittal slices side by side, uint8, in millimetre proportions."""
    low, high = window
    hu = volume.hu
    dz, dy, dx = volume.spacing_mm
    z, y, x = (n // 2 for n in hu.shape)
    # canonical axes: hu[k] axial with k toward superior; show superior at the top
    views = [(hu[z], dy, dx), (hu[:, y, :][::-1], dz, dx), (hu[:, :, x][::-1], dz, dy)]
    panels = []
    for image, row_mm, col_mm in views:
        scaled = (np.clip((image.astype(np.float32) - low) / (high - low), 0, 1) * 255).astype(np.uint8)
        rows, cols = image.shape
        aspect = (cols * col_mm) / (rows * row_mm)
        panels.append(np.asarray(Image.fromarray(scaled).resize((max(1, round(height * aspect)), height))))
    gap = np.full((height, 6), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def comparison_figure(
    real: list[Volume], synthetic: list[Volume], path: pathlib.Path, windows=(LUNG_RANGE_HU,)
) -> pathlib.Path:
    """Rows of orthogonal views: the real volumes first, then the synthetic ones; side by side per window."""
    columns = []
    for window in windows:
        rows = [orthogonal_views(v, window) for v in [*real, *synthetic]]
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, [(0, 6), (0, width - r.shape[1])], constant_values=255) for r in rows]
        columns.append(np.concatenate(padded))
    gap = np.full((columns[0].shape[0], 12), 255, np.uint8)
    Image.fromarray(np.concatenate([p for c in columns for p in (c, gap)][:-1], axis=1)).save(path)
    return path


def _leave_one_out_rows(stats: list) -> list[dict]:
    """Each training volume's statistics against the pool of the others' (rows of group LEAVE_ONE_OUT)."""
    if len(stats) < 2:
        return []
    rows = []
    for i, own in enumerate(stats):
        others = [s for j, s in enumerate(stats) if j != i]
        row = compare([own], others, [own]).rows[0]
        rows.append({**row, "group": LEAVE_ONE_OUT})
    return rows


def _group_mean(rows: list[dict], group: str, key: str) -> float | None:
    values = [r[key] for r in rows if r["group"] == group and r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _w1_goal(rows: list[dict]) -> tuple[bool, str]:
    synthetic, heldout = _group_mean(rows, "synthetic", "w1_hu"), _group_mean(rows, "heldout", "w1_hu")
    loo = _group_mean(rows, LEAVE_ONE_OUT, "w1_hu")
    text = f"synthetic {synthetic:.1f} HU, held-out {heldout:.1f} HU, ratio {synthetic / heldout:.2f}"
    if loo is not None:
        text += f"; training leave-one-out {loo:.1f} HU (ratio {synthetic / loo:.2f})"
    return synthetic <= W1_GOAL_RATIO * heldout, text


def _memorization_goal(full, coarse, coarse_skipped: str | None) -> tuple[bool, str]:
    reports = [full] if coarse is None else [full, coarse]
    controls = [c for report in reports for c in report.control]
    flagged = sum(len(r.flagged) for r in reports)
    seen = bool(controls) and all(c.detected for c in controls)
    if coarse is None:
        at_coarse, cost = f"coarse level not checked: {coarse_skipped}", f"{full.search.seconds:.0f} s"
    else:
        at_coarse = f"{len(coarse.flagged)} of {len(coarse.synthetic_distance)} at level {coarse.search.level}"
        cost = f"{full.search.seconds:.0f} s + {coarse.search.seconds:.1f} s (coarse)"
    text = (
        f"{flagged} synthetic block(s) flagged ({len(full.flagged)} of {len(full.synthetic_distance)} at full "
        f"resolution, {at_coarse}); positive controls flagged: {sum(c.detected for c in controls)} of "
        f"{len(controls)}; cost {cost}"
    )
    return seen and flagged == 0 and coarse is not None, text


def _memorization_record(report) -> dict:
    return {
        "threshold": float(report.threshold),
        "rule": report.rule,
        "quantiles": report.quantiles(),
        "flagged": [
            {
                "synthetic_volume": int(b.synthetic_volume),
                "origin_zyx": [int(v) for v in b.synthetic_origin_zyx],
                "distance": float(b.distance),
                "training_volume": int(b.training_volume),
                "training_origin_zyx": [int(v) for v in b.training_origin_zyx],
                "flip_axes": list(b.flip_axes),
            }
            for b in report.flagged
        ],
        "control": [c.to_json() for c in report.control],
        "search": report.search.to_json(),
    }


def split_real(volumes, split: dict) -> tuple[list, list, int]:
    """(training, held-out, how many held out because the dataset never held them) of real ``volumes``.

    ``split``: volume id -> "train" or "test", from the cascade's dataset manifest. A volume the dataset
    does not hold was never trained on (a cascade trained with no test split on a cohort's training series,
    compared with its held-out series), so it is held out.
    """
    training, heldout, outside = [], [], 0
    for volume in volumes:
        group = split.get(volume.volume_id)
        outside += group is None
        (training if group == "train" else heldout).append(volume)
    return training, heldout, outside


def _check_sizes(synthetic, training, heldout, block: int) -> None:
    """InputError, before anything is written, for a volume too small for the memorization checks' blocks."""
    need = block + 7  # positive_control's crop starts up to 7 voxels off the block grid
    for name, group in (("synthetic", synthetic), ("training", training), ("held-out", heldout)):
        for i, volume in enumerate(group):
            if min(volume.shape) < need:
                shape = " x ".join(map(str, volume.shape))
                raise InputError(
                    None,
                    f"{name} volume {i + 1} of {len(group)} is {shape} voxels: the report compares {block}^3 "
                    f"blocks and needs at least {need} voxels along every axis (a smaller --block, or longer volumes)",
                )


def synthesis_report(
    synthetic: list[Volume],
    training: list[Volume],
    heldout: list[Volume],
    output_dir,
    block: int = 32,
    flip_axes: tuple[int, ...] = (2,),
    levels: int = 3,
    realism: bool = True,
    anatomy: bool = True,
    control_seed: int = 0,
    say=lambda message: None,
    memorization_synthetic: list[np.ndarray] | None = None,
) -> dict:
    """Goals, realism, statistics, both memorization checks and figures in ``output_dir``; returns a summary.

    ``levels``: the cascade's levels (the coarse memorization check runs on every 2**levels-th voxel).
    ``realism``: False skips FRD / MS-SSIM / tissue sanity (needs the realism extra; slower).
    ``anatomy``: False skips the anatomy checks (lungs, ribs, airway, heart side; 10-35 s a 512 x 512 volume).
    ``memorization_synthetic``: the HU volumes the memorization checks search instead of the synthetic ones: the
    same draws on the cascade's own grid, where the volumes were placed on other fields of view
    (cgan_ct.synthesis.placement). The search is shift-invariant, not scale-invariant: resampled to another
    spacing, a copy of training voxels loses the voxel-scale detail the check matches (measured in
    tests/test_placement.py), so placed volumes would pass it untested.
    Summary keys: report, flagged_blocks, synthetic_blocks, control_detected (every positive control flagged),
    goals ({name: passed}).
    """
    out = pathlib.Path(output_dir)
    _check_sizes(synthetic, training, heldout, block)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # spectra on 32-voxel patches at full resolution; 16 on small test volumes, where 32 find no tissue
    patch = 32 if min(v.shape[1] for v in synthetic) >= 256 else 16
    say("statistics: HU histograms and spectra")
    training_stats = [volume_statistics(v, patch=patch) for v in training]  # once, for both tables
    comparison = compare(synthetic, training_stats, heldout, patch=patch)
    rows = comparison.rows + _leave_one_out_rows(training_stats)
    goals = {f"body HU histogram W1 synthetic <= {W1_GOAL_RATIO:g}x held-out": _w1_goal(rows)}
    realism_result = None
    if realism:
        say("realism: FRD, MS-SSIM, tissue sanity")
        from cgan_ct.realism.realism_table import realism_table  # needs the realism extra (PyRadiomics)

        realism_result = realism_table(synthetic, training, heldout)
        goals.update(realism_result.goals())
        (out / "realism.json").write_text(realism_result.to_json())
    anatomy_result = None
    if anatomy:
        say("anatomy: lungs, ribs, airway, heart side against every real volume")
        anatomy_result = anatomy_report(synthetic, [*training, *heldout])
        goals["anatomy: every synthetic volume inside the real range (lungs, bone, ribs, airway, heart side)"] = (
            anatomy_result.goal()
        )
        (out / "anatomy.json").write_text(anatomy_result.to_json())
    hu = {name: [v.hu for v in group] for name, group in (("s", synthetic), ("t", training), ("h", heldout))}
    if memorization_synthetic is not None:
        if len(memorization_synthetic) != len(synthetic):
            raise ValueError(f"{len(memorization_synthetic)} volumes to search for {len(synthetic)} synthetic ones")
        hu["s"] = list(memorization_synthetic)
    say("memorization: full resolution, every shift")
    full = memorization_report(
        hu["s"], hu["t"], hu["h"], [positive_control(hu["t"], control_seed, block=block)], block, flip_axes
    )
    say("memorization: coarse level, every shift")
    coarse, coarse_skipped = None, None
    try:
        coarse_control = positive_control(hu["t"], control_seed, block=COARSE_BLOCK, grid=2**levels)
        coarse = coarse_memorization_report(hu["s"], hu["t"], hu["h"], [coarse_control], levels, flip_axes=flip_axes)
    except ValueError as exc:  # volumes too small for the coarse block at that level
        coarse_skipped = str(exc)
    goals["memorization: positive controls flagged, no synthetic block flagged"] = _memorization_goal(
        full, coarse, coarse_skipped
    )
    with open(out / "statistics.csv", "w", newline="") as f:
        columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "group", k != "volume", k))
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    memo = {
        "full_resolution": _memorization_record(full),
        "coarse": {"skipped": coarse_skipped} if coarse is None else _memorization_record(coarse),
    }
    (out / "memorization.json").write_text(json.dumps(memo, indent=1))
    figures = []
    (out / "figures").mkdir(exist_ok=True)
    for i in range(min(len(synthetic), 4)):
        path = out / "figures" / f"synthetic_{i:03d}.png"
        figures.append(
            comparison_figure(heldout[:1], synthetic[i : i + 1], path, (LUNG_RANGE_HU, SOFT_TISSUE_RANGE_HU))
        )
    lines = [
        "# Synthetic volumes against real ones",
        "",
        f"{len(synthetic)} synthetic, {len(training)} training and {len(heldout)} held-out volume(s). "
        "Distances are to the pooled training volumes; a synthetic volume is as realistic, by these measures, "
        "as the real held-out volumes are when its figures sit among theirs. 'Training (leave one out)': each "
        "training volume against the others, a reference from the training scanners themselves.",
        "",
        "## Goals",
        "",
        *[f"- {name}: **{'yes' if passed else 'no'}** ({text})" for name, (passed, text) in goals.items()],
        "",
    ]
    if realism_result is not None:
        lines += ["## Realism (FRD, diversity, tissue sanity)", "", realism_result.markdown(), ""]
    if anatomy_result is not None:
        lines += [
            "## Anatomy (against the range of the real training and held-out volumes, widened by 20 % of its span)",
            "",
            anatomy_result.markdown(),
            "",
        ]
    lines += [
        "## Statistics (HU histogram Wasserstein distance, power spectrum distance per tissue, lung fraction)",
        "",
        markdown_table(rows, comparison.training),
        "",
        "## Memorization check at full resolution (every shift, mirrored)",
        "",
        full.markdown(),
        "",
        f"## Memorization check at the coarse level ({levels}: every {2**levels}th voxel, where the coarse "
        "generator works)",
        "",
        f"Not run: {coarse_skipped}." if coarse is None else coarse.markdown(),
        "",
        "## Figures (top: a real held-out volume, bottom: synthetic; axial, coronal, sagittal; "
        "left: lung window, right: soft-tissue window)",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
        "",
        f"Report computed in {time.perf_counter() - started:.0f} s.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    coarse_reports = () if coarse is None else (coarse,)
    control_detected = all(c.detected for r in (full, *coarse_reports) for c in r.control)
    summary = {
        "report": str(out / "report.md"),
        "flagged_blocks": sum(len(r.flagged) for r in (full, *coarse_reports)),
        "synthetic_blocks": len(full.synthetic_distance),
        "coarse_synthetic_blocks": sum(len(r.synthetic_distance) for r in coarse_reports),
        "control_detected": control_detected,
        "synthetic_volumes": len(synthetic),
        "synthetic_shapes": sorted({tuple(v.hu.shape) for v in synthetic}),
        "real_volumes": {"training": len(training), "heldout": len(heldout)},
        "goals": {name: bool(passed) for name, (passed, _) in goals.items()},
        "goal_figures": {name: text for name, (_, text) in goals.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=1))
    return summary
