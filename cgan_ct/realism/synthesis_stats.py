"""Evaluating synthetic CT volumes without human raters.

Three statistics per volume, each compared with a pool of real training
volumes; the same comparison for real held-out volumes is the yardstick (a
generator is as good as these statistics can tell when its volumes are as
close to the training pool as held-out patients are):

- the HU histogram of the body's voxels, compared by the 1-D Wasserstein
  (earth mover's) distance in HU;
- the radially averaged in-plane power spectrum of each tissue class (lung,
  fat, soft tissue, bone), compared by the mean absolute difference of log10
  power over the spatial-frequency bins both spectra have;
- the lung volume fraction: lung voxels / body voxels.

Statistics are computed one volume at a time and pooled by summing
(histogram counts, spectrum sums), so a training set never has to be held in
memory. Arrays are (z, y, x) in HU with ``hu[k]`` an axial slice and spacing
(z, y, x) in mm, as in cgan_ct.io.volume. Pure numpy / scipy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from cgan_ct.constants import BONE_HU, CLIP_HU, FAT_HU, SOFT_TISSUE_HU
from cgan_ct.errors import InputError
from cgan_ct.io.volume import Volume
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lung import lung_mask

HIST_LOW_HU, HIST_HIGH_HU = CLIP_HU
# Inclusive HU ranges of the classes other than lung, outside the lung mask.
TISSUE_CLASSES_HU = {"fat": FAT_HU, "soft_tissue": SOFT_TISSUE_HU, "bone": (BONE_HU, None)}
TISSUE_CLASSES = ("lung", "fat", "soft_tissue", "bone")
GROUPS = ("heldout", "synthetic")
# Floor for log10 of power (HU^2 mm^2): a perfectly flat synthetic patch gives 0.
_POWER_FLOOR = 1e-6
_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True, eq=False)
class HuHistogram:
    """Voxel counts in fixed HU bins: bin i holds HU in [low_hu + i * bin_hu, low_hu + (i + 1) * bin_hu).

    Values below ``low_hu`` count in the first bin and values above the last
    bin in the last one. Pool histograms by summing (``pool_histograms``).
    """

    counts: np.ndarray
    low_hu: int = HIST_LOW_HU
    bin_hu: int = 1

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def bins(self) -> tuple[int, int, int]:
        """(low_hu, bin_hu, number of bins): histograms compare and pool only when these agree."""
        return self.low_hu, self.bin_hu, int(self.counts.size)


@dataclasses.dataclass(frozen=True, eq=False)
class RadialSpectrum:
    """Radially averaged 2-D power spectrum of one tissue class, over axial patches.

    Bin i covers spatial frequencies [i, i + 1) * bin_per_mm cycles/mm, the
    same bins for every volume whatever its spacing, so spectra pool and
    compare bin by bin. ``power_sum[i]`` is the sum over patches of each
    patch's mean power in bin i (HU^2 mm^2, a power spectral density),
    ``patch_count[i]`` the number of patches that reach bin i.
    """

    bin_per_mm: float
    power_sum: np.ndarray
    patch_count: np.ndarray

    @property
    def frequencies_per_mm(self) -> np.ndarray:
        """Centres (cycles/mm) of the bins with data."""
        return (np.flatnonzero(self.patch_count) + 0.5) * self.bin_per_mm

    @property
    def power(self) -> np.ndarray:
        """Mean power (HU^2 mm^2) over patches in the bins with data, matching ``frequencies_per_mm``."""
        present = self.patch_count > 0
        return self.power_sum[present] / self.patch_count[present]

    @property
    def patches(self) -> int:
        return int(self.patch_count.max(initial=0))


@dataclasses.dataclass(frozen=True, eq=False)
class VolumeStatistics:
    """The statistics of one volume; small enough to keep for thousands of volumes.

    Attributes:
      volume_id: the volume's id.
      histogram: HU histogram of the body's voxels.
      spectra: radial power spectrum per tissue class; a class without a
        qualifying patch is absent.
      lung_fraction: lung voxels / body voxels (0 with no lungs).
      body_voxels: number of body voxels.
    """

    volume_id: str
    histogram: HuHistogram
    spectra: dict[str, RadialSpectrum]
    lung_fraction: float
    body_voxels: int


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What ``compare`` returns.

    Attributes:
      rows: one dict per held-out and synthetic volume, keys ``group``
        ('heldout' or 'synthetic'), ``volume``, ``w1_hu``, ``spectrum_<class>``
        for each of TISSUE_CLASSES (None where the class has no spectrum in
        the volume or in the training pool) and ``lung_fraction``.
      training: ``volumes``, ``lung_fraction_mean``, ``lung_fraction_min``,
        ``lung_fraction_max`` over the training volumes.
    """

    rows: list[dict]
    training: dict


def _check_3d(volume_hu: np.ndarray, name: str = "volume_hu") -> np.ndarray:
    volume_hu = np.asarray(volume_hu)
    if volume_hu.ndim != 3:
        raise ValueError(f"{name} must be a 3-D array (z, y, x), got {volume_hu.ndim}-D shape {volume_hu.shape}")
    if volume_hu.size == 0:
        raise ValueError(f"{name} is empty (shape {volume_hu.shape})")
    return volume_hu


def tissue_masks(volume_hu: np.ndarray, spacing_mm, body: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Boolean masks (z, y, x) of the tissue classes inside the body, keyed by TISSUE_CLASSES.

    lung: cgan_ct.ops.lung.lung_mask (so vessels inside the lungs are lung); fat
    -190..-30 HU, soft_tissue -29..150 HU, bone >= 300 HU, each inside the
    body and outside the lungs. The classes are disjoint; HU between them
    (151..299, air pockets) belong to none. ``body`` defaults to body_mask.
    """
    volume_hu = _check_3d(volume_hu)
    body = body_mask(volume_hu) if body is None else body
    lung = lung_mask(volume_hu, spacing_mm)
    rest = body & ~lung
    masks = {"lung": lung}
    for name, (low, high) in TISSUE_CLASSES_HU.items():
        inside = rest & (volume_hu >= low)
        masks[name] = inside if high is None else inside & (volume_hu <= high)
    return masks


def hu_histogram(values_hu, low_hu: int = HIST_LOW_HU, high_hu: int = HIST_HIGH_HU, bin_hu: int = 1) -> HuHistogram:
    """Histogram of HU values (any shape; floats are rounded) in bins of ``bin_hu`` over [low_hu, high_hu]."""
    values = np.asarray(values_hu).ravel()
    if bin_hu < 1 or high_hu < low_hu:
        raise ValueError(f"histogram needs bin_hu >= 1 and high_hu >= low_hu, got {bin_hu}, {low_hu}..{high_hu}")
    counts = np.zeros((high_hu - low_hu) // bin_hu + 1, np.int64)
    for start in range(0, values.size, _CHUNK):  # bounded temporaries for whole-body volumes
        chunk = values[start : start + _CHUNK]
        if np.issubdtype(chunk.dtype, np.floating):
            if not np.isfinite(chunk).all():
                raise ValueError("HU values contain NaN or infinity")
            chunk = np.rint(chunk)
        index = (np.clip(chunk, low_hu, high_hu).astype(np.int64) - low_hu) // bin_hu
        counts += np.bincount(index, minlength=counts.size)
    return HuHistogram(counts, int(low_hu), int(bin_hu))


def pool_histograms(histograms: Iterable[HuHistogram]) -> HuHistogram:
    """The sum of histograms with the same bins (a pooled training distribution)."""
    pooled = None
    for h in histograms:
        if pooled is not None and h.bins != pooled.bins:
            raise ValueError(f"histograms to pool must have the same bins, got {h.bins} and {pooled.bins}")
        pooled = h if pooled is None else HuHistogram(pooled.counts + h.counts, h.low_hu, h.bin_hu)
    if pooled is None:
        raise ValueError("no histograms to pool")
    return pooled


def wasserstein_hu(a: HuHistogram, b: HuHistogram) -> float:
    """1-D Wasserstein distance W1 (HU) between two histograms with the same bins.

    W1 = sum over bins of |CDF_a - CDF_b| * bin_hu, each bin's mass at one
    point. With 1 HU bins and integer HU this equals the distance between the
    voxel values themselves; wider bins move each value by less than a bin,
    so W1 is then exact to within ``bin_hu``.
    """
    if a.bins != b.bins:
        raise ValueError(f"histograms must have the same bins to compare, got {a.bins} and {b.bins}")
    if a.total == 0 or b.total == 0:
        raise ValueError("cannot compare an empty histogram")
    cdf_a = np.cumsum(a.counts) / a.total
    cdf_b = np.cumsum(b.counts) / b.total
    return float(np.abs(cdf_a - cdf_b).sum() * a.bin_hu)


def hu_wasserstein(volume_hu: np.ndarray, reference, mask: np.ndarray | None = None) -> float:
    """W1 (HU) between the body voxels of ``volume_hu`` (z, y, x) and ``reference``.

    ``reference`` is an HuHistogram (e.g. a pooled training set; its bins are
    used) or an array of HU values (1 HU bins). ``mask`` replaces the body
    mask when given.
    """
    volume_hu = _check_3d(volume_hu)
    mask = body_mask(volume_hu) if mask is None else np.asarray(mask, bool)
    if mask.shape != volume_hu.shape:
        raise ValueError(f"mask has shape {mask.shape}, volume_hu {volume_hu.shape}")
    if not isinstance(reference, HuHistogram):
        reference = hu_histogram(reference)
    high_hu = reference.low_hu + reference.bin_hu * reference.counts.size - 1
    return wasserstein_hu(hu_histogram(volume_hu[mask], reference.low_hu, high_hu, reference.bin_hu), reference)


def _patch_corners(mask: np.ndarray, patch: int, min_fraction: float) -> np.ndarray:
    """(k, y, x) of the patch x patch axial patches, on a half-patch grid, at least min_fraction in mask."""
    nz, ny, nx = mask.shape
    stride = max(1, patch // 2)
    ys = np.arange(0, ny - patch + 1, stride)[:, None]
    xs = np.arange(0, nx - patch + 1, stride)[None, :]
    summed = np.zeros((ny + 1, nx + 1), np.int32)
    corners = []
    for k in range(nz):  # slice by slice: a whole-volume summed table would cost 4 bytes a voxel
        summed[1:, 1:] = mask[k].cumsum(axis=0, dtype=np.int32).cumsum(axis=1, dtype=np.int32)
        inside = summed[ys + patch, xs + patch] - summed[ys, xs + patch] - summed[ys + patch, xs] + summed[ys, xs]
        iy, ix = np.nonzero(inside >= min_fraction * patch * patch)
        corners.append(np.stack([np.full(iy.size, k), ys[iy, 0], xs[0, ix]], axis=1))
    return np.concatenate(corners) if corners else np.zeros((0, 3), np.int64)


def _patch_power(patches: np.ndarray, spacing_yx) -> np.ndarray:
    """Power spectral density (n, patch, patch) in HU^2 mm^2 of mean-free, Hann-windowed patches."""
    size = patches.shape[-1]
    window = np.outer(np.hanning(size), np.hanning(size))
    centred = patches - patches.mean(axis=(1, 2), keepdims=True)
    transform = np.fft.fft2(centred * window)
    # Normalised so that white noise of variance s^2 has a flat spectrum s^2 * dy * dx.
    return np.abs(transform) ** 2 * (spacing_yx[0] * spacing_yx[1]) / (window**2).sum()


def _radial_bins(size: int, spacing_yx, bin_per_mm: float) -> tuple[np.ndarray, int]:
    """Bin index per FFT sample (-1 for DC and from the coarser axis' Nyquist frequency on) and the number of bins."""
    fy = np.fft.fftfreq(size, d=spacing_yx[0])[:, None]
    fx = np.fft.fftfreq(size, d=spacing_yx[1])[None, :]
    radius = np.hypot(fy, fx)
    nyquist = 0.5 / max(spacing_yx)
    index = np.floor(radius / bin_per_mm).astype(np.int64)
    index[(radius == 0) | (radius >= nyquist * (1 - 1e-9))] = -1  # at Nyquist a sample's sign is ambiguous
    return index, int(index.max()) + 1


def radial_power_spectra(
    volume_hu: np.ndarray,
    spacing_mm,
    masks: Mapping[str, np.ndarray],
    *,
    patch: int = 32,
    min_fraction: float = 0.9,
    max_patches: int = 256,
    seed: int = 0,
    bin_per_mm: float = 0.02,
) -> dict[str, RadialSpectrum]:
    """Radially averaged power spectrum per class of ``masks``, from axial patches.

    For each class: the patch x patch in-plane patches (on a grid of half a
    patch, in every axial slice) whose voxels are at least ``min_fraction`` in
    the class; at most ``max_patches`` of them, drawn reproducibly from
    ``seed``. Each patch: mean removed, Hann window, 2-D FFT power scaled to
    HU^2 mm^2, averaged in rings of ``bin_per_mm`` cycles/mm up to the Nyquist
    frequency of the coarser in-plane axis; then averaged over patches.
    A class with no qualifying patch is absent from the result.

    Args:
      volume_hu: (z, y, x) HU.
      spacing_mm: (z, y, x) in mm; y and x set the frequency axis.
      masks: class name -> boolean mask (z, y, x), e.g. ``tissue_masks``.
    """
    volume_hu = _check_3d(volume_hu)
    if patch < 4 or not 0 < min_fraction <= 1 or max_patches < 1 or bin_per_mm <= 0:
        raise ValueError(
            f"bad spectrum settings: patch={patch} (>= 4), min_fraction={min_fraction} (0..1], "
            f"max_patches={max_patches} (>= 1), bin_per_mm={bin_per_mm} (> 0)"
        )
    spacing_yx = (float(spacing_mm[1]), float(spacing_mm[2]))
    bins, count = _radial_bins(patch, spacing_yx, bin_per_mm)
    keep = bins >= 0
    samples = np.bincount(bins[keep], minlength=count)
    spectra = {}
    for name, mask in masks.items():
        if mask.shape != volume_hu.shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, volume_hu {volume_hu.shape}")
        corners = _patch_corners(mask, patch, min_fraction)
        if len(corners) == 0:
            continue
        if len(corners) > max_patches:
            chosen = np.random.default_rng(seed).choice(len(corners), max_patches, replace=False)
            corners = corners[np.sort(chosen)]
        patches = np.stack([volume_hu[k, y : y + patch, x : x + patch] for k, y, x in corners]).astype(np.float64)
        power = _patch_power(patches, spacing_yx)
        total = np.bincount(bins[keep], weights=power[:, keep].sum(axis=0), minlength=count)
        # total / samples: per bin, the sum over patches of each patch's ring mean.
        ring_sum = np.divide(total, samples, out=np.zeros(count), where=samples > 0)
        spectra[name] = RadialSpectrum(bin_per_mm, ring_sum, np.where(samples > 0, len(corners), 0))
    return spectra


def pool_spectra(spectra: Iterable[RadialSpectrum]) -> RadialSpectrum | None:
    """Spectra pooled over volumes: per bin, the mean over all their patches (None when there are none)."""
    pooled = None
    for s in spectra:
        if pooled is None:
            pooled = s
            continue
        if s.bin_per_mm != pooled.bin_per_mm:
            raise ValueError(f"spectra to pool must share bins, got {s.bin_per_mm} and {pooled.bin_per_mm} cycles/mm")
        size = max(s.power_sum.size, pooled.power_sum.size)
        power, count = np.zeros(size), np.zeros(size, np.int64)
        for part in (s, pooled):
            power[: part.power_sum.size] += part.power_sum
            count[: part.patch_count.size] += part.patch_count
        pooled = RadialSpectrum(s.bin_per_mm, power, count)
    return pooled


def spectrum_distance(a: RadialSpectrum, b: RadialSpectrum) -> float | None:
    """Mean |log10 power_a - log10 power_b| over the frequency bins both have (None if they share none).

    0 for equal spectra; 0.3 is a factor of two in power on average.
    """
    if a.bin_per_mm != b.bin_per_mm:
        raise ValueError(f"spectra must share bins, got {a.bin_per_mm} and {b.bin_per_mm} cycles/mm")
    size = min(a.patch_count.size, b.patch_count.size)
    shared = (a.patch_count[:size] > 0) & (b.patch_count[:size] > 0)
    if not shared.any():
        return None
    power_a = a.power_sum[:size][shared] / a.patch_count[:size][shared]
    power_b = b.power_sum[:size][shared] / b.patch_count[:size][shared]
    log_a = np.log10(np.maximum(power_a, _POWER_FLOOR))
    log_b = np.log10(np.maximum(power_b, _POWER_FLOOR))
    return float(np.abs(log_a - log_b).mean())


def volume_statistics(
    volume: Volume, *, bin_hu: int = 1, patch: int = 32, max_patches: int = 256, seed: int = 0
) -> VolumeStatistics:
    """HU histogram of the body, radial spectrum per tissue class and lung fraction of one volume.

    Raises InputError when the volume has no body (nothing above -500 HU).
    ``patch``, ``max_patches`` and ``seed`` go to ``radial_power_spectra``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume_statistics takes a cgan_ct Volume, got {type(volume).__name__}")
    body = body_mask(volume.hu)
    body_voxels = int(body.sum())
    if body_voxels == 0:
        raise InputError(volume.volume_id, "no body found (no voxels above -500 HU): statistics are undefined")
    masks = tissue_masks(volume.hu, volume.spacing_mm, body=body)
    spectra = radial_power_spectra(volume.hu, volume.spacing_mm, masks, patch=patch, max_patches=max_patches, seed=seed)
    return VolumeStatistics(
        volume_id=volume.volume_id,
        histogram=hu_histogram(volume.hu[body], bin_hu=bin_hu),
        spectra=spectra,
        lung_fraction=float(masks["lung"].sum()) / body_voxels,
        body_voxels=body_voxels,
    )


def _statistics_each(items: Iterable, name: str, settings: dict):
    """Yields VolumeStatistics for each Volume (computed) or VolumeStatistics (as is) of ``items``."""
    empty = True
    for item in items:
        empty = False
        yield item if isinstance(item, VolumeStatistics) else volume_statistics(item, **settings)
    if empty:
        raise ValueError(f"compare: {name} has no volumes")


def _row(group: str, stats: VolumeStatistics, histogram: HuHistogram, spectra: dict) -> dict:
    row = {"group": group, "volume": stats.volume_id, "w1_hu": wasserstein_hu(stats.histogram, histogram)}
    for name in TISSUE_CLASSES:
        mine, theirs = stats.spectra.get(name), spectra.get(name)
        row[f"spectrum_{name}"] = None if mine is None or theirs is None else spectrum_distance(mine, theirs)
    row["lung_fraction"] = stats.lung_fraction
    return row


def compare(
    synthetic: Iterable,
    training: Iterable,
    heldout: Iterable,
    *,
    bin_hu: int = 1,
    patch: int = 32,
    max_patches: int = 256,
    seed: int = 0,
) -> Comparison:
    """Distances of synthetic and of real held-out volumes to the pooled training volumes.

    Each argument is an iterable (a list, or a generator that reads one
    volume at a time) of Volume or of precomputed VolumeStatistics (computed
    with the same settings). Only the statistics are kept. Training
    histograms are summed (so the pool weighs volumes by body voxels) and
    training spectra pooled per class (weighted by patches); every held-out
    and synthetic volume gets a row (see Comparison). Raises ValueError when
    any of the three is empty (for a generator, once it is exhausted).
    """
    for name, items in (("synthetic", synthetic), ("training", training), ("heldout", heldout)):
        if isinstance(items, (list, tuple)) and not items:
            raise ValueError(f"compare: {name} has no volumes")
    settings = {"bin_hu": bin_hu, "patch": patch, "max_patches": max_patches, "seed": seed}
    histogram, spectra, lung_fractions = None, {}, []
    for stats in _statistics_each(training, "training", settings):
        histogram = stats.histogram if histogram is None else pool_histograms([histogram, stats.histogram])
        for name, spectrum in stats.spectra.items():
            spectra[name] = pool_spectra([s for s in (spectra.get(name), spectrum) if s is not None])
        lung_fractions.append(stats.lung_fraction)
    rows = []
    for group, items in (("heldout", heldout), ("synthetic", synthetic)):
        rows.extend(_row(group, stats, histogram, spectra) for stats in _statistics_each(items, group, settings))
    summary = {
        "volumes": len(lung_fractions),
        "lung_fraction_mean": float(np.mean(lung_fractions)),
        "lung_fraction_min": float(np.min(lung_fractions)),
        "lung_fraction_max": float(np.max(lung_fractions)),
    }
    return Comparison(rows, summary)


def _cell(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def markdown_table(rows: list[dict], training: dict | None = None) -> str:
    """Markdown table of ``compare`` rows: per group, mean (min–max) of each column.

    W1 in HU; spectrum columns are mean |log10 power ratio| to the training
    pool (lower is closer); '–' where no volume of the group has a value.
    ``training`` (Comparison.training) adds the training lung fractions.
    """
    columns = ["w1_hu"] + [f"spectrum_{name}" for name in TISSUE_CLASSES] + ["lung_fraction"]
    digits = {"w1_hu": 1, "lung_fraction": 3}
    header = ["group", "volumes", "W1 (HU)"] + [f"{n.replace('_', ' ')} spectrum" for n in TISSUE_CLASSES]
    lines = ["| " + " | ".join(header + ["lung fraction"]) + " |", "|" + "---|" * (len(header) + 1)]
    groups = [g for g in GROUPS if any(r["group"] == g for r in rows)]
    groups += sorted({r["group"] for r in rows} - set(groups))
    for group in groups:
        members = [r for r in rows if r["group"] == group]
        cells = [_cell([r.get(c) for r in members], digits.get(c, 3)) for c in columns]
        lines.append(f"| {group} | {len(members)} | " + " | ".join(cells) + " |")
    if training is not None:
        fraction = (
            f"{training['lung_fraction_mean']:.3f} "
            f"({training['lung_fraction_min']:.3f}–{training['lung_fraction_max']:.3f})"
        )
        blanks = " | ".join(["–"] * (len(columns) - 1))
        lines.append(f"| training | {training['volumes']} | {blanks} | {fraction} |")
    return "\n".join(lines) + "\n"
