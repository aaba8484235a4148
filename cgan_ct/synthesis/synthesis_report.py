"""How synthetic volumes compare with real ones, without human raters.

Writes a report folder:
  report.md           statistics table (synthetic vs real held-out, both against
                      the training volumes), memorization check, figures
  statistics.csv      one row per synthetic and held-out volume
  memorization.json   distance quantiles, threshold, flagged blocks
  figures/            axial, coronal and sagittal slices (lung window),
                      real volumes above synthetic ones
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
from PIL import Image

from cgan_ct.inference.report import LUNG_WINDOW
from cgan_ct.io.volume import Volume
from cgan_ct.synthesis.memorization import blocks_from_volumes, memorization_check
from cgan_ct.synthesis.synthesis_stats import compare, markdown_table


def orthogonal_views(volume: Volume, window=LUNG_WINDOW, height: int = 256) -> np.ndarray:
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


def comparison_figure(real: list[Volume], synthetic: list[Volume], path: pathlib.Path) -> pathlib.Path:
    """Rows of orthogonal views: the real volumes first, then the synthetic ones."""
    rows = [orthogonal_views(v) for v in [*real, *synthetic]]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, [(0, 6), (0, width - r.shape[1])], constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(padded)).save(path)
    return path


def synthesis_report(
    synthetic: list[Volume],
    training: list[Volume],
    heldout: list[Volume],
    output_dir,
    block: int = 32,
    flip_axes: tuple[int, ...] = (2,),
) -> dict:
    """Statistics, memorization check and figures in ``output_dir``; returns a summary dict."""
    out = pathlib.Path(output_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    # spectra on 32-voxel patches at full resolution; 16 on small test volumes, where 32 find no tissue
    patch = 32 if min(v.shape[1] for v in synthetic) >= 256 else 16
    comparison = compare(synthetic, training, heldout, patch=patch)
    memo = memorization_check(
        blocks_from_volumes(synthetic, block),
        blocks_from_volumes(training, block),
        blocks_from_volumes(heldout, block),
        flip_axes=flip_axes,
    )
    with open(out / "statistics.csv", "w", newline="") as f:
        columns = sorted({k for row in comparison.rows for k in row}, key=lambda k: (k != "group", k != "volume", k))
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(comparison.rows)
    flagged = [
        {
            "synthetic_volume": int(b.synthetic_volume),
            "origin_zyx": [int(v) for v in b.synthetic_origin_zyx],
            "distance": float(b.distance),
            "training_volume": int(b.training_volume),
            "training_origin_zyx": [int(v) for v in b.training_origin_zyx],
            "flip_axes": list(b.flip_axes),
        }
        for b in memo.flagged
    ]
    record = {"threshold": float(memo.threshold), "rule": memo.rule, "quantiles": memo.quantiles(), "flagged": flagged}
    (out / "memorization.json").write_text(json.dumps(record, indent=1))
    figures = []
    for i in range(min(len(synthetic), 4)):
        figures.append(comparison_figure(heldout[:1], synthetic[i : i + 1], out / "figures" / f"synthetic_{i:03d}.png"))
    lines = [
        "# Synthetic volumes against real ones",
        "",
        f"{len(synthetic)} synthetic, {len(training)} training and {len(heldout)} held-out volume(s). "
        "Distances are to the pooled training volumes; a synthetic volume is as realistic, by these measures, "
        "as the real held-out volumes are when its figures sit among theirs.",
        "",
        "## Statistics (HU histogram Wasserstein distance, power spectrum distance per tissue, lung fraction)",
        "",
        markdown_table(comparison.rows, comparison.training),
        "",
        "## Memorization check (nearest training block)",
        "",
        memo.markdown(),
        "",
        "## Figures (lung window; top: a real held-out volume, bottom: synthetic; axial, coronal, sagittal)",
        "",
        *[f"![{p.stem}](figures/{p.name})" for p in figures],
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return {
        "report": str(out / "report.md"),
        "flagged_blocks": len(flagged),
        "synthetic_blocks": len(memo.synthetic_distance),
    }
