"""The ``lowdose`` condition: a lower dose of the same scan, simulated in the projection domain.

Real CT noise is made by counting photons along rays: it is roughly even across a slice, correlated
between neighbouring voxels (the reconstruction filter), and streaky behind bone. The paper's Poisson
noise on voxel values has none of that. Here, for each axial slice:

1. HU -> linear attenuation ``mu = MU_WATER_PER_MM * (1 + HU / 1000)`` (>= 0), in 1/mm;
2. line integrals ``p`` over a parallel beam of ``views`` angles over 180 degrees and detector bins
   one pixel wide (``ParallelBeam.project``, on the slice down-sampled 2x: ``p`` is only needed for
   the noise level of each ray, and is smooth enough for that);
3. noise in the projections, by noise insertion (Yu et al., Med. Phys. 2012; Zeng et al., IEEE TNS
   2015): the scan already holds the noise of its own dose, so each ray gets zero-mean Gaussian noise
   of variance ``var(p, dose) - var(p, 1)`` in the log domain, where for ``I = i0 * a * exp(-p)``
   expected counts at relative dose ``a``, ``var(p, a) = (I + sigma_e^2) / I^2`` (Poisson counts
   plus the detector's electronic noise);
4. filtered back-projection of that noise alone (Shepp-Logan filtered ramp, linear interpolation:
   ``ParallelBeam.fbp``), back to HU, added to the slice.

Only the noise goes through our reconstruction: the anatomy keeps the scanner's own resolution and
kernel, which a full re-reconstruction would replace by ours (BUILD_NOTES.md, "Low dose").
``lowdose_noise_hu(..., from_dose=None)`` is the full simulation from a noise-free slice instead:
Poisson counts ``Poisson(i0 * dose * exp(-p))`` plus Gaussian electronic noise, log, FBP (used by
the checks: noise standard deviation goes as 1/sqrt(dose), the noise power spectrum peaks away from
zero frequency, as filtered back-projection's does).

Arrays are numpy float32 HU, slices (z, y, x); no TensorFlow. The back-projection of a 512 x 512
slice over 360 views costs about 0.5 s of one core; slices are spread over a thread pool.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import math
import os

import numpy as np

from cgan_ct.config import LowDoseConfig
from cgan_ct.constants import AIR_HU, CLIP_HU
from cgan_ct.ops.noise_level import TISSUE_HU, global_noise_hu, noise_regions

# residual_weight's exponent, chosen by experiments/dose_strength.py on cohort training series that
# pretrained:lowdose never trained on (lungfcp, rider, tcga-bc, cmb-crc; doses 0.5 and 0.9, 16 central
# slices; the largest worst-case gain over the input): 2026-12-03, AMD EPYC, 2 cores. gamma 1 keeps the
# correction in proportion to the added noise's variance; 0.5 (its standard deviation) made two of eight
# tuning scans worse at dose 0.9 (-0.91, -0.64 dB).
DOSE_GAMMA = 1.0
REFERENCE_I0 = 3.0e6  # photons per bin and view: ~20 HU at the centre of a 30 cm water cylinder, 0.7 mm pixels
MU_WATER_PER_MM = 0.0195  # water at the ~70 keV effective energy of a 120 kVp beam (NIST XCOM: 0.19-0.20 /cm)
_BATCH = 16  # slices back-projected together (they share each view's interpolation indices)


class ParallelBeam:
    """A parallel-beam geometry for square ``size`` x ``size`` slices of unit pixels.

    ``views`` angles evenly over [0, pi); detector bins one pixel wide, centred on the slice's
    centre, enough of them to see the whole square. Forward projection splats each pixel onto its
    two nearest bins (linear weights, so a line integral is in pixel lengths); back-projection
    interpolates linearly: the two are adjoint.
    """

    def __init__(self, size: int, views: int):
        if size < 4 or views < 2:
            raise ValueError(f"a beam needs size >= 4 and views >= 2, got {size}, {views}")
        self.size, self.views = int(size), int(views)
        self.bins = int(math.ceil(size * math.sqrt(2))) + 3
        self.angles = np.arange(views) * np.pi / views
        centre = (np.arange(size, dtype=np.float32) - (size - 1) / 2).astype(np.float32)
        yy, xx = np.meshgrid(centre, centre, indexing="ij")
        self._x, self._y = xx.ravel(), yy.ravel()
        self._filter = None

    def _interpolation(self, view: int):
        t = (
            self._x * np.float32(math.cos(self.angles[view]))
            + self._y * np.float32(math.sin(self.angles[view]))
            + np.float32((self.bins - 1) / 2)
        )
        index = t.astype(np.int32)  # t > 0 everywhere: truncation is floor
        return index, (t - index).astype(np.float32)

    def project(self, images) -> np.ndarray:
        """Line integrals (in pixel lengths) of ``images`` [B, size, size] -> sinograms [B, views, bins]."""
        images = np.asarray(images, np.float32).reshape(-1, self.size * self.size)
        batch = images.shape[0]
        sinograms = np.zeros((batch, self.views, self.bins), np.float32)
        offsets = (np.arange(batch) * self.bins)[:, None]
        for view in range(self.views):
            index, weight = self._interpolation(view)
            flat = np.concatenate([(index[None] + offsets).ravel(), (index[None] + 1 + offsets).ravel()])
            values = np.concatenate([(images * (1 - weight)).ravel(), (images * weight).ravel()])
            sinograms[:, view] = np.bincount(flat, values, minlength=batch * self.bins).reshape(batch, self.bins)
        return sinograms

    def back_project(self, sinograms) -> np.ndarray:
        """Sum over views of each view's bins interpolated at every pixel: [B, views, bins] -> [B, size, size]."""
        sinograms = np.asarray(sinograms, np.float32)
        batch = sinograms.shape[0]
        by_view = np.ascontiguousarray(np.transpose(sinograms, (1, 2, 0)))  # [views, bins, B]: gathers rows of B
        out = np.zeros((self.size * self.size, batch), np.float32)
        for view in range(self.views):
            index, weight = self._interpolation(view)
            rows = by_view[view]
            low, high = rows[index], rows[index + 1]
            high -= low
            high *= weight[:, None]
            low += high
            out += low
        return np.ascontiguousarray(out.T).reshape(batch, self.size, self.size)

    @property
    def ramp(self) -> np.ndarray:
        """The frequency response of the Shepp-Logan filtered ramp, for an FFT of ``2 * bins`` (rfft)."""
        if self._filter is None:
            n = 2 * self.bins
            taps = np.zeros(n)
            taps[0] = 0.25
            odd = np.arange(1, n // 2, 2)
            taps[odd] = taps[n - odd] = -1.0 / (np.pi * odd) ** 2  # Ram-Lak in space: exact at zero frequency
            response = np.real(np.fft.rfft(taps))  # |f| in cycles per bin
            frequency = np.fft.rfftfreq(n)
            response *= np.sinc(frequency)  # the Shepp-Logan window
            self._filter = response.astype(np.float32)
        return self._filter

    def fbp(self, sinograms) -> np.ndarray:
        """Filtered back-projection: the slices [B, size, size] whose projections are ``sinograms``."""
        sinograms = np.asarray(sinograms, np.float32)
        spectrum = np.fft.rfft(sinograms, n=2 * self.bins, axis=-1) * self.ramp
        filtered = np.fft.irfft(spectrum, n=2 * self.bins, axis=-1)[..., : self.bins].astype(np.float32)
        return self.back_project(filtered) * np.float32(np.pi / self.views)


@functools.lru_cache(maxsize=8)
def beam(size: int, views: int) -> ParallelBeam:
    return ParallelBeam(size, views)


def _variance(p, i0_at_dose: float, electronic_variance: float) -> np.ndarray:
    expected = i0_at_dose * np.exp(-p)
    return (expected + electronic_variance) / np.maximum(expected, 1e-6) ** 2


def _square(slices_hu):
    """Pads slices [Z, Y, X] with air to square [Z, N, N] (N even); returns them and the crop back."""
    _, height, width = slices_hu.shape
    size = max(height, width)
    size += size % 2
    top, left = (size - height) // 2, (size - width) // 2
    square = np.full((slices_hu.shape[0], size, size), AIR_HU, np.float32)
    square[:, top : top + height, left : left + width] = slices_hu
    return square, (slice(top, top + height), slice(left, left + width))


def _coarse_projections(mu_per_mm, pixel_mm: float, views: int) -> np.ndarray:
    """Line integrals [B, views, bins] of the full grid, computed on the slices down-sampled 2x."""
    batch, size, _ = mu_per_mm.shape
    coarse = mu_per_mm.reshape(batch, size // 2, 2, size // 2, 2).mean(axis=(2, 4))
    coarse_views = max(views // 2, 2)
    low = beam(size // 2, coarse_views).project(coarse) * np.float32(2 * pixel_mm)
    full = beam(size, views)
    # bins: full bin b sits at t = b - (B - 1) / 2 pixels, coarse position t / 2
    positions = (np.arange(full.bins) - (full.bins - 1) / 2) / 2 + (low.shape[-1] - 1) / 2
    along_bins = np.stack(
        [np.interp(positions, np.arange(low.shape[-1]), row) for row in low.reshape(-1, low.shape[-1])]
    )
    along_bins = along_bins.reshape(batch, coarse_views, full.bins)
    # views: full view v is at coarse position v * coarse_views / views; the view after the last is the
    # first one seen from the other side (p(theta + pi, t) = p(theta, -t))
    wrapped = np.concatenate([along_bins, along_bins[:, :1, ::-1]], axis=1)
    position = np.arange(views) * coarse_views / views
    before = np.floor(position).astype(int)
    weight = (position - before)[None, :, None]
    return ((1 - weight) * wrapped[:, before] + weight * wrapped[:, before + 1]).astype(np.float32)


def _normal(rngs, shape) -> np.ndarray:
    return np.stack([rng.standard_normal(shape[1:], np.float32) for rng in rngs])


def lowdose_noise_hu(
    slices_hu, pixel_mm: float, config: LowDoseConfig, rngs, from_dose: float | None = 1.0
) -> np.ndarray:
    """The noise, in HU, that makes square axial slices look acquired at ``config.dose``.

    Args:
      slices_hu: float32 [B, N, N], N even.
      pixel_mm: in-plane pixel spacing.
      config: dose, i0, electronic noise, views.
      rngs: one np.random.Generator per slice (or one for all): draws the noise.
      from_dose: the dose the slices already carry the noise of (1.0: they are the full-dose scan,
        noise is inserted; 0: Gaussian noise of the whole dose); None: they are noise free, and the
        whole acquisition is simulated (Poisson counts, electronic noise, log). ``config.i0``
        None is REFERENCE_I0 here (``calibrate_i0`` finds a scan's own).

    Returns:
      float32 [B, N, N] HU to add to ``slices_hu``.
    """
    slices_hu = np.asarray(slices_hu, np.float32)
    if isinstance(rngs, np.random.Generator):
        rngs = [rngs] * len(slices_hu)
    mu = np.maximum(MU_WATER_PER_MM * (1 + slices_hu / 1000), 0).astype(np.float32)
    geometry = beam(slices_hu.shape[-1], config.views)
    i0 = REFERENCE_I0 if config.i0 is None else config.i0
    if from_dose is None:
        p = geometry.project(mu) * np.float32(pixel_mm)
        expected = i0 * config.dose * np.exp(-p)
        counts = np.stack([rng.poisson(e) for rng, e in zip(rngs, expected, strict=True)]).astype(np.float32)
        counts += np.float32(math.sqrt(config.electronic_variance)) * _normal(rngs, p.shape)
        noise_p = -np.log(np.maximum(counts, 1.0) / (i0 * config.dose)) - p
    else:
        if from_dose > 0 and config.dose > from_dose:
            raise ValueError(f"cannot simulate dose {config.dose} from a scan at dose {from_dose}: noise only adds")
        p = _coarse_projections(mu, pixel_mm, config.views)
        extra = _variance(p, i0 * config.dose, config.electronic_variance)
        if from_dose > 0:  # from_dose 0: the whole noise of the dose (calibration)
            extra -= _variance(p, i0 * from_dose, config.electronic_variance)
        noise_p = np.sqrt(np.maximum(extra, 0)) * _normal(rngs, p.shape)
    noise_mu_pixel = geometry.fbp(noise_p.astype(np.float32))  # mu * pixel length
    return noise_mu_pixel * np.float32(1000.0 / (MU_WATER_PER_MM * pixel_mm))


_CALIBRATION_SLICES = 8


def calibrate_i0(volume_hu, spacing_mm, config: LowDoseConfig) -> tuple[float, float]:
    """(i0, own noise in HU): the photon count whose simulated full-dose noise matches the scan's own.

    The scan's soft-tissue noise (cgan_ct.ops.noise_level, on its central slices) against the noise
    REFERENCE_I0 gives on one central slice of it (its standard deviation in the same tissue);
    noise variance goes as 1 / i0. Returns (REFERENCE_I0, NaN) where no soft tissue can be measured.
    ``config.i0`` set: returned as it is.
    """
    if config.i0 is not None:
        return float(config.i0), float("nan")
    volume = np.asarray(volume_hu, np.float32)
    middle = volume.shape[0] // 2
    slab = volume[max(0, middle - _CALIBRATION_SLICES // 2) : middle + _CALIBRATION_SLICES // 2]
    own = global_noise_hu(slab, spacing_mm, noise_regions(slab)[0], TISSUE_HU)
    centre = volume[middle : middle + 1]
    inside = noise_regions(centre)[0][0] & (centre[0] >= TISSUE_HU[0]) & (centre[0] <= TISSUE_HU[1])
    square, crop = _square(centre)
    pixel_mm = float(np.sqrt(float(spacing_mm[1]) * float(spacing_mm[2])))
    reference = dataclasses.replace(config, i0=REFERENCE_I0, dose=1.0, electronic_variance=0.0)
    rng = np.random.default_rng([volume_seed(config, "calibration"), middle])
    noise = lowdose_noise_hu(square, pixel_mm, reference, rng, from_dose=0)[:, crop[0], crop[1]]
    if not np.isfinite(own) or own <= 0 or inside.sum() < 100:
        return REFERENCE_I0, float("nan")
    simulated = float(np.std(noise[0][inside]))
    return REFERENCE_I0 * (simulated / own) ** 2, own


def volume_seed(config: LowDoseConfig, key: str) -> int:
    """The seed of one volume's noise: from the config's seed and a key (its pseudonymous id)."""
    digest = hashlib.sha256(f"{config.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def simulate_lowdose(volume_hu, spacing_mm, config: LowDoseConfig, key: str, workers: int | None = None) -> np.ndarray:
    """``volume_hu`` [Z, Y, X] (HU) as if scanned at ``config.dose`` of its dose: float32 HU.

    Each slice's noise is drawn from (config.seed, ``key``, slice index): the same volume, key and
    config give the same result whatever ``workers`` is. Non-square slices are padded with air to a
    square for the projections. The result is clipped to the CT number range (CLIP_HU). With
    ``config.i0`` None, i0 is calibrated on the volume first (``calibrate_i0``).
    """
    volume_hu = np.asarray(volume_hu, np.float32)
    if volume_hu.ndim != 3 or min(volume_hu.shape[1:]) < 8:
        raise ValueError(f"lowdose needs a volume [Z, Y, X] of slices at least 8 x 8, got {volume_hu.shape}")
    pixel_mm = float(np.sqrt(float(spacing_mm[1]) * float(spacing_mm[2])))
    if config.i0 is None:
        config = dataclasses.replace(config, i0=calibrate_i0(volume_hu, spacing_mm, config)[0])
    square, crop = _square(volume_hu)
    seed = volume_seed(config, key)
    out = np.empty_like(volume_hu)

    def run(start: int) -> None:
        stop = min(start + _BATCH, len(square))
        rngs = [np.random.default_rng([seed, i]) for i in range(start, stop)]  # per slice: batching-independent
        noise = lowdose_noise_hu(square[start:stop], pixel_mm, config, rngs)
        out[start:stop] = volume_hu[start:stop] + noise[:, crop[0], crop[1]]

    starts = range(0, len(square), _BATCH)
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(run, starts))
    return np.clip(out, CLIP_HU[0], CLIP_HU[1])


def residual_weight(dose: float, model_dose: float, gamma: float) -> float:
    """How much of a lowdose model's correction to keep on a scan at ``dose`` (a fraction of full dose).

    A model trained to undo ``model_dose`` removes the noise that dose adds, wherever it runs; a scan at a
    milder dose carries less added noise, variance ``1/dose - 1`` times the full dose's against
    ``1/model_dose - 1``. The output is then ``condition + w * (model output - condition)`` with
    ``w = ((1/dose - 1) / (1/model_dose - 1)) ** gamma``, clipped to [0, 1]: 1 at the model's own dose (or
    a lower one), 0 at full dose (the scan is returned as it is). ``gamma`` is chosen on training patients
    (experiments/dose_strength.py; ``DOSE_GAMMA``).
    """
    if not 0 < dose <= 1 or not 0 < model_dose < 1:
        raise ValueError(f"doses must be in (0, 1] (the model's below 1), got dose {dose}, model dose {model_dose}")
    added = (1 / dose - 1) / (1 / model_dose - 1)
    return float(min(1.0, added) ** gamma)
