"""Image quality of a generated volume against its reference, as the paper's Table I.

Protocol (documented so results compare across runs): both volumes are HU,
clipped to [-1024, 3071], data range 4096 HU. PSNR and SSIM are computed per
axial slice and averaged over the slices; MAE in HU and a whole-volume PSNR
are reported beside them. A mask (e.g. the lungs, Table II) restricts the
averages to the slices that hold mask voxels, and PSNR / MAE to mask voxels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage.metrics import structural_similarity

from cgan_ct.constants import CLIP_HU, DATA_RANGE_HU

IDENTICAL_PSNR_DB = 100.0  # a slice with no error would be infinite; capped so averages stay finite


@dataclasses.dataclass(frozen=True)
class Quality:
    psnr_slices_db: float  # mean over axial slices
    ssim_slices: float  # mean over axial slices
    mae_hu: float
    psnr_volume_db: float


def _clip(hu) -> np.ndarray:
    return np.clip(np.asarray(hu, np.float64), *CLIP_HU)


def psnr_db(reference, test, mask=None) -> float:
    """PSNR in dB over (masked) voxels, data range 4096 HU, capped at 100 dB."""
    error = (_clip(reference) - _clip(test)) ** 2
    mse = float(error[mask].mean() if mask is not None else error.mean())
    return IDENTICAL_PSNR_DB if mse == 0 else float(min(IDENTICAL_PSNR_DB, 10 * np.log10(DATA_RANGE_HU**2 / mse)))


def quality(reference_hu: np.ndarray, test_hu: np.ndarray, mask: np.ndarray | None = None) -> Quality:
    """The Table I (or, with a lung mask, Table II) figures; arrays (z, y, x) in HU."""
    if reference_hu.shape != test_hu.shape:
        raise ValueError(f"shapes differ: {reference_hu.shape} and {test_hu.shape}")
    reference, test = _clip(reference_hu), _clip(test_hu)
    slices = range(reference.shape[0]) if mask is None else np.flatnonzero(mask.any(axis=(1, 2)))
    if len(slices) == 0:
        raise ValueError("the mask is empty")
    psnrs, ssims = [], []
    for k in slices:
        slice_mask = None if mask is None else mask[k]
        psnrs.append(psnr_db(reference[k], test[k], slice_mask))
        mean_ssim, ssim_map = structural_similarity(reference[k], test[k], data_range=DATA_RANGE_HU, full=True)
        ssims.append(float(mean_ssim if slice_mask is None else ssim_map[slice_mask].mean()))
    error = np.abs(reference - test)
    return Quality(
        psnr_slices_db=float(np.mean(psnrs)),
        ssim_slices=float(np.mean(ssims)),
        mae_hu=float(error[mask].mean() if mask is not None else error.mean()),
        psnr_volume_db=float(psnr_db(reference, test, mask)),
    )
