"""Quality metrics (golden values, scikit-image agreement) and the lung mask."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cgan_ct import read_volume
from cgan_ct.inference.metrics import quality
from cgan_ct.ops.lung import lung_mask


def test_psnr_golden_value():
    reference = np.zeros((3, 16, 16))
    q = quality(reference, reference + 40.96)
    assert q.psnr_slices_db == pytest.approx(40.0) and q.psnr_volume_db == pytest.approx(40.0)
    assert q.mae_hu == pytest.approx(40.96)


def test_agrees_with_scikit_image_per_slice():
    rng = np.random.default_rng(0)
    reference = rng.uniform(-700, 2000, (4, 32, 32))  # away from the clip limits
    test = reference + rng.normal(0, 50, reference.shape)
    q = quality(reference, test)
    expected_psnr = np.mean([peak_signal_noise_ratio(reference[k], test[k], data_range=4096) for k in range(4)])
    expected_ssim = np.mean([structural_similarity(reference[k], test[k], data_range=4096) for k in range(4)])
    assert q.psnr_slices_db == pytest.approx(expected_psnr, rel=1e-9)
    assert q.ssim_slices == pytest.approx(expected_ssim, rel=1e-9)


def test_identical_is_capped_and_clipping_applies():
    reference = np.random.default_rng(1).uniform(-1000, 2000, (2, 16, 16))
    q = quality(reference, reference)
    assert q.psnr_slices_db == 100.0 and q.ssim_slices == pytest.approx(1.0) and q.mae_hu == 0
    assert quality(np.full((1, 8, 8), 3071.0), np.full((1, 8, 8), 5000.0)).mae_hu == 0  # both clip to 3071


def test_mask_restricts_slices_and_voxels():
    reference = np.zeros((3, 16, 16))
    test = reference.copy()
    test[0] += 100  # error only where the mask is not
    mask = np.zeros(reference.shape, bool)
    mask[1:, 4:12, 4:12] = True
    assert quality(reference, test, mask).mae_hu == 0
    with pytest.raises(ValueError, match="empty"):
        quality(reference, test, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shapes differ"):
        quality(reference, test[:2])


def test_lung_mask_on_a_synthetic_chest():
    z, y, x = np.meshgrid(np.arange(24), np.arange(64), np.arange(64), indexing="ij")
    hu = np.full((24, 64, 64), -1000, np.int16)  # outside air
    body = ((y - 32) / 28.0) ** 2 + ((x - 32) / 30.0) ** 2 < 1
    hu[body] = 40
    left = ((y - 32) / 12.0) ** 2 + ((x - 19) / 8.0) ** 2 < 1
    right = ((y - 32) / 12.0) ** 2 + ((x - 45) / 8.0) ** 2 < 1
    hu[(left | right) & (z > 2) & (z < 21)] = -850
    mask = lung_mask(hu, (2.0, 1.0, 1.0), min_volume_ml=1.0)
    truth = (left | right) & (z > 2) & (z < 21)
    assert (mask & ~body).sum() == 0
    overlap = (mask & truth).sum() / (mask | truth).sum()
    assert overlap > 0.95


def test_lung_mask_on_the_real_chest(shared_ct):
    volume = read_volume(shared_ct / "lung-pet-ct-dx-A0001")
    mask = lung_mask(volume.hu, volume.spacing_mm)
    litres = mask.sum() * np.prod(volume.spacing_mm) / 1e6
    assert 3.0 < litres < 8.0  # measured 5.6 L: an adult's lungs
    assert np.median(volume.hu[mask]) < -600  # aerated tissue
