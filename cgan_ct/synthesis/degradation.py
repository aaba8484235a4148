"""How the coarse generator's samples differ from real coarse volumes: blur and noise, measured.

A cascade stage trained on real down-sampled volumes meets, at synthesis time,
a generated coarser level: smoother than a real one (a GAN trained on a few
volumes under-draws fine structure) and with its own noise. Trained on clean
conditions, a stage copies that blur up the cascade. So the stages train on
conditions degraded the way the generator's output is degraded
(``PipelineOptions.condition_blur`` / ``condition_noise_hu``), fitted here.

There is no paired reference for a generated volume, so the fit is spectral:
radially averaged power spectra of axial slices (Hann window, slice mean
removed, in HU^2 per cycle/sample^2, so white noise of variance v reads v),
generated P_g against real P_r, modelled as

    P_g(f) = exp(-(2 pi sigma f)^2) P_r(f) + n^2

(a Gaussian blur of sigma samples, then white noise of n HU), sigma and n found
by grid search on the root mean squared log ratio over the upper band, where
blur and noise show. Parsimony: two sets of *real* volumes already differ by a
few hundredths of a decade (measured: 0.06 between two pairs of real chests at
the coarse level, where the fit would "find" 90-100 HU of noise), so the fit
keeps the least noise, then the best blur, among the grid points within
``TOLERANCE`` of the best error: a real-like generator gets (0, 0). A shift cannot be measured without a paired
reference; the cascade's shift is a setting (``CascadeSettings.condition_shift``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

SIGMA_GRID = np.round(np.arange(0.0, 3.0001, 0.05), 2)  # samples
NOISE_GRID_HU = np.arange(0.0, 150.001, 1.0)
BAND = (0.15, 0.5)  # cycles per sample fitted (up to Nyquist)
TOLERANCE = 0.05  # decades of rms log error treated as a tie (real-vs-real spread, see module docstring)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """Blur (Gaussian sigma, in samples of the level measured) and white noise (HU) of generated volumes.

    ``fit_error``: root mean squared log10 ratio of the model spectrum to the generated one over the band
    (0.1: the model is within about 25 % at a typical frequency); ``fit_error_clean``: the same for sigma = 0,
    n = 0 (how far the generated spectrum is from the real one before the fit).
    """

    blur_sigma: float
    noise_hu: float
    fit_error: float
    fit_error_clean: float
    volumes: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Degradation:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def slice_spectrum(volumes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(frequency bin centres in cycles/sample, mean radial power) over every axial slice of ``volumes``.

    Volumes: HU arrays (z, y, x) with square slices of one size.
    """
    sizes = {np.asarray(v).shape[1:] for v in volumes}
    if len(sizes) != 1 or any(len(s) != 2 or s[0] != s[1] for s in sizes):
        raise ValueError(f"volumes need square axial slices of one size, got {sorted(sizes)}")
    n = sizes.pop()[0]
    if n < 8:
        raise ValueError(f"slices of {n} x {n} are too small for a spectrum (need >= 8)")
    window = np.outer(np.hanning(n), np.hanning(n)).astype(np.float64)
    norm = float(np.sum(window**2))
    freq = np.fft.fftfreq(n)
    radius = np.hypot(freq[:, None], freq[None, :])
    edges = np.linspace(0.0, 0.5, n // 2 + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    total = np.zeros(len(edges) - 1)
    count = 0
    for volume in volumes:
        for image in np.asarray(volume, np.float64):
            image = image - image.mean()
            power = np.abs(np.fft.fft2(image * window)) ** 2 / norm
            total += np.bincount(which[inside], power.ravel()[inside], minlength=len(edges) - 1)
            count += 1
    hits = np.bincount(which[inside], minlength=len(edges) - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres, total / np.maximum(hits * count, 1)


def fit_degradation(real: Sequence[np.ndarray], generated: Sequence[np.ndarray]) -> Degradation:
    """The blur and noise that make ``real`` volumes' slice spectrum look like ``generated`` ones' (see module)."""
    if not real or not generated:
        raise ValueError("need real and generated volumes to measure a degradation")
    freq, p_real = slice_spectrum(real)
    _, p_gen = slice_spectrum(generated)
    band = (freq >= BAND[0]) & (freq <= BAND[1]) & (p_real > 0) & (p_gen > 0)
    if band.sum() < 3:
        raise ValueError("the spectra have too few usable frequencies to fit (slices of uniform value?)")
    f, pr, log_pg = freq[band], p_real[band], np.log10(p_gen[band])
    transfer = np.exp(-((2 * np.pi * SIGMA_GRID[:, None] * f[None, :]) ** 2))  # (sigma, f), amplitude
    model = (transfer**2)[:, None, :] * pr[None, None, :] + (NOISE_GRID_HU**2)[None, :, None]
    error = np.sqrt(np.mean((np.log10(np.maximum(model, 1e-12)) - log_pg) ** 2, axis=-1))  # (sigma, noise)
    near = error <= error.min() + TOLERANCE
    j = int(np.argmax(near.any(axis=0)))  # the least noise with a near-best fit
    i = int(np.argmin(np.where(near[:, j], error[:, j], np.inf)))
    return Degradation(
        blur_sigma=float(SIGMA_GRID[i]),
        noise_hu=float(NOISE_GRID_HU[j]),
        fit_error=float(error[i, j]),
        fit_error_clean=float(error[0, 0]),
        volumes=len(generated),
    )
