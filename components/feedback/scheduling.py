"""Gaussian-process light curves and information-driven observation scheduling.

A transient (supernova, kilonova, flare) or a variable star is observed a few times; a
Gaussian process (GP) in torch models its light curve, with hyperparameters fitted by
marginal likelihood; a policy then proposes the next observation times, in the future
and inside the visibility/cadence constraints, that carry the most information on the
quantity of interest: the time of peak of a transient, the period of a variable, or the
light curve itself.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from components._validation import as_float_tensor, check_in, check_nonempty, check_positive
from components.base import Component, Declaration
from components.feedback.loop import Proposal
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "BazinFit",
    "GPParams",
    "LightCurveScheduler",
    "LightCurveSchedulerConfig",
    "Schedule",
    "TransientCampaign",
    "SchedulingPolicy",
    "fit_bazin",
    "fit_gp",
    "follow_transient",
    "gp_kernel",
    "gp_posterior",
    "gp_schedule",
    "log_marginal_likelihood",
    "peak_time",
    "propose_peak_times",
    "propose_times",
]

_KERNELS = ("transient", "squared_exponential", "quasi_periodic")
_TARGETS = ("peak_time", "period", "light_curve")


@dataclasses.dataclass
class GPParams:
    """Hyperparameters of the light-curve GP (flux and time units of the data).

    Attributes
    ----------
    kernel : str
        ``"transient"`` (Matérn-5/2), ``"squared_exponential"`` or ``"quasi_periodic"``.
    amplitude, lengthscale : float or Tensor
        Signal standard deviation and (evolution) time scale.
    period, gamma : float or Tensor
        Period and periodic roughness (quasi-periodic only).
    jitter : float or Tensor
        Extra white noise added to the reported errors.
    mean : float or Tensor
        Constant mean (baseline flux).
    """

    kernel: str = "transient"
    amplitude: Any = 1.0
    lengthscale: Any = 10.0
    period: Any = 1.0
    gamma: Any = 1.0
    jitter: Any = 1e-3
    mean: Any = 0.0


def gp_kernel(t1: torch.Tensor, t2: torch.Tensor, params: GPParams) -> torch.Tensor:
    """Covariance matrix ``k(t1_i, t2_j)``.

    Notes
    -----
    ``transient``: Matérn-5/2, ``a^2 (1 + sqrt5 r/l + 5 r^2 / 3 l^2) exp(-sqrt5 r / l)``
    (smooth rise and decline, finite-range memory); ``squared_exponential``:
    ``a^2 exp(-r^2 / 2 l^2)``; ``quasi_periodic``:
    ``a^2 exp(-2 sin^2(pi r / P) / gamma^2) exp(-r^2 / 2 l^2)`` (Rasmussen and Williams
    2006, ch. 4; Angus et al. 2018 for stellar rotation).

    Examples
    --------
    >>> K = gp_kernel(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), GPParams(lengthscale=1.0))
    >>> round(float(K[0, 0]), 6), float(K[0, 1]) < 1
    (1.0, True)
    """
    check_in(params.kernel, "kernel", _KERNELS)
    r = (t1[:, None] - t2[None, :]).abs()
    a2 = torch.as_tensor(params.amplitude, dtype=r.dtype, device=r.device) ** 2
    ls = torch.as_tensor(params.lengthscale, dtype=r.dtype, device=r.device)
    if params.kernel == "transient":
        x = math.sqrt(5) * r / ls
        return a2 * (1 + x + x * x / 3) * torch.exp(-x)
    se = torch.exp(-0.5 * (r / ls) ** 2)
    if params.kernel == "squared_exponential":
        return a2 * se
    p = torch.as_tensor(params.period, dtype=r.dtype, device=r.device)
    g = torch.as_tensor(params.gamma, dtype=r.dtype, device=r.device)
    return a2 * se * torch.exp(-2 * torch.sin(math.pi * r / p) ** 2 / g**2)


def _validate_lc(
    time: Any, flux: Any, flux_err: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = as_float_tensor(time, "time", allow_nan=False)
    check_nonempty(t, "time")
    f = as_float_tensor(flux, "flux", dtype=t.dtype, device=t.device, allow_nan=False)
    if t.ndim != 1:
        raise ValueError(f"time: expected a 1-D array of time stamps, got shape {tuple(t.shape)}")
    if f.shape != t.shape:
        raise ValueError(f"flux: expected the shape of time {tuple(t.shape)}, got {tuple(f.shape)}")
    dt = t.diff()
    if bool((dt <= 0).any()):
        i = int(torch.nonzero(dt <= 0)[0])
        raise ValueError(
            f"time: expected strictly increasing time stamps, got time[{i}]={float(t[i])!r} >= time[{i + 1}]={float(t[i + 1])!r}"
        )
    if flux_err is None:
        e = torch.zeros_like(t)
    else:
        e = as_float_tensor(flux_err, "flux_err", dtype=t.dtype, device=t.device, allow_nan=False)
        e = e.reshape(()).expand(t.shape) if e.numel() == 1 else e
        if e.shape != t.shape:
            raise ValueError(
                f"flux_err: expected a scalar or the shape of time {tuple(t.shape)}, got {tuple(e.shape)}"
            )
        if bool((e < 0).any()):
            raise ValueError(
                f"flux_err: expected non-negative noise levels, got min={float(e.min())!r}"
            )
    return t, f, e


def _noise(e: torch.Tensor, params: GPParams) -> torch.Tensor:
    j = torch.as_tensor(params.jitter, dtype=e.dtype, device=e.device)
    return e * e + j * j


def log_marginal_likelihood(
    time: torch.Tensor, flux: torch.Tensor, flux_err: torch.Tensor | None, params: GPParams
) -> torch.Tensor:
    """``log p(flux | time, params)`` of the GP (differentiable in every parameter).

    Notes
    -----
    ``-1/2 r^T (K + N)^{-1} r - 1/2 log|K + N| - n/2 log 2 pi`` with ``r = flux - mean``
    and ``N = diag(flux_err^2 + jitter^2)``, by Cholesky.
    """
    t, f, e = _validate_lc(time, flux, flux_err)
    K = gp_kernel(t, t, params) + torch.diag(_noise(e, params))
    L = torch.linalg.cholesky(
        K + 1e-9 * K.diagonal().mean() * torch.eye(len(t), dtype=t.dtype, device=t.device)
    )
    r = (f - torch.as_tensor(params.mean, dtype=t.dtype, device=t.device))[:, None]
    a = torch.cholesky_solve(r, L)
    return (
        -0.5 * (r * a).sum() - torch.log(L.diagonal()).sum() - 0.5 * len(t) * math.log(2 * math.pi)
    )


def gp_posterior(
    time: torch.Tensor,
    flux: torch.Tensor,
    flux_err: torch.Tensor | None,
    grid: torch.Tensor,
    params: GPParams,
    *,
    full_cov: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and covariance (or variance) of the latent light curve on ``grid``.

    Returns
    -------
    mean : Tensor
        ``(g,)``.
    cov : Tensor
        ``(g, g)`` if ``full_cov`` else ``(g,)`` variances.

    Examples
    --------
    >>> t = torch.linspace(0, 10, 20, dtype=torch.float64)
    >>> m, v = gp_posterior(t, torch.sin(t), 0.01, t, GPParams(lengthscale=2.0), full_cov=False)
    >>> float((m - torch.sin(t)).abs().max()) < 0.05
    True
    """
    t, f, e = _validate_lc(time, flux, flux_err)
    grid = grid.to(t)
    K = gp_kernel(t, t, params) + torch.diag(_noise(e, params))
    L = torch.linalg.cholesky(
        K + 1e-9 * K.diagonal().mean() * torch.eye(len(t), dtype=t.dtype, device=t.device)
    )
    mu = torch.as_tensor(params.mean, dtype=t.dtype, device=t.device)
    Ks = gp_kernel(grid, t, params)
    alpha = torch.cholesky_solve((f - mu)[:, None], L)[:, 0]
    mean = mu + Ks @ alpha
    V = torch.linalg.solve_triangular(L, Ks.T, upper=False)
    if full_cov:
        return mean, gp_kernel(grid, grid, params) - V.T @ V
    a2 = torch.as_tensor(params.amplitude, dtype=t.dtype, device=t.device) ** 2
    return mean, (a2 - (V * V).sum(0)).clamp_min(0)


def fit_gp(
    time: Any,
    flux: Any,
    flux_err: Any = None,
    *,
    kernel: str = "transient",
    period: float | None = None,
    iterations: int = 100,
) -> GPParams:
    """Fit GP hyperparameters by maximising the marginal likelihood (L-BFGS on logs).

    Parameters
    ----------
    time, flux, flux_err : array_like
        The light curve (strictly increasing ``time``).
    kernel : str
        See :func:`gp_kernel`.
    period : float, optional
        Initial period for ``quasi_periodic`` (default: the Lomb-Scargle peak, astropy).
    iterations : int
        Maximum L-BFGS iterations.

    Returns
    -------
    GPParams
        Plain-float hyperparameters.

    Examples
    --------
    >>> g = np.random.default_rng(0)
    >>> t = np.sort(g.uniform(0, 40, 80)); f = np.sin(2 * np.pi * t / 3.0) + 0.05 * g.normal(size=80)
    >>> p = fit_gp(t, f, 0.05, kernel="quasi_periodic")
    >>> abs(p.period - 3.0) < 0.1
    True
    """
    check_in(kernel, "kernel", _KERNELS)
    t, f, e = _validate_lc(time, flux, flux_err)
    t, f, e = t.detach().double(), f.detach().double(), e.detach().double()
    if len(t) < 3:
        raise ValueError(f"time: expected at least 3 observations to fit a GP, got {len(t)}")
    span = float(t[-1] - t[0])
    sd = float(f.std()) if len(f) > 1 else 1.0
    init = {"amplitude": max(sd, 1e-6), "lengthscale": span / 8, "jitter": max(0.05 * sd, 1e-6)}
    if kernel == "quasi_periodic":
        if period is None:
            from astropy.timeseries import LombScargle

            freq, power = LombScargle(t.numpy(), f.numpy()).autopower(
                minimum_frequency=2 / span,
                maximum_frequency=len(t) / (2 * span) * 2,
                samples_per_peak=20,
            )
            period = float(1 / freq[int(np.argmax(power))])
        check_positive(period, "period")
        init.update(period=period, gamma=1.0, lengthscale=max(span / 2, 3 * period))
    logs = {
        k: torch.tensor(math.log(v), dtype=torch.float64, requires_grad=True)
        for k, v in init.items()
    }
    mean = torch.tensor(
        float(f.median()) if kernel != "transient" else float(f.min()),
        dtype=torch.float64,
        requires_grad=True,
    )
    opt = torch.optim.LBFGS(
        [*logs.values(), mean], lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def make() -> GPParams:
        return GPParams(kernel=kernel, **{k: v.exp() for k, v in logs.items()}, mean=mean)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        p = make()
        loss = -log_marginal_likelihood(t, f, e, p) / len(t)
        if kernel == "quasi_periodic":  # keep the period near the periodogram peak
            loss = loss + 0.5 * ((logs["period"] - math.log(init["period"])) / 0.2) ** 2 / len(t)
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:  # Cholesky failure for extreme steps: keep the last good values
        pass
    out = make()
    vals = {
        k: getattr(out, k)
        for k in ("amplitude", "lengthscale", "period", "gamma", "jitter", "mean")
    }
    return GPParams(
        kernel=kernel,
        **{
            k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
            for k, v in vals.items()
        },
    )


def peak_time(
    time: Any,
    flux: Any,
    flux_err: Any,
    params: GPParams,
    *,
    grid: torch.Tensor | None = None,
    samples: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Time of peak of the latent light curve: posterior-mean argmax and its spread.

    Returns
    -------
    t_peak : float
        Argmax of the posterior mean on ``grid`` (default: 1000 points over the data).
    std : float
        Standard deviation of the argmax over posterior samples.
    """
    t, f, e = _validate_lc(time, flux, flux_err)
    t, f, e = t.double(), f.double(), e.double()
    if grid is None:
        grid = torch.linspace(float(t[0]), float(t[-1]), 1000, dtype=torch.float64)
    m, C = gp_posterior(t, f, e, grid, params)
    L = torch.linalg.cholesky(C + 1e-8 * C.diagonal().mean() * torch.eye(len(grid), dtype=C.dtype))
    z = torch.randn(
        len(grid), samples, generator=torch.Generator().manual_seed(seed), dtype=C.dtype
    )
    draws = m[:, None] + L @ z
    tp = grid[draws.argmax(0)]
    return float(grid[m.argmax()]), float(tp.std())


def _candidates(
    now: float,
    horizon: float,
    n: int,
    windows: Sequence[tuple[float, float]] | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    return _in_windows(torch.linspace(now, now + horizon, n + 1, dtype=dtype)[1:], windows)


def _in_windows(times: torch.Tensor, windows: Sequence[tuple[float, float]] | None) -> torch.Tensor:
    """The ``times`` inside at least one visibility window (all of them without windows)."""
    if not windows:
        return times
    ok = torch.zeros_like(times, dtype=torch.bool)
    for a, b in windows:
        if b < a:
            raise ValueError(f"windows: expected (start, end) with start <= end, got ({a}, {b})")
        ok |= (times >= a) & (times <= b)
    return times[ok]


def _open_candidates(
    t: torch.Tensor,
    now: float,
    horizon: float,
    n: int,
    windows: Sequence[tuple[float, float]] | None,
    min_separation: float,
) -> torch.Tensor:
    """Candidate times in ``(now, now + horizon]``, inside the windows and at least
    ``min_separation`` from every observation ``t`` already taken."""
    cand = _candidates(now, horizon, n, windows, torch.float64)
    if min_separation > 0 and cand.numel():
        cand = cand[(cand[:, None] - t[None, :]).abs().min(1).values >= min_separation]
    return cand


def _greedy_select(
    C: torch.Tensor,
    offset: int,
    cand: torch.Tensor,
    n: int,
    noise: float,
    min_separation: float,
    score: Callable[[torch.Tensor, list[int]], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy sequential design: up to ``n`` of the ``cand`` times, each the best by
    ``score(C, chosen)`` among those at least ``min_separation`` from the ones chosen,
    then conditioned on (rank-one update of the joint covariance ``C``, whose candidate
    block starts at ``offset``; the update does not depend on the observed value).
    Returns the chosen times in time order and their scores."""
    chosen: list[int] = []
    gains: list[float] = []
    avail = torch.ones(len(cand), dtype=torch.bool)
    for _ in range(n):
        if not bool(avail.any()):
            break
        sc = score(C, chosen)
        sc = torch.where(avail, sc, torch.full_like(sc, -math.inf))
        j = int(sc.argmax())
        chosen.append(j)
        gains.append(float(sc[j]))
        col = C[:, offset + j]
        C = C - col[:, None] * col[None, :] / (C[offset + j, offset + j] + noise)
        avail &= (cand - cand[j]).abs() >= max(min_separation, 1e-12)
    order = np.argsort(cand[chosen].numpy(), kind="stable")
    return cand[chosen][order], torch.tensor(gains, dtype=torch.float64)[order]


def propose_times(
    time: Any,
    flux: Any,
    flux_err: Any,
    params: GPParams,
    *,
    n: int = 1,
    now: float | None = None,
    horizon: float = 10.0,
    min_separation: float = 0.0,
    windows: Sequence[tuple[float, float]] | None = None,
    target: str = "peak_time",
    n_grid: int = 200,
    n_candidates: int = 200,
    samples: int = 256,
    seed: int = 0,
) -> Proposal:
    """Next observation times that maximise the information on ``target``.

    Parameters
    ----------
    time, flux, flux_err : array_like
        Observations so far (strictly increasing ``time``).
    params : GPParams
        GP hyperparameters (e.g. from :func:`fit_gp`).
    n : int
        Number of times to propose (greedy batch).
    now : float, optional
        Current time (default: the last observation); proposals are strictly later.
    horizon : float
        Proposals lie in ``(now, now + horizon]``.
    min_separation : float
        Cadence constraint: at least this far from each other and from past observations.
    windows : sequence of (start, end), optional
        Visibility windows (night, airmass, moon): proposals lie inside one of them.
    target : {"peak_time", "period", "light_curve"}
        What the observations should inform.
    n_grid, n_candidates, samples : int
        Sizes of the evaluation grid, candidate set and posterior sample set.
    seed : int
        Seed of the posterior samples.

    Returns
    -------
    Proposal
        ``coords`` are the times (float64, ascending), ``gain`` their expected gain;
        empty if no candidate satisfies the constraints.

    Notes
    -----
    The GP posterior covariance after a new observation does not depend on its value,
    so each candidate's gain is exact and cheap, and a batch is chosen greedily,
    conditioning on each pick (Krause et al. 2008).  Gains:

    * ``peak_time``: ``sum_i w_i Var-reduction[(D f)_i]`` where ``D`` is the derivative
      operator on the grid and ``w_i`` the posterior probability that the peak lies in
      cell ``i`` (from posterior samples): by the delta method the variance of the peak
      time is ``Var f'(t_p) / f''(t_p)^2``.
    * ``period``: increase of the Fisher information
      ``1/2 tr(K^-1 dK/dP K^-1 dK/dP)`` about the period of the quasi-periodic kernel.
    * ``light_curve``: reduction of the integrated posterior variance over the grid.
    """
    check_in(target, "target", _TARGETS)
    t, f, e = _validate_lc(time, flux, flux_err)
    t, f, e = t.detach().double(), f.detach().double(), e.detach().double()
    now = float(t[-1]) if now is None else float(now)
    if now < float(t[-1]):
        raise ValueError(
            f"now: expected a time at or after the last observation {float(t[-1])!r}, got {now!r}"
        )
    check_positive(horizon, "horizon")
    check_positive(min_separation, "min_separation", strict=False)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of proposals, got {n!r}")
    cand = _open_candidates(t, now, horizon, n_candidates, windows, min_separation)
    if cand.numel() == 0:
        return Proposal(
            coords=torch.zeros(0, dtype=torch.float64), gain=torch.zeros(0, dtype=torch.float64)
        )
    noise_new = float(_noise(e.mean()[None], params)[0]) if e.numel() else float(params.jitter) ** 2
    grid = torch.linspace(float(t[0]), now + horizon, n_grid, dtype=torch.float64)
    Z = torch.cat([grid, cand])
    G = len(grid)
    m, C = gp_posterior(t, f, e, Z, params)
    if target == "peak_time":
        h = float(grid[1] - grid[0])
        D = torch.zeros(G, G, dtype=torch.float64)
        idx = torch.arange(1, G - 1)
        D[idx, idx + 1] = 0.5 / h
        D[idx, idx - 1] = -0.5 / h
        Cg = C[:G, :G]
        L = torch.linalg.cholesky(
            Cg + 1e-8 * Cg.diagonal().mean() * torch.eye(G, dtype=torch.float64)
        )
        z = torch.randn(
            G, samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        w = torch.bincount((m[:G, None] + L @ z).argmax(0), minlength=G).to(torch.float64) / samples
    elif target == "period":
        if params.kernel != "quasi_periodic":
            raise ValueError(
                f"target: 'period' needs kernel='quasi_periodic', got kernel={params.kernel!r}"
            )

    def score(C: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        Cgc = C[:G, G:]
        var_c = C[G:, G:].diagonal() + noise_new
        if target == "peak_time":
            A = D @ Cgc
            return (w[:, None] * A * A).sum(0) / var_c
        if target == "light_curve":
            return (Cgc * Cgc).sum(0) / var_c
        return _period_information(torch.cat([t, cand[chosen]]), e, cand, params)

    times, gains = _greedy_select(C, G, cand, n, noise_new, min_separation, score)
    return Proposal(coords=times, gain=gains, settings={"target": target})


def _period_information(
    t: torch.Tensor, e: torch.Tensor, cand: torch.Tensor, params: GPParams
) -> torch.Tensor:
    """Fisher information about the period for ``t`` plus each candidate (batched)."""
    n = len(t)
    err = torch.cat([e, e.mean().expand(n - len(e))]) if len(e) < n else e
    T = torch.cat([t[None, :].expand(len(cand), n), cand[:, None]], 1)  # (c, n+1)
    E = torch.cat([err[None, :].expand(len(cand), n), err.mean().expand(len(cand), 1)], 1)
    P = torch.tensor(float(params.period), dtype=torch.float64, requires_grad=False)
    r = T[:, :, None] - T[:, None, :]
    a2 = float(params.amplitude) ** 2
    ls, g = float(params.lengthscale), float(params.gamma)
    s = torch.sin(math.pi * r / P)
    K = a2 * torch.exp(-0.5 * (r / ls) ** 2 - 2 * s * s / g**2)
    dK = K * (2 * math.pi * r * torch.sin(2 * math.pi * r / P)) / (g**2 * P * P)
    K = K + torch.diag_embed(E * E + float(params.jitter) ** 2)
    A = torch.linalg.solve(K, dK)
    return 0.5 * (A * A.transpose(-1, -2)).sum((-1, -2))


# --------------------------------------------------------------------------------------
# parametric transient model (Bazin) and peak-time design
# --------------------------------------------------------------------------------------
_BAZIN_NAMES = ("log_amplitude", "t_peak", "log_rise", "log_ratio", "base")
_BAZIN_PRIOR = {"log_rise": (math.log(3.0), 1.0), "log_ratio": (math.log(20.0 / 3.0 - 1.0), 1.0)}


def _bazin_flux(theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Bazin flux for parameters ``theta (..., 5)`` at times ``t (n,)`` -> ``(..., n)``."""
    log_a, tp, log_rise, q, base = theta.unbind(-1)
    rise = log_rise.exp()
    fall = rise * (1 + q.exp())
    x = t - (tp - rise * q)[..., None]
    return (
        torch.exp(log_a[..., None] - x / fall[..., None] - _softplus(-x / rise[..., None]))
        + base[..., None]
    )


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))``, overflow-free."""
    return torch.nn.functional.softplus(x)


@dataclasses.dataclass
class BazinFit:
    """Maximum a posteriori Bazin fit with its Laplace covariance (:func:`fit_bazin`).

    Attributes
    ----------
    theta : Tensor
        ``(5,)`` ``log_amplitude, t_peak, log_rise, log_ratio, base`` where
        ``ratio = fall / rise - 1``.
    covariance : Tensor
        ``(5, 5)`` inverse Hessian of the negative log posterior at ``theta``.
    t_peak, t_peak_std : float
        Time of peak and its standard deviation.
    amplitude, t0, rise, fall, base : float
        The usual Bazin parameters (``ref.bazin`` convention).
    chi2 : float
        Chi-square of the fit.
    """

    theta: torch.Tensor
    covariance: torch.Tensor
    t_peak: float
    t_peak_std: float
    amplitude: float
    t0: float
    rise: float
    fall: float
    base: float
    chi2: float

    def predict(self, time: Any) -> torch.Tensor:
        """Model flux at ``time``."""
        t = torch.as_tensor(time, dtype=self.theta.dtype)
        return _bazin_flux(self.theta, t)


def _resolve_prior(
    f: torch.Tensor, e: torch.Tensor, prior: Mapping[str, tuple[float, float]] | None
) -> dict[str, tuple[float, float]]:
    """Default priors plus ``log_amplitude ~ N(log(brightest - baseline), 1)``: pre-peak
    data alone cannot bound a later, brighter peak (amplitude and explosion time trade
    off along an exponential rise), a peak e times brighter than seen is one sigma."""
    if prior is not None:
        return dict(prior)
    base0 = float(torch.quantile(f, 0.2)) if len(f) >= 5 else float(f.min())
    amp0 = max(float(f.max()) - base0, 3 * float(e.min()))
    return {**_BAZIN_PRIOR, "log_amplitude": (math.log(amp0), 1.0)}


def _bazin_objective(
    t: torch.Tensor,
    f: torch.Tensor,
    e: torch.Tensor,
    prior: Mapping[str, tuple[float, float]] | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Negative log posterior ``chi^2 / 2 - log prior`` of Bazin parameters ``(..., 5)``."""
    pri = dict(_BAZIN_PRIOR if prior is None else prior)
    for k in pri:
        check_in(k, "prior", _BAZIN_NAMES)
    pm = torch.tensor([pri.get(k, (0.0, math.inf))[0] for k in _BAZIN_NAMES], dtype=torch.float64)
    ps = torch.tensor([pri.get(k, (0.0, math.inf))[1] for k in _BAZIN_NAMES], dtype=torch.float64)
    has = torch.isfinite(ps)
    ps = torch.where(has, ps, torch.ones_like(ps))

    def nlp(theta: torch.Tensor) -> torch.Tensor:
        r = (_bazin_flux(theta, t) - f) / e
        z = torch.where(has, (theta - pm) / ps, torch.zeros_like(theta))
        return 0.5 * (r * r).sum(-1) + 0.5 * (z * z).sum(-1)

    return nlp


def _newton_polish(
    nlp: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, steps: int = 30
) -> torch.Tensor:
    """Levenberg-damped Newton iterations on a small smooth objective (5 parameters)."""
    lam = 1e-3
    cur = float(nlp(theta))
    for _ in range(steps):
        x = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nlp(x), x)
        H = torch.autograd.functional.hessian(nlp, theta)
        if not bool(torch.isfinite(g).all() and torch.isfinite(H).all()):
            break
        if float(g.abs().max()) < 1e-9:
            break
        eye = torch.eye(len(theta), dtype=theta.dtype)
        improved = False
        for _ in range(8):
            try:
                step = torch.linalg.solve(H + lam * (H.diagonal().abs().max() + 1) * eye, g)
            except RuntimeError:  # pragma: no cover - singular: damp more
                lam *= 10
                continue
            trial = theta - step
            val = float(nlp(trial))
            if math.isfinite(val) and val <= cur:
                theta, cur, improved = trial.detach(), val, True
                lam = max(lam / 10, 1e-9)
                break
            lam *= 10
        if not improved or float(step.abs().max()) < 1e-10:
            break
    return theta


def fit_bazin(
    time: Any,
    flux: Any,
    flux_err: Any,
    *,
    prior: Mapping[str, tuple[float, float]] | None = None,
    iterations: int = 60,
) -> BazinFit:
    """Fit the Bazin et al. (2009) transient profile, with the uncertainty of its peak time.

    Parameters
    ----------
    time, flux, flux_err : array_like
        The light curve (strictly increasing ``time``, days), ``flux_err`` scalar or per
        point (must be positive somewhere: it sets the likelihood).
    prior : mapping, optional
        Gaussian priors ``name -> (mean, std)`` on the parameters ``log_amplitude``,
        ``t_peak``, ``log_rise``, ``log_ratio``, ``base``; default: ``log_rise ~
        N(log 3 d, 1)`` and ``log_ratio ~ N(log(20/3 - 1), 1)`` (supernova-like rise of
        days and decline of weeks, each within a factor e), ``log_amplitude ~
        N(log(brightest - baseline), 1)`` (bounds a later, brighter peak that pre-peak
        data cannot exclude), the others flat.
    iterations : int
        L-BFGS iterations per start.

    Returns
    -------
    BazinFit

    Raises
    ------
    ValueError
        Fewer than 4 observations, time stamps not increasing, non-positive errors, or an
        unknown prior name.

    Notes
    -----
    ``f(t) = A exp(-(t - t0)/tau_f) / (1 + exp(-(t - t0)/tau_r)) + B`` is
    reparameterised by its peak ``t_p = t0 + tau_r log(tau_f/tau_r - 1)``, ``log
    tau_r`` and ``log(tau_f/tau_r - 1)`` so that the peak exists for every parameter
    value and its variance is a diagonal element of the Laplace covariance
    ``(nabla^2 [chi^2/2 - log prior])^{-1}`` at the maximum a posteriori.  Several
    starts (peak at the brightest points and around them) are optimised as one batch.

    References
    ----------
    Bazin et al., "The core-collapse rate from the Supernova Legacy Survey", A&A 499,
    653 (2009).

    Examples
    --------
    >>> t = np.linspace(0, 40, 30)
    >>> f = 2 * np.exp(-(t - 15) / 12) / (1 + np.exp(-(t - 15) / 2))
    >>> fit = fit_bazin(t, f + 0.01 * np.random.default_rng(0).normal(size=30), 0.01)
    >>> bool(abs(fit.t_peak - (15 + 2 * np.log(12 / 2 - 1))) < 0.2), fit.t_peak_std < 0.2
    (True, True)
    """
    t, f, e = _validate_lc(time, flux, flux_err)
    t, f, e = t.detach().double(), f.detach().double(), e.detach().double()
    if len(t) < 4:
        raise ValueError(f"time: expected at least 4 observations to fit a transient, got {len(t)}")
    if bool((e <= 0).all()):
        raise ValueError("flux_err: expected positive measurement errors, got all zeros")
    e = torch.where(e > 0, e, e[e > 0].min())
    nlp = _bazin_objective(t, f, e, _resolve_prior(f, e, prior))

    base0 = float(torch.quantile(f, 0.2)) if len(f) >= 5 else float(f.min())
    amp0 = max(float(f.max()) - base0, 3 * float(e.min()))
    bright = t[torch.argsort(f, descending=True)[:2]].tolist()
    span = float(t[-1] - t[0])
    tps = sorted({*bright, bright[0] - 0.1 * span, bright[0] + 3.0, bright[0] + 8.0})
    starts = torch.tensor(
        [[math.log(amp0), tp, math.log(3.0), math.log(20 / 3 - 1), base0] for tp in tps],
        dtype=torch.float64,
    )
    th = starts.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [th], lr=1, max_iter=iterations, history_size=10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nlp(th).sum()
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:  # pragma: no cover - numerical failure: keep the last iterate
        pass
    with torch.no_grad():
        vals = nlp(th)
        vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, math.inf))
        best = th[int(vals.argmin())].detach().clone()
    best = _newton_polish(nlp, best)
    H = torch.autograd.functional.hessian(nlp, best)
    H = 0.5 * (H + H.T)
    w, U = torch.linalg.eigh(H)
    w = w.clamp_min(1e-10 * float(w.abs().max()) + 1e-12)
    cov = (U / w) @ U.T
    log_a, tp, log_rise, q, base = best.tolist()
    rise = math.exp(log_rise)
    with torch.no_grad():
        chi2 = float((((_bazin_flux(best, t) - f) / e) ** 2).sum())
    return BazinFit(
        theta=best,
        covariance=cov,
        t_peak=tp,
        t_peak_std=math.sqrt(max(float(cov[1, 1]), 0.0)),
        amplitude=math.exp(log_a),
        t0=tp - rise * q,
        rise=rise,
        fall=rise * (1 + math.exp(q)),
        base=base,
        chi2=chi2,
    )


def propose_peak_times(
    time: Any,
    flux: Any,
    flux_err: Any,
    *,
    n: int = 1,
    now: float | None = None,
    horizon: float = 10.0,
    min_separation: float = 0.0,
    windows: Sequence[tuple[float, float]] | None = None,
    detection_sigma: float = 5.0,
    detections: int = 1,
    survey_cadence: float = 8.0,
    prior: Mapping[str, tuple[float, float]] | None = None,
    n_candidates: int = 200,
    draws: int = 1024,
    seed: int = 0,
) -> Proposal:
    """Next observation times of a transient that shrink the variance of its peak time most.

    Parameters
    ----------
    time, flux, flux_err : array_like
        Observations so far (strictly increasing ``time``, days; positive errors).
    n : int
        Number of times to propose (greedy batch).
    now : float, optional
        Current time (default: the last observation); proposals are strictly later.
    horizon : float
        Proposals lie in ``(now, now + horizon]``.
    min_separation : float
        Cadence constraint: at least this far from each other and from past observations.
    windows : sequence of (start, end), optional
        Visibility windows: proposals lie inside one of them.
    detection_sigma, detections : float, int
        Until ``detections`` observations stand ``detection_sigma`` errors above the
        baseline (20 % flux quantile), the source is not detected and the policy keeps
        the survey cadence.
    survey_cadence : float
        Interval of the survey (detection) cadence, days.
    prior : mapping, optional
        Priors of the Bazin fit (:func:`fit_bazin`).
    n_candidates, draws : int
        Candidate times in the horizon; posterior draws the gain is averaged over.
    seed : int
        Seed of the posterior draws.

    Returns
    -------
    Proposal
        ``coords`` the times (ascending), ``gain`` the expected reduction of
        ``Var(t_peak)`` (day^2; 0 for survey visits), ``settings["phase"]`` ``"survey"``
        or ``"follow-up"``, ``settings["t_peak"]``/``["t_peak_std"]`` the current
        estimate once detected.

    Raises
    ------
    ValueError
        Time stamps not increasing, ``now`` before the last observation, non-positive
        ``horizon``/``survey_cadence``, negative ``min_separation`` or errors.

    Notes
    -----
    Bayesian c-optimal design (Chaloner and Verdinelli 1995) on the Laplace posterior
    ``N(theta_hat, Sigma)`` of the Bazin parameters (:func:`fit_bazin`): a new
    observation at ``t`` with noise ``sigma`` and sensitivity ``J = d f(t) / d theta``
    reduces the variance of ``t_peak = theta_2`` by
    ``(Sigma J)_2^2 / (sigma^2 + J^T Sigma J)`` (Sherman-Morrison); the gain is averaged
    over ``draws`` posterior samples of ``theta`` (expected utility, robust to a poorly
    constrained early fit), the best candidate is taken and ``Sigma`` conditioned on it
    before the next pick.  Before detection, a regular survey cadence.

    Examples
    --------
    >>> t = np.array([0.0, 8.0, 16.0, 17.0, 18.0])
    >>> f = np.array([0.0, 0.01, 0.6, 0.9, 1.2])
    >>> p = propose_peak_times(t, f, 0.05, n=2, horizon=10.0, min_separation=0.5)
    >>> p.settings["phase"], bool((p.coords > 18.0).all()), len(p)
    ('follow-up', True, 2)
    """
    t, f, e = _validate_lc(time, flux, flux_err)
    t, f, e = t.detach().double(), f.detach().double(), e.detach().double()
    now = float(t[-1]) if now is None else float(now)
    if now < float(t[-1]):
        raise ValueError(
            f"now: expected a time at or after the last observation {float(t[-1])!r}, got {now!r}"
        )
    check_positive(horizon, "horizon")
    check_positive(survey_cadence, "survey_cadence")
    check_positive(detection_sigma, "detection_sigma")
    check_positive(min_separation, "min_separation", strict=False)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of proposals, got {n!r}")
    empty = Proposal(
        coords=torch.zeros(0, dtype=torch.float64), gain=torch.zeros(0, dtype=torch.float64)
    )
    sig = torch.where(e > 0, e, e[e > 0].min() if bool((e > 0).any()) else torch.ones_like(e))
    base = float(torch.quantile(f, 0.2)) if len(f) >= 5 else float(f.min())
    if not isinstance(detections, int) or detections < 1:
        raise ValueError(f"detections: expected a positive count, got {detections!r}")
    detected = len(t) >= 4 and int(((f - base) / sig > detection_sigma).sum()) >= detections
    if not detected:
        start = max(now, float(t[-1]) + survey_cadence)
        times = start + survey_cadence * torch.arange(n, dtype=torch.float64)
        times = times[times <= now + horizon] if n > 1 else times[:1]
        if start <= now:
            times = times[times > now]
        times = _in_windows(times, windows)
        if times.numel() == 0:
            return empty
        return Proposal(coords=times, gain=torch.zeros_like(times), settings={"phase": "survey"})
    fit = fit_bazin(t, f, sig, prior=prior)
    cand = _open_candidates(t, now, horizon, n_candidates, windows, min_separation)
    if cand.numel() == 0:
        return empty
    noise = float(sig.mean()) ** 2
    # importance-weighted Laplace draws of the posterior
    gen = torch.Generator().manual_seed(seed)
    Lc = torch.linalg.cholesky(fit.covariance + 1e-12 * torch.eye(5, dtype=torch.float64))
    z = torch.randn(draws, 5, generator=gen, dtype=torch.float64)
    thetas = fit.theta + z @ Lc.T
    nlp = _bazin_objective(t, f, sig, _resolve_prior(f, sig, prior))
    with torch.no_grad():
        logw = -nlp(thetas) + 0.5 * (z * z).sum(1)
        logw = torch.where(torch.isfinite(logw), logw, torch.full_like(logw, -math.inf))
        w = torch.softmax(logw, 0)
        if float(1 / (w * w).sum()) < 10:  # degenerate weights: plain Laplace draws
            w = torch.full_like(w, 1 / draws)
        X = torch.cat([thetas[:, 1:2], _bazin_flux(thetas, cand)], 1)  # (k, 1 + c)
        X = torch.nan_to_num(X)
        Xc = X - (w[:, None] * X).sum(0)
        C = (Xc * w[:, None]).T @ Xc  # weighted joint covariance of (t_peak, f(cand))

    def score(C: torch.Tensor, chosen: list[int]) -> torch.Tensor:
        return torch.nan_to_num(C[0, 1:] ** 2 / (C.diagonal()[1:] + noise), nan=-math.inf)

    times, gains = _greedy_select(C, 1, cand, n, noise, min_separation, score)
    return Proposal(
        coords=times,
        gain=gains,
        settings={"phase": "follow-up", "t_peak": fit.t_peak, "t_peak_std": fit.t_peak_std},
    )


@dataclasses.dataclass
class TransientCampaign:
    """Result of :func:`follow_transient`.

    Attributes
    ----------
    time, flux : ndarray
        The observations taken, in order.
    phase : list of str
        ``"survey"`` or ``"follow-up"`` for each observation after the first.
    fit : BazinFit or None
        Final Bazin fit (None if the transient was never detected).
    """

    time: np.ndarray
    flux: np.ndarray
    phase: list[str]
    fit: BazinFit | None

    @property
    def t_peak(self) -> float:
        """Estimated time of peak (NaN if never detected)."""
        return math.nan if self.fit is None else self.fit.t_peak


def follow_transient(
    measure: Callable[[np.ndarray], np.ndarray],
    *,
    budget: int,
    season: tuple[float, float],
    flux_err: float,
    survey_cadence: float | None = None,
    horizon: float = 15.0,
    min_separation: float = 1.0,
    detection_sigma: float = 5.0,
    prior: Mapping[str, tuple[float, float]] | None = None,
    wall_time: float | None = None,
    draws: int = 1024,
    seed: int = 0,
) -> TransientCampaign:
    """Observe a field for a transient: regular survey until detection, then peak follow-up.

    Parameters
    ----------
    measure : callable
        ``measure(times) -> fluxes`` (the telescope; called with one time at a time,
        always later than the previous one: the loop is causal).
    budget : int
        Total number of observations (survey and follow-up).
    season : (start, end)
        Observing season; every observation lies inside it.
    flux_err : float
        Measurement error (flux units).
    survey_cadence : float, optional
        Survey interval before detection (default: the regular cadence that spends
        ``budget`` over the season, so that the policy and a regular cadence coincide
        until the transient is detected).
    horizon : float
        Planning window: each step plans the remaining budget inside
        ``(now, min(now + horizon, end)]`` and executes its earliest observation
        (receding-horizon control).
    min_separation : float
        Follow-up cadence constraint (e.g. one visit a night).
    detection_sigma : float
        Detection threshold (see :func:`propose_peak_times`).
    prior : mapping, optional
        Bazin priors (:func:`fit_bazin`).
    wall_time : float, optional
        Seconds after which the campaign stops (the budget may be unspent).
    draws : int
        Posterior draws per decision (:func:`propose_peak_times`).
    seed : int
        Seed of the posterior draws.

    Returns
    -------
    TransientCampaign

    Raises
    ------
    ValueError
        Budget below 5, an empty or reversed season, or a non-positive ``flux_err``.

    Notes
    -----
    Each follow-up step is the Bayesian c-optimal design of :func:`propose_peak_times`
    for all the observations left, planned over the horizon; only the first is taken,
    the light curve refitted, and the plan redone (model-predictive control), so the
    schedule tightens around the peak as its posterior narrows.

    Examples
    --------
    >>> truth = lambda t: 2 * np.exp(-(t - 30) / 15) / (1 + np.exp(-(t - 30) / 2.5))
    >>> g = np.random.default_rng(0)
    >>> run = follow_transient(lambda t: truth(t) + g.normal(0, 0.05, np.size(t)),
    ...                        budget=14, season=(0.0, 70.0), flux_err=0.05)
    >>> len(run.time), bool(np.all(np.diff(run.time) > 0)), run.phase.count("follow-up") > 3
    (14, True, True)
    """
    if not isinstance(budget, int) or budget < 5:
        raise ValueError(f"budget: expected at least 5 observations, got {budget!r}")
    a, b = (float(x) for x in season)
    if not b > a:
        raise ValueError(f"season: expected (start, end) with start < end, got {season!r}")
    check_positive(flux_err, "flux_err")
    cadence = (b - a) / (budget - 1) if survey_cadence is None else float(survey_cadence)
    check_positive(cadence, "survey_cadence")
    check_positive(horizon, "horizon")
    t0 = _time.perf_counter()
    times = [a]
    fluxes = [float(np.asarray(measure(np.array([a]))).reshape(-1)[0])]
    phase: list[str] = []
    while len(times) < budget:
        if wall_time is not None and _time.perf_counter() - t0 > wall_time:
            break
        now = times[-1]
        hz = min(horizon, b - now)
        if hz <= 1e-9:
            break
        prop = propose_peak_times(
            np.asarray(times),
            np.asarray(fluxes),
            flux_err,
            n=budget - len(times),
            now=now,
            horizon=hz,
            min_separation=min_separation,
            windows=[(a, b + 1e-9)],
            detection_sigma=detection_sigma,
            survey_cadence=cadence,
            prior=prior,
            draws=draws,
            seed=seed + len(times),
        )
        if len(prop) == 0:
            break
        nt = float(prop.coords[0])
        times.append(nt)
        fluxes.append(float(np.asarray(measure(np.array([nt]))).reshape(-1)[0]))
        phase.append(str(prop.settings.get("phase", "follow-up")))
    t_arr, f_arr = np.asarray(times), np.asarray(fluxes)
    fit = fit_bazin(t_arr, f_arr, flux_err, prior=prior) if "follow-up" in phase else None
    return TransientCampaign(time=t_arr, flux=f_arr, phase=phase, fit=fit)


@dataclasses.dataclass
class Schedule:
    """Output of :func:`gp_schedule`.

    Attributes
    ----------
    grid : Tensor
        ``(g,)`` times from the first observation to ``now + horizon``.
    mean, std : Tensor
        ``(g,)`` posterior mean and standard deviation of the light curve on ``grid``.
    next_times : Tensor
        ``(n,)`` proposed observation times (in the future, inside the constraints); their
        expected gains come with :func:`propose_times`.
    """

    grid: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    next_times: torch.Tensor

    def uncertainty(self) -> torch.Tensor:
        return self.std


def gp_schedule(
    time: torch.Tensor,
    flux: torch.Tensor,
    *,
    kernel: str = "transient",
    amplitude: float | torch.Tensor = 1.0,
    lengthscale: float | torch.Tensor = 10.0,
    period: float | torch.Tensor = 1.0,
    gamma: float | torch.Tensor = 1.0,
    jitter: float | torch.Tensor = 0.05,
    mean: float = 0.0,
    flux_err: float = 0.0,
    target: str = "peak_time",
    n_propose: int = 3,
    horizon: float = 10.0,
    min_separation: float = 0.5,
    n_grid: int = 128,
) -> Schedule:
    """GP light-curve posterior plus the next observation times, in one call.

    Parameters
    ----------
    time, flux : Tensor
        ``(t,)`` light curve, strictly increasing ``time`` (days).
    kernel, amplitude, lengthscale, period, gamma, jitter, mean
        GP hyperparameters (:class:`GPParams`); tensors keep their graph.
    flux_err : float
        Reported per-point error (added to ``jitter`` in quadrature).
    target : {"peak_time", "period", "light_curve"}
        What to learn about (see :func:`propose_times`).
    n_propose : int
        Number of future observations to propose.
    horizon : float
        Planning horizon after the last observation.
    min_separation : float
        Cadence constraint between observations.
    n_grid : int
        Grid size of the returned posterior.

    Returns
    -------
    Schedule
        ``mean`` and ``std`` are differentiable in ``time``, ``flux`` and the
        hyperparameters; ``next_times`` only through the last time stamp (the choice of
        the offsets is discrete).

    Raises
    ------
    ValueError
        If time stamps do not increase, shapes differ, or a noise level is negative.

    Examples
    --------
    >>> t = torch.linspace(0, 10, 12, dtype=torch.float64)
    >>> s = gp_schedule(t, torch.exp(-((t - 8) / 3) ** 2), lengthscale=3.0, n_propose=2)
    >>> bool((s.next_times > t[-1]).all()), s.mean.shape
    (True, torch.Size([128]))
    """
    check_in(kernel, "kernel", _KERNELS)
    check_positive(flux_err, "flux_err", strict=False)
    for name, v in (
        ("amplitude", amplitude),
        ("lengthscale", lengthscale),
        ("period", period),
        ("gamma", gamma),
    ):
        if float(torch.as_tensor(v).detach()) <= 0:
            raise ValueError(
                f"{name}: expected a positive value, got {float(torch.as_tensor(v).detach())!r}"
            )
    if float(torch.as_tensor(jitter).detach()) < 0:
        raise ValueError(
            f"jitter: expected a non-negative noise level, got {float(torch.as_tensor(jitter).detach())!r}"
        )
    t, f, _ = _validate_lc(time, flux, None)
    e = torch.full_like(t, float(flux_err))
    params = GPParams(
        kernel=kernel,
        amplitude=amplitude,
        lengthscale=lengthscale,
        period=period,
        gamma=gamma,
        jitter=jitter,
        mean=mean,
    )
    now = t[-1]
    frac = torch.linspace(0, 1, n_grid, dtype=t.dtype, device=t.device)
    grid = t[0] + frac * (now + horizon - t[0])
    m, var = gp_posterior(t, f, e, grid, params, full_cov=False)
    with torch.no_grad():
        pd = GPParams(
            **{
                fl.name: (
                    getattr(params, fl.name).detach().double()
                    if isinstance(getattr(params, fl.name), torch.Tensor)
                    else getattr(params, fl.name)
                )
                for fl in dataclasses.fields(params)
            }
        )
        prop = propose_times(
            t.detach().double(),
            f.detach().double(),
            e.detach().double(),
            pd,
            n=n_propose,
            horizon=horizon,
            min_separation=min_separation,
            target=target,
        )
    # proposals are offsets from the last observation: they move with it (and carry that
    # gradient); the choice of offset itself is discrete
    nxt = now + (prop.coords.to(t.dtype) - now.detach())
    return Schedule(grid=grid, mean=m, std=torch.sqrt(var + 1e-12), next_times=nxt)


class SchedulingPolicy:
    """:class:`~components.feedback.loop.Policy` for light curves.

    ``belief`` must expose ``time``, ``flux``, ``flux_err`` and ``params`` (see
    :class:`~components.feedback.loop` docs); ``constraints`` may hold ``now``,
    ``horizon``, ``min_separation`` and ``windows``.
    """

    def __init__(self, *, target: str = "peak_time") -> None:
        check_in(target, "target", _TARGETS)
        self.target = target

    def propose(
        self, belief: Any, budget: int, constraints: Mapping[str, Any] | None = None
    ) -> Proposal:
        c = dict(constraints or {})
        return propose_times(
            belief.time,
            belief.flux,
            belief.flux_err,
            belief.params,
            n=budget,
            now=c.get("now"),
            horizon=c.get("horizon", 10.0),
            min_separation=c.get("min_separation", 0.0),
            windows=c.get("windows"),
            target=self.target,
        )


class LightCurveScheduler(Component):
    """GP light-curve model and next-observation proposals for transients and variables.

    Hyperparameters that enter the posterior are ``nn.Parameter`` s (log scale) so that
    a pipeline can refine them by the negative marginal likelihood
    (:meth:`self_supervised_loss`).

    Examples
    --------
    >>> m = LightCurveScheduler(lengthscale=3.0)
    >>> t = torch.linspace(0, 10, 12, dtype=torch.float64)
    >>> m(t, torch.sin(t)).next_times.shape
    torch.Size([3])
    """

    name = "feedback.scheduling"
    function = staticmethod(gp_schedule)
    differentiable = True
    footprint = 0

    def __init__(
        self,
        *,
        kernel: str = "transient",
        amplitude: float = 1.0,
        lengthscale: float = 10.0,
        period: float = 1.0,
        gamma: float = 1.0,
        jitter: float = 0.05,
        mean: float = 0.0,
        flux_err: float = 0.0,
        target: str = "peak_time",
        n_propose: int = 3,
        horizon: float = 10.0,
        min_separation: float = 0.5,
        n_grid: int = 128,
    ) -> None:
        check_in(kernel, "kernel", _KERNELS)
        check_in(target, "target", _TARGETS)
        for name, v in (
            ("amplitude", amplitude),
            ("lengthscale", lengthscale),
            ("period", period),
            ("gamma", gamma),
            ("jitter", jitter),
        ):
            check_positive(v, name)
        super().__init__(
            kernel=kernel,
            amplitude=amplitude,
            lengthscale=lengthscale,
            period=period,
            gamma=gamma,
            jitter=jitter,
            mean=mean,
            flux_err=flux_err,
            target=target,
            n_propose=n_propose,
            horizon=horizon,
            min_separation=min_separation,
            n_grid=n_grid,
        )
        names = ["amplitude", "lengthscale", "jitter"] + (
            ["period", "gamma"] if kernel == "quasi_periodic" else []
        )
        self.log_hyper = nn.ParameterDict(
            {
                k: nn.Parameter(torch.tensor(math.log(float(self._config[k])), dtype=torch.float64))
                for k in names
            }
        )

    def _hyper(self) -> dict[str, Any]:
        c = dict(self._config)
        for k, p in self.log_hyper.items():
            c[k] = p.exp()
        return c

    def forward(self, time: torch.Tensor, flux: torch.Tensor) -> Schedule:
        return gp_schedule(time, flux, **self._hyper())

    def self_supervised_loss(self, inputs: Mapping[str, Any], output: Any) -> torch.Tensor:
        """Negative log marginal likelihood per observation."""
        c = self._hyper()
        p = GPParams(
            kernel=c["kernel"],
            amplitude=c["amplitude"],
            lengthscale=c["lengthscale"],
            period=c["period"],
            gamma=c["gamma"],
            jitter=c["jitter"],
            mean=c["mean"],
        )
        t = torch.as_tensor(inputs["time"])
        return -log_marginal_likelihood(
            t, torch.as_tensor(inputs["flux"]), torch.full_like(t, float(c["flux_err"])), p
        ) / len(t)

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            (
                {"time": np.array([0.0, 2.0, 1.0, 3.0]), "flux": np.zeros(4)},
                ValueError,
                "strictly increasing",
            ),
            ({"time": np.arange(4.0), "flux": np.zeros(5)}, ValueError, "flux"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.feedback import _reference as ref

        def example() -> dict[str, np.ndarray]:
            lc = ref.transient_light_curve(2, n=14, span=30.0)
            keep = lc["time"] < 18.0
            return {"time": lc["time"][keep], "flux": lc["flux"][keep]}

        spec = SemanticSpec(
            name="feedback.scheduling.transient",
            family="feedback",
            task="observation-scheduling",
            modality="light-curve",
            scale="cosmic",
            inputs={
                "time": TensorSchema(axes="t", dtype="float64", units="d"),
                "flux": TensorSchema(axes="t", dtype="any"),
            },
            outputs={
                "grid": TensorSchema(axes="g", dtype="float64", units="d"),
                "mean": TensorSchema(axes="g", dtype="any"),
                "std": TensorSchema(axes="g", dtype="any"),
                "next_times": TensorSchema(
                    axes="n", dtype="float64", units="d", description="proposed observation times"
                ),
            },
            differentiable=True,
            description="Matérn-5/2 Gaussian-process light curve of a supernova-like transient and a scheduler that proposes the next observation times to pin down the time of peak, within cadence constraints.",
            tags=(
                "gaussian-process",
                "transient",
                "supernova",
                "scheduling",
                "peak-time",
                "active-learning",
            ),
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=spec,
                params={
                    "kernel": "transient",
                    "amplitude": 1.5,
                    "lengthscale": 6.0,
                    "jitter": 0.05,
                    "target": "peak_time",
                    "n_propose": 3,
                    "horizon": 10.0,
                    "min_separation": 0.5,
                    "n_grid": 64,
                },
                reference_data=lambda seed: ref.transient_light_curve(seed),
                example=example,
            )
        ]


@dataclasses.dataclass
class LightCurveSchedulerConfig:
    """Hydra structured config of :class:`LightCurveScheduler`."""

    _target_: str = "feedback.scheduling"
    kernel: str = "transient"
    amplitude: float = 1.0
    lengthscale: float = 10.0
    period: float = 1.0
    gamma: float = 1.0
    jitter: float = 0.05
    mean: float = 0.0
    flux_err: float = 0.0
    target: str = "peak_time"
    n_propose: int = 3
    horizon: float = 10.0
    min_separation: float = 0.5
    n_grid: int = 128
