"""Anatomy sanity of a chest CT volume, as numbers a synthetic volume can be held against real ones with
(issue 33, item 4: measured on the shared real series; ``anatomy_report`` is the synthesis report's section).

All from the image (no organ segmentation is available offline), in canonical axes (z to superior, y to
posterior, x to the patient's left: cgan_ct.io.volume):

- lungs: ``lung_mask`` (filled, so consolidation counts): volume (ml) and median HU;
- bands: the lungs' z-range cut in three (upper, middle, lower); per band the bone fraction of the body
  (bone as ``tissue_sanity.bone_region``) and the rib count: the median over the band's slices of the
  axial bone pieces of rib size (5-600 mm^2; the vertebral body is larger), the sternum (the most anterior
  midline piece) left out; scapulae and vertebral processes of that size count too, so it is a count to
  compare with real scans', not an anatomical rib count;
- airway: of the dark-air regions inside the body (< -950 HU after a 3 x 3 in-plane median), the one with
  the most voxels within 20 mm of the midline (trachea and main bronchi): its volume (ml), z-extent (mm)
  and most pieces in one slice (2 or more: it branches);
- heart side: soft tissue between the two lungs in the middle band, anterior half: its x-centroid in mm to
  the patient's left of the body's midline. On the shared series it is +8 to +26 mm on five chests but
  -6 to -1 mm on two (central crops whose middle band is not the heart's level) and -18 mm beside a large
  right pleural effusion: it is compared with the real range, not required to be positive.

``anatomy_checks`` holds a volume's measures against the range of real volumes' (widened by a margin).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lung import lung_mask
from cgan_ct.realism.tissue_sanity import MEDIASTINUM_HU, bone_region

AIRWAY_HU = -950  # lumen air; lung parenchyma (-900 .. -700) stays out
RIB_AREA_MM2 = (5.0, 600.0)  # a rib's cross-section; the vertebral body and a pelvis are larger
BANDS = ("upper", "middle", "lower")
# The keys of ``anatomy_measures``, in table order.
MEASURES = (
    "lung_volume_ml",
    "lung_hu",
    *(f"bone_fraction_{b}" for b in BANDS),
    *(f"rib_count_{b}" for b in BANDS),
    "airway_ml",
    "airway_length_mm",
    "airway_branches",
    "heart_left_mm",
)


def anatomy_measures(volume_hu: np.ndarray, spacing_mm) -> dict:
    """The anatomy measures (``MEASURES``) of one (z, y, x) HU volume in canonical axes; a measure that needs
    lungs is None in a volume without them."""
    hu = np.asarray(volume_hu)
    spacing = tuple(float(s) for s in spacing_mm)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    body = body_mask(hu)
    if not body.any():
        raise ValueError("no body in the volume (nothing above -500 HU): anatomy measures are undefined")
    lungs = lung_mask(hu, spacing)
    out = dict.fromkeys(MEASURES)
    if not lungs.any():
        return out
    out["lung_volume_ml"] = float(lungs.sum()) * voxel_ml
    out["lung_hu"] = float(np.median(hu[lungs]))
    bands = _bands(lungs)
    bone = bone_region(hu, spacing, body)
    pixel_mm2 = spacing[1] * spacing[2]
    for name, (low, high) in zip(BANDS, bands, strict=True):
        body_voxels = int(body[low:high].sum())
        out[f"bone_fraction_{name}"] = float(bone[low:high].sum()) / max(body_voxels, 1)
        counts = [_ribs(bone[k], lungs[k], pixel_mm2) for k in range(low, high)]
        out[f"rib_count_{name}"] = float(np.median(counts)) if counts else None
    out.update(_airway(hu, body, lungs, spacing))
    out["heart_left_mm"] = _heart_left_mm(hu, body, lungs, bone, bands, spacing)
    return out


def _bands(lungs: np.ndarray) -> list[tuple[int, int]]:
    """The lungs' z-range (slices with >= 10 % of the largest lung slice's area) in three, superior first."""
    area = lungs.sum(axis=(1, 2))
    rows = np.flatnonzero(area >= 0.1 * area.max())
    low, high = int(rows[0]), int(rows[-1]) + 1
    edges = np.linspace(low, high, 4).round().astype(int)
    thirds = [(int(edges[i]), int(max(edges[i + 1], edges[i] + 1))) for i in range(3)]
    return thirds[::-1]  # z grows to superior: the top third first


def _ribs(bone_slice: np.ndarray, lung_slice: np.ndarray, pixel_mm2: float) -> int:
    """Bone pieces of rib size in one axial slice (the vertebral body is too large to count), the sternum (the
    most anterior piece near the midline, in front of the lungs) left out."""
    if not bone_slice.any() or not lung_slice.any():
        return 0
    labels, count = ndimage.label(bone_slice)
    areas = np.bincount(labels.ravel())[1:] * pixel_mm2
    centres = ndimage.center_of_mass(bone_slice, labels, range(1, count + 1))
    keep = [i for i in range(count) if RIB_AREA_MM2[0] <= areas[i] <= RIB_AREA_MM2[1]]
    if not keep:
        return 0
    ys, xs = np.nonzero(lung_slice)
    midline = (xs.min() + xs.max()) / 2.0
    half_width = max((xs.max() - xs.min()) / 2.0, 1.0)
    front = [i for i in keep if abs(centres[i][1] - midline) < 0.15 * half_width and centres[i][0] < ys.min()]
    sternum = min(front, key=lambda i: centres[i][0]) if front else None  # the most anterior midline piece
    return len([i for i in keep if i != sternum])


def _midline(body: np.ndarray) -> float:
    """The body's x-centroid (columns), the left-right midline of a roughly symmetric trunk."""
    return float(np.nonzero(body)[2].mean())


def _airway(hu: np.ndarray, body: np.ndarray, lungs: np.ndarray, spacing) -> dict:
    """The trachea and main bronchi: of the dark-air regions inside the body (lumen air, in-plane median
    filtered), the one with the most voxels in the medial corridor (within 20 mm of the midline); its volume,
    z-extent and most pieces in one slice."""
    smoothed = ndimage.median_filter(hu, size=(1, 3, 3))
    labels, count = ndimage.label(body & (smoothed < AIRWAY_HU))
    empty = {"airway_ml": 0.0, "airway_length_mm": 0.0, "airway_branches": 0}
    if count == 0:
        return empty
    columns = np.arange(hu.shape[2])
    corridor = np.abs(columns - _midline(body)) * spacing[2] <= 20.0
    medial = labels * corridor[None, None, :]
    votes = np.bincount(medial.ravel(), minlength=count + 1)
    votes[0] = 0
    if votes.max() == 0:
        return empty
    airway = labels == int(votes.argmax())
    zs = np.flatnonzero(airway.any(axis=(1, 2)))
    branches = max(ndimage.label(airway[k])[1] for k in zs)
    return {
        "airway_ml": float(airway.sum()) * float(np.prod(spacing)) / 1000.0,
        "airway_length_mm": float(zs[-1] - zs[0] + 1) * spacing[0],
        "airway_branches": int(branches),
    }


def _heart_left_mm(hu, body, lungs, bone, bands, spacing) -> float | None:
    """Soft tissue between the two lungs in the middle band, anterior half: its x-centroid in mm to the
    patient's left of the body's midline. "Between the two lungs": the right lung (left of the midline in
    the array, x grows to the patient's left) somewhere before it in its image row and the left lung somewhere
    after it, so that the liver's dome, which the right lung's base surrounds, does not count."""
    low, high = bands[1]
    midline = _midline(body[low:high])
    columns = np.arange(hu.shape[2])[None, None, :]
    right_lung = lungs[low:high] & (columns < midline)
    left_lung = lungs[low:high] & (columns > midline)
    after_right = np.maximum.accumulate(right_lung, axis=2)
    before_left = np.maximum.accumulate(left_lung[:, :, ::-1], axis=2)[:, :, ::-1]
    part = hu[low:high]
    low_hu, high_hu = MEDIASTINUM_HU
    region = after_right & before_left & ~lungs[low:high] & ~bone[low:high] & (part >= low_hu) & (part <= high_hu)
    if not region.any():
        return None
    _, ys, xs = np.nonzero(region)
    anterior = ys <= np.median(ys)  # y grows to posterior: the heart lies in front
    return (float(xs[anterior].mean()) - midline) * spacing[2]


@dataclasses.dataclass(frozen=True)
class AnatomyCheck:
    """One measure of a volume against the real range (``low``..``high``, the real volumes' range widened)."""

    measure: str
    value: float | None
    low: float | None
    high: float | None
    passed: bool


# every chest has these, whatever the real sample holds: some airway air and some ribs
ABSOLUTE = {"airway_ml": (1.0, None), "rib_count_middle": (4.0, None)}


def anatomy_checks(measures: dict, real: list[dict], margin: float = 0.2) -> list[AnatomyCheck]:
    """Each measure of ``measures`` against the range of ``real`` (each a ``anatomy_measures`` dict) widened
    by ``margin`` of its span on either side, and ABSOLUTE's limits; a measure without a value fails."""
    checks = []
    for name in MEASURES:
        values = [r[name] for r in real if r.get(name) is not None]
        low = high = None
        if values:
            span = max(values) - min(values)
            widen = margin * max(span, abs(float(np.mean(values))) * 0.1)
            low, high = min(values) - widen, max(values) + widen
        if name in ABSOLUTE:
            floor, ceiling = ABSOLUTE[name]
            low = floor if low is None else max(low, floor)
            high = ceiling if high is None else high
        value = measures.get(name)
        passed = value is not None and (low is None or value >= low) and (high is None or value <= high)
        checks.append(AnatomyCheck(name, value, low, high, passed))
    return checks


@dataclasses.dataclass(frozen=True)
class AnatomyReport:
    """Every synthetic volume's anatomy measures checked against the real volumes' range."""

    synthetic: list[dict]
    real: list[dict]
    checks: list[list[AnatomyCheck]]  # per synthetic volume, one per measure

    def failures(self) -> list[str]:
        """One entry per failed check: "synthetic 1: rib_count_middle 2 (allowed 4 .. 31)"."""
        out = []
        for index, checks in enumerate(self.checks):
            for c in checks:
                if not c.passed:
                    allowed = f"{_number(c.low)} .. {_number(c.high)}"
                    out.append(f"synthetic {index}: {c.measure} {_number(c.value)} (allowed {allowed})")
        return out

    def goal(self) -> tuple[bool, str]:
        """Passed when every measure of every synthetic volume sits in the (widened) real range."""
        passing = sum(all(c.passed for c in checks) for checks in self.checks)
        failed = self.failures()
        text = f"{passing} of {len(self.checks)} synthetic volumes pass every check"
        if failed:
            text += f"; {len(failed)} failed check(s), first: " + "; ".join(failed[:3])
        return not failed, text

    def markdown(self) -> str:
        """One row per measure: the real range, the allowed range, and each synthetic volume's value."""
        head = "| measure | real (min .. max) | allowed | " + " | ".join(
            f"synthetic {i}" for i in range(len(self.checks))
        )
        lines = [head + " |", "|---|---|---|" + "---|" * len(self.checks)]
        for row, name in enumerate(MEASURES):
            values = [r[name] for r in self.real if r.get(name) is not None]
            real = f"{_number(min(values))} .. {_number(max(values))}" if values else "-"
            first = self.checks[0][row] if self.checks else None
            allowed = f"{_number(first.low)} .. {_number(first.high)}" if first else "-"
            cells = [_number(checks[row].value) + ("" if checks[row].passed else " **out**") for checks in self.checks]
            lines.append(f"| {name} | {real} | {allowed} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "measures": list(MEASURES),
                "real": self.real,
                "synthetic": self.synthetic,
                "checks": [[dataclasses.asdict(c) for c in checks] for checks in self.checks],
            },
            indent=1,
        )


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1 and value != 0 else f"{value:.1f}"


def anatomy_report(synthetic, real, margin: float = 0.2) -> AnatomyReport:
    """The anatomy measures of ``synthetic`` and ``real`` volumes (each with ``hu`` and ``spacing_mm``, canonical
    axes) and each synthetic volume's checks against the real range widened by ``margin``."""
    real_measures = [_measures_or_none(v) for v in real]
    synthetic_measures = [_measures_or_none(v) for v in synthetic]
    checks = [anatomy_checks(m, real_measures, margin) for m in synthetic_measures]
    return AnatomyReport(synthetic_measures, real_measures, checks)


def _measures_or_none(volume) -> dict:
    """A volume's measures; every one None where it has no body at all (a check then fails, nothing crashes)."""
    try:
        return anatomy_measures(volume.hu, volume.spacing_mm)
    except ValueError:
        return dict.fromkeys(MEASURES)
