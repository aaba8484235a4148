"""Realism of synthetic CT volumes measured as the field measures it, offline, in one table.

Three measures the literature reports for generated CT (MAISI, MedSyn,
GenerateCT...), rebuilt without a pretrained 3-D feature network (none can be
downloaded here), so NONE of the figures is comparable to a published FID,
FRD or MS-SSIM: they compare groups within this report only.

- FRD (cgan_ct.realism.radiomics_frd): Fréchet Radiomics Distance of the
  synthetic slices, and of the held-out real slices, to the training slices.
  Goal: synthetic at most twice held-out.
- Diversity (cgan_ct.realism.ms_ssim): mean MS-SSIM over pairs of synthetic
  volumes against pairs of real (training and held-out) volumes. A collapsed
  generator scores high. Goal: synthetic pairs not above real pairs. Beside
  it, the same with the bodies aligned in millimetres (field of view and
  placement removed: what is left is anatomy).
- Tissue sanity (cgan_ct.realism.tissue_sanity): per volume, medians of
  lung, fat, soft tissue, mediastinum (approximates blood) and bone, tissue
  fractions, and the soft-tissue noise power spectrum's noise and mean
  frequency; each checked against the range (min..max) over real volumes.
  A held-out volume is checked against the other real volumes (leave one
  out), so its verdict says how tight the real range is.

``realism_table`` returns a RealismResult with ``markdown()`` and
``to_json()``. Volumes are cgan_ct Volumes; nothing written names a
patient, a volume id or a path.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from cgan_ct.io.volume import Volume
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.ms_ssim import aligned_ms_ssim, pairwise_ms_ssim
from cgan_ct.realism.radiomics_frd import frechet_radiomics_distance, slice_features
from cgan_ct.realism.tissue_sanity import FRACTIONS, MEDIANS, NOISE, tissue_statistics

TISSUE_KEYS = MEDIANS + FRACTIONS + NOISE
FRD_GOAL_RATIO = 2.0
_LABELS = {
    "lung_hu": "lung HU",
    "fat_hu": "fat HU (window)",
    "soft_tissue_hu": "soft tissue HU (window)",
    "mediastinum_hu": "mediastinum HU (≈ blood)",
    "bone_hu": "bone HU",
    "lung_fraction": "lung / body",
    "fat_fraction": "fat / body",
    "soft_tissue_fraction": "soft tissue / body",
    "bone_fraction": "bone / body",
    "body_fraction": "body / volume",
    "nps_noise_hu": "NPS noise (HU)",
    "nps_mean_frequency_per_mm": "NPS mean f (1/mm)",
    "nps_grid_share": "NPS share at Nyquist",
}
_DIGITS = {key: (0 if key.endswith("_hu") and key != "nps_noise_hu" else 3) for key in TISSUE_KEYS}
_DIGITS["nps_noise_hu"] = 1
_DIGITS["nps_grid_share"] = 4


@dataclasses.dataclass(frozen=True)
class RealismResult:
    """What ``realism_table`` returns.

    Attributes:
      groups: per group ('synthetic', 'heldout'): ``volumes``, ``frd`` (vs
        training), ``ms_ssim`` (list over the group's pairs; None for heldout,
        whose pairs are pooled with training into ``real_ms_ssim``) and
        ``tissue``: per key of TISSUE_KEYS a list of per-volume values and a
        list of in-range verdicts (None where the value is missing).
      real_ms_ssim: MS-SSIM over pairs of real volumes (training and held-out).
      aligned_ms_ssim: the same measures with the bodies aligned (``ms_ssim.aligned_ms_ssim``): lists over pairs,
        {"synthetic": [...], "real": [...]}; None where not measured.
      real_range: per key of TISSUE_KEYS, [min, max] over real volumes (None if no real volume has it).
      settings: what the figures depend on (slices per volume, counts, seconds).
    """

    groups: dict
    real_ms_ssim: list
    real_range: dict
    settings: dict
    aligned_ms_ssim: dict | None = None

    @property
    def frd_ratio(self) -> float | None:
        """FRD synthetic / FRD held-out (None when held-out FRD is 0)."""
        heldout = self.groups["heldout"]["frd"]
        return None if heldout == 0 else self.groups["synthetic"]["frd"] / heldout

    def goals(self) -> dict:
        """The two headline checks: name -> (passed, figures as text)."""
        synthetic = float(np.mean(self.groups["synthetic"]["ms_ssim"]))
        real = float(np.mean(self.real_ms_ssim))
        ratio = self.frd_ratio
        frd = self.groups["synthetic"]["frd"], self.groups["heldout"]["frd"]
        frd_text = f"synthetic {frd[0]:.1f}, held-out {frd[1]:.1f}" + ("" if ratio is None else f", ratio {ratio:.2f}")
        return {
            f"FRD synthetic <= {FRD_GOAL_RATIO:g}x held-out": (frd[0] <= FRD_GOAL_RATIO * frd[1], frd_text),
            "MS-SSIM synthetic pairs not above real pairs": (
                synthetic <= real,
                f"synthetic pairs {synthetic:.3f}, real pairs {real:.3f}",
            ),
        }

    def markdown(self) -> str:
        """One table (a row per group and the real range), then one line per goal."""
        header = ["group", "volumes", "FRD vs training", "MS-SSIM pairs"] + [_LABELS[k] for k in TISSUE_KEYS]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for group in ("synthetic", "heldout"):
            row = self.groups[group]
            pairs = _spread(row["ms_ssim"], 3) if row["ms_ssim"] is not None else "(with real)"
            cells = [group, str(row["volumes"]), f"{row['frd']:.1f}", pairs]
            cells += [_tissue_cell(row["tissue"][k], _DIGITS[k]) for k in TISSUE_KEYS]
            lines.append("| " + " | ".join(cells) + " |")
        real = ["real range", str(self.settings["real_volumes"]), "–", _spread(self.real_ms_ssim, 3)]
        real += [_range_cell(self.real_range[k], _DIGITS[k]) for k in TISSUE_KEYS]
        lines.append("| " + " | ".join(real) + " |")
        lines.append("")
        if self.aligned_ms_ssim is not None:
            lines.append(
                "MS-SSIM between pairs with the bodies aligned (0.8 mm grid, centred on each body: field of view and "
                f"placement removed): synthetic {_spread(self.aligned_ms_ssim['synthetic'], 3)}, real "
                f"{_spread(self.aligned_ms_ssim['real'], 3)}."
            )
            lines.append("")
        lines.append(
            "Cells: mean (min–max) over volumes (MS-SSIM: over pairs) and how many volumes lie in the real range; "
            "held-out volumes are checked against the other real volumes. FRD, MS-SSIM and NPS here are not "
            "comparable to published figures (no pretrained network; radiomic features of "
            f"{self.settings['slices_per_volume']} axial slices per volume, shrinkage covariances)."
        )
        lines.append("")
        for name, (passed, text) in self.goals().items():
            lines.append(f"- {name}: {'yes' if passed else 'no'} ({text})")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        goals = {name: {"passed": bool(passed), "figures": text} for name, (passed, text) in self.goals().items()}
        record = {**dataclasses.asdict(self), "frd_ratio": self.frd_ratio, "goals": goals}
        return json.dumps(record, indent=1, default=float)


def _spread(values, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _tissue_cell(entry: dict, digits: int) -> str:
    judged = [v for v in entry["in_range"] if v is not None]
    text = _spread(entry["values"], digits)
    return text if not judged else f"{text} {sum(judged)}/{len(judged)}"


def _range_cell(bounds, digits: int) -> str:
    return "–" if bounds is None else f"{bounds[0]:.{digits}f}–{bounds[1]:.{digits}f}"


def _bounds(values) -> list | None:
    values = [v for v in values if v is not None]
    return [float(min(values)), float(max(values))] if values else None


def _inside(value, bounds) -> bool | None:
    return None if value is None or bounds is None else bool(bounds[0] <= value <= bounds[1])


def _measure(volume: Volume, slices: int, frd_options: dict) -> dict:
    """FRD features and tissue statistics of one volume, sharing its body mask."""
    if not isinstance(volume, Volume):
        raise TypeError(f"realism_table takes cgan_ct Volumes, got {type(volume).__name__}")
    body = body_mask(volume.hu)
    if not body.any():
        raise ValueError("a volume has no body (nothing above -500 HU): realism measures are undefined")
    _, features = slice_features(volume.hu, volume.spacing_mm, body=body, slices=slices, **frd_options)
    return {"features": features, "tissue": tissue_statistics(volume.hu, volume.spacing_mm, body=body)}


def realism_table(
    synthetic: Sequence[Volume],
    training: Sequence[Volume],
    heldout: Sequence[Volume],
    *,
    slices_per_volume: int = 16,
    ms_ssim_slices: int = 8,
    seed: int = 0,
    frd_options: dict | None = None,
) -> RealismResult:
    """FRD, MS-SSIM diversity and tissue sanity of synthetic and held-out volumes (see the module docstring).

    Args:
      synthetic, training, heldout: cgan_ct Volumes; at least 2 synthetic, 1
        training and 1 held-out (2 real volumes in all for the real pairs).
        Each group's volumes must share one in-plane shape for MS-SSIM.
      slices_per_volume: axial slices per volume as FRD samples.
      ms_ssim_slices: matched slices per pair of volumes.
      seed: draws of the larger group when FRD compares groups at equal sample counts.
      frd_options: passed to radiomics_frd.slice_features (``image_types``,
        ``resampled_spacing_mm``): the defaults are FRDv1's.
    """
    synthetic, training, heldout = list(synthetic), list(training), list(heldout)
    if len(synthetic) < 2 or not training or not heldout:
        raise ValueError(
            f"realism_table needs >= 2 synthetic, >= 1 training and >= 1 held-out volumes, "
            f"got {len(synthetic)}, {len(training)}, {len(heldout)}"
        )
    measured = {
        name: [_measure(v, slices_per_volume, frd_options or {}) for v in group]
        for name, group in (("synthetic", synthetic), ("training", training), ("heldout", heldout))
    }
    features = {name: np.concatenate([m["features"] for m in group]) for name, group in measured.items()}
    samples = min(len(features["synthetic"]), len(features["heldout"]))
    frd = {
        name: frechet_radiomics_distance(features[name], features["training"], samples=samples, seed=seed)
        for name in ("synthetic", "heldout")
    }
    real_tissue = [m["tissue"] for m in measured["training"] + measured["heldout"]]
    real_range = {key: _bounds(t[key] for t in real_tissue) for key in TISSUE_KEYS}
    groups = {}
    for name in ("synthetic", "heldout"):
        tissue = {}
        for key in TISSUE_KEYS:
            values = [m["tissue"][key] for m in measured[name]]
            if name == "synthetic":
                verdicts = [_inside(v, real_range[key]) for v in values]
            else:  # leave one out: the held-out volume against the other real volumes
                offset = len(measured["training"])
                verdicts = [
                    _inside(v, _bounds(t[key] for j, t in enumerate(real_tissue) if j != offset + i))
                    for i, v in enumerate(values)
                ]
            tissue[key] = {"values": values, "in_range": verdicts}
        groups[name] = {"volumes": len(measured[name]), "frd": frd[name], "tissue": tissue, "ms_ssim": None}
    groups["synthetic"]["ms_ssim"] = pairwise_ms_ssim([v.hu for v in synthetic], ms_ssim_slices)
    real = training + heldout
    real_pairs = pairwise_ms_ssim([v.hu for v in real], ms_ssim_slices)  # >= 2: one training, one held-out
    aligned = {
        "synthetic": aligned_ms_ssim([(v.hu, v.spacing_mm[1:]) for v in synthetic], ms_ssim_slices),
        "real": aligned_ms_ssim([(v.hu, v.spacing_mm[1:]) for v in real], ms_ssim_slices),
    }
    settings = {
        "slices_per_volume": slices_per_volume,
        "ms_ssim_slices": ms_ssim_slices,
        "frd_samples_per_group": samples,
        "frd_training_samples": len(features["training"]),
        "frd_features": int(features["training"].shape[1]),
        "real_volumes": len(real),
    }
    return RealismResult(
        groups=groups, real_ms_ssim=real_pairs, real_range=real_range, settings=settings, aligned_ms_ssim=aligned
    )
