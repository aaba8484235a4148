"""The procedural chest phantom: deterministic, distinct per seed, chest-like HU and anatomy."""

from __future__ import annotations

import numpy as np

from cgan_ct.demo.phantom import make_phantom
from cgan_ct.ops.lung import lung_mask


def test_deterministic_and_distinct():
    a, b, c = (
        make_phantom(3, slices=24, size=128),
        make_phantom(3, slices=24, size=128),
        make_phantom(4, slices=24, size=128),
    )
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.patient_key == b.patient_key != c.patient_key
    assert np.abs(a.hu.astype(int) - c.hu).mean() > 20


def test_chest_like_content():
    volume = make_phantom(5, slices=96, size=128)
    assert volume.shape == (96, 128, 128) and volume.hu.dtype == np.int16
    assert 2.8 <= volume.spacing_mm[1] <= 3.6  # 0.7-0.9 mm at 512, scaled to 128
    np.testing.assert_allclose(np.diag(volume.direction[::-1]), [1, 1, 1])
    lungs = lung_mask(volume.hu, volume.spacing_mm)
    litres = lungs.sum() * np.prod(volume.spacing_mm) / 1e6
    assert 1.5 < litres < 8.0
    assert -920 < np.median(volume.hu[lungs]) < -780
    bone = (volume.hu > 500).mean()
    assert 0.001 < bone < 0.05
    # lungs grow from the diaphragm (low slices) and taper to the apex (high slices)
    area = lungs.sum(axis=(1, 2))
    assert 4 < int(np.argmax(area)) < 60 and area[:2].mean() < 0.6 * area.max() and area[-3:].mean() < 0.5 * area.max()
