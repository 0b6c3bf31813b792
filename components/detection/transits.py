"""Transit search: robust detrending and vectorised Box Least Squares.

The search phase-folds the light curve at every trial period by *binning* (a scatter-add
of weights and weighted fluxes into phase bins), takes cumulative sums over the bins
(wrapped around), and evaluates every box of every trial duration at every start bin at
once.  Periods are processed in batches and many stars sharing one time grid in one
call, with the same torch code on CPU and CUDA.  A sliding-window Tukey biweight
detrender is built in and is also its own pipeline stage (:class:`Detrend`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from components._validation import (
    as_float_tensor,
    check_in,
    check_ndim,
    check_nonempty,
    check_positive,
)
from components.base import Component, Declaration, single_intra_op_thread
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "Detrend",
    "TransitCandidate",
    "TransitSearch",
    "biweight_trend",
    "bls_power",
    "detrend",
    "find_transits",
    "period_grid",
    "survey_light_curves",
    "transit_search",
]

_F = TypeVar("_F", bound=Callable[..., Any])

DEFAULT_DURATIONS = (0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.33)  # days (1 h to 8 h)


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------
def _cpu_single_threaded(fn: _F) -> _F:
    """Decorator: run ``fn(time, flux, ...)`` under :func:`_one_intra_op_thread` unless
    ``flux`` is a CUDA tensor."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flux = args[1] if len(args) > 1 else kwargs.get("flux")
        dev = flux.device if isinstance(flux, Tensor) else torch.device("cpu")
        with _one_intra_op_thread(dev):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU work with one intra-op thread (restored afterwards).

    The BLS loop is thousands of small tensor operations (1e4-1e6 elements each): with
    several OpenMP threads every one of them is a fork-join whose threads spin while
    waiting for each other, which costs more than it gains and, on a loaded machine,
    slows the search by up to an order of magnitude (measured: 33 s wall and 8 s CPU
    with 2 threads against 5 s and 1 s with one, at load 15 on 2 cores).  CUDA work is
    left alone.
    """
    with single_intra_op_thread(device.type == "cpu"):
        yield


def _prepare(time: Any, flux: Any) -> tuple[Tensor, Tensor]:
    t = as_float_tensor(time, "time")
    f = as_float_tensor(flux, "flux")
    check_nonempty(t, "time")
    check_nonempty(f, "flux")
    check_ndim(t, "time", 1, axes="t")
    check_ndim(f, "flux", (1, 2), axes="t or (star, t)")
    if f.shape[-1] != t.shape[0]:
        raise ValueError(
            f"time and flux: expected the same number of samples along t, got {t.shape[0]} and {f.shape[-1]}"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError("time: expected finite time stamps, got NaN/inf (drop those samples)")
    if t.shape[0] > 1 and not bool((t[1:] >= t[:-1]).all()):
        order = torch.argsort(t)
        t, f = t[order], f[..., order]
    return t, f


# --------------------------------------------------------------------------------------
# detrending
# --------------------------------------------------------------------------------------
def biweight_trend(
    time: Tensor,
    flux: Tensor,
    *,
    window: float = 0.75,
    c: float = 5.0,
    n_iter: int = 5,
    knots_per_window: int = 30,
    chunk_elements: int = 1 << 22,
) -> Tensor:
    r"""Sliding-window Tukey biweight location of ``flux`` (the stellar trend).

    Parameters
    ----------
    time : Tensor, shape (t,)
        Time stamps (days), any spacing.
    flux : Tensor, shape (t,) or (star, t)
        Flux; NaN/inf samples are ignored (the trend is still evaluated there).
    window : float
        Full window width in days (use about 3x the longest transit duration sought).
    c : float
        Tuning constant of the biweight in units of the window's MAD (5 as in wotan).
    n_iter : int
        Biweight iterations (starting from the median).
    knots_per_window : int
        The trend is evaluated on a regular grid of ``knots_per_window`` points per
        window (or at every sample, if that is fewer) and interpolated linearly: the
        trend varies on the window scale, and the cost drops from O(n w) to O(span w).
    chunk_elements : int
        Memory bound: rows of (point, window sample) pairs processed per block.

    Returns
    -------
    Tensor
        The trend, same shape as ``flux`` (NaN where a window holds no finite sample).

    Notes
    -----
    For each point :math:`i` with window :math:`W_i=\{j: |t_j-t_i|\le w/2\}` the location
    :math:`M` solves :math:`M=\sum_j u_j x_j / \sum_j u_j` with
    :math:`u_j=(1-z_j^2)^2\,[|z_j|<1]`, :math:`z_j=(x_j-M)/(c\,\mathrm{MAD}_i)`, iterated
    from the window median.  Windows are gathered into a padded (points x window) matrix
    (``searchsorted`` on the time stamps), so the cost is O(n w) and fully vectorised.

    References
    ----------
    .. [1] M. Hippke et al., "Wotan: comprehensive time-series detrending in Python",
       AJ 158, 143 (2019).
    """
    check_positive(window, "window")
    check_positive(c, "c")
    squeeze = flux.ndim == 1
    f = flux[None] if squeeze else flux
    n = time.shape[0]
    tdet = time.detach()
    span = float(tdet[-1] - tdet[0])
    n_knots = math.ceil(knots_per_window * span / window) + 1
    if n_knots < n:
        # evaluate on knots spaced window / knots_per_window, interpolate linearly
        centres = torch.linspace(
            float(tdet[0]), float(tdet[-1]), n_knots, dtype=time.dtype, device=time.device
        )
    else:
        centres = tdet
    m_c = centres.shape[0]
    lo = torch.searchsorted(tdet, centres - 0.5 * window)
    hi = torch.searchsorted(tdet, centres + 0.5 * window, right=True)
    width = max(1, int((hi - lo).max()))
    rows = max(1, chunk_elements // max(1, width * f.shape[0]))
    out = torch.empty(f.shape[0], m_c, dtype=f.dtype, device=f.device)
    ar = torch.arange(width, device=time.device)
    for s in range(0, m_c, rows):
        e = min(m_c, s + rows)
        idx = lo[s:e, None] + ar[None]
        inside = idx < hi[s:e, None]
        idx = idx.clamp_max(n - 1)
        x = f[:, idx]  # (star, rows, width)
        ok = inside[None] & torch.isfinite(x)
        xn = torch.where(ok, x, torch.full_like(x, float("nan")))
        m = torch.nanmedian(xn, dim=-1).values
        for _ in range(n_iter):
            dev = (xn - m[..., None]).abs()
            mad = torch.nanmedian(dev, dim=-1).values
            scale = (c * mad).clamp_min(torch.finfo(f.dtype).tiny)
            z = (x - m[..., None]) / scale[..., None]
            u = torch.where(ok & (z.abs() < 1), (1 - z**2) ** 2, torch.zeros_like(z))
            den = u.sum(-1)
            num = (u * torch.where(ok, x, torch.zeros_like(x))).sum(-1)
            m = torch.where(den > 0, num / den.clamp_min(torch.finfo(f.dtype).tiny), m)
        out[:, s:e] = m
    if m_c != n:
        out = _interp_rows(time, centres, out)
    return out[0] if squeeze else out


def _interp_rows(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Linear interpolation of each row of ``fp`` (on ascending ``xp``) at ``x``; NaN knots
    are bridged by their finite neighbours' interpolation where possible."""
    j = torch.searchsorted(xp, x.detach()).clamp(1, xp.shape[0] - 1)
    x0, x1 = xp[j - 1], xp[j]
    a = ((x - x0) / (x1 - x0)).to(fp.dtype)
    f0, f1 = fp[:, j - 1], fp[:, j]
    out = f0 + a * (f1 - f0)
    out = torch.where(torch.isnan(f0) & ~torch.isnan(f1), f1, out)
    return torch.where(torch.isnan(f1) & ~torch.isnan(f0), f0, out)


def detrend(
    time: Tensor,
    flux: Tensor,
    *,
    method: str = "biweight",
    window: float = 0.75,
    n_iter: int = 5,
) -> Tensor:
    """Divide ``flux`` by its robust sliding-window trend (relative flux around 1).

    Parameters
    ----------
    time : Tensor, shape (t,)
        Time stamps in days (uneven sampling and gaps are fine).
    flux : Tensor, shape (t,) or (star, t)
        Flux (any positive scale); NaN samples stay NaN.
    method : {"biweight", "median"}
        Location estimator of the sliding window (``"median"`` = biweight with 0
        iterations).
    window : float
        Window width in days.
    n_iter : int
        Biweight iterations.

    Returns
    -------
    Tensor
        ``flux / trend``, same shape and dtype as ``flux``.

    Raises
    ------
    ValueError
        Empty or mismatched inputs, non-finite times, non-positive window.

    Examples
    --------
    >>> import torch
    >>> t = torch.linspace(0, 10, 500, dtype=torch.float64)
    >>> f = 1 + 0.01 * torch.sin(t)
    >>> d = detrend(t, f, window=1.0)
    >>> float((d[50:-50] - 1).abs().max()) < 1e-3  # away from the one-sided edge windows
    True
    """
    check_in(method, "method", ("biweight", "median"))
    t, f = _prepare(time, flux)
    tr = (t - t[0]).to(f.dtype)
    trend = biweight_trend(tr, f, window=window, n_iter=0 if method == "median" else n_iter)
    return f / trend


# --------------------------------------------------------------------------------------
# BLS
# --------------------------------------------------------------------------------------
def period_grid(
    time: Tensor | np.ndarray,
    *,
    durations: Sequence[float] = DEFAULT_DURATIONS,
    min_period: float | None = None,
    max_period: float | None = None,
    oversample: float = 3.0,
    period_cap: float | None = None,
) -> Tensor:
    r"""Trial periods uniform in :math:`\log P` with the spacing set by the baseline.

    A period error :math:`\delta P` shifts the last transit by :math:`T\,\delta P/P`
    (baseline :math:`T`); keeping that below ``min(durations) / oversample`` gives
    :math:`\delta P/P = d_{\min}/(\mathrm{oversample}\,T)`, i.e. a geometric grid with
    :math:`\ln(P_{\max}/P_{\min})\,\mathrm{oversample}\,T/d_{\min}` periods.  Defaults:
    ``min_period = max(0.5 d, 2 max(durations))``, ``max_period = T/2`` (at least two
    transits), lowered to ``period_cap`` when that is given (a baseline-aware survey
    grid: ``period_cap=100`` searches up to 100 d on a 4-year light curve and up to
    ``T/2`` on a shorter one).  Periods beyond the baseline are rejected.

    Examples
    --------
    >>> import torch
    >>> g = period_grid(torch.linspace(0, 20, 100), min_period=1.0, max_period=5.0)
    >>> float(g[0]), round(float(g[-1]), 3) <= 5.0
    (1.0, True)
    """
    t = torch.as_tensor(time)
    baseline = float(t.max() - t.min())
    if not baseline > 0:
        raise ValueError(f"time: expected a positive baseline, got {baseline}")
    dmin, dmax = float(min(durations)), float(max(durations))
    pmin = float(min_period) if min_period is not None else max(0.5, 2.0 * dmax)
    pmax = float(max_period) if max_period is not None else 0.5 * baseline
    if period_cap is not None:
        check_positive(period_cap, "period_cap")
        pmax = min(pmax, float(period_cap))
    check_positive(pmin, "min_period")
    if pmax > baseline:
        raise ValueError(
            f"max_period: expected at most the baseline ({baseline:.6g} d), got {pmax!r}"
        )
    if pmax <= pmin:
        raise ValueError(
            f"min_period/max_period: expected min_period < max_period, got {pmin!r} and {pmax!r} (baseline {baseline:.6g} d)"
        )
    step = dmin / (oversample * baseline)
    n = math.ceil(math.log(pmax / pmin) / math.log1p(step)) + 1
    return pmin * torch.exp(torch.arange(n, dtype=torch.float64) * math.log1p(step)).clamp_max(
        pmax / pmin
    )


@dataclasses.dataclass
class _BLSBest:
    power: Tensor  # (star, period)
    depth: Tensor
    depth_err: Tensor
    epoch: Tensor
    duration: Tensor
    # (star, period) bool: the statistic was evaluated exactly at this period (all True for
    # ``method="exact"``); elsewhere ``power`` is interpolated and the rest copied from the
    # nearest exact period
    exact: Tensor | None = None
    # (period,) bool: an evenly spread subsample of exact periods (the coarse grid), an
    # unbiased sample of the periodogram for its mean and scatter (the SDE)
    sample: Tensor | None = None


@_cpu_single_threaded
def bls_power(
    time: Tensor,
    flux: Tensor,
    periods: Tensor,
    durations: Tensor,
    *,
    weights: Tensor | None = None,
    bin_oversample: int = 3,
    objective: str = "snr",
    max_duty: float = 0.25,
    method: str = "auto",
    coarse_drift: float = 1.5,
    top_k: int = 16,
    chunk_elements: int = 1 << 20,
    bin_elements: int = 1 << 20,
) -> _BLSBest:
    r"""Box Least Squares periodogram of one or many light curves on one time grid.

    Parameters
    ----------
    time : Tensor, shape (t,)
        Time stamps (days, any spacing); best relative to the first sample.
    flux : Tensor, shape (star, t)
        Relative flux minus its weighted mean (0 out of transit, NaN = 0 weight).
    periods, durations : Tensor
        Trial periods and durations (days).
    weights : Tensor, shape (star, t), optional
        Inverse variances (0 for masked samples).  Default: 1 for finite samples.
    bin_oversample : int
        Phase bins per shortest duration.
    objective : {"snr", "likelihood"}
        Periodogram value: depth SNR or :math:`\Delta\log L = \tfrac12\,\mathrm{SNR}^2`.
    max_duty : float
        Durations longer than ``max_duty * period`` are skipped at that period.
    method : {"auto", "exact"}
        ``"exact"`` evaluates the statistic at every trial period.  ``"auto"`` (default)
        searches coarse-to-fine (see Notes) when the period grid is fine enough for it
        to pay off, and is exact otherwise.
    coarse_drift : float
        Coarse grid spacing for ``method="auto"``: the largest shift of the last transit
        across the baseline between neighbouring coarse periods, in units of
        ``min(durations)``.
    top_k : int
        Coarse periodogram peaks (local maxima, per star) re-evaluated on the full grid.
    chunk_elements, bin_elements : int
        Memory bounds of one batch of periods: (period x point) and (period x bin)
        elements.

    Returns
    -------
    _BLSBest
        The best (duration, epoch) per period: power, depth, depth error, epoch (a
        mid-transit time, ``time[0] + [0, P)``), duration, each of shape (star, period);
        ``exact`` (star, period) marks the periods evaluated exactly and ``sample``
        (period,) an evenly spread subsample of them (the coarse grid).

    Raises
    ------
    ValueError
        Unknown ``objective`` or ``method``, non-positive ``coarse_drift`` or ``top_k``.

    Notes
    -----
    With weights :math:`w_i`, flux :math:`y_i` (weighted mean 0), a box of phase
    interval :math:`I` has :math:`W_I=\sum_{i\in I}w_i`, :math:`Y_I=\sum_{i\in I}w_iy_i`,
    depth :math:`\delta = -Y_I\,W/(W_I(W-W_I))` and :math:`\sigma_\delta^2=W/(W_I(W-W_I))`,
    so :math:`\mathrm{SNR}=\delta/\sigma_\delta` and
    :math:`\Delta\log L=\tfrac12\delta^2/\sigma_\delta^2` (Kovacs et al. 2002; the
    weighted form of astropy's ``BoxLeastSquares``).  :math:`W_I, Y_I` for every box come
    from cumulative sums over phase bins of width ``min(durations)/bin_oversample``;
    boxes are whole numbers of bins (the duration is rounded to bins).  Periods are
    folded in batches (scatter-adds over the whole batch, work buffers reused).

    **Coarse-to-fine search** (``method="auto"``).  With baseline :math:`T`, two periods
    :math:`P, P'` shift the last transit against each other by
    :math:`D = T\,|\ln(P'/P)|`.  The coarse grid is every :math:`k`-th requested period
    (sorted), :math:`k=\lfloor c\,d_{\min}/\max D_{\rm fine}\rfloor` (:math:`c` =
    ``coarse_drift``), so neighbouring coarse periods are at most :math:`c\,d_{\min}`
    apart in drift.  A transit signal at any period :math:`P^*` is within half a coarse
    step of a coarse period; folded there, its transits are displaced linearly in time,
    by at most :math:`\pm c\,d_{\min}/4` about the middle one, so a box of the true
    duration :math:`d` keeps on average a fraction
    :math:`\ge 1 - c\,d_{\min}/(8d) \ge 1 - c/8` of the in-transit deficit (81 % for the
    default :math:`c=1.5`) at unchanged in-box weight: the coarse SNR of a signal is at
    least :math:`1-c/8` of its exact value.  The coarse periodogram is computed by
    *segmented folding* where that pays (short periods: see :func:`_bls_segmented`; a
    group of neighbouring coarse periods shares one scatter-add of the points per time
    segment, each period then sums shifted segment profiles), which places a point at
    most half a phase bin away from its exact bin (measured: peak SNR within 1-5 % of
    the exact fold's, same peak period); coarse periods where it does not pay are folded
    exactly.  The exact statistic is then evaluated on the full requested grid between
    the coarse neighbours of each of the ``top_k`` highest local maxima of every star's
    coarse periodogram (for many stars, each star on its own windows unless the stars
    share them).  The result equals the exact path's best period whenever the exact
    peak's coarse neighbourhood ranks among the ``top_k`` coarse peaks, i.e. unless
    ``top_k`` spurious coarse peaks exceed the (slightly reduced) coarse value of the
    true peak.  Outside the re-evaluated windows ``power`` is the coarse value on the
    coarse grid and linearly interpolated between evaluated periods elsewhere
    (``exact`` is False there), the other fields copied from the nearest evaluated
    period.  The work drops from :math:`N_P` folds to about :math:`N_P/k` segmented
    folds plus :math:`2k\,K` exact ones.

    **Threads.**  On CPU the search runs with one intra-op thread (restored on return):
    it is thousands of small operations, for which OpenMP fork-joins cost more than they
    gain and stall badly on a loaded machine.  Batch many stars (one call with a
    (star, t) flux) for throughput: the stars share the phase-bin indices, the
    scatter-add and the gather-sum of every fold.
    """
    check_in(objective, "objective", ("snr", "likelihood"))
    check_in(method, "method", ("auto", "exact"))
    check_positive(coarse_drift, "coarse_drift")
    if int(top_k) < 1:
        raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
    f = flux
    w = weights if weights is not None else torch.isfinite(f).to(f.dtype)
    y = torch.where(w > 0, f, torch.zeros_like(f))
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
    y = torch.where(torch.isfinite(y), y, torch.zeros_like(y))
    dev = y.device
    per = periods.to(device=dev, dtype=torch.float64).reshape(-1)
    n_p = per.numel()
    exact_args = (time, y, w, durations, bin_oversample, objective, max_duty)
    bounds = (chunk_elements, bin_elements)
    k = 1
    if method == "auto" and n_p > 2:
        baseline = float(time[-1] - time[0])
        ps = torch.sort(per).values
        fine_drift = float((baseline * torch.diff(torch.log(ps))).max())
        if fine_drift > 0:
            k = int(coarse_drift * float(durations.min()) / fine_drift)
    if k < 2 or n_p <= 2 * k * (2 * int(top_k) + 1):
        res = _bls_exact(*exact_args, per, *bounds)
        res.exact = torch.ones(res.power.shape, dtype=torch.bool, device=dev)
        res.sample = torch.ones(n_p, dtype=torch.bool, device=dev)
        return res
    order = torch.argsort(per)
    ps = per[order]
    n_star = y.shape[0]
    # coarse stage: every k-th sorted period (and the last)
    ci = torch.arange(0, n_p, k, device=dev)
    if int(ci[-1]) != n_p - 1:
        ci = torch.cat([ci, ci.new_tensor([n_p - 1])])
    fields = ("power", "depth", "depth_err", "epoch", "duration")
    full = {
        name: torch.full((n_star, n_p), float("nan"), dtype=y.dtype, device=dev) for name in fields
    }
    # coarse stage: segmented folding where it pays (approximate), exact elsewhere
    coarse, seg_done = _bls_segmented(
        time, y, w, durations, bin_oversample, objective, max_duty, ps[ci], bin_elements
    )
    if not bool(seg_done.all()):
        rest = _bls_exact(*exact_args, ps[ci[~seg_done]], *bounds)
        for name in fields:
            getattr(coarse, name)[:, ~seg_done] = getattr(rest, name)
    for name in fields:
        full[name][:, ci] = getattr(coarse, name)
    # fine stage: between the coarse neighbours of each star's top-k coarse local maxima
    pc = torch.nan_to_num(coarse.power, nan=float("-inf"))
    left = torch.nn.functional.pad(pc[:, :-1], (1, 0), value=float("-inf"))
    right = torch.nn.functional.pad(pc[:, 1:], (0, 1), value=float("-inf"))
    peak = (pc >= left) & (pc >= right) & torch.isfinite(pc)
    score = torch.where(peak, pc, torch.full_like(pc, float("-inf")))
    kk = min(int(top_k), score.shape[1])
    top_val, top_idx = score.topk(kk, dim=-1)
    own = torch.zeros(n_star, n_p, dtype=torch.bool, device=dev)  # exact, sorted order
    own[:, ci[~seg_done]] = True
    todo = torch.zeros(n_star, n_p, dtype=torch.bool, device=dev)
    nc = ci.numel()
    for s in range(n_star):
        for j in top_idx[s][torch.isfinite(top_val[s])].tolist():
            lo = int(ci[max(j - 1, 0)])
            hi = int(ci[min(j + 1, nc - 1)])
            todo[s, lo : hi + 1] = True
    todo &= ~own
    union = todo.any(0)
    if int(union.sum()) * n_star <= 2 * int(todo.sum()):
        # windows shared by the stars: one batched exact evaluation
        fi = torch.nonzero(union).reshape(-1)
        if fi.numel():
            fine = _bls_exact(*exact_args, ps[fi], *bounds)
            for name in fields:
                full[name][:, fi] = getattr(fine, name)
        own |= todo  # a star's values outside its own windows are filled below
    else:
        # many stars with different peaks: each star's own windows only
        for s in range(n_star):
            fi = torch.nonzero(todo[s]).reshape(-1)
            if not fi.numel():
                continue
            a_s = (time, y[s : s + 1], w[s : s + 1], durations, bin_oversample)
            fine = _bls_exact(*a_s, objective, max_duty, ps[fi], *bounds)
            for name in fields:
                full[name][s, fi] = getattr(fine, name)[0]
            own[s, fi] = True
    # fill the periods not evaluated for a star from the evaluated ones (coarse and
    # exact): power interpolated, the rest nearest
    have = own.clone()
    have[:, ci] = True
    ar = torch.arange(n_p, device=dev)
    for s in range(n_star):
        ex = torch.nonzero(have[s]).reshape(-1)
        miss = ~have[s]
        if not bool(miss.any()):
            continue
        j = torch.searchsorted(ex, ar[miss]).clamp(1, ex.numel() - 1)
        i0, i1 = ex[j - 1], ex[j]
        a = (ar[miss] - i0).to(y.dtype) / (i1 - i0).to(y.dtype)
        p0, p1 = full["power"][s, i0], full["power"][s, i1]
        interp = p0 + a * (p1 - p0)
        nearest = torch.where(a <= 0.5, i0, i1)
        for name in fields[1:]:
            full[name][s, miss] = full[name][s, nearest]
        full["power"][s, miss] = interp
    inv = torch.empty_like(order)
    inv[order] = torch.arange(n_p, device=dev)
    sample = torch.zeros(n_p, dtype=torch.bool, device=dev)
    sample[ci] = True
    return _BLSBest(
        power=full["power"][:, inv],
        depth=full["depth"][:, inv],
        depth_err=full["depth_err"][:, inv],
        epoch=full["epoch"][:, inv],
        duration=full["duration"][:, inv],
        exact=own[:, inv],
        sample=sample[inv],
    )


@_cpu_single_threaded
def _bls_exact(
    time: Tensor,
    y: Tensor,
    w: Tensor,
    durations: Tensor,
    bin_oversample: int,
    objective: str,
    max_duty: float,
    per: Tensor,
    chunk_elements: int,
    bin_elements: int,
) -> _BLSBest:
    """The BLS statistic at every period of ``per`` (see :func:`bls_power`)."""
    n_star, n_t = y.shape
    dev, dt = y.device, y.dtype
    t = time - time[0]
    wy = w * y
    wtot = w.sum(-1)  # (star,)
    bin_dt = float(durations.min()) / bin_oversample
    kdur = torch.clamp(torch.round(durations / bin_dt).long(), min=1).to(dev)  # (dur,)
    kmax = int(kdur.max())
    out_power = torch.full((n_star, per.numel()), float("nan"), dtype=dt, device=dev)
    out_depth = torch.zeros_like(out_power)
    out_err = torch.zeros_like(out_power)
    out_epoch = torch.zeros_like(out_power)
    out_dur = torch.zeros_like(out_power)
    nb_all = torch.ceil(per / bin_dt).long()
    tt = t.to(device=dev, dtype=torch.float32)
    # batches of periods: bounded by the (period x point) and the (period x bin) work
    bounds = [0]
    while bounds[-1] < per.numel():
        s0 = bounds[-1]
        by_pts = max(1, chunk_elements // max(1, n_t * n_star))
        nb_hi = int(nb_all[min(per.numel() - 1, s0 + by_pts - 1)]) + kmax
        by_bins = max(1, bin_elements // max(1, nb_hi * n_star))
        bounds.append(min(per.numel(), s0 + min(by_pts, by_bins)))
    # work buffers reused across batches (fresh large allocations cost page faults)
    n_batch = max(e - s for s, e in itertools.pairwise(bounds))
    xbuf = torch.empty(n_batch, n_t, dtype=torch.float32, device=dev)
    bbuf = torch.empty(n_batch, n_t, dtype=torch.long, device=dev)
    for s, e in itertools.pairwise(bounds):
        p = per[s:e]
        nb = nb_all[s:e]
        nbmax = int(nb.max())
        # phase bin of every (period, point): frac(t / P) nb (float32: the bin error is
        # below 0.05 bin for baselines up to ten years; frac + mul is ~10x cheaper than
        # remainder); a rounding up to nb lands in the padding column nbmax, never read
        # for that period
        x = torch.mul(tt[None, :], (1.0 / p).to(torch.float32)[:, None], out=xbuf[: e - s])
        x.frac_().mul_(nb.to(torch.float32)[:, None])
        b = bbuf[: e - s]
        b.copy_(x)
        sw = y.new_zeros(n_star, e - s, nbmax + 1)
        swy = y.new_zeros(n_star, e - s, nbmax + 1)
        for k in range(n_star):
            sw[k].scatter_add_(1, b, w[k][None].expand(e - s, -1))
            swy[k].scatter_add_(1, b, wy[k][None].expand(e - s, -1))
        res = _box_stage(sw, swy, nb, p, time[0], wtot, kdur, bin_dt, max_duty, objective)
        for o, r in zip((out_power, out_depth, out_err, out_epoch, out_dur), res, strict=True):
            o[:, s:e] = r
    return _BLSBest(out_power, out_depth, out_err, out_epoch, out_dur)


@_cpu_single_threaded
def _bls_segmented(
    time: Tensor,
    y: Tensor,
    w: Tensor,
    durations: Tensor,
    bin_oversample: int,
    objective: str,
    max_duty: float,
    per: Tensor,
    bin_elements: int,
    sub_bins: int = 2,
) -> tuple[_BLSBest, Tensor]:
    r"""The BLS statistic by segmented folding (shift-and-add), approximately.

    ``per`` must be ascending.  Periods are grouped; a group is folded once, at a
    reference period :math:`P_0`, separately for each of ``n_seg`` time segments into
    ``sub_bins`` sub-bins per phase bin (one scatter-add of every point per group).  At
    a period :math:`P` of the group a point at time :math:`t` in segment :math:`s`
    (centre :math:`c_s`) has phase :math:`t/P = t/P_0 + t(1/P-1/P_0)`, which is
    :math:`t/P_0 + c_s(1/P-1/P_0)` up to a drift of :math:`(T/2n_{seg})|1/P-1/P_0|`
    cycles; each segment's profile is therefore cyclically shifted by the rounded
    :math:`n_b\,q\,c_s(1/P-1/P_0)` sub-bins and the segments summed (a gather of
    ``n_seg x n_b q`` values per period instead of a pass over every point).  Groups are
    sized so that the drift stays below half a sub-bin; ``n_seg`` minimises the
    estimated work.  A point lands at most ``1/sub_bins`` bin before or ``2/sub_bins``
    bins after its exact phase bin (the exact fold: within it), i.e. at most half a
    bin off for the default 2 sub-bins.  Returns the statistic and a (period,) bool
    mask of the periods evaluated this way (the others, where segmenting does not pay,
    are left NaN for the caller).
    """
    n_star, n_t = y.shape
    dev, dt = y.device, y.dtype
    q = int(sub_bins)
    t = (time - time[0]).to(torch.float64)
    span = float(t[-1])
    w_wy = torch.cat([w, w * y])
    many = 2 * n_star > 4  # star-minor layout and a fused gather-sum pay from 3 stars
    w_wy_t = w_wy.T.contiguous() if many else w_wy
    wtot = w.sum(-1)
    bin_dt = float(durations.min()) / bin_oversample
    kdur = torch.clamp(torch.round(durations / bin_dt).long(), min=1).to(dev)
    n_p = per.numel()
    fields = [torch.full((n_star, n_p), float("nan"), dtype=dt, device=dev) for _ in range(5)]
    done = torch.zeros(n_p, dtype=torch.bool, device=dev)
    per_c = per.detach().to("cpu", torch.float64)
    neg_inv = -1.0 / per_c  # ascending
    seg_cache: dict[int, tuple[Tensor, Tensor]] = {}
    pending: list[tuple[Tensor, Tensor, int, int, int]] = []
    pending_elems = 0

    def flush() -> None:
        nonlocal pending, pending_elems
        if not pending:
            return
        nbmax = max(g[2] for g in pending)
        sw = torch.cat([torch.nn.functional.pad(g[0], (0, nbmax - g[2])) for g in pending], dim=1)
        swy = torch.cat([torch.nn.functional.pad(g[1], (0, nbmax - g[2])) for g in pending], dim=1)
        nb = torch.cat(
            [torch.full((g[4] - g[3],), g[2], dtype=torch.long, device=dev) for g in pending]
        )
        idx = torch.cat([torch.arange(g[3], g[4], device=dev) for g in pending])
        res = _box_stage(sw, swy, nb, per[idx], time[0], wtot, kdur, bin_dt, max_duty, objective)
        for o, r in zip(fields, res, strict=True):
            o[:, idx] = r
        pending, pending_elems = [], 0

    fold_cost = 6.0 * n_t  # per exactly folded period: phase, bin and two scatter-adds
    i = 0
    while i < n_p:
        nb = math.ceil(float(per_c[i]) / bin_dt)
        best: tuple[float, int, int] | None = None
        for n_seg in (2, 4, 6, 8, 12, 16, 24, 32, 48, 64):
            if n_seg * nb * q > 4 * n_t:
                break
            budget = 2.0 * n_seg / (nb * q * span)  # span of 1/P within a group
            j = int(torch.searchsorted(neg_inv, neg_inv[i] + budget, right=True)) - 1
            g = max(1, j - i + 1)
            g = min(g, max(1, 8 * bin_elements // (n_seg * nb * q)))  # memory per star
            cost = 6.0 * n_t / g + 4.0 * n_seg * nb * q
            if best is None or cost < best[0]:
                best = (cost, n_seg, g)
        if best is None or best[0] > 0.7 * fold_cost:
            i += 1  # segmenting does not pay here (long period): left to the exact path
            continue
        _cost, n_seg, g = best
        j = min(n_p, i + g)
        # reference at the middle of the group's 1/P range
        inv_ref = 0.5 * (1.0 / float(per_c[i]) + 1.0 / float(per_c[j - 1]))
        nbq = nb * q
        if n_seg not in seg_cache:
            sidx = torch.clamp((t * (n_seg / span)).long(), max=n_seg - 1)
            centres = (torch.arange(n_seg, dtype=torch.float64, device=dev) + 0.5) * (span / n_seg)
            seg_cache[n_seg] = (sidx, centres)
        sidx, centres = seg_cache[n_seg]
        b0 = torch.clamp((torch.frac(t * inv_ref) * nbq).long(), max=nbq - 1)
        dinv = 1.0 / per[i:j].to(torch.float64) - inv_ref  # (g,)
        shift = torch.round(nbq * centres[None, :] * dinv[:, None]).long() % nbq  # (g, seg)
        sh = nbq - shift  # window offset in the doubled profile, in [1, nbq]
        if many:
            # (segment, sub-bin, star) layout: one scatter-add of every point's row of
            # (weights, weighted fluxes) of all stars, then one fused gather-sum over the
            # segments (embedding_bag) of contiguous star rows
            prof = w_wy_t.new_zeros(n_seg * nbq, 2 * n_star).index_add_(0, sidx * nbq + b0, w_wy_t)
            prof = prof.view(n_seg, nbq, 2 * n_star)
            prof = torch.cat([prof, prof], dim=1).view(-1, 2 * n_star)
            rows = (
                (torch.arange(n_seg, device=dev) * (2 * nbq))[None, None, :]
                + sh[:, None, :]
                + torch.arange(nbq, device=dev)[None, :, None]
            )  # (g, nbq, seg)
            folded = torch.nn.functional.embedding_bag(
                rows.reshape(-1, n_seg), prof, mode="sum"
            )  # (g nbq, 2 star)
            folded = folded.view(j - i, nb, q, 2 * n_star).sum(2).permute(2, 0, 1)
        else:
            # one scatter-add of (weight, weighted flux) into (segment, sub-bin)
            prof = w.new_zeros(2 * n_star, n_seg * nbq).index_add_(1, sidx * nbq + b0, w_wy)
            prof = prof.view(2 * n_star, n_seg, nbq)
            # every cyclic shift of a segment's profile is a window of the doubled profile
            windows = torch.cat([prof, prof], dim=-1).unfold(-1, nbq, 1)  # (., seg, nbq+1, nbq)
            seg_ix = torch.arange(n_seg, device=dev)[None, :].expand(j - i, -1)
            folded = windows[:, seg_ix, sh].sum(2)  # (2 star, g, nbq)
            folded = folded.reshape(2 * n_star, j - i, nb, q).sum(-1)
        sw, swy = folded[:n_star], folded[n_star:]
        pending.append((sw, swy, nb, i, j))
        pending_elems += n_star * (j - i) * nb
        done[i:j] = True
        if pending_elems >= bin_elements:
            flush()
        i = j
    flush()
    return _BLSBest(*fields), done


def _box_stage(
    sw: Tensor,
    swy: Tensor,
    nb: Tensor,
    p: Tensor,
    time0: Tensor,
    wtot: Tensor,
    kdur: Tensor,
    bin_dt: float,
    max_duty: float,
    objective: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Best box of every (star, period) from phase-binned sums.

    ``sw, swy`` (star, period, >= nb + 1): weights and weighted fluxes per phase bin
    (period ``p`` has ``nb`` bins of width ``p / nb`` starting at phase 0; columns past
    ``nb`` are padding).  Returns power, depth, depth error, epoch, duration (star, period).
    """
    n_star = sw.shape[0]
    dev, dt = sw.device, sw.dtype
    tiny = torch.finfo(dt).tiny
    kmax = int(kdur.max())
    nbmax = int(nb.max())
    j = torch.arange(nbmax + kmax, device=dev)
    src = (j[None, :] % nb[:, None])[None].expand(n_star, -1, -1)
    cw = torch.nn.functional.pad(torch.cumsum(torch.gather(sw, 2, src), dim=-1), (1, 0))
    cy = torch.nn.functional.pad(torch.cumsum(torch.gather(swy, 2, src), dim=-1), (1, 0))
    best_val = torch.full((n_star, p.numel()), float("inf"), dtype=dt, device=dev)
    best_start = torch.zeros((n_star, p.numel()), dtype=torch.long, device=dev)
    best_k = torch.ones((n_star, p.numel()), dtype=torch.long, device=dev)
    W = wtot[:, None, None]
    for kd in kdur.tolist():
        ok_dur = (kd * bin_dt) <= max_duty * p  # (p,)
        if not bool(ok_dur.any()):
            continue
        win = cw[..., kd : kd + nbmax] - cw[..., :nbmax]
        ywin = cy[..., kd : kd + nbmax] - cy[..., :nbmax]
        # -SNR / sqrt(W) = Y_I / sqrt(W_I (W - W_I)); minimised over start bins
        v = ywin * torch.rsqrt((win * (W - win)).clamp_min(tiny))
        arg = v.argmin(dim=-1)  # (argmin + gather: much faster than min(dim) on CPU)
        v = v.gather(-1, arg[..., None])[..., 0]
        v = torch.where(ok_dur[None], v, torch.full_like(v, float("inf")))
        better = v < best_val
        best_val = torch.where(better, v, best_val)
        best_start = torch.where(better, arg, best_start)
        best_k = torch.where(better, torch.full_like(arg, kd), best_k)
    # statistics of the winning box of each period
    gi = best_start[..., None]
    gk = (best_start + best_k)[..., None]
    win = (cw.gather(-1, gk) - cw.gather(-1, gi))[..., 0]
    ywin = (cy.gather(-1, gk) - cy.gather(-1, gi))[..., 0]
    var = wtot[:, None] / (win * (wtot[:, None] - win)).clamp_min(tiny)
    depth = -ywin * var
    snr = depth / var.sqrt()
    snr = torch.where(torch.isfinite(best_val), snr, torch.full_like(snr, float("nan")))
    power = snr if objective == "snr" else torch.sign(snr) * 0.5 * snr**2
    # mid-transit time of the best box (bin starts are at time[0] + k P / nb)
    binw = (p / nb.to(torch.float64)).to(dt)[None]
    epoch = time0 + ((best_start.to(dt) + 0.5 * best_k.to(dt)) * binw) % p.to(dt)[None]
    return power, depth, var.sqrt(), epoch, best_k.to(dt) * bin_dt


@dataclasses.dataclass
class TransitCandidate:
    """Best BLS candidate (0-d tensors, or (star,) tensors for several stars).

    Attributes
    ----------
    period, epoch, duration : Tensor
        Days; ``epoch`` is a mid-transit time in the input time system.
    depth, depth_err : Tensor
        Relative depth (mean deficit in the central half of the box) and its 1-sigma
        error.
    snr : Tensor
        Detection SNR of the full box (depth / error over the whole duration).
    sde : Tensor
        Signal detection efficiency: (peak - mean) / std of the periodogram.
    n_transits : Tensor
        Transits with at least one in-transit sample.
    depth_odd, depth_even, odd_even_sigma : Tensor
        Depths of odd and even transits and their difference in sigma (a large value
        suggests an eclipsing binary at twice the period).
    secondary_depth, secondary_snr : Tensor
        Depth (and SNR) of a box of the same duration at phase 0.5.
    periods, power : Tensor
        The periodogram: trial periods and the objective at each (star, period).
    """

    period: Tensor
    epoch: Tensor
    duration: Tensor
    depth: Tensor
    depth_err: Tensor
    snr: Tensor
    sde: Tensor
    n_transits: Tensor
    depth_odd: Tensor
    depth_even: Tensor
    odd_even_sigma: Tensor
    secondary_depth: Tensor
    secondary_snr: Tensor
    periods: Tensor
    power: Tensor


def _box_depth(t: Tensor, y: Tensor, w: Tensor, mask_in: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted depth (out - in mean) and its error for a boolean in-box mask, per star."""
    win = (w * mask_in).sum(-1)
    wout = (w * ~mask_in).sum(-1)
    yin = (w * y * mask_in).sum(-1) / win.clamp_min(1e-300)
    yout = (w * y * ~mask_in).sum(-1) / wout.clamp_min(1e-300)
    err = torch.sqrt(1.0 / win.clamp_min(1e-300) + 1.0 / wout.clamp_min(1e-300))
    depth = torch.where(win > 0, yout - yin, torch.full_like(yin, float("nan")))
    return depth, err


def _phase(t: Tensor, period: Tensor, epoch: Tensor) -> Tensor:
    """Phase in days relative to mid-transit, in [-P/2, P/2)."""
    p = period[..., None]
    return torch.remainder(t[None] - epoch[..., None] + 0.5 * p, p) - 0.5 * p


@_cpu_single_threaded
def transit_search(
    time: Tensor,
    flux: Tensor,
    *,
    periods: Sequence[float] | Tensor | None = None,
    durations: Sequence[float] | Tensor | None = None,
    min_period: float | None = None,
    max_period: float | None = None,
    oversample: float = 3.0,
    period_cap: float | None = None,
    bin_oversample: int = 3,
    detrend: str | None = "biweight",
    window: float | None = None,
    flux_err: Tensor | None = None,
    objective: str = "snr",
    mask: Tensor | None = None,
    refine: bool = True,
    method: str = "auto",
) -> TransitCandidate:
    r"""Box Least Squares transit search of one light curve or many on one time grid.

    Parameters
    ----------
    time : Tensor, shape (t,)
        Time stamps in days; uneven sampling and gaps are fine (BLS needs no regular
        grid).  Must be finite.
    flux : Tensor, shape (t,) or (star, t)
        Flux, raw or normalised; NaN/inf samples are masked.
    periods : sequence of float, optional
        Trial periods (days).  Default: :func:`period_grid` from the baseline and the
        shortest duration.  Periods longer than the baseline are rejected.
    durations : sequence of float, optional
        Trial durations in days; default 1 h to 8 h (7 values).
    min_period, max_period, oversample, period_cap
        Passed to :func:`period_grid` when ``periods`` is None (``period_cap`` lowers the
        default ``max_period = baseline / 2`` to at most that many days).
    bin_oversample : int
        Phase bins per shortest duration (precision of epoch and duration).
    detrend : {"biweight", "median", None}
        Built-in robust sliding-window detrending; ``None`` if ``flux`` is already
        detrended (it is then only divided by its median).
    window : float, optional
        Detrending window (days); default ``3 * max(durations)``.
    flux_err : Tensor, optional
        Per-sample flux errors (same shape as ``flux``); default: the robust scatter
        (1.4826 MAD) of the detrended flux, per star.
    objective : {"snr", "likelihood"}
        Periodogram value.
    mask : Tensor of bool, optional
        Samples to ignore (True = masked), e.g. known transits.
    refine : bool
        Re-search the neighbourhood of the periodogram peak on a 10x finer period grid
        with 3x finer phase bins (better period, epoch and duration; the periodogram
        itself stays on the coarse grid).
    method : {"auto", "exact"}
        Periodogram evaluation (see :func:`bls_power`): ``"auto"`` searches
        coarse-to-fine and evaluates the exact statistic around the highest coarse peaks
        (the same best period as ``"exact"`` on the test and benchmark cases, several
        times faster on fine period grids); ``"exact"`` evaluates every trial period.

    Returns
    -------
    TransitCandidate
        The best candidate (scalars for one star, (star,) tensors for many) and the
        periodogram.

    Raises
    ------
    ValueError
        Empty or mismatched inputs, non-finite times, periods outside (0, baseline],
        no finite flux.

    Notes
    -----
    See :func:`bls_power` for the statistic and :func:`period_grid` for the grid.  The
    SDE is :math:`(\max_P s - \bar s)/\mathrm{std}(s)` over the periodogram :math:`s`.
    The odd/even check compares the box depths of odd and even transits,
    :math:`|\delta_o-\delta_e|/\sqrt{\sigma_o^2+\sigma_e^2}`; the secondary check
    measures a box of the same duration centred at phase 0.5.

    References
    ----------
    .. [1] G. Kovacs, S. Zucker, T. Mazeh, "A box-fitting algorithm in the search for
       periodic transits", A&A 391, 369 (2002).
    .. [2] A. Ofir, "Optimizing the search for transiting planets in long time series",
       A&A 561, A138 (2014).

    Examples
    --------
    >>> from components.detection._reference import make_light_curve
    >>> t, f = make_light_curve(baseline=20.0, planets=((3.0, 1.0, 0.12, 5e-3),), seed=1)
    >>> c = transit_search(t, f, min_period=1.0, max_period=5.0, durations=[0.08, 0.12])
    >>> round(float(c.period), 2), round(float(c.depth) * 1e3, 1)
    (3.0, 5.0)
    """
    check_in(method, "method", ("auto", "exact"))
    t_abs, f = _prepare(time, flux)
    t = (t_abs - t_abs[0]).to(f.dtype)  # relative time in the flux dtype; epochs added back
    squeeze = f.ndim == 1
    f2 = f[None] if squeeze else f
    durs = torch.as_tensor(
        DEFAULT_DURATIONS if durations is None else durations, dtype=torch.float64
    )
    if durs.ndim != 1 or durs.numel() == 0:
        raise ValueError(f"durations: expected a non-empty 1-D sequence of days, got {durations!r}")
    for d in durs.tolist():
        check_positive(d, "durations")
    baseline = float(t[-1] - t[0])
    if periods is None:
        per = period_grid(
            t,
            durations=durs.tolist(),
            min_period=min_period,
            max_period=max_period,
            oversample=oversample,
            period_cap=period_cap,
        )
    else:
        per = torch.as_tensor(periods, dtype=torch.float64).reshape(-1)
        if per.numel() == 0:
            raise ValueError("periods: expected at least one trial period, got an empty sequence")
        if (
            not bool(torch.isfinite(per).all())
            or float(per.min()) <= 0
            or float(per.max()) > baseline
        ):
            raise ValueError(
                f"periods: expected values in (0, baseline = {baseline:.6g} d], got range [{float(per.min()):.6g}, {float(per.max()):.6g}]"
            )
    valid = torch.isfinite(f2)
    if mask is not None:
        m = torch.as_tensor(mask, dtype=torch.bool, device=f2.device)
        valid = valid & ~(m if m.ndim == 2 else m[None])
    if not bool(valid.any(-1).all()):
        raise ValueError(
            "flux: expected finite samples, got a light curve with none (all NaN/inf or masked)"
        )
    if detrend is not None:
        check_in(detrend, "detrend", ("biweight", "median"))
        win = 3.0 * float(durs.max()) if window is None else float(window)
        fm = torch.where(valid, f2, torch.full_like(f2, float("nan")))
        trend = biweight_trend(t, fm, window=win, n_iter=0 if detrend == "median" else 5)
        rel = fm / trend
    else:
        fm = torch.where(valid, f2, torch.full_like(f2, float("nan")))
        rel = fm / torch.nanmedian(fm, dim=-1, keepdim=True).values
    valid = valid & torch.isfinite(rel)
    if flux_err is None:
        med = torch.nanmedian(
            torch.where(valid, rel, torch.full_like(rel, float("nan"))), dim=-1, keepdim=True
        ).values
        dev = torch.where(valid, (rel - med).abs(), torch.full_like(rel, float("nan")))
        sig = (1.4826 * torch.nanmedian(dev, dim=-1, keepdim=True).values).clamp_min(
            torch.finfo(rel.dtype).tiny
        )
        w = valid.to(rel.dtype) / sig**2
    else:
        fe = as_float_tensor(flux_err, "flux_err", dtype=rel.dtype, device=rel.device)
        fe = fe[None] if fe.ndim == 1 else fe
        if fe.shape != rel.shape:
            raise ValueError(f"flux_err: expected shape {tuple(rel.shape)}, got {tuple(fe.shape)}")
        base = torch.nanmedian(
            torch.where(valid, f2, torch.full_like(f2, float("nan"))), dim=-1, keepdim=True
        ).values
        w = torch.where(valid & (fe > 0), (base / fe) ** 2, torch.zeros_like(fe))
    y = torch.where(valid, rel, torch.zeros_like(rel))
    ymean = (w * y).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
    y = torch.where(valid, y - ymean, torch.zeros_like(y))
    res = bls_power(
        t,
        y,
        per.to(t.device),
        durs.to(t.device),
        weights=w,
        bin_oversample=bin_oversample,
        objective=objective,
        method=method,
    )
    power = res.power
    finite = torch.isfinite(power)
    exact = res.exact if res.exact is not None else finite
    pw = torch.where(finite & exact, power, torch.full_like(power, float("-inf")))
    k = pw.argmax(-1)
    ar = torch.arange(power.shape[0], device=power.device)
    # SDE statistics over the evenly spread exact subsample (the whole grid when exact)
    if res.sample is not None:
        finite = finite & res.sample[None]
    pz = torch.where(finite, power, torch.zeros_like(power))
    nfin = finite.sum(-1).clamp_min(1)
    mean = pz.sum(-1) / nfin
    std = torch.sqrt(
        (torch.where(finite, (power - mean[:, None]) ** 2, torch.zeros_like(power))).sum(-1) / nfin
    )
    sde = (pw[ar, k] - mean) / std.clamp_min(torch.finfo(power.dtype).tiny)
    pbest = per.to(power)[k]
    epoch = res.epoch[ar, k]
    dur = res.duration[ar, k]
    if refine and per.numel() > 1:
        # local refinement: a 10x finer period grid and 3x finer phase bins around the peak
        for i in range(power.shape[0]):
            ki = int(k[i])
            lo_p = float(per[max(ki - 1, 0)])
            hi_p = float(per[min(ki + 1, per.numel() - 1)])
            fine = torch.linspace(lo_p, hi_p, 21, dtype=torch.float64)
            r2 = bls_power(
                t,
                y[i : i + 1],
                fine.to(t.device),
                durs.to(t.device),
                weights=w[i : i + 1],
                bin_oversample=3 * bin_oversample,
                objective=objective,
            )
            p2 = torch.where(
                torch.isfinite(r2.power[0]),
                r2.power[0],
                torch.full_like(r2.power[0], float("-inf")),
            )
            j2 = int(p2.argmax())
            pbest[i] = fine[j2].to(pbest)
            epoch[i] = r2.epoch[0, j2]
            dur[i] = r2.duration[0, j2]
    # refine depth with the exact box (not the binned one) and run the vetting checks
    ph = _phase(t, pbest, epoch)
    inbox = ph.abs() < 0.5 * dur[:, None]
    d_box, e_box = _box_depth(t, y, w, inbox & valid)
    # reported depth: the central half of the box (box edges dilute it by ingress/egress
    # and by the duration-grid rounding); falls back to the full box without samples there
    core = ph.abs() < 0.25 * dur[:, None]
    d_core, e_core = _box_depth(t, y, w * ~(inbox & ~core), core & valid)
    has_core = torch.isfinite(d_core)
    depth = torch.where(has_core, d_core, d_box)
    derr = torch.where(has_core, e_core, e_box)
    cycle = torch.floor((t[None] - epoch[:, None]) / pbest[:, None] + 0.5).long()
    odd = (cycle % 2) == 1
    d_odd, e_odd = _box_depth(t, y, w * ~(~odd & inbox), inbox & odd & valid)
    d_even, e_even = _box_depth(t, y, w * ~(odd & inbox), inbox & ~odd & valid)
    oe = (d_odd - d_even).abs() / torch.sqrt(e_odd**2 + e_even**2)
    ph2 = _phase(t, pbest, epoch + 0.5 * pbest)
    d_sec, e_sec = _box_depth(t, y, w * ~inbox, (ph2.abs() < 0.5 * dur[:, None]) & valid & ~inbox)
    ntr = torch.stack(
        [
            torch.unique(cycle[i][(inbox[i] & valid[i])]).numel() * torch.ones((), dtype=torch.long)
            for i in range(cycle.shape[0])
        ]
    ).to(t.device)

    def sq(v: Tensor) -> Tensor:
        return v[0] if squeeze else v

    epoch_abs = t_abs[0] + epoch.to(t_abs.dtype)
    return TransitCandidate(
        period=sq(pbest),
        epoch=sq(epoch_abs),
        duration=sq(dur),
        depth=sq(depth),
        depth_err=sq(derr),
        snr=sq(d_box / e_box),
        sde=sq(sde),
        n_transits=sq(ntr),
        depth_odd=sq(d_odd),
        depth_even=sq(d_even),
        odd_even_sigma=sq(oe),
        secondary_depth=sq(d_sec),
        secondary_snr=sq(d_sec / e_sec),
        periods=per.to(power),
        power=sq(power),
    )


def find_transits(
    time: Tensor,
    flux: Tensor,
    *,
    max_planets: int = 3,
    min_snr: float = 7.0,
    min_sde: float = 6.0,
    mask_factor: float = 1.5,
    **kwargs: Any,
) -> list[TransitCandidate]:
    """Iterative BLS search: find the best candidate, mask its transits, repeat.

    Parameters
    ----------
    time, flux : Tensor
        As in :func:`transit_search` (one star).
    max_planets : int
        Maximum number of candidates.
    min_snr, min_sde : float
        Stop when the best remaining candidate is weaker than either.
    mask_factor : float
        In-transit samples within ``mask_factor * duration / 2`` of each transit centre are
        masked before the next search.
    **kwargs
        Passed to :func:`transit_search` (``periods``, ``durations``, ``detrend``...).

    Returns
    -------
    list of TransitCandidate
        Candidates in the order found (strongest first).

    Examples
    --------
    >>> from components.detection._reference import make_light_curve
    >>> t, f = make_light_curve(baseline=30.0, planets=((3.0, 1.0, 0.12, 5e-3), (7.1, 2.0, 0.16, 4e-3)), seed=2)
    >>> cands = find_transits(t, f, min_period=1.0, max_period=10.0, durations=[0.08, 0.12, 0.16])
    >>> sorted(round(float(c.period), 1) for c in cands)
    [3.0, 7.1]
    """
    if int(max_planets) < 1:
        raise ValueError(f"max_planets: expected a positive integer, got {max_planets!r}")
    t, f = _prepare(time, flux)
    if f.ndim != 1:
        raise ValueError(
            f"flux: find_transits searches one star at a time, got shape {tuple(f.shape)}"
        )
    mask = torch.zeros(f.shape, dtype=torch.bool, device=f.device)
    if kwargs.get("mask") is not None:
        mask |= torch.as_tensor(kwargs.pop("mask"), dtype=torch.bool, device=f.device)
    kwargs.pop("mask", None)
    found: list[TransitCandidate] = []
    for _ in range(int(max_planets)):
        c = transit_search(t, f, mask=mask, **kwargs)
        if not (float(c.snr) >= min_snr and float(c.sde) >= min_sde):
            break
        found.append(c)
        ph = _phase(t, c.period[None].to(t.dtype), c.epoch[None].to(t.dtype))[0]
        mask |= ph.abs() < 0.5 * mask_factor * float(c.duration)
    return found


# --------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------
class Detrend(Component):
    """Pipeline stage: divide a light curve by its sliding-window biweight trend.

    Autograd flows from the output to ``flux`` (the biweight location is smooth in the
    samples almost everywhere), but the stage is not declared differentiable: its
    dependence on ``time`` is piecewise (window membership).
    """

    name = "detection.detrend"
    function = staticmethod(detrend)
    differentiable = False
    footprint = 0

    def __init__(self, *, method: str = "biweight", window: float = 0.75, n_iter: int = 5) -> None:
        check_in(method, "method", ("biweight", "median"))
        check_positive(window, "window")
        super().__init__(method=method, window=float(window), n_iter=int(n_iter))

    def forward(self, time: Tensor, flux: Tensor) -> Tensor:
        return detrend(time, flux, **self.config())

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            ({"time": np.arange(5.0), "flux": np.ones(6)}, ValueError, "same number of samples"),
            ({"time": np.array([0.0, np.nan, 2.0]), "flux": np.ones(3)}, ValueError, "finite time"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.detection import _reference as ref

        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.detrend.biweight",
                    family="detection",
                    task="detrending",
                    modality="light-curve",
                    scale="cosmic",
                    inputs={
                        "time": TensorSchema(axes="t", units="d"),
                        "flux": TensorSchema(axes="t"),
                    },
                    outputs={
                        "output": TensorSchema(axes="t", description="relative flux (flux / trend)")
                    },
                    differentiable=False,
                    description="robust sliding-window Tukey biweight detrending of stellar light curves (window 0.75 d, keeps transits)",
                    tags=("detrending", "biweight", "wotan", "kepler", "tess"),
                    authors=("learndock developers",),
                ),
                params={"window": 0.75},
                reference_data=ref.light_curve,
                example=lambda: _small_lc(0, n=240),
            )
        ]


KEPLER_MAX_PERIOD = 100.0
# durations in days (1-10 h and 1-8 h)
KEPLER_DURATIONS = tuple(h / 24.0 for h in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0))
TESS_MAX_PERIOD = 13.0
TESS_DURATIONS = tuple(h / 24.0 for h in (1.0, 1.5, 2.0, 3.0, 4.0, 5.5, 8.0))


def _hours(durations: Sequence[float]) -> str:
    return ", ".join(f"{24.0 * d:.3g}" for d in durations)


def survey_light_curves(
    seed: int, *, survey: str = "kepler", return_truth: bool = False
) -> dict[str, np.ndarray]:
    """Reference light curves of a transit survey learnware (the data its RKME describes).

    ``"kepler"``: four stars on one 90-day, 30-minute grid (a Kepler quarter, long
    cadence); ``"tess"``: two stars on one 27.4-day, 2-minute grid (a TESS sector).  Each
    star has one box transit whose period is drawn log-uniformly over the learnware's
    whole period range (``0.5 d`` to ``min(cap, baseline / 2)``), duration uniformly
    over its duration range (at most a quarter of the period), depth 0.5-5 ppt, white
    noise 200-800 ppm and a slow stellar variability of 0.1-0.5 %.  Deterministic in
    ``seed``.  Returns ``{"time": (t,), "flux": (star, t)}``, plus the planted
    ``period``, ``epoch``, ``duration``, ``depth`` (star,) with ``return_truth``.

    Examples
    --------
    >>> d = survey_light_curves(0, survey="kepler", return_truth=True)
    >>> d["flux"].shape, bool((d["period"] >= 0.5).all() and (d["period"] <= 45).all())
    ((4, 4320), True)
    """
    from components.detection._reference import transit_model

    check_in(survey, "survey", ("kepler", "tess"))
    rng = np.random.default_rng([seed, 0 if survey == "kepler" else 1])
    if survey == "kepler":
        baseline, cadence, n_star = 90.0, 1.0 / 48.0, 4
        cap, durs = KEPLER_MAX_PERIOD, KEPLER_DURATIONS
    else:
        baseline, cadence, n_star = 27.4, 2.0 / 1440.0, 2
        cap, durs = TESS_MAX_PERIOD, TESS_DURATIONS
    t = np.arange(0.0, baseline, cadence)
    pmax = min(cap, 0.5 * baseline)
    flux = np.empty((n_star, t.size))
    truth = np.empty((4, n_star))
    for k in range(n_star):
        period = float(np.exp(rng.uniform(np.log(0.5), np.log(pmax))))
        duration = float(rng.uniform(min(durs), min(max(durs), 0.25 * period)))
        depth = float(rng.uniform(5e-4, 5e-3))
        epoch = float(rng.uniform(0, period))
        truth[:, k] = (period, epoch, duration, depth)
        f = transit_model(t, period=period, epoch=epoch, duration=duration, depth=depth)
        amp, prot = rng.uniform(1e-3, 5e-3), rng.uniform(3.0, 30.0)
        f = f * (1.0 + amp * np.sin(2 * np.pi * t / prot + rng.uniform(0, 2 * np.pi)))
        flux[k] = f + rng.uniform(2e-4, 8e-4) * rng.standard_normal(t.size)
    out = {"time": t, "flux": flux}
    if return_truth:
        out.update(zip(("period", "epoch", "duration", "depth"), truth, strict=True))
    return out


def _small_lc(
    seed: int,
    n: int = 480,
    *,
    cadence: float = 1.0 / 48.0,
    planet: tuple[float, float, float, float] = (2.1, 0.5, 0.12, 4e-3),
) -> dict[str, np.ndarray]:
    from components.detection._reference import make_light_curve

    t, f = make_light_curve(
        baseline=n * cadence,
        cadence=cadence,
        planets=(planet,),
        noise=3e-4,
        trend=1e-3,
        seed=seed,
    )
    return {"time": t, "flux": f}


class TransitSearch(Component):
    """Module twin of :func:`transit_search` (BLS with built-in detrending)."""

    name = "detection.transits"
    function = staticmethod(transit_search)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        periods: list[float] | None = None,
        durations: list[float] | None = None,
        min_period: float | None = None,
        max_period: float | None = None,
        oversample: float = 3.0,
        period_cap: float | None = None,
        bin_oversample: int = 3,
        detrend: str | None = "biweight",
        window: float | None = None,
        objective: str = "snr",
        method: str = "auto",
    ) -> None:
        check_in(objective, "objective", ("snr", "likelihood"))
        check_in(method, "method", ("auto", "exact"))
        if detrend is not None:
            check_in(detrend, "detrend", ("biweight", "median"))
        super().__init__(
            periods=periods,
            durations=durations,
            min_period=min_period,
            max_period=max_period,
            oversample=float(oversample),
            period_cap=None if period_cap is None else float(period_cap),
            bin_oversample=int(bin_oversample),
            detrend=detrend,
            window=window,
            objective=objective,
            method=method,
        )

    def forward(self, time: Tensor, flux: Tensor) -> TransitCandidate:
        return transit_search(time, flux, **self.config())

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            ({"time": np.arange(5.0), "flux": np.ones(6)}, ValueError, "same number of samples"),
            (
                {"time": np.arange(50.0), "flux": np.full(50, np.nan)},
                ValueError,
                "flux: expected finite",
            ),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        outputs = {
            "period": TensorSchema(axes="", units="d"),
            "epoch": TensorSchema(axes="", units="d"),
            "depth": TensorSchema(axes=""),
            "duration": TensorSchema(axes="", units="d"),
            "snr": TensorSchema(axes=""),
            "power": TensorSchema(axes="p", description="BLS periodogram"),
        }
        common: dict[str, Any] = dict(
            family="detection",
            task="transit-search",
            modality="light-curve",
            scale="cosmic",
            differentiable=False,
            authors=("learndock developers",),
        )
        # survey grids: log-uniform periods with the documented baseline-aware spacing
        # (period_grid, 3 grid steps per shortest duration of last-transit drift), capped
        # at half the baseline (>= 2 transits)
        kepler = {
            "min_period": 0.5,
            "period_cap": KEPLER_MAX_PERIOD,
            "durations": list(KEPLER_DURATIONS),
            "oversample": 3.0,
        }
        tess = {
            "min_period": 0.5,
            "period_cap": TESS_MAX_PERIOD,
            "durations": list(TESS_DURATIONS),
            "oversample": 3.0,
            "bin_oversample": 4,
        }
        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.transits.kepler",
                    inputs={
                        "time": TensorSchema(axes="t", units="d"),
                        "flux": TensorSchema(axes="t"),
                    },
                    outputs=outputs,
                    description=(
                        "BLS transit search for Kepler long/short-cadence light curves: "
                        f"periods {kepler['min_period']} d to min({KEPLER_MAX_PERIOD:g} d, "
                        "baseline/2), log-uniform with a baseline-aware spacing (last "
                        "transit drifts <= 1/3 shortest duration per step), "
                        f"{len(KEPLER_DURATIONS)} durations "
                        f"{_hours(KEPLER_DURATIONS)} h (each up to 1/4 of the period), "
                        "biweight detrending (window 3x the longest duration), "
                        "odd/even and secondary-eclipse checks"
                    ),
                    tags=("kepler", "bls", "exoplanet", "transit"),
                    **common,
                ),
                params=kepler,
                reference_data=lambda seed: survey_light_curves(seed, survey="kepler"),
                # 4 days at 30 min (the full survey grid: periods 0.5-2 d, 9 durations)
                example=lambda: _small_lc(1, 192, planet=(1.3, 0.4, 0.1, 4e-3)),
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.transits.tess",
                    inputs={
                        "time": TensorSchema(axes="t", units="d"),
                        "flux": TensorSchema(axes="t"),
                    },
                    outputs=outputs,
                    description=(
                        "BLS transit search for TESS 2-min single-sector light curves: "
                        f"periods {tess['min_period']} d to min({TESS_MAX_PERIOD:g} d, "
                        "baseline/2), log-uniform with a baseline-aware spacing, "
                        f"{len(TESS_DURATIONS)} durations {_hours(TESS_DURATIONS)} h "
                        "(each up to 1/4 of the period), finer phase bins (4 per shortest "
                        "duration), biweight detrending, vetting statistics"
                    ),
                    tags=("tess", "bls", "exoplanet", "transit"),
                    **common,
                ),
                params=tess,
                reference_data=lambda seed: survey_light_curves(seed, survey="tess"),
                # 3 days at 2 min (the full survey grid: periods 0.5-1.5 d, 7 durations)
                example=lambda: _small_lc(
                    2, 2160, cadence=2.0 / 1440.0, planet=(1.1, 0.3, 0.08, 4e-3)
                ),
            ),
        ]
