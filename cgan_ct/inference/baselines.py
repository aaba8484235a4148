"""Classical answers to each task, for the tables beside the model.

Every baseline takes the condition volume in HU (z, y, x) and returns float32 HU.
- depixelate: trilinear and tricubic interpolation from the same samples the
  model sees (every factor-th voxel, starting at 0);
- denoise and lowdose: Gaussian smoothing (sigma 1 voxel in-plane, 0.5 across
  slices), non-local means (scikit-image, per axial slice) and BM3D (the
  ``bm3d`` package, per axial slice; about 8 s a 512 x 512 slice, so it runs
  only when asked for: ``SLOW_BASELINES``);
- every task: the condition itself.

Their settings: for denoise, the noise level the Poisson protocol implies;
for lowdose, the noise level estimated from the condition itself (wavelet
median, scikit-image ``estimate_sigma``); or ``params`` from ``tune_baselines``,
fitted on training volumes (never on the patient being scored).
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means

from cgan_ct.constants import (
    CLIP_HU,
    DATA_RANGE_HU,
    DEFAULT_FACTOR,
    DEFAULT_PEAK,
    DENOISE,
    LOWDOSE,
    POISSON_HU_OFFSET,
    POISSON_HU_RANGE,
)
from cgan_ct.tasks import PEAK, TASK_SPECS, task_spec

SLOW_BASELINES = ("bm3d",)  # run only when asked for (evaluation skips them by default)
# Mean neighbour step (HU) under which a seam ratio is undefined: CT texture and noise give tens of HU,
# a volume constant between grid planes (a pixelated condition) or pure air gives 0.
SEAM_FLOOR_HU = 0.5


def interpolate_samples(
    condition_hu: np.ndarray, factor: int = DEFAULT_FACTOR, order: int = 1, pyramid: str = "subsample"
) -> np.ndarray:
    """Interpolates the kept samples (every ``factor``-th voxel) back to full size; order 1 or 3.

    ``pyramid`` "mean": the samples are cube means (cgan_ct.ops.pyramid), each placed at its cube's centre."""
    samples = np.asarray(condition_hu, np.float32)[::factor, ::factor, ::factor]
    offset = (factor - 1) / 2 if pyramid == "mean" else 0.0
    grid = np.meshgrid(*((np.arange(n) - offset) / factor for n in condition_hu.shape), indexing="ij", sparse=True)
    coordinates = np.broadcast_arrays(*grid)
    return ndimage.map_coordinates(samples, coordinates, order=order, mode="nearest").astype(np.float32)


def gaussian_smoothing(condition_hu: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Gaussian smoothing, ``sigma_px`` in-plane and half of it across slices."""
    return ndimage.gaussian_filter(np.asarray(condition_hu, np.float32), sigma=(sigma_px / 2, sigma_px, sigma_px))


def _per_slice(function, volume_hu: np.ndarray) -> np.ndarray:
    images = np.asarray(volume_hu, np.float32)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # scikit-image and bm3d release the GIL
        return np.stack(list(pool.map(function, images))).astype(np.float32)


def poisson_sigma_hu(peak: float) -> float:
    """Standard deviation of the Poisson protocol's condition at 0 HU (soft tissue)."""
    return float(POISSON_HU_RANGE * np.sqrt((POISSON_HU_OFFSET / POISSON_HU_RANGE) / peak))


def estimated_sigma_hu(condition_hu: np.ndarray, slices: int = 8) -> float:
    """The condition's noise level from itself (wavelet median absolute deviation, a few central slices)."""
    from skimage.restoration import estimate_sigma

    volume = np.asarray(condition_hu, np.float32)
    start = max(0, (len(volume) - slices) // 2)
    return float(np.median([estimate_sigma(image) for image in volume[start : start + slices]]))


def non_local_means(condition_hu: np.ndarray, peak: float = DEFAULT_PEAK, sigma_hu: float | None = None) -> np.ndarray:
    """Per-slice non-local means at noise level ``sigma_hu`` (default: the Poisson protocol's at 0 HU)."""
    sigma_hu = poisson_sigma_hu(peak) if sigma_hu is None else float(sigma_hu)

    def one(image):
        return denoise_nl_means(image, h=0.8 * sigma_hu, sigma=sigma_hu, patch_size=5, patch_distance=5, fast_mode=True)

    return _per_slice(one, condition_hu)


def bm3d_slices(condition_hu: np.ndarray, sigma_hu: float) -> np.ndarray:
    """Per-slice BM3D (both stages) at noise level ``sigma_hu``, on HU scaled by the data range."""
    import bm3d

    def one(image):
        scaled = (image - CLIP_HU[0]) / DATA_RANGE_HU
        out = bm3d.bm3d(scaled, sigma_psd=sigma_hu / DATA_RANGE_HU, stage_arg=bm3d.BM3DStages.ALL_STAGES)
        return np.asarray(out, np.float32) * DATA_RANGE_HU + CLIP_HU[0]

    # one slice at a time: bm3d runs its own thread pool, and two calls at once abort the process
    return np.stack([one(image) for image in np.asarray(condition_hu, np.float32)]).astype(np.float32)


BM3D_MISSING = (
    "the BM3D baseline needs the bm3d package, which is not installed by default because its licence allows "
    "non-commercial use only: pip install 'cgan-ct[bm3d]'"
)


def check_available(skip=SLOW_BASELINES) -> None:
    """Raises ValueError, before any work, when a baseline that will run needs a package that is missing."""
    if "bm3d" not in skip and importlib.util.find_spec("bm3d") is None:
        raise ValueError(BM3D_MISSING)


BASELINES = {name: spec.baselines for name, spec in TASK_SPECS.items() if spec.baselines}


def baselines(
    task: str,
    condition_hu: np.ndarray,
    skip=SLOW_BASELINES,
    peak: float = DEFAULT_PEAK,
    factor: int = DEFAULT_FACTOR,
    params: dict | None = None,
    pyramid: str = "subsample",
) -> dict[str, np.ndarray]:
    """Name -> baseline volume for ``task`` (the condition itself included), but those named in ``skip``
    (default: the slow ones, BM3D).

    ``peak``, ``factor`` and ``pyramid``: the condition's Poisson peak (the denoisers' noise level),
    pixelation factor and down-sampling (interpolate_samples). ``params``: per method, settings from
    ``tune_baselines`` ({"gaussian": {"sigma_px"}, "non_local_means": {"sigma_scale"}, "bm3d":
    {"sigma_scale"}}: the noise level is sigma_scale times the condition's own, the protocol's for
    denoise, estimated from it for lowdose); what is not given is the default (scale 1).
    """
    check_available(skip)
    params = params or {}
    noise = {}

    def sigma(method):  # the noise level, the condition's estimated once and only when needed
        if "sigma" not in noise:
            known = task_spec(task).noise_level == PEAK  # the protocol's Poisson peak; a dose's is estimated
            noise["sigma"] = poisson_sigma_hu(peak) if known else estimated_sigma_hu(condition_hu)
        return params.get(method, {}).get("sigma_scale", 1.0) * noise["sigma"]

    denoisers = {
        "gaussian": lambda: gaussian_smoothing(condition_hu, params.get("gaussian", {}).get("sigma_px", 1.0)),
        "non_local_means": lambda: non_local_means(condition_hu, peak, sigma("non_local_means")),
        "bm3d": lambda: bm3d_slices(condition_hu, sigma("bm3d")),
    }
    interpolators = {
        "trilinear": lambda: interpolate_samples(condition_hu, factor, order=1, pyramid=pyramid),
        "tricubic": lambda: interpolate_samples(condition_hu, factor, order=3, pyramid=pyramid),
    }
    makers = {**denoisers, **interpolators}
    methods = {name: makers[name] for name in task_spec(task).baselines}
    unknown = set(skip) - {name for names in BASELINES.values() for name in names}
    if unknown:
        raise ValueError(f"unknown baselines to skip: {sorted(unknown)}")
    result = {"condition": np.asarray(condition_hu, np.float32)}
    result.update({name: make() for name, make in methods.items() if name not in skip})
    return result


# Wide: on the weak noise of the first lowdose simulation every tuned value sat at the grid's low
# edge; on the calibrated one NLM and BM3D sat at its top (1.5: the wavelet estimate sees only the
# finest scale of correlated noise, so it reads FBP noise as weaker than it is).
TUNING_GRID = {
    "gaussian": ("sigma_px", (0.35, 0.5, 0.7, 1.0, 1.4, 2.0)),
    "non_local_means": ("sigma_scale", (0.15, 0.22, 0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)),
    "bm3d": ("sigma_scale", (0.15, 0.22, 0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)),
}


# Settings tuned once per condition on the shared training patients (lung-pet-ct-dx-A0001,
# covid-ct-md-P001, covid-ct-md-cap001; 2 central slices each; experiments/tune_baselines.py), never on
# a held-out one. Keys: ("denoise", peak) and ("lowdose", dose) for the default simulation (i0
# calibrated per scan). Used by evaluation when the model's condition is one of them.
TUNED: dict[tuple, dict] = {
    # 2026-12-01, Intel Xeon (Sapphire Rapids class), 925 s; mean PSNR on the tuning slices
    (DENOISE, 512.0): {
        "gaussian": {"sigma_px": 0.5, "psnr_db": 40.013},
        "non_local_means": {"sigma_scale": 0.75, "psnr_db": 41.239},
        "bm3d": {"sigma_scale": 1.0, "psnr_db": 43.274},
    },
    # 2026-12-03, AMD EPYC (2 cores, AVX2), 694 s: the same series and slices at peak 128
    # (python experiments/tune_baselines.py --task denoise --peak 128 --slices 2 --train those three)
    (DENOISE, 128.0): {
        "gaussian": {"sigma_px": 0.7, "psnr_db": 36.762},
        "non_local_means": {"sigma_scale": 1.0, "psnr_db": 37.798},
        "bm3d": {"sigma_scale": 1.0, "psnr_db": 40.42},
    },
    # the same slices at simulated quarter dose (i0 calibrated); BM3D's 2.0 from the grid's extension
    (LOWDOSE, 0.25): {
        "gaussian": {"sigma_px": 0.5, "psnr_db": 42.525},
        "non_local_means": {"sigma_scale": 1.5, "psnr_db": 44.001},
        "bm3d": {"sigma_scale": 2.0, "psnr_db": 44.518},
    },
}


def tuned_params(task: str, peak: float = DEFAULT_PEAK, lowdose=None) -> dict | None:
    """The recorded tuned settings for this condition, or None (the defaults then apply)."""
    if task == DENOISE:
        return TUNED.get((DENOISE, float(peak)))
    if task == LOWDOSE and lowdose is not None and lowdose.i0 is None:
        return TUNED.get((LOWDOSE, float(lowdose.dose)))
    return None


def tune_baselines(task: str, pairs, methods=("gaussian", "non_local_means"), peak: float = DEFAULT_PEAK) -> dict:
    """Each denoiser's setting that scores best (mean PSNR in HU) on ``pairs`` of (condition, target) volumes.

    ``pairs`` come from training patients (a few slices each is enough). Returns
    ``{method: {"sigma_px" or "sigma_scale": value, "psnr_db": best}}``, ready for ``baselines(params=)``.
    """
    from cgan_ct.inference.metrics import psnr_db

    tuned = {}
    for method in methods:
        name, grid = TUNING_GRID[method]
        others = [m for m in BASELINES[task] if m != method]
        scores = []
        for value in grid:
            outputs = [baselines(task, c, others, peak, params={method: {name: value}})[method] for c, _ in pairs]
            scores.append((float(np.mean([psnr_db(t, o) for (_, t), o in zip(pairs, outputs, strict=True)])), value))
        best_score, best = max(scores)
        tuned[method] = {name: best, "psnr_db": round(best_score, 3)}
    return tuned


def seam_score(volume: np.ndarray, reference: np.ndarray, block: int, overlap: float, grid: int = 1) -> float:
    """How much more ``volume`` jumps at the tile edges of stitching than ``reference`` does; 1.0: no seams.

    The seam planes are the real tile edges of ``predict_volume`` with this
    ``block``, ``overlap`` and ``grid`` (``blocks.tile_edges``: where a tile begins or ends).
    Per volume, mean |difference of neighbouring voxels| across those planes is
    divided by the same across the planes just beside them (one voxel either side,
    not edges themselves); the score is the volume's ratio over the reference's,
    so anatomy that happens to lie on an edge plane cancels and a volume equal to
    its reference scores exactly 1.0. Steps between edges are not counted: they are
    not seams. NaN when the volume is too small to have tile edges, and NaN where a ratio is
    undefined: the volume's or the reference's mean step beside the edges, or the reference's across
    them, under ``SEAM_FLOOR_HU`` (e.g. a pixelated condition, constant between its grid planes, or air).
    """
    volume, reference = np.asarray(volume, np.float32), np.asarray(reference, np.float32)
    if volume.shape != reference.shape:
        raise ValueError(f"seam_score: volume {volume.shape} and reference {reference.shape} differ in shape")
    planes = [_seam_planes(n, block, overlap, grid) for n in volume.shape]
    if not any(len(edges) for edges, _ in planes):
        return float("nan")
    volume_across, volume_beside = _edge_steps(volume, planes)
    reference_across, reference_beside = _edge_steps(reference, planes)
    if min(volume_beside, reference_across, reference_beside) < SEAM_FLOOR_HU:
        return float("nan")
    return float((volume_across / volume_beside) / (reference_across / reference_beside))


def _seam_planes(length: int, block: int, overlap: float, grid: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices into np.diff along an axis (i: between voxels i and i + 1): at tile edges, and beside them."""
    from cgan_ct.ops.blocks import tile_edges

    edges = set(tile_edges(length, block, overlap, grid))
    beside = {q for p in edges for q in (p - 1, p + 1) if 0 < q < length} - edges
    return np.array(sorted(edges), int) - 1, np.array(sorted(beside), int) - 1


def _edge_steps(volume: np.ndarray, planes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Mean |step between neighbouring voxels| across the tile-edge planes, and across the planes beside them."""
    across, beside = [], []
    for axis, (edges, near) in enumerate(planes):
        diffs = np.abs(np.diff(volume, axis=axis))
        across.append(np.take(diffs, edges, axis=axis).ravel())
        beside.append(np.take(diffs, near, axis=axis).ravel())
    return float(np.concatenate(across).mean()), float(np.concatenate(beside).mean())
