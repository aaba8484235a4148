"""Quality metrics (golden values, scikit-image agreement) and the lung mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cgan_ct import read_volume
from cgan_ct.inference.metrics import quality
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lung import aerated_lung_mask, lung_mask


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


def _synthetic_chest() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hu, body, lungs) of a 24 x 64 x 64 chest: two elliptic lungs of -850 HU in 40 HU tissue, slices 3..20."""
    z, y, x = np.meshgrid(np.arange(24), np.arange(64), np.arange(64), indexing="ij")
    hu = np.full((24, 64, 64), -1000, np.int16)
    body = ((y - 32) / 28.0) ** 2 + ((x - 32) / 30.0) ** 2 < 1
    hu[body] = 40
    left = ((y - 32) / 12.0) ** 2 + ((x - 19) / 8.0) ** 2 < 1
    right = ((y - 32) / 12.0) ** 2 + ((x - 45) / 8.0) ** 2 < 1
    lungs = (left | right) & (z > 2) & (z < 21)
    hu[lungs] = -850
    return hu, body, lungs


def test_lung_mask_takes_in_dense_disease_of_a_synthetic_chest():
    hu, body, lungs = _synthetic_chest()
    z, y, x = np.meshgrid(np.arange(24), np.arange(64), np.arange(64), indexing="ij")
    nodule = ((z - 12) / 4.0) ** 2 + ((y - 30) / 5.0) ** 2 + ((x - 19) / 5.0) ** 2 < 1  # inside the left lung
    subpleural = ((z - 10) / 4.0) ** 2 + ((y - 32) / 5.0) ** 2 + ((x - 52) / 5.0) ** 2 < 1  # against the right wall
    dome = ((z - 1) / 7.0) ** 2 + ((y - 32) / 6.0) ** 2 + ((x - 45) / 5.0) ** 2 < 1  # rises from below: a liver
    hu[(nodule | subpleural) & lungs] = 30
    hu[dome & body] = 60
    mask = lung_mask(hu, (2.0, 1.0, 1.0), min_volume_ml=1.0)
    aerated = aerated_lung_mask(hu, (2.0, 1.0, 1.0), min_volume_ml=1.0)
    nodule, subpleural, dome = nodule & lungs, subpleural & lungs, dome & lungs
    assert aerated[nodule].mean() < 0.5 and aerated[subpleural].mean() < 0.5  # the -400 HU threshold misses them
    assert mask[nodule].all()
    assert mask[subpleural].mean() > 0.7  # measured 0.8: a dent in the lung's outline, closed
    assert not (mask & ~aerated & dome).any()  # enclosed in its axial slices, but open below: not lung
    assert (mask & ~body).sum() == 0 and (mask & ~lungs).sum() == 0


@dataclasses.dataclass(frozen=True)
class _Chest:
    hu: np.ndarray
    spacing_mm: tuple
    body: np.ndarray
    aerated: np.ndarray  # the lungs' air alone: lung_mask before it fills dense disease
    lungs: np.ndarray

    def ml(self, mask: np.ndarray) -> float:
        return float(mask.sum() * np.prod(self.spacing_mm) / 1000.0)


@pytest.fixture(scope="module")
def real_chest(shared_ct):
    """A function: the shared series' name -> _Chest; each series read and masked once in this module."""
    cache = {}

    def chest(name: str) -> _Chest:
        if name not in cache:
            volume = read_volume(shared_ct / name)
            spacing = tuple(float(s) for s in volume.spacing_mm)
            cache[name] = _Chest(
                volume.hu,
                spacing,
                body_mask(volume.hu),
                aerated_lung_mask(volume.hu, spacing),
                lung_mask(volume.hu, spacing),
            )
        return cache[name]

    return chest


def _dense(hu: np.ndarray) -> np.ndarray:
    """Consolidation and ground glass that the -400 HU threshold leaves out (soft tissue alike)."""
    return (hu >= -400) & (hu <= 100)


def _holes(mask: np.ndarray, axis: int) -> np.ndarray:
    """Holes of ``mask`` (z, y, x) in its planes normal to ``axis`` (0 axial, 1 coronal, 2 sagittal): the
    background pieces of a plane that do not reach that plane's edge."""
    structure = np.zeros((3, 3, 3), bool)
    structure[tuple(1 if a == axis else slice(None) for a in range(3))] = ndimage.generate_binary_structure(2, 1)
    labels, count = ndimage.label(~mask, structure=structure)
    outside = np.zeros(count + 1, bool)
    for edge_axis in {0, 1, 2} - {axis}:
        outside[np.take(labels, [0, -1], axis=edge_axis).ravel()] = True
    outside[0] = True
    return ~outside[labels]


def _midline_band(body: np.ndarray, spacing_mm, half_width_mm: float) -> np.ndarray:
    """(z, 1, x) columns within ``half_width_mm`` of each slice's body centroid: mediastinum, trachea, spine."""
    columns = np.arange(body.shape[2], dtype=float)
    area = body.sum(axis=1).astype(float)
    midline = (area @ columns) / np.maximum(area.sum(axis=1), 1.0)
    return np.abs(columns[None, None, :] - midline[:, None, None]) * spacing_mm[2] < half_width_mm


def _far_in_plane(mask: np.ndarray, reference: np.ndarray, spacing_mm, distance_mm: float) -> np.ndarray:
    """Voxels of ``mask`` more than ``distance_mm`` from ``reference`` within their own axial slice."""
    far = np.zeros_like(mask)
    for k in np.nonzero((mask & ~reference).any(axis=(1, 2)))[0]:
        far[k] = mask[k] & (ndimage.distance_transform_edt(~reference[k], sampling=spacing_mm[1:]) > distance_mm)
    return far


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, min_added_ml",
    [("covid-ct-md-P001", 40.0), ("covid-ct-md-cap001", 80.0)],  # measured 64 mL and 141 mL
)
def test_lung_mask_takes_in_the_diseased_lung(real_chest, name, min_added_ml):
    chest = real_chest(name)
    dense = _dense(chest.hu)
    # dense tissue enclosed by aerated lung in the axial plane and in a coronal or sagittal one: nodules,
    # consolidation, thick vessels inside the lung (not the tops of the liver or heart, open below)
    enclosed = dense & _holes(chest.aerated, 0) & (_holes(chest.aerated, 1) | _holes(chest.aerated, 2))
    assert chest.ml(enclosed) > 10.0  # measured 23 mL (COVID-19) and 38 mL (pneumonia)
    assert not (chest.aerated & enclosed).any()  # the -400 HU threshold alone leaves all of it out
    assert chest.lungs[enclosed].mean() > 0.9  # measured 0.99 and 0.97
    assert (chest.lungs >= chest.aerated).all()
    assert chest.ml(chest.lungs & ~chest.aerated) > min_added_ml
    # consolidation and ground glass: over 30 % more of the mask than before (measured 2.6 -> 3.7 %, 5.3 -> 7.9 %)
    assert dense[chest.lungs].mean() > 1.3 * dense[chest.aerated].mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["covid-ct-md-P001", "covid-ct-md-cap001", "covid-ct-md-normal001"])
def test_lung_mask_stays_out_of_the_mediastinum_and_the_organs_below(real_chest, name):
    chest = real_chest(name)
    assert (chest.lungs & ~chest.body).sum() == 0
    assert 2.5 < chest.ml(chest.lungs) / 1000 < 8.0  # measured 5.8, 5.0 and 3.2 L over 100 slices (20 cm)
    assert np.median(chest.hu[chest.lungs]) < -750  # aerated tissue still dominates: measured -860, -852, -837
    # nothing joins across the midline: the trachea, oesophagus, aorta and heart's middle lie within 15 mm of it
    band = _midline_band(chest.body, chest.spacing_mm, 15.0)
    assert chest.ml(chest.lungs & ~chest.aerated & band) < 1.0  # measured < 0.05 mL; filling every hole: 3-9 mL
    # no organ swallowed: the heart, or the top of the liver or spleen in a hole of the lung base, would put
    # voxels of the mask far from any aerated lung of their slice (filling every hole: 4.8 mL on P001)
    assert chest.ml(_far_in_plane(chest.lungs, chest.aerated, chest.spacing_mm, 12.0)) < 1.0  # measured 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["covid-ct-md-normal001", "lidc-idri-0001"])
def test_lung_mask_of_a_normal_chest_is_the_aerated_lung(real_chest, name):
    chest = real_chest(name)
    dice = 2 * (chest.lungs & chest.aerated).sum() / (chest.lungs.sum() + chest.aerated.sum())
    assert dice > 0.99  # measured 0.998 on both: hilar vessels, a nodule


@pytest.mark.slow
def test_lung_mask_leaves_a_pleural_effusion_out(real_chest):
    chest = real_chest("rider-9328-0109-pe")  # a large right pleural effusion under a compressed lung
    fluid = (chest.hu >= -10) & (chest.hu <= 30)
    assert chest.ml(chest.lungs & ~chest.aerated) < 40.0  # measured 16 mL: hilar vessels
    assert chest.ml(chest.lungs & ~chest.aerated & fluid) < 5.0  # measured 1.3 mL
