"""Where a synthetic volume's texture is lost: soft-tissue noise power at every level of a cascade's
synthesis, against held-out real CT at that level (issue 33, item 3).

  python experiments/level_texture.py --cascade pretrained:synthesis [--seeds 0,1,2,3] [--slices 64]
      [--heldout SERIES,...] [--ct_dir ../shared/data/ct] [--output rows.jsonl] [--smooth 2:1.0,1:1.0]

stage_texture.py scores each stage on real coarser input; this follows the synthesis itself. For each seed
the coarse draw and every stage's output (levels L .. 0, materialized whole: small at the coarse levels,
``--slices`` x size^2 at level 0) are measured as the synthesis report measures the final volume
(tissue_sanity: uniform soft tissue of the volume itself, NPS in patches of about the same size in mm at
every level, heldout.STAGE_PATCH / 2^j voxels). The held-out real series are measured the same way at each
level (heldout.level_slabs: the cascade's plane, every 2^j-th voxel or each 2^j cube's mean as the
cascade's pyramid, the central slices covering the same length). Mean frequencies are also given as a
fraction of the level's in-plane Nyquist frequency, so a stage
that only up-samples shows as a halving of that fraction. At full resolution the tissue medians and
fractions are given too (tissue_sanity.tissue_statistics, as the synthesis report): what a change made for
texture does to the tissues.

``--smooth j:sigma,...`` is a probe, not a synthesis setting: level j (the coarse draw or a stage's output) is
blurred in-plane by a Gaussian of sigma voxels before it is measured and before the next stage refines it, to
find which level's noise the final grain inherits.
"""

from __future__ import annotations

import pathlib

# isort: off
import cgan_ct  # noqa: F401  (first: oneDNN and threads are set before TensorFlow is imported)
# isort: on

import cohort  # experiments/cohort.py, beside this script
import heldout  # experiments/heldout.py: level slabs, the NPS patch, the JSON-lines record
import numpy as np
from absl import app, flags

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CASCADE = flags.DEFINE_string("cascade", "pretrained:synthesis", "The cascade (a folder or pretrained:NAME).")
_CT = flags.DEFINE_string("ct_dir", str(_ROOT.parent / "shared" / "data" / "ct"), "Folder of the real CT series.")
_HELDOUT = flags.DEFINE_list("heldout", cohort.heldout_series(), "Held-out series (folders; default: cohort.json).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2", "3"], "Synthesis seeds.")
_SLICES = flags.DEFINE_integer("slices", 64, "Slices at full resolution (level 0), synthetic and real.")
_OUTPUT = flags.DEFINE_string("output", None, "Append the rows here as JSON lines.")
_SMOOTH = flags.DEFINE_list("smooth", [], "level:sigma,...: blur that level in-plane (a probe; see the docstring).")
TISSUE = ("lung_hu", "fat_hu", "soft_tissue_hu", "bone_hu", "bone_fraction")  # the full-resolution table's


def level_noise(hu: np.ndarray, spacing_mm, level: int) -> dict:
    """Soft-tissue NPS of one level volume, as the synthesis report measures it (None figures without patches)."""
    from cgan_ct.realism.tissue_sanity import noise_power_spectrum, uniform_soft_tissue

    patch = max(8, heldout.STAGE_PATCH // 2**level)
    nps = noise_power_spectrum(hu, spacing_mm, uniform_soft_tissue(hu, spacing_mm), patch=patch)
    nyquist = 0.5 / float(spacing_mm[1])
    if nps is None:
        empty = ("noise_hu", "mean_frequency_per_mm", "of_nyquist", "grid_share")
        return {"level": level, "patch": patch, **dict.fromkeys(empty)}
    frequency = nps["mean_frequency_per_mm"]
    return {
        "level": level,
        "patch": patch,
        "noise_hu": nps["noise_hu"],
        "mean_frequency_per_mm": frequency,
        "of_nyquist": frequency / nyquist,
        "grid_share": nps["grid_share"],
    }


def with_tissue(row: dict, hu: np.ndarray, spacing_mm) -> dict:
    """``row`` with the tissue statistics of a full-resolution volume (None where it has no body)."""
    from cgan_ct.realism.tissue_sanity import tissue_statistics

    try:
        statistics = tissue_statistics(hu, spacing_mm)
    except ValueError:  # no body
        return row
    return {**row, **{key: statistics[key] for key in TISSUE}}


def parse_smoothing(values: list[str], levels: int) -> dict[int, float]:
    """``["2:1.0", ...]`` -> {level: sigma in voxels}, levels in 0..``levels`` and sigmas > 0."""
    smoothing = {}
    for value in values:
        try:
            level, sigma = value.split(":")
            level, sigma = int(level), float(sigma)
        except ValueError:
            raise ValueError(f"--smooth takes level:sigma pairs such as 2:1.0; got {value!r}") from None
        if not 0 <= level <= levels or sigma <= 0:
            raise ValueError(f"--smooth {value}: the level must be in 0..{levels} and sigma > 0")
        smoothing[level] = sigma
    return smoothing


def _blurred(hu: np.ndarray, sigma: float | None) -> np.ndarray:
    from scipy import ndimage

    return hu if not sigma else ndimage.gaussian_filter(hu, (0, sigma, sigma)).astype(np.float32)


def synthetic_levels(cascade, seed: int, slices: int, smoothing: dict[int, float] | None = None) -> list[np.ndarray]:
    """The coarse draw and each stage's output for ``seed``, coarsest first (float32 HU, whole volumes); the
    last through the cascade's output calibration where it has one, as cgan-ct-synthesize writes it (for a
    ``cascade`` loaded with ``placement=False``: the levels stay on the cascade's own grid).
    ``smoothing`` {level: sigma}: that level blurred in-plane before the next stage sees it (a probe)."""
    from cgan_ct.synthesis.synthesis import level_volumes

    smoothing = smoothing or {}
    return level_volumes(cascade, seed, slices, lambda level, hu: _blurred(hu, smoothing.get(level)))


def _cell(values: list, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str]) -> None:
    del argv
    from cgan_ct.io.volume_reader import read_volume
    from cgan_ct.ops.pyramid import level_length
    from cgan_ct.synthesis.synthesis import Cascade

    cascade = Cascade(_CASCADE.value, placement=False)  # each level on the cascade's own grid
    smoothing = parse_smoothing(_SMOOTH.value, cascade.levels)
    rows = []
    for seed in (int(s) for s in _SEEDS.value):
        for index, hu in enumerate(synthetic_levels(cascade, seed, _SLICES.value, smoothing)):
            level = cascade.levels - index
            spacing = tuple(float(s) * 2**level for s in cascade.spacing_mm)
            probe = {"smoothed_sigma": smoothing[level]} if level in smoothing else {}
            rows.append({"source": "synthetic", "seed": seed, **level_noise(hu, spacing, level), **probe})
            if level == 0:
                rows[-1] = with_tissue(rows[-1], hu, spacing)
            print(rows[-1], flush=True)
    real = [read_volume(pathlib.Path(_CT.value) / name) for name in _HELDOUT.value]
    for level in range(cascade.levels + 1):
        slabs = heldout.level_slabs(cascade.info, level, real, level_length(_SLICES.value, level))
        for name, slab in zip(_HELDOUT.value, slabs, strict=True):
            rows.append({"source": "real", "series": name, **level_noise(slab.hu, slab.spacing_mm, level)})
            if level == 0:
                rows[-1] = with_tissue(rows[-1], slab.hu, slab.spacing_mm)
            print(rows[-1], flush=True)
    print("\n| level | patch | source | noise HU | NPS mean frequency /mm | of Nyquist | share at Nyquist |")
    print("|---|---|---|---|---|---|---|")
    for level in range(cascade.levels, -1, -1):
        for source in ("synthetic", "real"):
            chosen = [r for r in rows if r["level"] == level and r["source"] == source]
            keys = ("noise_hu", "mean_frequency_per_mm", "of_nyquist", "grid_share")
            cells = [_cell([r[k] for r in chosen], 4 if k == "grid_share" else 3) for k in keys]
            print(f"| {level} | {chosen[0]['patch']} | {source} | " + " | ".join(cells) + " |")
    print("\nfull resolution: | source | " + " | ".join(TISSUE) + " |")
    for source in ("synthetic", "real"):
        chosen = [r for r in rows if r["level"] == 0 and r["source"] == source]
        print(f"| {source} | " + " | ".join(_cell([r.get(k) for r in chosen]) for k in TISSUE) + " |")
    heldout.append_jsonl(_OUTPUT.value, rows)


if __name__ == "__main__":
    app.run(main)
