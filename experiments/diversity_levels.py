"""Where synthetic volumes' likeness comes from: MS-SSIM between draws at every level of a cascade's synthesis,
as stored and with the bodies aligned, against real patients (issue 33, item 2).

  python experiments/diversity_levels.py --cascade pretrained:synthesis [--seeds 0,1,2,3,4,5] [--slices 64]
      [--real SERIES,...] [--ct_dir ../shared/data/ct] [--output rows.json]

For each seed the coarse draw and every stage's output (``level_volumes``; the last through the output
calibration), then the volume with the output grain, then the volume on its placement (what cgan-ct-synthesize
writes) are compared pairwise at matched relative heights as the synthesis report compares whole volumes
(``cgan_ct.realism.ms_ssim``: 8 slices a pair; coarser levels up-sampled in-plane, linearly, to the full grid
first). "as stored" is the report's diversity measure; "aligned" the same with every slice put on a common
0.8 mm grid centred on its body (field of view and placement removed: what is left is anatomy). The real rows
are the ``--real`` series, centre-cropped or padded to the cascade's plane as the report takes them.
"""

from __future__ import annotations

import json
import pathlib

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import numpy as np
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CASCADE = flags.DEFINE_string("cascade", "pretrained:synthesis", "The cascade (a folder or pretrained:NAME).")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_COHORT = cohort.load()
_CHESTS = [name for name in _COHORT["train"] + _COHORT["heldout"] if _COHORT["series"][name]["region"] == "chest"]
_REAL = flags.DEFINE_list("real", _CHESTS, "Real series (default: cohort.json's nine chest series, as the report).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4", "5"], "Synthesis seeds (at least 2).")
_SLICES = flags.DEFINE_integer("slices", 64, "Slices of each synthetic volume.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the rows here (JSON).")
MATCHED = 8  # slices a pair, as the synthesis report


def matched(hu: np.ndarray, size: int) -> np.ndarray:
    """The MATCHED slices of a (z, y, x) HU volume at matched heights, up-sampled in-plane to ``size``."""
    from scipy import ndimage

    from cgan_ct.realism.ms_ssim import matched_slices

    picked = np.asarray(hu, np.float32)[matched_slices(hu.shape[0], MATCHED)]
    factor = size / picked.shape[1]
    return picked if factor == 1 else ndimage.zoom(picked, (1, factor, factor), order=1)


def row(name: str, volumes: list[np.ndarray], spacings: list) -> dict:
    """Pairwise MS-SSIM as stored and aligned for one set of matched-slice stacks."""
    from cgan_ct.realism.ms_ssim import aligned_ms_ssim, pairwise_ms_ssim

    stored = pairwise_ms_ssim(volumes, MATCHED)
    aligned = aligned_ms_ssim(list(zip(volumes, spacings, strict=True)), MATCHED)
    return {"level": name, "volumes": len(volumes), "stored": stored, "aligned": aligned}


def _cell(values: list) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.io.sources import discover
    from cgan_ct.synthesis.cascade_training import fit_plane
    from cgan_ct.synthesis.synthesis import Cascade, level_volumes

    seeds = [int(s) for s in _SEEDS.value]
    if len(seeds) < 2:
        raise app.UsageError("--seeds: at least 2, to make a pair")
    placed = Cascade(_CASCADE.value)
    fixed = Cascade(_CASCADE.value, placement=False)
    size, spacing = fixed.size, tuple(fixed.spacing_mm[1:])
    names = [f"level {j} ({'coarse' if j == fixed.levels else f'stage{j}'})" for j in range(fixed.levels, -1, -1)]
    names[-1] += ", calibrated" if fixed.calibration is not None else ""
    sets: dict[str, tuple[list, list]] = {name: ([], []) for name in names}
    for seed in seeds:
        for name, hu in zip(names, level_volumes(fixed, seed, _SLICES.value), strict=True):
            sets[name][0].append(matched(hu, size))
            sets[name][1].append(spacing)
        if fixed.grain is not None:
            grained = np.concatenate(list(fixed.slabs(seed, _SLICES.value)))
            sets.setdefault("grained", ([], []))[0].append(matched(grained, size))
            sets["grained"][1].append(spacing)
        if placed.placements is not None:
            volume = placed.synthesize(seed, _SLICES.value)  # as written: int16, its spacing the drawn grid's
            sets.setdefault("placed (as written)", ([], []))[0].append(matched(volume.hu, size))
            sets["placed (as written)"][1].append(volume.spacing_mm[1:])
        print(f"seed {seed}: drawn", flush=True)
    rows = [row(name, *sets[name]) for name in sets]
    sources, skipped = discover([str(pathlib.Path(_CT.value) / name) for name in _REAL.value])
    if skipped:
        raise SystemExit("; ".join(f"{s.path}: {s.reason}" for s in skipped))
    real, real_spacing = [], []
    for source in sources:
        volume = source.read(None)
        real.append(matched(fit_plane(volume.hu, size), size))
        real_spacing.append(tuple(volume.spacing_mm[1:]))
    if len(real) >= 2:
        rows.append(row(f"real ({len(real)} series)", real, real_spacing))
    print(f"{len(seeds)} draws of {_CASCADE.value}, {_SLICES.value} slices; MS-SSIM between pairs, mean (range)")
    print("| level | volumes | as stored | bodies aligned |")
    print("|---|---|---|---|")
    for entry in rows:
        print(f"| {entry['level']} | {entry['volumes']} | {_cell(entry['stored'])} | {_cell(entry['aligned'])} |")
    if _OUTPUT.value:
        pathlib.Path(_OUTPUT.value).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app.run(main)
