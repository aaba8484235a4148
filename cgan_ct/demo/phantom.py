"""A procedural chest CT: synthetic patients as HU volumes, for the demo and for tests.

Each patient is drawn from a seed: body size and position, lung, heart,
diaphragm and vessel shapes, rib spacing, and noise all vary. Built in
millimetres, z = 0 at the diaphragm domes' base, up to the lung apices, then
blurred and given CT-like noise. Not anatomy from data: it is meant to look
like a chest CT and to exercise the pipeline, not to stand in for patients.

Volumes come back canonical (cgan_ct.io.volume): hu[k] is an axial slice, k
toward superior, rows toward posterior, columns toward the patient's left.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from cgan_ct.constants import CLIP_HU
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.volume import AcquisitionInfo, Volume

HU = {
    "air": -1000,
    "lung": -860,
    "fat": -100,
    "muscle": 45,
    "blood": 40,
    "contrast": 250,
    "heart": 45,
    "liver": 60,
    "bone": 900,
    "marrow": 250,
    "skin": 20,
    "table": 300,
}


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Per-patient parameters, in mm."""

    body_rx: float
    body_ry: float
    centre_x: float
    centre_y: float
    fat: float
    lung_rx: float
    lung_ry: float
    gap: float
    heart_r: float
    rib_pitch: float
    apex_z: float
    dome: float


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    body_rx = rng.uniform(150, 180)
    return Anatomy(
        body_rx=body_rx,
        body_ry=rng.uniform(0.62, 0.7) * body_rx,
        centre_x=rng.uniform(-8, 8),
        centre_y=rng.uniform(-12, 4),
        fat=rng.uniform(8, 22),
        lung_rx=rng.uniform(0.33, 0.37) * body_rx,
        lung_ry=rng.uniform(0.74, 0.8),
        gap=rng.uniform(35, 50),
        heart_r=rng.uniform(48, 58),
        rib_pitch=rng.uniform(24, 30),
        apex_z=rng.uniform(220, 250),
        dome=rng.uniform(25, 45),
    )


def _ellipse(xx, yy, cx, cy, rx, ry):
    return ((xx - cx) / max(rx, 1e-3)) ** 2 + ((yy - cy) / max(ry, 1e-3)) ** 2 < 1


def _torso(xx, yy, cx, cy, rx, ry):
    """A torso cross-section: rounded in front, flatter and squarer at the back (lying on the table)."""
    u, v = np.abs(xx - cx) / max(rx, 1e-3), (yy - cy) / max(ry, 1e-3)
    back = v > 0
    return np.where(back, u**2.8 + np.abs(v) ** 3.2, u**2.2 + np.abs(v) ** 2) < 1


def _lungs(a: Anatomy, z: float, xx, yy) -> np.ndarray:
    """Both lungs at height z: ellipses tapering to the apex, floored by the diaphragm domes."""
    taper = np.sqrt(np.clip(1 - (max(z, 0) / a.apex_z) ** 2, 0, 1))
    lungs = np.zeros(xx.shape, bool)
    for side in (-1, 1):
        lx = a.centre_x + side * (a.gap / 2 + a.lung_rx * taper)
        rx, ry = a.lung_rx * taper, a.body_ry * a.lung_ry * taper
        inside = ((xx - lx) / max(rx, 1e-3)) ** 2 + ((yy - a.centre_y + 4) / max(ry, 1e-3)) ** 2
        # the dome rises toward each lung's centre (the right one higher, over the liver)
        dome = (a.dome * (1.15 if side < 0 else 0.9)) * np.clip(1 - inside, 0, 1)
        lungs |= (inside < 1) & (z > dome)
    return lungs


def _slice(a: Anatomy, z: float, xx, yy, texture) -> np.ndarray:
    """One axial slice in HU at height z (mm above the base of the diaphragm)."""
    cx, cy = a.centre_x, a.centre_y
    out = np.full(xx.shape, HU["air"], np.float32)
    widen = 1 + 0.08 * np.clip(z / a.apex_z, 0, 1.2) ** 2  # the shoulder girdle broadens the upper chest
    rx = a.body_rx * widen
    body = _torso(xx, yy, cx, cy, rx, a.body_ry)
    out[body] = HU["skin"]
    out[_torso(xx, yy, cx, cy, rx - 2, a.body_ry - 2)] = HU["fat"]
    muscle = _torso(xx, yy, cx, cy, rx - a.fat * (1 + 0.3 * (widen - 1) / 0.08), a.body_ry - a.fat)
    out[muscle] = HU["muscle"]
    inner = _ellipse(xx, yy, cx, cy, a.body_rx - a.fat - 14, a.body_ry - a.fat - 12)
    out[inner] = HU["fat"] + 30  # mediastinal and abdominal fat
    # below the domes: liver on the right (image left), stomach with gas on the left
    if z < a.dome * 1.15:
        out[inner & (xx < cx + 20)] = HU["liver"]
        out[inner & _ellipse(xx, yy, cx + 60, cy - 10, 45, 35)] = HU["muscle"] - 10
        out[inner & _ellipse(xx, yy, cx + 60, cy - 30, 25, 12)] = HU["air"]
    # heart: anterior, left of midline, from the domes up to about the hilum
    heart_z = z - a.dome * 0.6
    if 0 < heart_z < 2 * a.heart_r:
        hr = a.heart_r * np.sqrt(1 - ((heart_z - a.heart_r) / a.heart_r) ** 2)
        out[_ellipse(xx, yy, cx + 22, cy - 18, hr * 1.15, hr * 0.85)] = HU["heart"]
        out[_ellipse(xx, yy, cx + 14, cy - 14, hr * 0.45, hr * 0.35)] = HU["contrast"]
    lungs = _lungs(a, z, xx, yy)
    out[lungs] = HU["lung"] + texture[lungs]
    # spine, canal, posterior elements, paraspinal muscle
    sy = cy + a.body_ry - a.fat - 48
    out[_ellipse(xx, yy, cx, sy + 30, 45, 16)] = HU["muscle"]
    if np.cos(2 * np.pi * z / 26.0) > -0.8:  # vertebral bodies, with discs about every 26 mm
        out[_ellipse(xx, yy, cx, sy, 20, 17)] = HU["marrow"]
        out[_ellipse(xx, yy, cx, sy, 20, 17) & ~_ellipse(xx, yy, cx, sy, 17, 14)] = HU["bone"]
    else:
        out[_ellipse(xx, yy, cx, sy, 20, 17)] = HU["muscle"] + 30
    out[_ellipse(xx, yy, cx, sy + 27, 13, 12)] = HU["bone"]
    out[_ellipse(xx, yy, cx, sy + 27, 8, 8)] = HU["muscle"] - 15
    # aorta: descending beside the spine; ascending and arch above the heart
    out[_ellipse(xx, yy, cx + 20, sy - 22, 12, 12)] = HU["contrast"]
    if z > a.dome * 0.6 + 1.4 * a.heart_r:
        out[_ellipse(xx, yy, cx + 4, cy - 30, 15, 15)] = HU["contrast"]
        out[_ellipse(xx, yy, cx - 14, cy - 28, 10, 10)] = HU["blood"]
    if z > a.apex_z * 0.55:  # trachea above the carina
        out[_ellipse(xx, yy, cx, cy - 5, 9, 8)] = HU["air"]
    # ribs: bands in the body wall at regular heights; sternum in front
    if np.cos(2 * np.pi * z / a.rib_pitch) > 0.45:
        shell = _ellipse(xx, yy, cx, cy, a.body_rx - a.fat - 4, a.body_ry - a.fat - 4) & ~_ellipse(
            xx, yy, cx, cy, a.body_rx - a.fat - 11, a.body_ry - a.fat - 10
        )
        out[shell & (np.abs(xx - cx) > 30)] = HU["bone"]
    out[_ellipse(xx, yy, cx, cy - a.body_ry + a.fat + 10, 13, 6)] = HU["bone"]
    # scanner table
    table_y = cy + a.body_ry + 10
    out[(yy > table_y) & (yy < table_y + 5) & (np.abs(xx - cx) < 230)] = HU["table"]
    out[(yy > table_y + 14) & (yy < table_y + 17) & (np.abs(xx - cx) < 210)] = HU["table"] - 100
    return out


def _tubes(rng, a: Anatomy, z0: float, shape, spacing, hilum_z: float) -> tuple[np.ndarray, np.ndarray]:
    """(vessels, airways): branching trees from each hilum, as boolean volumes (z, y, x)."""
    vessels, airways = np.zeros(shape, bool), np.zeros(shape, bool)
    nz, ny, nx = shape

    balls: dict = {}

    def ball(radius):
        """Voxel offsets of a ball of ``radius`` mm (anisotropic voxels), cached by size."""
        key = round(radius * 4) / 4
        if key not in balls:
            reach = [max(0, int(key / s)) for s in spacing]
            grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), -1).reshape(-1, 3)
            balls[key] = grid[(((grid * np.asarray(spacing)) ** 2).sum(1)) <= max(key, spacing[2] / 2) ** 2]
        return balls[key]

    def paint(mask, point, radius):
        centre = np.array(
            [(point[0] - z0) / spacing[0], point[1] / spacing[1] + ny / 2, point[2] / spacing[2] + nx / 2]
        )
        voxels = np.rint(centre).astype(int) + ball(radius)
        keep = ((voxels >= 0) & (voxels < np.asarray(shape))).all(1)
        mask[tuple(voxels[keep].T)] = True

    for side in (-1, 1):
        hilum = np.array([hilum_z, a.centre_y - 2, a.centre_x + side * (a.gap / 2 + 18)])
        for tree, mask, radius0 in (("vessel", vessels, 5.0), ("airway", airways, 3.5)):
            trunks = (1.0, 0.5, 0.0, -0.5, -1.0) if tree == "vessel" else (0.7, -0.7)
            stack = [(hilum, np.array([dz, rng.uniform(-0.6, 0.6), side * 0.8]), radius0, 0) for dz in trunks]
            while stack:
                start, direction, radius, depth = stack.pop()
                direction = direction / np.linalg.norm(direction)
                length = rng.uniform(18, 34) * 0.82**depth
                for t in np.arange(0.0, length, max(radius / 2, spacing[2])):
                    paint(mask, start + direction * t, radius)
                if depth < (9 if tree == "vessel" else 4) and radius > 0.5:
                    for _ in range(2):
                        stack.append(
                            (start + direction * length, direction + rng.normal(0, 0.55, 3), radius * 0.75, depth + 1)
                        )
    return vessels, airways


def make_phantom(
    seed: int, slices: int = 96, size: int = 512, pixel_mm: float | None = None, slice_mm: float = 2.5
) -> Volume:
    """One synthetic chest CT, int16 HU, canonical (z, y, x), deterministic for ``seed``.

    Defaults: 512 x 512 at 0.7-0.9 mm in-plane (scaled when ``size`` is smaller),
    96 slices of 2.5 mm from below the diaphragm to the apices.
    """
    rng = np.random.default_rng(seed)
    a = draw_anatomy(rng)
    pixel_mm = pixel_mm or float(rng.uniform(0.7, 0.9)) * 512 / size
    coords = (np.arange(size) - size / 2) * pixel_mm
    xx, yy = np.meshgrid(coords, coords)
    z0 = a.apex_z + 10 - slices * slice_mm
    # parenchyma texture: two smooth fields drifting against each other from slice to slice
    fields = [ndimage.gaussian_filter(rng.normal(0, 50, (size, size)), 2 / pixel_mm).astype(np.float32) for _ in "ab"]
    drift = max(1, round(slice_mm / pixel_mm))

    def texture(k):
        return 0.8 * np.roll(fields[0], k * drift, axis=0) + 0.6 * np.roll(fields[1], -k * drift, axis=1)

    hu = np.stack([_slice(a, z0 + k * slice_mm, xx, yy, texture(k)) for k in range(slices)])
    lungs = hu < -700
    vessels, airways = _tubes(rng, a, z0, hu.shape, (slice_mm, pixel_mm, pixel_mm), a.apex_z * 0.5)
    inside_lungs = ndimage.binary_erosion(lungs, iterations=2)
    hu[vessels & inside_lungs] = HU["blood"]
    walls = ndimage.binary_dilation(airways) & inside_lungs
    hu[walls] = HU["muscle"] - 150
    hu[airways & inside_lungs] = HU["air"]
    hu = ndimage.gaussian_filter(hu, sigma=(0.3, 0.6, 0.6))  # scanner blur
    noise = ndimage.gaussian_filter(rng.normal(0, 1, hu.shape), (0, 0.7, 0.7)).astype(np.float32)
    hu += noise * (18 / noise.std())
    return Volume(
        hu=np.clip(np.rint(hu), *CLIP_HU).astype(np.int16),
        spacing_mm=(slice_mm, pixel_mm, pixel_mm),
        origin_mm=(float(coords[0]), float(coords[0]), float(z0)),
        direction=np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        volume_id=pseudonym("vol", f"phantom:{seed}:{slices}:{size}"),
        patient_key=pseudonym("pat", f"phantom:{seed}"),
        acquisition=AcquisitionInfo("phantom", manufacturer="cgan-ct phantom", kernel="synthetic", kvp=120.0),
    )
