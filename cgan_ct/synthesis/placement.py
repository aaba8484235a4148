"""Where a synthetic body lies on its image: the field of view and the placement of real scans.

Real chest scans are reconstructed at the field of view their patient needs (pixel spacing 0.59-0.90 mm on the
cohort's six training series) and the body lies where the table put it (its centre 2-47 mm from the image's).
A cascade draws every body on one grid, at the training volumes' median spacing and at the place its coarse
generator learned. Pairs of synthetic volumes were measured (BUILD_NOTES, "Why synthetic volumes looked alike")
alike as stored mostly because of that shared grid: with the bodies aligned in millimetres, six draws of
pretrained:synthesis differ as much as nine real patients do (MS-SSIM 0.400 against 0.388), and as stored they
did not (0.389 against 0.270).

So a cascade records each training volume's ``Placement`` (in-plane spacing and the body centre's offset from
the image centre, numbers only), and a synthetic volume is put on one of them, chosen by its seed and moved a
little (``draw``): resampled in-plane, slab by slab, so memory stays bounded by the slab. The body keeps its
size in millimetres; the volume's spacing says the new one. The output grain is applied after, at that spacing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cgan_ct.ops.regrid import Regrid

BODY_HU = -500.0  # above: body (the body mask of the realism measures)
SPACING_JITTER = 0.05  # a drawn spacing is a training one times exp(U(-0.05, 0.05))
OFFSET_JITTER_MM = 10.0  # a drawn offset is a training one moved by U(-10, 10) mm per axis
_DRAW_KEY = 0x91AC  # the placement's random stream, apart from every other use of the volume's seed


@dataclasses.dataclass(frozen=True)
class Placement:
    """An image grid for a body: in-plane pixel spacing (mm, y x) and the body centre's offset from the image
    centre (mm, y x: +y towards the last row, +x towards the last column)."""

    spacing_mm: tuple[float, float]
    offset_mm: tuple[float, float]

    def __post_init__(self):
        spacing = tuple(float(s) for s in self.spacing_mm)
        offset = tuple(float(o) for o in self.offset_mm)
        if len(spacing) != 2 or len(offset) != 2:
            raise ValueError(f"a placement has two spacings and two offsets, got {spacing} and {offset}")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0 or not all(np.isfinite(offset)):
            raise ValueError(f"a placement needs positive spacings and finite offsets, got {spacing}, {offset}")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "offset_mm", offset)

    def to_json(self) -> dict:
        return {
            "spacing_mm": [round(s, 4) for s in self.spacing_mm],
            "offset_mm": [round(o, 1) for o in self.offset_mm],
        }

    @classmethod
    def from_json(cls, data: dict) -> Placement:
        return cls(tuple(data["spacing_mm"]), tuple(data["offset_mm"]))


def _largest_body(slice_hu: np.ndarray) -> np.ndarray | None:
    """The largest connected region above BODY_HU after a small opening (the table and blankets apart)."""
    body = ndimage.binary_opening(slice_hu > BODY_HU, iterations=2)
    labels, count = ndimage.label(body)
    if not count:
        return None
    sizes = ndimage.sum(body, labels, range(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1


def body_offset_mm(hu: np.ndarray, spacing_yx) -> tuple[float, float] | None:
    """The body centre's offset from the image centre (mm, y x) of a (z, y, x) HU volume: the median over up to
    16 slices of its middle half of each slice's largest body region's centroid; None where no slice has a body."""
    hu = np.asarray(hu)
    depth = hu.shape[0]
    first, last = depth // 4, max(depth // 4 + 1, (3 * depth) // 4)
    centres = []
    for z in np.unique(np.linspace(first, last - 1, min(16, last - first)).astype(int)):
        body = _largest_body(np.asarray(hu[z], np.float32))
        if body is None:
            continue
        cy, cx = ndimage.center_of_mass(body)
        centres.append(((cy - (hu.shape[1] - 1) / 2) * spacing_yx[0], (cx - (hu.shape[2] - 1) / 2) * spacing_yx[1]))
    if not centres:
        return None
    cy, cx = np.median(centres, axis=0)
    return float(cy), float(cx)


def measure(hu: np.ndarray, spacing_yx) -> Placement | None:
    """The placement of a real (z, y, x) volume on its grid (None where it has no body)."""
    offset = body_offset_mm(hu, spacing_yx)
    return None if offset is None else Placement(tuple(spacing_yx), offset)


def draw(placements: Sequence[Placement], seed: int) -> Placement:
    """The placement of the volume for ``seed``: one of ``placements`` chosen by the seed, its spacing scaled by
    up to SPACING_JITTER and its offset moved by up to OFFSET_JITTER_MM (the same for the same seed)."""
    if not placements:
        raise ValueError("no placements to draw from")
    rng = np.random.default_rng([_DRAW_KEY, int(seed) & 0xFFFFFFFF])
    base = placements[int(rng.integers(len(placements)))]
    scale = float(np.exp(rng.uniform(-SPACING_JITTER, SPACING_JITTER)))
    shift = rng.uniform(-OFFSET_JITTER_MM, OFFSET_JITTER_MM, 2)
    return Placement(
        tuple(s * scale for s in base.spacing_mm), tuple(o + d for o, d in zip(base.offset_mm, shift, strict=True))
    )


def placer(spacing_yx, body_offset: tuple[float, float], placement: Placement, size: int) -> Regrid:
    """What moves slabs from the cascade's grid (``spacing_yx``, the body centre at ``body_offset`` mm from the
    image centre) onto ``placement``'s: the body centre lands at its offset, each pixel samples the millimetre it
    covers. The grid's size is kept."""
    shift = tuple(b - o for b, o in zip(body_offset, placement.offset_mm, strict=True))
    return Regrid(spacing_yx, placement.spacing_mm, size, shift)
