"""Fréchet Radiomics Distance (FRD) between sets of CT volumes, offline, without a feature network.

FRD (Konz, Osuala et al., "Fréchet Radiomic Distance", 2026) is the Fréchet
distance between Gaussians fitted to radiomic features, in the place of the
Inception features of FID. Here, after their "FRDv1" 2-D recipe:

- features of axial slices: each slice is one sample, its region of interest
  the body mask; PyRadiomics on the Original image, Laplacian of Gaussian
  (sigma 2, 3, 4, 5 mm) and the four 2-D wavelet sub-bands, with the classes
  first order, GLCM (the recipe's 22 features), GLRLM, GLSZM and NGTDM: 693
  features a slice; HU below -1024 raised to -1024, intensities normalised
  per slice (normalize, scale 100, shift 300), 2 mm in-plane resampling
  (B-spline), bin width 5;
- every feature z-scored with the mean and standard deviation of the
  reference (training) features; features constant or non-finite in the
  reference are dropped;
- the squared Fréchet distance d^2 = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)).
  The frd-score package reports log(d^2); the value here is d^2 itself.

Differences that make these figures NOT comparable to published FRDs: the
samples are a few slices per volume (so they are not independent, and far
fewer than features), each covariance is the Ledoit-Wolf shrinkage estimate
rather than the sample covariance (which is singular with fewer samples than
features), groups are compared at equal sample counts (the larger subsampled,
averaged over draws: the Fréchet distance is biased upward at small counts),
and the region of interest is the body, not the whole image.

Needs PyRadiomics (``pip install 'cgan-ct[realism]'``, which installs the
``pyradiomics-bhklab`` fork: PyRadiomics' own PyPI release does not build on
Python >= 3.10). Arrays are (z, y, x) in HU, spacing (z, y, x) in mm.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from cgan_ct.ops.body_mask import body_mask

INSTALL_HINT = "pip install 'cgan-ct[realism]' (or: pip install pyradiomics-bhklab==3.1.4)"
# FRDv1's filters (sigma in mm) and its GLCM subset: FRD's extraction_2d.yaml.
FRD_IMAGE_TYPES = {"Original": {}, "LoG": {"sigma": [2.0, 3.0, 4.0, 5.0]}, "Wavelet": {}}
FRD_GLCM = (
    "Autocorrelation",
    "JointAverage",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "JointEnergy",
    "JointEntropy",
    "Imc1",
    "Imc2",
    "Idm",
    "Idmn",
    "Id",
    "Idn",
    "InverseVariance",
    "MaximumProbability",
    "SumEntropy",
    "SumSquares",
)
FRD_CLASSES = {"firstorder": None, "glcm": FRD_GLCM, "glrlm": None, "glszm": None, "ngtdm": None}
FRD_SETTINGS = {
    "normalize": True,
    "normalizeScale": 100,
    "interpolator": "sitkBSpline",
    "padDistance": 10,
    "preCrop": True,
    "binWidth": 5,
    "voxelArrayShift": 300,
    "label": 1,
    "additionalInfo": False,  # no diagnostics (image hashes, mask components): not features, 40 % of the time
}
# A slice is a sample when its body covers this fraction of it: the ends of a scan can be nearly empty.
MIN_BODY_FRACTION = 0.05


def _radiomics():
    """The radiomics package and SimpleITK, or an ImportError that says what to install."""
    try:
        import radiomics
        from radiomics import featureextractor
    except ImportError as error:  # pyradiomics itself fails to build on Python >= 3.10
        raise ImportError(f"the Fréchet Radiomics Distance needs PyRadiomics: {INSTALL_HINT}") from error
    import SimpleITK as sitk

    return radiomics, featureextractor, sitk


@contextlib.contextmanager
def _quiet_radiomics():
    """PyRadiomics logs its settings and a warning per slice (e.g. that its GLCM is symmetrical): errors only."""
    logger = logging.getLogger("radiomics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _extractor(image_types: dict, resampled_spacing_mm: float | None):
    _, featureextractor, _ = _radiomics()
    settings = dict(FRD_SETTINGS)
    if resampled_spacing_mm is not None:
        settings["resampledPixelSpacing"] = [float(resampled_spacing_mm)] * 2
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllImageTypes()
    for name, arguments in image_types.items():
        extractor.enableImageTypeByName(name, customArgs=arguments)
    extractor.disableAllFeatures()
    extractor.enableFeaturesByName(**{name: list(features or []) for name, features in FRD_CLASSES.items()})
    return extractor


def sample_slices(body: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` axial slices at evenly spaced relative heights among those with enough body.

    Fewer when fewer slices qualify; empty when none does.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    covered = body.reshape(body.shape[0], -1).mean(axis=1)
    usable = np.flatnonzero(covered >= MIN_BODY_FRACTION)
    if usable.size <= count:
        return usable
    return usable[((np.arange(count) + 0.5) * usable.size / count).astype(int)]


def slice_features(
    volume_hu: np.ndarray,
    spacing_mm,
    *,
    body: np.ndarray | None = None,
    slices: int = 16,
    image_types: dict | None = None,
    resampled_spacing_mm: float | None = 2.0,
) -> tuple[list[str], np.ndarray]:
    """Radiomic features of axial slices of one volume: (feature names, array (slices, features)).

    Args:
      volume_hu: (z, y, x) HU.
      spacing_mm: (z, y, x) mm; y and x are the in-plane spacing given to PyRadiomics.
      body: boolean (z, y, x) region of interest; body_mask of the volume by default.
      slices: how many slices (``sample_slices``); fewer come back when fewer have a body.
      image_types: PyRadiomics filters, FRD_IMAGE_TYPES by default.
      resampled_spacing_mm: in-plane spacing PyRadiomics resamples to (None: as stored).
    """
    _, _, sitk = _radiomics()
    volume_hu = np.asarray(volume_hu)
    if volume_hu.ndim != 3:
        raise ValueError(f"volume_hu must be 3-D (z, y, x), got shape {volume_hu.shape}")
    body = body_mask(volume_hu) if body is None else np.asarray(body, bool)
    names, rows = None, []
    with _quiet_radiomics():
        extractor = _extractor(FRD_IMAGE_TYPES if image_types is None else image_types, resampled_spacing_mm)
        for k in sample_slices(body, slices):
            # below -1024 HU is padding (e.g. -2048 outside the reconstruction circle): it would skew the
            # per-slice intensity normalisation, which PyRadiomics takes over the whole image
            image = sitk.GetImageFromArray(np.maximum(volume_hu[k], -1024).astype(np.float32))
            image.SetSpacing((float(spacing_mm[2]), float(spacing_mm[1])))  # SimpleITK: (x, y)
            mask = sitk.GetImageFromArray(body[k].astype(np.uint8))
            mask.CopyInformation(image)
            result = extractor.execute(image, mask)
            features = {key: float(value) for key, value in result.items() if not key.startswith("diagnostics")}
            names = names or list(features)
            rows.append([features[name] for name in names])
    return names or [], np.asarray(rows, np.float64).reshape(len(rows), len(names or []))


def ledoit_wolf_covariance(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrinkage covariance of (n, p) samples and its shrinkage weight in [0, 1].

    (1 - s) S + s (tr S / p) I with S the maximum-likelihood covariance and s
    the Ledoit-Wolf (2004) estimate of the weight that minimises the expected
    squared error: well conditioned even with fewer samples than features.
    """
    x = np.asarray(samples, np.float64)
    n, p = x.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {n}")
    x = x - x.mean(axis=0)
    sample = x.T @ x / n
    scale = np.trace(sample) / p
    target_distance = np.sum((sample - scale * np.eye(p)) ** 2)
    if target_distance == 0:
        return sample, 0.0
    # mean over samples of |x_k x_k^T - S|_F^2, without forming the n outer products
    squared_norms = np.sum(x**2, axis=1)
    spread = (np.sum(squared_norms**2) / n - np.sum(sample**2)) / n
    shrinkage = float(min(max(spread, 0.0), target_distance) / target_distance)
    return (1 - shrinkage) * sample + shrinkage * scale * np.eye(p), shrinkage


def frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians.

    |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^(1/2) C_b C_a^(1/2))^(1/2)), through
    symmetric eigendecompositions (exact for positive semi-definite C, no complex sqrtm).
    """
    mean_a, mean_b = np.atleast_1d(mean_a).astype(np.float64), np.atleast_1d(mean_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mean_a.size,) * 2:
        raise ValueError(
            f"shapes do not match: means {mean_a.shape}, {mean_b.shape}; covariances {cov_a.shape}, {cov_b.shape}"
        )
    values, vectors = np.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(distance, 0.0))


def _standardise(features: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both z-scored with the reference's mean and std; columns constant or non-finite in either dropped."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    keep = np.isfinite(reference).all(axis=0) & np.isfinite(features).all(axis=0) & (std > 1e-12 * (1 + abs(mean)))
    if not keep.any():
        raise ValueError("no feature varies in the reference: the Fréchet distance is undefined")
    return (features[:, keep] - mean[keep]) / std[keep], (reference[:, keep] - mean[keep]) / std[keep]


def frechet_radiomics_distance(
    features: np.ndarray, reference: np.ndarray, *, samples: int | None = None, draws: int = 8, seed: int = 0
) -> float:
    """FRD (squared Fréchet distance) of (n, p) features against (m, p) reference features.

    Features are z-scored on the reference; covariances are Ledoit-Wolf. With
    ``samples``, the features are compared ``samples`` rows at a time (drawn
    without replacement, ``draws`` times from ``seed``, distances averaged) so
    that groups of different sizes face the same small-sample bias; the
    reference is always used whole.
    """
    features, reference = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    if features.ndim != 2 or reference.ndim != 2 or features.shape[1] != reference.shape[1]:
        raise ValueError(f"features {features.shape} and reference {reference.shape} must be (n, p) with the same p")
    features, reference = _standardise(features, reference)
    ref_cov, _ = ledoit_wolf_covariance(reference)
    ref_mean = reference.mean(axis=0)
    n = features.shape[0]
    if samples is None or samples >= n:
        subsets = [np.arange(n)]
    else:
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        rng = np.random.default_rng(seed)
        subsets = [np.sort(rng.choice(n, samples, replace=False)) for _ in range(draws)]
    distances = []
    for rows in subsets:
        cov, _ = ledoit_wolf_covariance(features[rows])
        distances.append(frechet_distance(features[rows].mean(axis=0), cov, ref_mean, ref_cov))
    return float(np.mean(distances))
