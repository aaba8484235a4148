"""How much of a grid the synthetic volumes carry: the HU step at the boundaries of 2-, 4- and 8-voxel cells
over the step elsewhere (realism.texture.cell_edge_ratio), in the body, against real series (issue 33, item 5:
the squares seen in the synthetic soft tissue, as a measure), in-plane (columns x2, x4, x8) and between slices
(z2, z4, z8: the bands a coronal or sagittal view shows).

  python experiments/cell_edges.py --volumes SYN_DIR[,SYN_DIR...] [--heldout SERIES,...] [--periods 2,4,8]
      [--z_periods 2,4,8] [--ct_dir ../shared/data/ct]

SYN_DIR: a cgan-ct-synthesize output folder (its synthetic_*/volume.nii.gz) or one volume. Real series
(default: cohort.json's held-out) are measured as they are, their grid where a synthetic volume's would be (from
voxel 0): real CT has no grid, so they give the figure of no grid (about 1). One row per volume, then the
mean and range per source.
"""

from __future__ import annotations

import pathlib

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import numpy as np
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_VOLUMES = flags.DEFINE_list("volumes", None, "Synthesis output folders or volume files.", required=True)
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Real series (folders; default: cohort.json).")
_PERIODS = flags.DEFINE_list("periods", ["2", "4", "8"], "Cell edges in voxels, in-plane.")
_Z_PERIODS = flags.DEFINE_list("z_periods", ["2", "4", "8"], "Cell edges in slices, between slices (none: empty).")


def volume_paths(entry: str) -> list[pathlib.Path]:
    """The volumes of a synthesis folder (its synthetic_*/volume.nii.gz), or the entry itself."""
    path = pathlib.Path(entry)
    found = sorted(path.glob("synthetic_*/volume.nii.gz")) if path.is_dir() else []
    return found or [path]


def columns(periods: list[int], z_periods: list[int]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """The table's columns: name -> (period, axes)."""
    return {**{f"x{p}": (p, (1, 2)) for p in periods}, **{f"z{p}": (p, (0,)) for p in z_periods}}


def rows(source: str, paths, cols: dict) -> list[dict]:
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.ops.body_mask import body_mask
    from cgan_ct.realism.texture import cell_edge_ratio

    out = []
    for path in paths:
        hu = read_volume(path).hu
        path = pathlib.Path(path)
        name = path.parent.name if path.name == "volume.nii.gz" else path.name  # synthetic_<i>, or the series
        body = body_mask(hu)
        ratios = {col: cell_edge_ratio(hu, p, body, axes) for col, (p, axes) in cols.items()}
        out.append({"source": source, "volume": name, **ratios})
    return out


def main(argv: list[str]) -> None:
    del argv
    cols = columns([int(p) for p in _PERIODS.value], [int(p) for p in _Z_PERIODS.value])
    table = []
    for entry in _VOLUMES.value:
        table += rows(entry, volume_paths(entry), cols)
    real = [
        pathlib.Path(_CT.value) / name if not pathlib.Path(name).exists() else pathlib.Path(name)
        for name in _HELDOUT.value
    ]
    table += rows("real", real, cols)
    print("| source | volume | " + " | ".join(cols) + " |")
    print("|---" * (2 + len(cols)) + "|")
    for row in table:
        print(f"| {row['source']} | {row['volume']} | " + " | ".join(_cell(row[c]) for c in cols) + " |")
    for source in dict.fromkeys(row["source"] for row in table):
        values = {c: [row[c] for row in table if row["source"] == source and row[c] is not None] for c in cols}
        cells = [f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})" if v else "-" for v in values.values()]
        print(f"| {source} | mean (range) | " + " | ".join(cells) + " |")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    app.run(main)
