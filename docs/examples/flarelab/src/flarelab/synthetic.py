"""Synthetic stellar light curves with flares of known times (planted ground truth).

Flares follow the empirical white-light template of Davenport et al. (2014): a quartic
rise over one full width at half maximum :math:`t_{1/2}` and a double-exponential decay,

.. math::

    F(\\tau) = 1 + 1.941\\tau - 0.175\\tau^2 - 2.246\\tau^3 - 1.125\\tau^4,
    \\quad -1 \\le \\tau \\le 0, \\qquad
    F(\\tau) = 0.6890\\,e^{-1.600\\tau} + 0.3030\\,e^{-0.2783\\tau}, \\quad \\tau > 0,

with :math:`\\tau = (t - t_{peak}) / t_{1/2}`.  The quiescent star has a slow rotational
modulation and white photometric noise, sampled at TESS's 2-minute cadence.

References
----------
.. [1] J. R. A. Davenport et al., "Kepler Flares. II. The Temporal Morphology of
   White-light Flares on GJ 1243", ApJ 797 (2014) 122.
"""

from __future__ import annotations

import numpy as np

__all__ = ["davenport_flare", "flare_light_curves"]


def davenport_flare(t: np.ndarray, t_peak: float, fwhm: float, amplitude: float) -> np.ndarray:
    """Davenport et al. (2014) flare template, relative flux above quiescence.

    Parameters
    ----------
    t : ndarray
        Times (same unit as ``t_peak`` and ``fwhm``).
    t_peak, fwhm, amplitude : float
        Peak time, full width at half maximum (> 0), peak relative amplitude.

    Returns
    -------
    ndarray
        ``amplitude * F((t - t_peak) / fwhm)``, zero before the rise.

    Examples
    --------
    >>> import numpy as np
    >>> float(davenport_flare(np.array([0.0]), 0.0, 1.0, 0.5)[0])
    0.5
    """
    if fwhm <= 0:
        raise ValueError(f"fwhm: expected a positive number, got {fwhm!r}")
    tau = (np.asarray(t, dtype=np.float64) - t_peak) / fwhm
    rise = 1 + 1.941 * tau - 0.175 * tau**2 - 2.246 * tau**3 - 1.125 * tau**4
    decay = 0.6890 * np.exp(-1.600 * np.clip(tau, 0, None)) + 0.3030 * np.exp(
        -0.2783 * np.clip(tau, 0, None)
    )
    out = np.where(tau > 0, decay, np.where(tau >= -1, rise, 0.0))
    return amplitude * out


def flare_light_curves(
    seed: int,
    *,
    n_stars: int = 4,
    n_samples: int = 2048,
    cadence_min: float = 2.0,
    noise: float = 1e-3,
    n_flares: int = 3,
    amplitude: tuple[float, float] = (0.01, 0.05),
    fwhm_min: tuple[float, float] = (4.0, 12.0),
    gap_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Light curves of flaring M dwarfs with their planted flare peaks.

    Parameters
    ----------
    seed : int
        Seed of a local ``numpy.random.default_rng``.
    n_stars, n_samples : int
        Number of light curves and samples per curve.
    cadence_min : float
        Sampling interval in minutes.
    noise : float
        White photometric noise (relative flux).
    n_flares : int
        Flares per star, peaks at least 100 samples apart and away from the edges.
    amplitude, fwhm_min : (float, float)
        Uniform ranges of the peak amplitude and of the FWHM in minutes.
    gap_fraction : float
        Fraction of samples set to NaN in one contiguous gap per star (a data gap).

    Returns
    -------
    dict
        ``time`` (t,) in days, ``flux`` (star, t) float32 normalised near 1,
        ``peaks`` (star, n_flares) int sample indices of the flare peaks.

    Examples
    --------
    >>> d = flare_light_curves(0, n_stars=2, n_samples=512, n_flares=1)
    >>> d["flux"].shape, d["peaks"].shape
    ((2, 512), (2, 1))
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) * cadence_min / 1440.0
    flux = np.empty((n_stars, n_samples))
    peaks = np.empty((n_stars, n_flares), dtype=np.int64)
    margin = 60
    for s in range(n_stars):
        period = rng.uniform(0.5, 3.0)
        base = 1.0 + rng.uniform(0.002, 0.01) * np.sin(
            2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)
        )
        while True:
            cand = np.sort(rng.integers(margin, n_samples - margin, size=n_flares))
            if n_flares < 2 or np.min(np.diff(cand)) >= 100:
                break
        peaks[s] = cand
        for p in cand:
            base += davenport_flare(
                t, t[p], rng.uniform(*fwhm_min) / 1440.0, rng.uniform(*amplitude)
            )
        flux[s] = base + noise * rng.standard_normal(n_samples)
        if gap_fraction > 0:
            n_gap = int(gap_fraction * n_samples)
            start = int(rng.integers(0, n_samples - n_gap))
            flux[s, start : start + n_gap] = np.nan
    return {"time": t, "flux": flux.astype(np.float32), "peaks": peaks}
