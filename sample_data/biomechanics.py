"""Biomechanics sample: multi-marker gait from a known pendulum-like joint model.

Each leg is a two-segment chain (thigh, shank) hanging from the hip.  The thigh angle
obeys a damped, periodically driven pendulum,

    theta1'' = -(g / L1) sin(theta1) - b theta1' + F cos(omega t + phi_leg),

integrated with a fixed-step RK4 after a burn-in so that the swing is on its periodic
orbit; the knee flexion follows ``theta2(t) = k0 + k1 (1 - cos(omega t + phi_leg - d))``.
The pelvis moves forward at a constant walking speed with a vertical bob at twice the
stride frequency.  Markers are rigid offsets from the joints (hip, knee, ankle, heel,
toe per leg; sacrum, left/right ASIS, C7, left/right shoulder), observed with Gaussian
noise and occlusion gaps (NaN), in millimetres, at ``rate`` Hz.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sample_data._common import check_seed, check_size

__all__ = ["GAIT_SIZES", "gait_markers", "pendulum_angle"]

GAIT_SIZES = {"small": 1000, "large": 360_000}  # frames at 100 Hz: 10 s, 1 h

LABELS = [
    "SACR", "LASI", "RASI", "C7", "LSHO", "RSHO",
    "LHIP", "LKNE", "LANK", "LHEE", "LTOE",
    "RHIP", "RKNE", "RANK", "RHEE", "RTOE",
]  # fmt: skip


def _pendulum_rhs(
    theta: float, omega_dot: float, t: float, p: dict[str, float], phase: float
) -> tuple[float, float]:
    acc = (
        -(p["g"] / p["L1"]) * math.sin(theta)
        - p["damping"] * omega_dot
        + p["drive"] * math.cos(p["omega"] * t + phase)
    )
    return omega_dot, acc


def pendulum_angle(
    n: int, dt: float, params: dict[str, float], phase: float = 0.0, *, burn_in: float = 30.0
) -> np.ndarray:
    """Thigh angle (rad) of the driven damped pendulum at ``t = k dt``, ``k < n`` (RK4).

    Examples
    --------
    >>> p = {"g": 9810.0, "L1": 450.0, "damping": 2.0, "drive": 12.0, "omega": 2 * np.pi}
    >>> th = pendulum_angle(200, 0.01, p)
    >>> th.shape, bool(np.abs(th).max() < 1.0)
    ((200,), True)
    """
    h = dt / 4.0  # integrate at 4x the sampling rate
    steps_burn = round(burn_in / h)
    theta, w, t = 0.0, 0.0, -steps_burn * h
    out = np.empty(n)

    def step(theta: float, w: float, t: float) -> tuple[float, float]:
        k1 = _pendulum_rhs(theta, w, t, params, phase)
        k2 = _pendulum_rhs(theta + h / 2 * k1[0], w + h / 2 * k1[1], t + h / 2, params, phase)
        k3 = _pendulum_rhs(theta + h / 2 * k2[0], w + h / 2 * k2[1], t + h / 2, params, phase)
        k4 = _pendulum_rhs(theta + h * k3[0], w + h * k3[1], t + h, params, phase)
        return theta + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), w + h / 6 * (
            k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]
        )

    for _ in range(steps_burn):
        theta, w = step(theta, w, t)
        t += h
    for k in range(n):
        out[k] = theta
        for _ in range(4):
            theta, w = step(theta, w, t)
            t += h
    return out


def gait_markers(
    seed: int = 0,
    size: Any = "small",
    *,
    rate: float = 100.0,
    noise_mm: float = 1.0,
    gap_fraction: float = 0.03,
    speed_mm_s: float = 1300.0,
    stride_hz: float = 0.9,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Marker trajectories of walking from a known pendulum-like joint model.

    Parameters
    ----------
    seed : int
    size : {"small", "large"} or int
        Number of frames: ``"small"`` = 1000 (10 s at 100 Hz), ``"large"`` = 360000 (1 h).
    rate : float
        Frame rate in Hz.
    noise_mm : float
        Standard deviation of the marker noise (mm).
    gap_fraction : float
        Approximate fraction of samples occluded (NaN), in gaps of 5-40 frames.
    speed_mm_s : float
        Walking speed (mm/s, along +x).
    stride_hz : float
        Stride frequency (Hz); the pendulum drive frequency.

    Returns
    -------
    points : ndarray of float64, shape (t, marker, xyz)
        Noisy trajectories with NaN in occlusion gaps (x forward, y left, z up; mm).
    truth : dict
        ``clean`` (noise-free points), ``gaps`` (marker, start, stop), ``occluded``
        mask, ``labels``, ``rate``, ``units``, ``thigh_angle``/``knee_angle`` (t, leg)
        in rad, ``model`` (the ODE and its parameters), ``segment_lengths``.

    Examples
    --------
    >>> pts, truth = gait_markers(seed=0, size=200)
    >>> pts.shape, truth["labels"][:3], truth["rate"]
    ((200, 16, 3), ['SACR', 'LASI', 'RASI'], 100.0)
    """
    n = int(check_size(size, GAIT_SIZES))
    if n < 2:
        raise ValueError(f"size: expected at least 2 frames, got {n}")
    seed = check_seed(seed)
    if rate <= 0:
        raise ValueError(f"rate: expected a positive frame rate in Hz, got {rate!r}")
    if not 0 <= gap_fraction < 0.5:
        raise ValueError(f"gap_fraction: expected 0 <= gap_fraction < 0.5, got {gap_fraction!r}")
    rng = np.random.default_rng(seed)
    dt = 1.0 / rate
    L1, L2, foot = 450.0 + rng.uniform(-20, 20), 430.0 + rng.uniform(-20, 20), 200.0
    params = {
        "g": 9810.0,
        "L1": L1,
        "damping": 2.0,
        "drive": float(rng.uniform(10.0, 14.0)),
        "omega": 2 * np.pi * stride_hz,
    }
    t = np.arange(n) * dt
    thigh = np.stack([pendulum_angle(n, dt, params, phase) for phase in (0.0, np.pi)], axis=1)
    k0, k1, lag = 0.1, 0.45, 0.9
    knee = np.stack(
        [k0 + k1 * (1 - np.cos(params["omega"] * t + ph - lag)) / 2 for ph in (0.0, np.pi)], axis=1
    )
    hip_height, half_width = L1 + L2 + 80.0, 90.0
    pelvis = np.stack(
        [speed_mm_s * t, np.zeros(n), hip_height + 15.0 * np.cos(2 * params["omega"] * t)], axis=1
    )
    P = np.zeros((n, len(LABELS), 3))
    idx = {lab: i for i, lab in enumerate(LABELS)}
    P[:, idx["SACR"]] = pelvis + np.array([-100.0, 0.0, 40.0])
    P[:, idx["LASI"]] = pelvis + np.array([80.0, 120.0, 60.0])
    P[:, idx["RASI"]] = pelvis + np.array([80.0, -120.0, 60.0])
    P[:, idx["C7"]] = pelvis + np.array([-40.0, 0.0, 560.0])
    P[:, idx["LSHO"]] = pelvis + np.array([0.0, 180.0, 500.0])
    P[:, idx["RSHO"]] = pelvis + np.array([0.0, -180.0, 500.0])
    for leg, side in enumerate("LR"):
        y = half_width if side == "L" else -half_width
        hip = pelvis + np.array([0.0, y, 0.0])
        th, kn = thigh[:, leg], knee[:, leg]
        knee_pos = hip + np.stack([L1 * np.sin(th), np.zeros(n), -L1 * np.cos(th)], axis=1)
        sh = th - kn  # shank angle from vertical
        ankle = knee_pos + np.stack([L2 * np.sin(sh), np.zeros(n), -L2 * np.cos(sh)], axis=1)
        P[:, idx[f"{side}HIP"]] = hip
        P[:, idx[f"{side}KNE"]] = knee_pos + np.array([0.0, 40.0 if side == "L" else -40.0, 0.0])
        P[:, idx[f"{side}ANK"]] = ankle + np.array([0.0, 35.0 if side == "L" else -35.0, 0.0])
        P[:, idx[f"{side}HEE"]] = ankle + np.stack(
            [-50.0 * np.cos(sh), np.zeros(n), -50.0 * np.sin(sh) - 40.0], axis=1
        )
        P[:, idx[f"{side}TOE"]] = ankle + np.stack(
            [(foot - 50.0) * np.cos(sh), np.zeros(n), (foot - 50.0) * np.sin(sh) - 40.0], axis=1
        )
    noisy = P + rng.normal(0.0, noise_mm, size=P.shape)
    occluded = np.zeros((n, len(LABELS)), bool)
    gaps = []
    target = gap_fraction * n * len(LABELS)
    while occluded.sum() < target:
        m = int(rng.integers(len(LABELS)))
        length = int(rng.integers(5, 41))
        start = int(rng.integers(0, max(1, n - length)))
        stop = min(n, start + length)
        occluded[start:stop, m] = True
        gaps.append([m, start, stop])
    noisy[occluded] = np.nan
    truth = {
        "kind": "gait",
        "axes": ["t", "marker", "xyz"],
        "labels": list(LABELS),
        "rate": float(rate),
        "units": {"xyz": "mm", "t": "s", "angles": "rad"},
        "clean": P,
        "occluded": occluded,
        "gaps": np.asarray(gaps, dtype=np.int64).reshape(-1, 3),
        "noise_mm": float(noise_mm),
        "thigh_angle": thigh,
        "knee_angle": knee,
        "segment_lengths": {"thigh": L1, "shank": L2, "foot": foot},
        "model": {
            "thigh": "theta1'' = -(g/L1) sin(theta1) - damping*theta1' + drive*cos(omega*t + phase), phase 0 (left) / pi (right)",
            "knee": "theta2 = k0 + k1*(1 - cos(omega*t + phase - lag))/2",
            **params,
            "k0": k0,
            "k1": k1,
            "lag": lag,
            "speed_mm_s": speed_mm_s,
            "stride_hz": stride_hz,
        },
        "seed": seed,
    }
    return noisy, truth
