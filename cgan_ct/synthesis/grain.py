"""Real CT's grain on the cascade's output (issue 33, item 3: texture; BUILD_NOTES "Output grain").

Measured on the shipped cascade (BUILD_NOTES "Output grain"): in uniform soft tissue the synthetic volumes
carry about the real noise in HU, but at the wrong scale. Their noise power below 0.1 /mm is 4 to 8 times
the training volumes' (mottle of 1-4 cm: the coarse levels' voxel noise, interpolated up by stages that keep
their condition's samples), and above 0.3 /mm it is a quarter to under a half (the grain a reconstruction
kernel leaves). Retraining the stages moved the mean frequency by no more than the noise between trainings.

``Grain`` puts the texture right after the cascade, per axial slice, with what a CT noise-insertion tool does:

1. mottle out: an edge-preserving smoothing (a guided filter, the slice its own guide, ``smooth_radius``
   voxels): variations below ``smooth_hu`` inside the window are flattened, edges well above it (fat and
   soft tissue, lung walls, vessels, bone) are kept. ``smooth_hu`` is fitted: the training volumes' median
   soft-tissue noise, below which a variation cannot be told from noise in real CT either.
2. grain in: Gaussian noise shaped in-plane to the radial noise power spectrum ``nps`` (HU^2 mm^2 per
   ``frequencies_per_mm`` bin): the training volumes' median soft-tissue NPS less the smoothed synthetic
   volumes' (never below 0), so the sum has the training volumes' spectrum where the cascade's falls short.
   Each slice's noise is drawn from (``GRAIN_SEED``, the volume's seed, the slice index): a volume is the same
   whatever its slabs, and every volume's grain is new.

The spectrum is of pooled statistics (a median over the training volumes of a per-bin power), with counts
only: nothing of a patient. ``fit_grain`` needs the realism room (NPS measurement); serving needs numpy and
scipy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from scipy import ndimage

GRAIN_SEED = 4_000_037  # apart from every other seed the cascade draws with
BIN_PER_MM = 0.05  # tissue_sanity.noise_power_spectrum's radial bins
SMOOTH_RADIUS = 8  # voxels: a 17-voxel window (13 mm at 0.75 mm), the mottle's scale lies above 10 mm


@dataclasses.dataclass(frozen=True)
class Grain:
    """Mottle out and real grain in, per axial slice (module docstring).

    Attributes:
      frequencies_per_mm: radial frequency bin centres, increasing.
      nps: noise power to insert per bin (HU^2 mm^2, >= 0); beyond the last bin none.
      smooth_radius: the guided filter's radius in voxels (0: no smoothing).
      smooth_hu: the contrast (HU) below which the filter flattens a variation.
      draws, volumes: how many synthetic and real volumes the fit used (records, not used here).
    """

    frequencies_per_mm: tuple[float, ...]
    nps: tuple[float, ...]
    smooth_radius: int = SMOOTH_RADIUS
    smooth_hu: float = 0.0
    draws: int = 0
    volumes: int = 0

    def __post_init__(self):
        frequencies, nps = np.asarray(self.frequencies_per_mm, float), np.asarray(self.nps, float)
        if frequencies.ndim != 1 or frequencies.shape != nps.shape or frequencies.size < 1:
            raise ValueError(f"grain needs one power per frequency, got {frequencies.shape} and {nps.shape}")
        if not (np.isfinite(frequencies).all() and np.isfinite(nps).all()) or (nps < 0).any():
            raise ValueError("grain's frequencies and powers must be finite, its powers >= 0")
        if (np.diff(frequencies) <= 0).any() or frequencies[0] < 0:
            raise ValueError("grain's frequencies must be >= 0 and increase strictly")
        if self.smooth_radius < 0 or not np.isfinite(self.smooth_hu) or self.smooth_hu < 0:
            raise ValueError(f"need smooth_radius >= 0 and smooth_hu >= 0, got {self.smooth_radius}, {self.smooth_hu}")

    def smooth(self, slab_hu: np.ndarray) -> np.ndarray:
        """Step 1 on a (z, y, x) HU slab, each slice apart: float32."""
        slab = np.asarray(slab_hu, np.float32)
        if not self.smooth_radius or not self.smooth_hu:
            return slab
        return guided_smooth(slab, self.smooth_radius, self.smooth_hu)

    def noise(self, shape: Sequence[int], spacing_mm, seed: int, first_slice: int = 0) -> np.ndarray:
        """Step 2's noise for slices ``first_slice`` .. of a (z, y, x) ``shape`` (HU, float32)."""
        z, rows, columns = (int(n) for n in shape)
        gain = self._gain(rows, columns, float(spacing_mm[1]), float(spacing_mm[2]))
        out = np.empty((z, rows, columns), np.float32)
        for k in range(z):
            white = np.random.default_rng([GRAIN_SEED, int(seed), first_slice + k]).standard_normal((rows, columns))
            out[k] = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(rows, columns))
        return out

    def apply(self, slab_hu: np.ndarray, spacing_mm, seed: int, first_slice: int = 0) -> np.ndarray:
        """A (z, y, x) HU slab whose first slice is the volume's ``first_slice``, smoothed and grained (float32)."""
        slab = self.smooth(slab_hu)
        return slab + self.noise(slab.shape, spacing_mm, seed, first_slice)

    def stream(self, slabs: Iterable[np.ndarray], spacing_mm, seed: int) -> Iterator[np.ndarray]:
        """``apply`` over a volume's slabs in z order."""
        first = 0
        for slab in slabs:
            yield self.apply(slab, spacing_mm, seed, first)
            first += len(slab)

    def _gain(self, rows: int, columns: int, dy: float, dx: float) -> np.ndarray:
        """The filter taking unit white noise to ``nps`` (rfft2 layout): sqrt(NPS / pixel area) at each radius."""
        radius = np.hypot(np.fft.fftfreq(rows, dy)[:, None], np.fft.rfftfreq(columns, dx)[None, :])
        power = np.interp(radius, self.frequencies_per_mm, self.nps, left=self.nps[0], right=0.0)
        return np.sqrt(power / (dy * dx))

    def to_json(self) -> dict:
        return {
            "frequencies_per_mm": [float(v) for v in self.frequencies_per_mm],
            "nps": [float(v) for v in self.nps],
            "smooth_radius": int(self.smooth_radius),
            "smooth_hu": float(self.smooth_hu),
            "draws": int(self.draws),
            "volumes": int(self.volumes),
        }

    @classmethod
    def from_json(cls, data: dict) -> Grain:
        return cls(
            tuple(float(v) for v in data["frequencies_per_mm"]),
            tuple(float(v) for v in data["nps"]),
            int(data["smooth_radius"]),
            float(data["smooth_hu"]),
            int(data["draws"]),
            int(data["volumes"]),
        )


def guided_smooth(slab_hu: np.ndarray, radius: int, contrast_hu: float) -> np.ndarray:
    """A guided filter (He et al.), each axial slice of a (z, y, x) HU slab its own guide: in a window of
    2 * radius + 1 voxels, the output is a * input + b with a = var / (var + contrast_hu^2), so a window whose
    spread is well below ``contrast_hu`` is flattened to its mean and one holding a strong edge kept. float32."""
    slab = np.asarray(slab_hu, np.float32)
    size = (1, 2 * radius + 1, 2 * radius + 1)
    mean = ndimage.uniform_filter(slab, size)
    variance = np.maximum(ndimage.uniform_filter(slab * slab, size) - mean * mean, 0.0)
    a = variance / (variance + np.float32(contrast_hu) ** 2)
    b = mean - a * mean
    return ndimage.uniform_filter(a, size) * slab + ndimage.uniform_filter(b, size)


def soft_tissue_nps(volume_hu: np.ndarray, spacing_mm) -> dict | None:
    """One volume's radial soft-tissue NPS as the synthesis report measures it (tissue_sanity), or None
    without a uniform soft-tissue patch: {frequencies_per_mm, nps, noise_hu}."""
    from cgan_ct.realism.tissue_sanity import noise_power_spectrum, uniform_soft_tissue

    nps = noise_power_spectrum(volume_hu, spacing_mm, uniform_soft_tissue(volume_hu, spacing_mm))
    if nps is None:
        return None
    return {key: nps[key] for key in ("frequencies_per_mm", "nps", "noise_hu")}


def fit_grain(
    draws_hu: Iterable[tuple[np.ndarray, tuple]], real: Sequence[dict | None], smooth_radius: int = SMOOTH_RADIUS
) -> tuple[Grain, dict]:
    """The grain that gives ``draws_hu`` ((volume HU, spacing_mm) pairs: whole synthetic volumes) the
    soft-tissue NPS of the real volumes (``soft_tissue_nps`` of each; None ones are skipped), and the fit's
    record: the real and synthetic spectra and their noise and mean frequency before and after.

    ValueError when no real volume or no draw has uniform soft tissue to measure."""
    real = [r for r in real if r is not None]
    if not real:
        raise ValueError("no real volume has uniform soft tissue: no noise power to match")
    top = max(float(r["frequencies_per_mm"][-1]) for r in real)
    bins = (np.arange(int(round(top / BIN_PER_MM - 0.5)) + 1) + 0.5) * BIN_PER_MM  # centres up to ``top``
    real_nps = np.nanmedian(np.stack([_on_bins(r, bins) for r in real]), axis=0)
    smooth_hu = float(np.median([r["noise_hu"] for r in real]))
    grain = Grain(tuple(bins), tuple(np.zeros(len(bins))), smooth_radius, smooth_hu)
    smoothed, before = [], []
    for volume_hu, spacing_mm in draws_hu:
        raw = soft_tissue_nps(volume_hu, spacing_mm)
        measured = soft_tissue_nps(grain.smooth(volume_hu), spacing_mm)
        if raw is None or measured is None:
            continue
        before.append(raw)
        smoothed.append(measured)
    if not smoothed:
        raise ValueError("no synthetic volume has uniform soft tissue: no noise power to match")
    synthetic_nps, smoothed_nps = (_mean_on_bins(spectra, bins) for spectra in (before, smoothed))
    present = np.isfinite(real_nps)
    insert = np.where(present, np.maximum(real_nps - np.nan_to_num(smoothed_nps), 0.0), 0.0)
    grain = dataclasses.replace(grain, nps=tuple(insert), draws=len(smoothed), volumes=len(real))
    expected = np.where(present, np.nan_to_num(smoothed_nps) + insert, np.nan)
    record = {"grain": grain.to_json(), "frequencies_per_mm": [float(f) for f in bins]}
    for name, nps in (("real", real_nps), ("synthetic", synthetic_nps), ("smoothed", smoothed_nps)):
        record[f"{name}_nps"], record[name] = _listed(nps), _summary(nps, bins)
    record["expected"] = _summary(expected, bins)
    return grain, record


def _on_bins(nps: dict, bins: np.ndarray) -> np.ndarray:
    """A radial NPS on ``bins`` (NaN beyond the frequencies it was measured at)."""
    frequencies, power = np.asarray(nps["frequencies_per_mm"], float), np.asarray(nps["nps"], float)
    return np.interp(bins, frequencies, power, left=power[0], right=np.nan)


def _mean_on_bins(spectra: Sequence[dict], bins: np.ndarray) -> np.ndarray:
    """The mean of radial NPSs on ``bins``, NaN where none was measured."""
    stacked = np.stack([_on_bins(nps, bins) for nps in spectra])
    counts = np.isfinite(stacked).sum(axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def _summary(nps: np.ndarray, bins: np.ndarray) -> dict:
    """Noise (HU) and NPS-weighted mean frequency (/mm) of a radial NPS (bins' ring areas as weights)."""
    keep = np.isfinite(nps)
    ring = 2 * np.pi * bins[keep] * BIN_PER_MM * nps[keep]  # power in each ring, HU^2
    total = float(ring.sum())
    return {
        "noise_hu": float(np.sqrt(total)),
        "mean_frequency_per_mm": float((bins[keep] * ring).sum() / total) if total > 0 else 0.0,
    }


def _listed(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]
