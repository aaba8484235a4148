"""A control for the synthesis report's FRD: what a real volume's field of view and a cubic resampling alone do to
it (issue 33; stop 63's next step 2).

  python experiments/frd_field_of_view.py [--factors 0.87,1.15] [--training SERIES,...] [--heldout SERIES,...]
      [--ct_dir ../shared/data/ct] [--output rows.json]

Putting synthetic volumes on real scans' fields of view (cgan_ct.synthesis.placement) raised their FRD against the
training series from 3.89x to 4.6-5.0x the held-out series' own (BUILD_NOTES, "Why synthetic volumes looked
alike"). Two things change there besides the anatomy: the cubic resampling smooths the texture, and the body's
share of the image changes (PyRadiomics normalises each slice over its whole image, not the body alone). Here the
held-out real series go through the same resampling (``cgan_ct.ops.regrid.Regrid``, as placement) with nothing
else changed, and are scored as the report scores them (``realism_table``'s FRD recipe: 16 slices a volume, the
training series as the reference, equal sample counts):

- "as read": the held-out series themselves (the report's denominator);
- "resampled, same grid": moved by half a pixel along both axes, cubic (the smoothing alone);
- "field of view x F": the body's size in mm kept, the pixel spacing times F (F > 1: a wider field of view, a
  smaller body in the image), cubic.

Each row gives FRD, its ratio to "as read", the body's share of the image and the soft-tissue noise power's mean
frequency. The real volumes are centre-cropped or padded to 512 x 512, as the report takes them.
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
_COHORT = cohort.load()
_CHEST = [name for name in _COHORT["train"] if _COHORT["series"][name]["region"] == "chest"]
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_TRAINING = flags.DEFINE_list("training", _CHEST, "The reference series (default: cohort.json's training chests).")
_HELDOUT = flags.DEFINE_list("heldout", _COHORT["heldout"], "The series resampled (default: cohort.json's held out).")
_FACTORS = flags.DEFINE_list("factors", ["0.87", "1.15"], "Pixel-spacing factors of the field-of-view rows.")
_SIZE = flags.DEFINE_integer("size", 512, "In-plane size the series are cropped or padded to, as the report.")
_SLICES = flags.DEFINE_integer("slices_per_volume", 16, "Axial slices a volume as FRD samples, as the report.")
_OUTPUT = flags.DEFINE_string("output", None, "Write the rows here (JSON).")


def _read(names: list[str]) -> list:
    from cgan_ct.io.sources import discover
    from cgan_ct.synthesis.cascade_training import fit_plane

    sources, skipped = discover([str(pathlib.Path(_CT.value) / name) for name in names])
    if skipped:
        raise SystemExit("; ".join(f"{s.path}: {s.reason}" for s in skipped))
    volumes = []
    for source in sources:
        volume = source.read(None)
        volumes.append(volume.replace(hu=fit_plane(volume.hu, _SIZE.value)))
    return volumes


def resampled(volume, factor: float, shift_pixels: float):
    """``volume`` with its pixel spacing times ``factor`` (the body's size in mm kept), moved by ``shift_pixels``
    of its own pixels along y and x: cubic, as a placed synthetic volume."""
    from cgan_ct.ops.regrid import Regrid

    spacing = tuple(float(s) for s in volume.spacing_mm[1:])
    target = tuple(s * factor for s in spacing)
    regrid = Regrid(spacing, target, volume.hu.shape[1], tuple(s * shift_pixels for s in spacing))
    hu = np.concatenate([regrid.apply(volume.hu[z : z + 32]) for z in range(0, volume.shape[0], 32)])
    hu = np.clip(np.rint(hu), -32768, 32767).astype(np.int16)  # a Volume holds int16 HU, as a written scan
    return volume.replace(hu=hu, spacing_mm=(float(volume.spacing_mm[0]), *target))


def measure(volumes: list) -> dict:
    """FRD features (stacked), body share of the image and soft-tissue NPS mean frequency of ``volumes``."""
    from cgan_ct.ops.body_mask import body_mask
    from cgan_ct.realism.radiomics_frd import slice_features
    from cgan_ct.realism.tissue_sanity import tissue_statistics

    features, fills, frequencies = [], [], []
    for volume in volumes:
        body = body_mask(volume.hu)
        features.append(slice_features(volume.hu, volume.spacing_mm, body=body, slices=_SLICES.value)[1])
        depth = volume.shape[0]
        fills.append(float(body[depth // 4 : max(depth // 4 + 1, 3 * depth // 4)].mean()))
        frequencies.append(tissue_statistics(volume.hu, volume.spacing_mm, body=body)["nps_mean_frequency_per_mm"])
    return {"features": np.concatenate(features), "fill": fills, "nps": frequencies}


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.realism.radiomics_frd import frechet_radiomics_distance

    factors = [float(f) for f in _FACTORS.value]
    reference = measure(_read(_TRAINING.value))["features"]
    heldout = _read(_HELDOUT.value)
    variants = [("as read", heldout), ("resampled, same grid", [resampled(v, 1.0, 0.5) for v in heldout])]
    variants += [(f"field of view x {f:g}", [resampled(v, f, 0.0) for v in heldout]) for f in factors]
    rows = []
    for name, volumes in variants:
        measured = measure(volumes)
        samples = len(measured["features"])
        frd = frechet_radiomics_distance(measured["features"], reference, samples=samples, seed=0)
        rows.append({"variant": name, "frd": frd, "fill": measured["fill"], "nps_mean_frequency": measured["nps"]})
        print(f"{name}: FRD {frd:.2f}", flush=True)
    base = rows[0]["frd"]
    print(f"{len(heldout)} held-out series against {len(_TRAINING.value)} training series, {_SLICES.value} slices each")
    print("| variant | FRD | / as read | body share of the image | soft-tissue NPS mean frequency (/mm) |")
    print("|---|---|---|---|---|")
    for r in rows:
        nps = [f for f in r["nps_mean_frequency"] if f is not None]
        nps_cell = f"{np.mean(nps):.3f} ({min(nps):.3f}-{max(nps):.3f})" if nps else "-"
        fill = f"{np.mean(r['fill']):.2f} ({min(r['fill']):.2f}-{max(r['fill']):.2f})"
        print(f"| {r['variant']} | {r['frd']:.2f} | {r['frd'] / base:.2f}x | {fill} | {nps_cell} |")
    if _OUTPUT.value:
        pathlib.Path(_OUTPUT.value).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    app.run(main)
