"""Small seeded generators of reference data for the feedback learnwares.

Each returns data in its modality's featurizer input format and is deterministic in
``seed``: microscopy ``ndarray`` (``yx``/``zyx``), biomechanics ``ndarray``
``(t, marker, 3)`` with NaN gaps, light curves ``{"time", "flux"}``.  They are kept
small (a few hundred KB) because they are featurized for the RKME.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "bazin",
    "bead_image",
    "fluorescence_field",
    "gait_markers",
    "transient_light_curve",
    "variable_light_curve",
]


def fluorescence_field(
    seed: int, *, shape: tuple[int, ...] = (128, 128), cells: int = 18
) -> np.ndarray:
    """Cells (smooth ellipses with bright nuclei and a few puncta) on dim background.

    Returns a float32 ``yx`` (or ``zyx`` for a 3-tuple shape) image in [0, 1].
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    img = np.full(shape, 0.05)
    for _ in range(cells):
        c = [rng.uniform(0, n) for n in shape]
        rad = [rng.uniform(4, 12) * (n / 128) ** 0.5 for n in shape]
        r2 = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, rad))
        img += rng.uniform(0.2, 0.5) / (
            1 + np.exp(np.minimum((r2 - 1) * 6, 50.0))
        )  # cytoplasm, soft edge
        img += rng.uniform(0.2, 0.4) * np.exp(-r2 * 6)  # nucleus
        for _ in range(rng.integers(1, 4)):
            p = [ci + rng.normal(0, ri / 2) for ci, ri in zip(c, rad)]
            img += rng.uniform(0.2, 0.5) * np.exp(
                -sum((g - pi) ** 2 for g, pi in zip(grids, p)) / 2.0
            )
    img = img / img.max()
    return img.astype(np.float32)


def bead_image(
    seed: int,
    *,
    shape: tuple[int, ...] = (64, 64),
    beads: int = 12,
    sigma: float = 2.0,
    photons: float = 2000.0,
    background: float = 2.0,
) -> np.ndarray:
    """Point sources blurred by a Gaussian PSF of width ``sigma`` with Poisson noise.

    Returns float32 counts (``yx`` or ``zyx``)."""
    rng = np.random.default_rng(seed)
    obj = np.zeros(shape)
    margin = int(3 * sigma) + 1
    for _ in range(beads):
        idx = tuple(int(rng.integers(margin, n - margin)) for n in shape)
        obj[idx] += photons * rng.uniform(0.5, 1.5)
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(obj, sigma, mode="constant", truncate=4.0) + background
    return rng.poisson(blurred).astype(np.float32)


def gait_markers(
    seed: int,
    *,
    frames: int = 200,
    markers: int = 8,
    rate: float = 100.0,
    gap_fraction: float = 0.03,
    noise: float = 0.5,
) -> np.ndarray:
    """Gait-like marker trajectories (mm) at ``rate`` Hz with occlusion gaps (NaN).

    Markers follow a walking progression along x plus periodic limb motion at a stride
    frequency of about 1 Hz with harmonics, rigidly coupled in pairs; Gaussian noise of
    ``noise`` mm; gaps of 3-15 frames cover about ``gap_fraction`` of the samples.
    Returns float64 ``(t, marker, 3)``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    f = rng.uniform(0.85, 1.1)
    speed = rng.uniform(1000, 1400)  # mm/s
    out = np.empty((frames, markers, 3))
    for m in range(markers):
        base = rng.normal([0, 0, 900], [100, 150, 300])
        amp = rng.uniform(20, 200, size=3)
        ph = rng.uniform(0, 2 * np.pi, size=3)
        h2 = rng.uniform(0, 0.4, size=3)
        for c in range(3):
            w = 2 * np.pi * f * t + ph[c]
            out[:, m, c] = base[c] + amp[c] * (np.sin(w) + h2[c] * np.sin(2 * w + 1.0))
        out[:, m, 0] += speed * t
    out += rng.normal(0, noise, out.shape)
    n_gap = max(1, int(gap_fraction * frames * markers / 9))
    for _ in range(n_gap):
        m = int(rng.integers(markers))
        length = int(rng.integers(3, 16))
        start = int(rng.integers(1, max(2, frames - length - 1)))
        out[start : start + length, m, :] = np.nan
    return out


def bazin(
    t: np.ndarray, *, amplitude: float, t0: float, rise: float, fall: float, base: float = 0.0
) -> np.ndarray:
    """Bazin et al. (2009) transient profile ``A exp(-(t-t0)/fall) / (1 + exp(-(t-t0)/rise)) + B``.

    Its peak is at ``t0 + rise * log(fall / rise - 1)``."""
    x = t - t0
    return amplitude * np.exp(-x / fall) / (1 + np.exp(-x / rise)) + base


def transient_light_curve(
    seed: int, *, n: int = 60, span: float = 80.0, flux_err: float = 0.05
) -> dict[str, np.ndarray]:
    """A supernova-like transient (Bazin profile) sampled at irregular times (days).

    Returns ``{"time", "flux"}`` float64 arrays, time strictly increasing."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, span, n))
    t = t + np.arange(n) * 1e-6  # strictly increasing
    f = bazin(
        t,
        amplitude=rng.uniform(1, 3),
        t0=rng.uniform(0.3, 0.5) * span,
        rise=rng.uniform(1.5, 4),
        fall=rng.uniform(10, 25),
    )
    f = f + rng.normal(0, flux_err, n)
    return {"time": t, "flux": f}


def variable_light_curve(
    seed: int, *, n: int = 120, span: float = 30.0, flux_err: float = 0.02
) -> dict[str, np.ndarray]:
    """A quasi-periodic variable (period 1-5 d, slowly evolving amplitude) in flux units."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, span, n)) + np.arange(n) * 1e-6
    p = rng.uniform(1, 5)
    amp = 0.1 * (1 + 0.3 * np.sin(2 * np.pi * t / (4 * span)))
    f = (
        1
        + amp * np.sin(2 * np.pi * t / p)
        + 0.3 * amp * np.sin(4 * np.pi * t / p + 0.5)
        + rng.normal(0, flux_err, n)
    )
    return {"time": t, "flux": f}
