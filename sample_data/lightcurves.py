"""Light-curve samples: transits, sinusoidal and sawtooth variables, flares, systematics.

Every star is observed on one TESS-like grid (2-min cadence, BJD_TDB, a mid-sector
downlink gap).  Its normalised flux is a product of astrophysical signals times an
instrumental systematic, plus white noise::

    flux = (1 + variability(t) + flares(t)) * transit(t) * systematics(t) + N(0, sigma)

- transit: a trapezoid of depth ``depth``, total duration ``duration`` (days) and
  ingress/egress ``ingress`` (days) at ``epoch + k * period``;
- variability: ``amplitude * sin(2 pi (t - t0) / period)`` (sinusoidal) or a sawtooth
  of the same period (slow rise, fast fall, like an RR Lyrae);
- flares: Davenport-like profiles (linear rise over ``rise`` days, exponential decay with
  time constant ``decay``) of amplitude ``amplitude``;
- systematics: a quadratic drift per orbit and small step jumps at momentum dumps,
  which also set QUALITY bit 32 (``Desat``) on that cadence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sample_data._common import check_seed, check_size

__all__ = ["LIGHTCURVE_SIZES", "light_curves", "transit_model"]

LIGHTCURVE_SIZES = {"small": (16, 13.7), "large": (4096, 27.4)}  # (stars, days)

CADENCE_DAYS = 2.0 / 1440.0
T_START = 2458325.3  # BJD_TDB (start of TESS sector 1)
KINDS = ("transit", "sinusoidal", "sawtooth", "flare", "quiet")


def transit_model(
    time: np.ndarray, *, period: float, epoch: float, depth: float, duration: float, ingress: float
) -> np.ndarray:
    """Multiplicative trapezoid transit (1 out of transit, 1 - depth at full depth).

    Examples
    --------
    >>> t = np.array([0.0, 0.5, 1.0])
    >>> transit_model(t, period=1.0, epoch=0.0, depth=0.01, duration=0.1, ingress=0.02).tolist()
    [0.99, 1.0, 0.99]
    """
    if period <= 0 or duration <= 0 or not 0 < ingress <= duration / 2:
        raise ValueError(
            f"transit: expected period > 0, duration > 0, 0 < ingress <= duration/2; got period={period}, duration={duration}, ingress={ingress}"
        )
    phase = np.mod(time - epoch + 0.5 * period, period) - 0.5 * period
    x = np.abs(phase)
    half = duration / 2
    frac = np.clip((half - x) / ingress, 0.0, 1.0)
    return 1.0 - depth * frac


def _sawtooth(phase: np.ndarray, rise: float = 0.85) -> np.ndarray:
    """Zero-mean sawtooth in [-1, 1]: linear rise over ``rise`` of the cycle, then a fall."""
    p = np.mod(phase, 1.0)
    return np.where(p < rise, -1 + 2 * p / rise, 1 - 2 * (p - rise) / (1 - rise))


def light_curves(
    seed: int = 0,
    size: Any = "small",
    *,
    noise_ppm: float = 600.0,
    kinds: tuple[str, ...] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Light curves of a field of stars with injected, exactly known signals.

    Parameters
    ----------
    seed : int
    size : {"small", "large"} or (n_stars, days)
        ``"small"`` = 16 stars x 13.7 d (9864 cadences, ~2.5 MB), ``"large"`` = 4096
        stars x 27.4 d (~1.3 GB).
    noise_ppm : float
        White-noise standard deviation per 2-min cadence (parts per million).
    kinds : tuple of str, optional
        Cycle of star kinds (default: ``transit, sinusoidal, sawtooth, flare, quiet``,
        transits being every other star).

    Returns
    -------
    data : dict
        ``time`` (cadence,) BJD_TDB days; ``flux`` and ``flux_err`` (star, cadence)
        normalised; ``quality`` (star, cadence) int32 TESS bits; NaN flux in the gap.
    truth : dict
        ``stars``: one dict per star with ``kind`` and its parameters (``period``,
        ``epoch``, ``depth``, ``duration``, ``ingress`` for transits; ``period``,
        ``amplitude``, ``shape`` for variables; ``flares`` list), ``systematics``,
        ``gap`` (start, stop), ``momentum_dumps``, ``noise_ppm``, ``cadence_days``.

    Examples
    --------
    >>> data, truth = light_curves(seed=0, size=(3, 2.0))
    >>> data["flux"].shape[0], truth["stars"][0]["kind"]
    (3, 'transit')
    """
    n_stars, days = check_size(size, LIGHTCURVE_SIZES)
    n_stars, days = int(n_stars), float(days)
    if n_stars < 1 or days <= 0.1:
        raise ValueError(f"size: expected at least 1 star and more than 0.1 days, got {size!r}")
    seed = check_seed(seed)
    default_mix = kinds is None
    kinds = tuple(kinds or KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"kinds: unknown kinds {bad}; expected some of {KINDS}")
    rng = np.random.default_rng(seed)
    n = int(days / CADENCE_DAYS)
    time = T_START + np.arange(n) * CADENCE_DAYS
    gap = (T_START + days / 2 - 0.5, T_START + days / 2 + 0.5)
    in_gap = (time >= gap[0]) & (time < gap[1])
    dumps = np.arange(T_START + 2.5, T_START + days, 3.125)
    dump_idx = np.searchsorted(time, dumps)
    dump_idx = dump_idx[dump_idx < n]
    sigma = noise_ppm * 1e-6
    flux = np.empty((n_stars, n))
    quality = np.zeros((n_stars, n), np.int32)
    quality[:, dump_idx] |= 32
    stars = []
    rel = time - T_START
    for i in range(n_stars):
        if default_mix:  # every other star transits; the others cycle through the rest
            kind = "transit" if i % 2 == 0 else KINDS[1 + (i // 2) % 4]
        else:
            kind = kinds[i % len(kinds)]
        star: dict[str, Any] = {"index": i, "kind": kind}
        signal = np.ones(n)
        trans = np.ones(n)
        if kind == "transit":
            period = float(rng.uniform(0.8, min(6.0, days / 2.5)))
            duration = float(rng.uniform(1.5, 4.0) / 24.0)
            depth = float(rng.uniform(0.002, 0.02))
            ingress = float(rng.uniform(0.1, 0.3) * duration)
            epoch = float(T_START + rng.uniform(0.2, period))
            trans = transit_model(
                time, period=period, epoch=epoch, depth=depth, duration=duration, ingress=ingress
            )
            star.update(period=period, epoch=epoch, depth=depth, duration=duration, ingress=ingress)
            k = np.arange(
                np.ceil((time[0] - epoch) / period), np.floor((time[-1] - epoch) / period) + 1
            )
            mids = epoch + k * period
            star["transit_times"] = [float(m) for m in mids]
            star["n_transits"] = int(sum(1 for m in mids if not (gap[0] <= m < gap[1])))
        elif kind in ("sinusoidal", "sawtooth"):
            period = float(rng.uniform(0.3, 5.0))
            amp = float(rng.uniform(0.002, 0.03))
            t0 = float(T_START + rng.uniform(0, period))
            ph = (time - t0) / period
            signal = signal + amp * (
                np.sin(2 * np.pi * ph) if kind == "sinusoidal" else _sawtooth(ph)
            )
            star.update(period=period, amplitude=amp, t0=t0, shape=kind)
        elif kind == "flare":
            n_fl = int(rng.integers(2, 6))
            flares = []
            for _ in range(n_fl):
                tp = float(rng.uniform(time[0] + 0.2, time[-1] - 0.5))
                amp = float(rng.uniform(0.005, 0.05))
                rise = float(rng.uniform(2, 6) / 1440.0)
                decay = float(rng.uniform(10, 60) / 1440.0)
                dtp = time - tp
                prof = np.where((dtp >= -rise) & (dtp < 0), (dtp + rise) / rise, 0.0) + (
                    dtp >= 0
                ) * np.exp(-np.clip(dtp, 0.0, None) / decay)
                signal = signal + amp * prof
                flares.append({"t_peak": tp, "amplitude": amp, "rise": rise, "decay": decay})
            star["flares"] = flares
        # systematics: quadratic drift per half (orbit) + step jumps at momentum dumps
        drift = np.ones(n)
        coeffs = []
        for half_mask, t_ref in ((time < gap[0], T_START), (time >= gap[1], gap[1])):
            c1, c2 = float(rng.normal(0, 4e-4)), float(rng.normal(0, 2e-5))
            drift[half_mask] = (
                1 + c1 * (time[half_mask] - t_ref) + c2 * (time[half_mask] - t_ref) ** 2
            )
            coeffs.append([c1, c2, float(t_ref)])
        steps = rng.normal(0, 1e-4, size=len(dump_idx))
        for j, di in enumerate(dump_idx):
            drift[di:] *= 1 + steps[j]
        star["systematics"] = {"drift": coeffs, "dump_steps": steps.tolist()}
        star["rel_time_days"] = [float(rel[0]), float(rel[-1])]
        f = signal * trans * drift + rng.normal(0.0, sigma, size=n)
        f[in_gap] = np.nan
        flux[i] = f
        stars.append({k: v for k, v in star.items() if v is not None})
    flux_err = np.full_like(flux, sigma)
    flux_err[:, in_gap] = np.nan
    data = {"time": time, "flux": flux, "flux_err": flux_err, "quality": quality}
    truth = {
        "kind": "light-curves",
        "seed": seed,
        "time_system": "BJD_TDB",
        "cadence_days": CADENCE_DAYS,
        "noise_ppm": float(noise_ppm),
        "gap": [float(gap[0]), float(gap[1])],
        "momentum_dumps": [float(time[i]) for i in dump_idx],
        "stars": stars,
        "model": "flux = (1 + variability + flares) * transit * systematics + N(0, sigma)",
    }
    return data, truth
