"""Small seeded generators with planted laws: reference data and examples of the rules
learnwares, and test fixtures.  Deterministic in ``seed``; sizes are a few hundred KB at
most."""

from __future__ import annotations

import numpy as np

__all__ = [
    "cell_bead_track",
    "damped_oscillator",
    "integrate",
    "light_curve",
    "limb_markers",
    "lotka_volterra",
    "pendulum_energy_trajectories",
    "spring_table",
]


def integrate(f, x0: np.ndarray, t: np.ndarray, substeps: int = 2) -> np.ndarray:
    """Classical RK4 on the grid ``t`` with ``substeps`` internal steps per interval."""
    x = np.asarray(x0, dtype=np.float64)
    out = np.empty((len(t), x.size))
    out[0] = x
    for i in range(1, len(t)):
        h = (t[i] - t[i - 1]) / substeps
        for _ in range(substeps):
            k1 = f(x)
            k2 = f(x + 0.5 * h * k1)
            k3 = f(x + 0.5 * h * k2)
            k4 = f(x + h * k3)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[i] = x
    return out


def lotka_volterra(
    seed: int = 0,
    *,
    n: int = 1000,
    dt: float = 0.01,
    noise: float = 0.0,
    a=1.0,
    b=0.5,
    c=0.5,
    d=1.5,
):
    """Predator-prey ``x' = a x - b x y``, ``y' = c x y - d y``; returns ``(t, X, X_clean)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    x0 = np.array([2.0, 1.0]) + 0.2 * rng.random(2)
    clean = integrate(
        lambda s: np.array([a * s[0] - b * s[0] * s[1], c * s[0] * s[1] - d * s[1]]), x0, t
    )
    noisy = clean + noise * clean.std(0) * rng.standard_normal(clean.shape)
    return t, noisy, clean


def damped_oscillator(
    seed: int = 0,
    *,
    n: int = 1000,
    dt: float = 0.01,
    noise: float = 0.0,
    k: float = 4.0,
    c: float = 0.3,
):
    """``x'' = -k x - c x'`` as the first-order system ``(x, v)``; returns ``(t, X, X_clean)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    x0 = np.array([1.0, 0.0]) + 0.1 * rng.random(2)
    clean = integrate(lambda s: np.array([s[1], -k * s[0] - c * s[1]]), x0, t)
    noisy = clean + noise * clean.std(0) * rng.standard_normal(clean.shape)
    return t, noisy, clean


def pendulum_energy_trajectories(
    seed: int = 0,
    *,
    n_traj: int = 4,
    n: int = 400,
    dt: float = 0.02,
    noise: float = 0.0,
    k: float = 2.0,
):
    """Harmonic-with-quartic oscillator ``q'' = -k q - q^3`` at several energies.

    Conserved: ``H = p^2/2 + k q^2/2 + q^4/4``.  Returns ``(t, X)`` with ``X`` of shape
    ``(n_traj, n, 2)`` holding ``(q, p)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    trajs = []
    for i in range(n_traj):
        x0 = np.array([0.4 + 0.5 * i + 0.1 * rng.random(), 0.2 * rng.standard_normal()])
        tr = integrate(lambda s: np.array([s[1], -k * s[0] - s[0] ** 3]), x0, t)
        trajs.append(tr + noise * tr.std(0) * rng.standard_normal(tr.shape))
    return t, np.stack(trajs)


def spring_table(seed: int = 0, n: int = 256) -> np.ndarray:
    """Rows ``(k [N/m], x [m])`` for a spring-force law; shape ``(n, 2)``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(1.0, 5.0, n), rng.uniform(-1.0, 1.0, n)], axis=1)


def limb_markers(
    seed: int = 0, *, n: int = 500, dt: float = 0.01, noise_m: float = 0.0005
) -> np.ndarray:
    """Shank swinging about a fixed knee (damped pendulum), three markers in metres.

    The knee angle follows ``theta'' = -(g/L) sin(theta) - c theta'`` with
    ``g/L = 24.5 s^-2`` and ``c = 0.8 s^-1``.  Returns ``(t, marker, xyz)`` =
    ``(n, 3, 3)``: knee, mid-shank, ankle."""
    _, ang = limb_angle(seed, n=n, dt=dt)
    theta = ang[:, 0]
    rng = np.random.default_rng(seed + 1)
    knee = np.array([0.0, 0.0, 0.5])
    out = np.empty((n, 3, 3))
    for j, r in enumerate((0.0, 0.2, 0.4)):
        out[:, j, 0] = knee[0] + r * np.sin(theta)
        out[:, j, 1] = knee[1]
        out[:, j, 2] = knee[2] - r * np.cos(theta)
    return out + noise_m * rng.standard_normal(out.shape)


def limb_angle(
    seed: int = 0, *, n: int = 500, dt: float = 0.01, g_over_l: float = 24.5, c: float = 0.8
):
    """Knee angle and angular velocity ``(theta, omega)`` of :func:`limb_markers`."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    x0 = np.array([0.6 + 0.1 * rng.random(), 0.0])
    return t, integrate(lambda s: np.array([s[1], -g_over_l * np.sin(s[0]) - c * s[1]]), x0, t)


def cell_bead_track(
    seed: int = 0, *, n: int = 400, dt: float = 0.05, noise_um: float = 0.002
) -> np.ndarray:
    """Bead pulled back into a cell by a nonlinear (strain-stiffening) cortex.

    Overdamped: ``x' = -k x - a x^3`` per axis, with ``k = 0.8 s^-1`` and
    ``a = 0.5 um^-2 s^-1``.  Returns a table ``(n, 3)`` of ``(t [s], y [um], x [um])``
    rows (a tracked spot)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) * dt
    x0 = np.array([1.5, -1.2]) + 0.1 * rng.random(2)
    tr = integrate(lambda s: -0.8 * s - 0.5 * s**3, x0, t)
    tr = tr + noise_um * rng.standard_normal(tr.shape)
    return np.column_stack([t, tr])


def light_curve(
    seed: int = 0, *, n: int = 600, period: float = 0.5667, noise: float = 0.002
) -> dict[str, np.ndarray]:
    """A pulsating-star light curve with a two-harmonic shape law.

    ``flux = 1 + 0.3 sin(2 pi phase) + 0.1 sin(4 pi phase)``, ``phase = time / period
    mod 1``.  Returns ``{"time": days, "flux": relative flux}``."""
    rng = np.random.default_rng(seed)
    time = np.sort(rng.uniform(0.0, 20.0, n))
    phase = np.mod(time / period, 1.0)
    flux = 1.0 + 0.3 * np.sin(2 * np.pi * phase) + 0.1 * np.sin(4 * np.pi * phase)
    return {"time": time, "flux": flux + noise * rng.standard_normal(n)}
