"""Small seeded generators with planted ground truth for the detection family.

They feed the learnware declarations (RKME reference data and examples), the tests and
the benchmarks.  Every function is deterministic in its ``seed`` and uses a local
``numpy.random.default_rng``.  Formats follow the featurizers: microscopy ``ndarray``
(``yx``, ``zyx``, ``tyx``), light curves ``{"time", "flux"}`` dicts or 2-D (star, time)
flux, biomechanics ``ndarray`` (t, marker, 3).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "calcium_movie",
    "flashes_movie",
    "gait",
    "light_curve",
    "light_curves",
    "make_light_curve",
    "make_movie",
    "make_spots",
    "spots_image",
    "spots_volume",
    "transit_model",
]


def make_spots(
    shape: tuple[int, ...],
    n_spots: int,
    *,
    sigma: float = 1.5,
    snr: float = 5.0,
    anisotropy: float = 1.0,
    background: float = 100.0,
    noise: float = 1.0,
    min_separation: float | None = None,
    margin: float = 3.0,
    seed: int = 0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian spots of peak amplitude ``snr * noise`` at random sub-pixel positions on a
    flat background with white Gaussian noise.  Returns ``(image, positions)``; positions
    are (n, ndim) pixel coordinates, at least ``min_separation`` apart (default
    ``6 sigma``)."""
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    sig = np.array([sigma * anisotropy] + [sigma] * (ndim - 1) if ndim == 3 else [sigma] * ndim)
    sep = 6.0 * sigma if min_separation is None else min_separation
    pos: list[np.ndarray] = []
    lo = np.full(ndim, margin)
    hi = np.array(shape, dtype=float) - 1 - margin
    tries = 0
    while len(pos) < n_spots and tries < 50 * n_spots + 1000:
        tries += 1
        p = lo + rng.random(ndim) * (hi - lo)
        if pos and np.min(np.linalg.norm((np.asarray(pos) - p) / (sig / sigma), axis=1)) < sep:
            continue
        pos.append(p)
    positions = np.asarray(pos, dtype=np.float64).reshape(-1, ndim)
    img = np.full(shape, background, dtype=np.float64)
    amp = snr * noise
    rad = np.ceil(4 * sig).astype(int)
    for p in positions:
        c = np.round(p).astype(int)
        sl = tuple(slice(max(0, ci - r), min(n, ci + r + 1)) for ci, r, n in zip(c, rad, shape))
        grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij")
        e = sum(((g - pi) / si) ** 2 for g, pi, si in zip(grids, p, sig))
        img[sl] += amp * np.exp(-0.5 * e)
    img += noise * rng.standard_normal(shape)
    return img.astype(dtype), positions


def spots_image(seed: int, *, shape: tuple[int, int] = (128, 128), n_spots: int = 20) -> np.ndarray:
    """A 2-D fluorescence-like image with diffraction-limited spots (SNR 8)."""
    return make_spots(shape, n_spots, sigma=1.5, snr=8.0, seed=seed)[0]


def spots_volume(
    seed: int, *, shape: tuple[int, int, int] = (16, 48, 48), n_spots: int = 10
) -> np.ndarray:
    """A z-stack with spots elongated along z (sigma_z = 0.5 x 1.5 px in z-pixel units)."""
    return make_spots(shape, n_spots, sigma=1.5, snr=8.0, anisotropy=0.5, seed=seed)[0]


def flashes_movie(
    seed: int, *, shape: tuple[int, int, int] = (24, 48, 48), n_flashes: int = 8
) -> np.ndarray:
    """A (t, y, x) movie with short flashes (1.5 frames, 1.5 px) on a static background."""
    return make_spots(shape, n_flashes, sigma=1.5, snr=8.0, anisotropy=1.0, seed=seed)[0]


def transit_model(
    time: np.ndarray, *, period: float, epoch: float, duration: float, depth: float
) -> np.ndarray:
    """Box-shaped transit (relative flux, 1 out of transit)."""
    phase = np.mod(time - epoch + 0.5 * period, period) - 0.5 * period
    return 1.0 - depth * (np.abs(phase) < 0.5 * duration)


def make_light_curve(
    *,
    baseline: float = 60.0,
    cadence: float = 1.0 / 48.0,
    planets: tuple[tuple[float, float, float, float], ...] = ((3.7, 1.3, 0.12, 2e-3),),
    noise: float = 5e-4,
    trend: float = 0.0,
    gaps: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A normalised light curve with box transits ``(period, epoch, duration, depth)``,
    white noise, an optional slow stellar trend (relative amplitude ``trend``) and optional
    random gaps (uneven sampling).  Returns ``(time, flux)`` in days and relative flux."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, baseline, cadence)
    if gaps:
        keep = rng.random(t.size) > 0.1
        keep &= ~((t > 0.4 * baseline) & (t < 0.45 * baseline))
        t = t[keep]
    f = np.ones_like(t)
    for p, e, d, dep in planets:
        f *= transit_model(t, period=p, epoch=e, duration=d, depth=dep)
    if trend:
        f *= (
            1.0
            + trend * np.sin(2 * np.pi * t / 7.3 + 0.3)
            + 0.5 * trend * np.sin(2 * np.pi * t / 2.9)
        )
    f += noise * rng.standard_normal(t.size)
    return t, f


def light_curve(seed: int) -> dict[str, np.ndarray]:
    """A 30-day, 30-min cadence light curve with one transiting planet (reference data)."""
    t, f = make_light_curve(
        baseline=30.0, planets=((2.9 + 0.1 * (seed % 5), 0.7, 0.1, 3e-3),), seed=seed, trend=1e-3
    )
    return {"time": t, "flux": f}


def light_curves(seed: int, *, n_stars: int = 8, baseline: float = 20.0) -> np.ndarray:
    """(star, time) relative flux of ``n_stars`` stars on one time grid; star 0 transits."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, baseline, 1.0 / 48.0)
    f = 1.0 + 5e-4 * rng.standard_normal((n_stars, t.size))
    f *= 1.0 + 1e-3 * np.sin(2 * np.pi * t / 5.0)[None]
    f[0] *= transit_model(t, period=3.1, epoch=0.8, duration=0.12, depth=4e-3)
    return f


def make_movie(
    *,
    shape: tuple[int, int, int] = (100, 32, 32),
    rank: int = 3,
    event_fraction: float = 0.01,
    event_amplitude: float = 5.0,
    noise: float = 0.05,
    drift: float = 0.0,
    seed: int = 0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (t, y, x) movie = low-rank background + sparse events + noise.

    The background is a sum of ``rank`` smooth spatial patterns with slowly varying
    temporal weights (plus an optional linear ``drift`` of each pattern's gain); events are
    ``event_fraction`` of the entries with amplitude ``event_amplitude`` times a random
    factor in [0.5, 1.5] and random sign.  Returns ``(movie, background, event_mask)``."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    bg = np.zeros(shape)
    tt = np.linspace(0, 1, t)
    for k in range(rank):
        cy, cx = rng.uniform(-0.6, 0.6, 2)
        pat = 1.0 + np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.3 + 0.2 * k))
        gain = (
            1.0
            + 0.5 * np.sin(2 * np.pi * (k + 1) * tt + rng.uniform(0, 6))
            + drift * (tt - 0.5) * (k + 1)
        )
        bg += gain[:, None, None] * pat[None]
    mask = rng.random(shape) < event_fraction
    amp = event_amplitude * rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    movie = bg + mask * amp + noise * rng.standard_normal(shape)
    return movie.astype(dtype), bg.astype(dtype), mask


def calcium_movie(seed: int, *, shape: tuple[int, int, int] = (60, 32, 32)) -> np.ndarray:
    """A calcium-imaging-like (t, y, x) movie: rank-3 background and sparse transients."""
    return make_movie(
        shape=shape, rank=3, event_fraction=0.01, event_amplitude=3.0, noise=0.05, seed=seed
    )[0]


def gait(
    seed: int, *, n_frames: int = 200, n_markers: int = 12, anomalous: int | None = None
) -> np.ndarray:
    """Periodic gait-like marker trajectories (t, marker, 3) in metres at 100 Hz.

    Each marker follows a combination of three gait harmonics through the loadings of two
    segments (coherent across markers: low multilinear rank) plus a common forward walk; ``anomalous`` names a marker that gets an extra
    incoherent tremor (an anomaly the low-rank model cannot explain)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / 100.0
    f0 = 1.0
    base = np.stack(
        [np.sin(2 * np.pi * f0 * t), np.cos(2 * np.pi * f0 * t), np.sin(4 * np.pi * f0 * t)], axis=1
    )
    # markers ride on two coupled segments: marker loadings are rank 2 (coherent motion)
    seg = rng.normal(size=(2, 3, 3)) * 0.05
    load = rng.uniform(0.3, 1.0, size=(n_markers, 2))
    mix = np.einsum("ms,sck->mck", load, seg)
    offset = rng.normal(size=(n_markers, 3)) * 0.3 + np.array([0.0, 0.0, 1.0])
    x = (
        offset[None]
        + np.einsum("tk,mck->tmc", base, mix)
        + np.outer(t, [1.2, 0.0, 0.0])[:, None, :]
    )
    x = x + 0.001 * rng.standard_normal(x.shape)
    if anomalous is not None:
        x[:, anomalous] += 0.02 * rng.standard_normal((n_frames, 3))
    return x
