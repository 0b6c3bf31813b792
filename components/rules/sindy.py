"""Sparse identification of nonlinear dynamics (SINDy) in torch.

``x'(t) = Xi^T theta(x(t))``: the time derivative of each state variable is a sparse
combination of candidate library terms.  This module gives

* candidate libraries (:class:`Library`): polynomials, Fourier terms, custom sympy terms;
* derivatives by Savitzky-Golay smoothed finite differences (:func:`differentiate`), or
  the weak (integral) form against compactly supported test functions for noisy data;
* sequentially thresholded least squares (STLSQ) with the threshold chosen per equation
  along the regularisation path by AIC/BIC or K-fold cross-validation;
* bagging (ensemble SINDy) with inclusion probabilities;
* several trajectories at once, every step batched as tensor algebra (GPU when present).

The result holds one :class:`~components.rules.expression.Expression` per state variable.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from components._validation import (
    as_float_tensor,
    check_finite,
    check_in,
    check_nonempty,
    check_positive,
)
from components.base import Component, Declaration
from components.rules.expression import Expression, _compile, parse_expression
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "SINDy",
    "Library",
    "SINDyResult",
    "differentiate",
    "fit_sindy",
    "sparse_regression",
    "stlsq",
    "weak_form",
]


# --------------------------------------------------------------------------------------
# library
# --------------------------------------------------------------------------------------
class Library:
    """Candidate terms ``theta(x)`` as sympy expressions, evaluated in one torch pass.

    Parameters
    ----------
    names : sequence of str
        State variable names.
    degree : int
        Maximal total degree of the polynomial terms (0 = constant only).
    trig : int
        Harmonics ``k = 1..trig`` of ``sin(k x_i)`` and ``cos(k x_i)``.
    custom : sequence of str
        Extra terms in sympy syntax over ``names`` (e.g. ``"x/(1 + x)"``).
    include_bias : bool
        Include the constant term ``1``.

    Examples
    --------
    >>> Library(["x", "y"], degree=2).terms
    ['1', 'x', 'y', 'x**2', 'x*y', 'y**2']
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        degree: int = 2,
        trig: int = 0,
        custom: Sequence[str] = (),
        include_bias: bool = True,
    ) -> None:
        self.names = [str(n) for n in names]
        if int(degree) < 0 or int(trig) < 0:
            raise ValueError(
                f"degree, trig: expected non-negative integers, got degree={degree!r}, trig={trig!r}"
            )
        syms = [sp.Symbol(n, real=True) for n in self.names]
        exprs: list[sp.Expr] = [sp.Integer(1)] if include_bias else []
        for d in range(1, int(degree) + 1):
            for combo in itertools.combinations_with_replacement(syms, d):
                exprs.append(sp.Mul(*combo))
        for k in range(1, int(trig) + 1):
            for s in syms:
                exprs += [sp.sin(k * s), sp.cos(k * s)]
        for c in custom:
            exprs.append(parse_expression(str(c), self.names))
        seen: list[sp.Expr] = []
        for e in exprs:
            if e not in seen:
                seen.append(e)
        if not seen:
            raise ValueError(
                "library: no candidate terms (degree=0, trig=0, no custom terms, no bias)"
            )
        self.exprs = seen
        self._terms = [str(e) for e in seen]
        idx = {n: i for i, n in enumerate(self.names)}
        self._fns = [_compile(e, idx, {}) for e in seen]

    @property
    def terms(self) -> list[str]:
        return list(self._terms)

    def __len__(self) -> int:
        return len(self.exprs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate on ``x`` of shape ``(..., m)``; returns ``(..., n_terms)``."""
        cols = []
        for f in self._fns:
            v = f(x, x.new_zeros(0))
            cols.append(v if isinstance(v, torch.Tensor) else x.new_full(x.shape[:-1], float(v)))
        return torch.stack(cols, dim=-1)


# --------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------
def _savgol_matrix(window: int, order: int) -> np.ndarray:
    """Rows ``D[s]``: first derivative at offset ``s - h`` of the LS polynomial over the window."""
    h = window // 2
    j = np.arange(-h, h + 1, dtype=np.float64)
    a = j[:, None] ** np.arange(order + 1)[None, :]
    pinv = np.linalg.pinv(a)  # (order+1, w)
    s = j
    dpoly = np.zeros((window, order + 1))
    for k in range(1, order + 1):
        dpoly[:, k] = k * s ** (k - 1)
    return dpoly @ pinv  # (w offsets, w samples)


def differentiate(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "savgol",
    window: int | None = None,
    order: int = 3,
) -> torch.Tensor:
    """Time derivative of ``x`` along axis ``-2`` (``(..., time, variable)``).

    Parameters
    ----------
    x : Tensor, shape (..., n, m)
    t : Tensor, shape (n,)
        Sample times, strictly increasing.
    method : {"savgol", "finite_difference"}
        Savitzky-Golay: local least-squares polynomial of degree ``order`` over
        ``window`` samples, differentiated at each sample (edges use the first/last
        full window).  Needs a uniform grid; a non-uniform grid falls back to second
        order central differences.
    window : int, optional
        Odd window length; default 9 (or ``n`` if shorter).  Widen it for noisy data,
        or better use the weak form (:func:`weak_form`).

    Returns
    -------
    Tensor, shape (..., n, m)

    Examples
    --------
    >>> t = torch.linspace(0, 1, 101, dtype=torch.float64)
    >>> dx = differentiate((t**2)[:, None], t)
    >>> bool(torch.allclose(dx[:, 0], 2 * t))
    True
    """
    check_in(method, "method", ("savgol", "finite_difference"))
    n = x.shape[-2]
    dt = torch.diff(t)
    uniform = bool(torch.allclose(dt, dt.mean(), rtol=1e-6, atol=0)) if n > 1 else True
    if method == "finite_difference" or not uniform or n < 5:
        if n < 3:
            raise ValueError(f"x: expected at least 3 samples along time to differentiate, got {n}")
        return torch.gradient(x, spacing=(t.to(x.dtype),), dim=-2, edge_order=2)[0]
    if window is None:
        window = min(n - (1 - n % 2), max(order + 2 + (order % 2 == 0), 9))
    window = int(window)
    if window % 2 == 0:
        window += 1
    if window <= order or window > n:
        raise ValueError(
            f"window: expected an odd length in ({order}, {n}] for order={order}, got {window}"
        )
    h = window // 2
    dmat = torch.as_tensor(
        _savgol_matrix(window, order), dtype=x.dtype, device=x.device
    ) / dt.mean().to(x.dtype)
    lead = x.shape[:-2]
    m = x.shape[-1]
    xs = x.reshape(-1, n, m).transpose(1, 2).reshape(-1, 1, n)  # (B*m, 1, n)
    mid = torch.nn.functional.conv1d(
        xs, dmat[h].reshape(1, 1, -1)
    )  # correlation = centred SG derivative
    head = xs[..., :window] @ dmat[:h].T  # (B*m, 1, h)
    tail = xs[..., n - window :] @ dmat[h + 1 :].T
    out = torch.cat([head, mid, tail], dim=-1)
    return out.reshape(-1, m, n).transpose(1, 2).reshape(*lead, n, m)


def weak_form(
    t: torch.Tensor,
    x: torch.Tensor,
    theta: torch.Tensor,
    *,
    n_test: int | None = None,
    width: int | None = None,
    power: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak (integral) SINDy system: ``-int phi_k' x dt = int phi_k theta(x) dt Xi``.

    Test functions ``phi_k(t) = ((t - a_k)(b_k - t))^p`` on sub-intervals
    ``[a_k, b_k]`` of ``width`` samples vanish at their ends, so integration by parts
    moves the derivative from the noisy data onto ``phi``.  Integrals by the
    trapezoidal rule on the sample grid.

    Parameters
    ----------
    t : Tensor (n,)
    x : Tensor (r, n, m)
        ``r`` trajectories on the same grid.
    theta : Tensor (r, n, p)
        Library evaluated on ``x``.

    Returns
    -------
    G : Tensor (r * K, p)
    b : Tensor (r * K, m)
    """
    n = t.shape[0]
    width = int(width) if width is not None else max(2 * power + 3, min(n // 4, 61))
    if width > n or width < 2 * power + 1:
        raise ValueError(f"width: expected {2 * power + 1} <= width <= {n} samples, got {width}")
    if n_test is None:
        n_test = max(1, min(4 * (n // width) + 1, 200))
    starts = torch.linspace(0, n - width, int(n_test), dtype=torch.float64).round().long().unique()
    idx = starts[:, None] + torch.arange(width)[None, :]  # (K, w)
    tt = t.to(torch.float64)
    a = tt[starts]
    bnd = tt[starts + width - 1]
    tk = tt[idx]
    span = (bnd - a)[:, None] / 2
    u = (tk - a[:, None]) * (bnd[:, None] - tk) / span**2  # in [0, 1]
    phi = u.clamp_min(0) ** power
    dphi = power * u.clamp_min(0) ** (power - 1) * (a[:, None] + bnd[:, None] - 2 * tk) / span**2
    dtk = torch.diff(tk, dim=1)
    w = torch.zeros_like(tk)
    w[:, :-1] += dtk / 2
    w[:, 1:] += dtk / 2
    vt = torch.zeros(len(starts), n, dtype=torch.float64)
    vd = torch.zeros(len(starts), n, dtype=torch.float64)
    vt.scatter_(1, idx, phi * w)
    vd.scatter_(1, idx, dphi * w)
    norm = vt.sum(1, keepdim=True)
    vt, vd = (vt / norm).to(x.dtype).to(x.device), (vd / norm).to(x.dtype).to(x.device)
    g = torch.einsum("kn,rnp->rkp", vt, theta).reshape(-1, theta.shape[-1])
    b = -torch.einsum("kn,rnm->rkm", vd, x).reshape(-1, x.shape[-1])
    return g, b


# --------------------------------------------------------------------------------------
# STLSQ
# --------------------------------------------------------------------------------------
def _masked_solve(
    ata: torch.Tensor, atb: torch.Tensor, mask: torch.Tensor, ridge: float
) -> torch.Tensor:
    """Ridge LS restricted to ``mask`` for every equation.  ata (..., p, p), atb (..., p, m),
    mask (..., m, p) -> xi (..., m, p)."""
    mf = mask.to(ata.dtype)
    mat = ata.unsqueeze(-3) * (mf.unsqueeze(-1) * mf.unsqueeze(-2))
    mat.diagonal(dim1=-2, dim2=-1).add_(ridge + 1.0 - mf)
    rhs = atb.transpose(-1, -2) * mf
    return torch.linalg.solve(mat, rhs.unsqueeze(-1)).squeeze(-1) * mf


def stlsq(
    ata: torch.Tensor,
    atb: torch.Tensor,
    threshold: torch.Tensor,
    *,
    ridge: float = 1e-10,
    max_iter: int = 25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequentially thresholded least squares on the normal equations, batched.

    Parameters
    ----------
    ata : Tensor (..., p, p)
        ``A^T A`` of the (column-normalised) library matrix.
    atb : Tensor (..., p, m)
        ``A^T B`` for the ``m`` targets.
    threshold : Tensor broadcastable to (..., m)
        Per-equation threshold on the coefficient magnitude.

    Returns
    -------
    xi : Tensor (..., m, p)
    mask : Tensor (..., m, p) of bool

    Notes
    -----
    Brunton, Proctor & Kutz (2016): alternate ``xi = argmin ||A xi - b||^2 + ridge ||xi||^2``
    over the active set and removal of ``|xi_j| < threshold``, until the active set is
    stable.
    """
    m, p = atb.shape[-1], atb.shape[-2]
    shape = (*torch.broadcast_shapes(ata.shape[:-2], atb.shape[:-2], threshold.shape[:-1]), m, p)
    mask = torch.ones(shape, dtype=torch.bool, device=ata.device)
    thr = threshold.unsqueeze(-1)
    for _ in range(max_iter):
        xi = _masked_solve(ata, atb, mask, ridge)
        new = mask & (xi.abs() >= thr)
        if torch.equal(new, mask):
            break
        mask = new
    xi = _masked_solve(ata, atb, mask, ridge)
    return xi, mask


def _rss(ata: torch.Tensor, atb: torch.Tensor, btb: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """Residual sum of squares per equation from the normal equations: (..., m)."""
    quad = torch.einsum("...mp,...pq,...mq->...m", xi, ata, xi)
    lin = torch.einsum("...mp,...pm->...m", xi, atb)
    return (btb - 2 * lin + quad).clamp_min(0)


def sparse_regression(
    an: torch.Tensor,
    b: torch.Tensor,
    *,
    threshold: float | None = None,
    selection: str = "bic",
    folds: int = 5,
    ridge: float = 1e-10,
    max_iter: int = 25,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """STLSQ with the threshold chosen per target along the regularisation path.

    Parameters
    ----------
    an : Tensor (R, p)
        Library matrix (columns scaled to unit norm).
    b : Tensor (R, m)
        Targets.
    threshold : float, optional
        Fixed threshold; otherwise chosen by ``selection`` ("bic", "aic" or "cv") among
        the geometric midpoints of the sorted least-squares coefficient magnitudes.

    Returns
    -------
    xi : Tensor (m, p)
    mask : Tensor (m, p) bool
    threshold : Tensor (m,)
    score : Tensor (m,)
        Criterion of the selected model (RSS for a fixed threshold).
    """
    rows, p = an.shape
    m = b.shape[1]
    ata, atb, btb = an.T @ an, an.T @ b, (b * b).sum(0)
    if threshold is not None:
        thr = an.new_full((m,), float(threshold))
        xi, mask = stlsq(ata, atb, thr, ridge=ridge, max_iter=max_iter)
        return xi, mask, thr, _rss(ata, atb, btb, xi)
    xi_ls = _masked_solve(ata, atb, torch.ones(m, p, dtype=torch.bool, device=an.device), ridge)
    mags = xi_ls.abs().sort(dim=-1).values  # (m, p)
    cands = torch.cat(
        [mags.new_zeros(m, 1), (mags[:, :-1] * mags[:, 1:]).sqrt()], dim=1
    ).T.contiguous()  # (p, m)
    if selection == "cv":
        gen = torch.Generator().manual_seed(seed)
        nf = max(2, int(folds))
        fold = (torch.randperm(rows, generator=gen) % nf).to(an.device)
        err = an.new_zeros(p, m)
        for f in range(nf):
            tr, te = fold != f, fold == f
            xi_f, _ = stlsq(
                an[tr].T @ an[tr], an[tr].T @ b[tr], cands, ridge=ridge, max_iter=max_iter
            )
            res = b[te].unsqueeze(0) - torch.einsum("rp,kmp->krm", an[te], xi_f)
            err += (res**2).sum(1)
        # floor (numerically exact fits tie) and a 5 % tolerance: among models whose
        # validation error is within 5 % of the best, the sparsest wins (larger threshold)
        crit = (err / rows).clamp_min(1e-9 * btb / rows + torch.finfo(an.dtype).tiny)
        ok = crit <= crit.min(0, keepdim=True).values * 1.05
        idx = torch.arange(p, device=an.device)[:, None].expand(p, m)
        best = torch.where(ok, idx, torch.full_like(idx, -1)).amax(0)
        thr = cands.gather(0, best[None]).squeeze(0)
        score = crit.gather(0, best[None]).squeeze(0)
        xi, mask = stlsq(ata, atb, thr, ridge=ridge, max_iter=max_iter)
        return xi, mask, thr, score
    else:
        xi_c, mask_c = stlsq(ata, atb, cands, ridge=ridge, max_iter=max_iter)  # (p, m, p)
        rss = _rss(ata, atb, btb, xi_c).clamp_min(1e-9 * btb + torch.finfo(an.dtype).tiny)
        k = mask_c.sum(-1).to(an.dtype)
        pen = math.log(rows) if selection == "bic" else 2.0
        crit = rows * torch.log(rss / rows) + pen * k
    best = crit.argmin(0)  # (m,)
    thr = cands.gather(0, best[None]).squeeze(0)
    score = crit.gather(0, best[None]).squeeze(0)
    eq = torch.arange(m, device=an.device)
    return xi_c[best, eq], mask_c[best, eq], thr, score


# --------------------------------------------------------------------------------------
# result + driver
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class SINDyResult:
    """Output of :func:`fit_sindy`.

    Attributes
    ----------
    coefficients : Tensor (m, p)
        ``x_i' = sum_j coefficients[i, j] * terms[j]``.
    inclusion : Tensor (m, p)
        Fraction of bagged models that kept each term (1/0 without ensembling).
    threshold : Tensor (m,)
        Selected threshold per equation (in units of the column-normalised problem).
    score : Tensor (m,)
        Information criterion / CV error of the selected model per equation.
    terms : tuple of str
        Library terms, in column order.
    expressions : list of Expression
        One law per state variable (only the kept terms).
    """

    coefficients: torch.Tensor
    inclusion: torch.Tensor
    threshold: torch.Tensor
    score: torch.Tensor
    terms: tuple[str, ...]
    expressions: list[Expression]

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.expressions)


def _as_trajectories(t: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xt = as_float_tensor(x, "X")
    check_nonempty(xt, "X")
    if xt.ndim == 1:
        xt = xt[:, None]
    if xt.ndim == 2:
        xt = xt[None]
    if xt.ndim != 3:
        raise ValueError(
            f"X: expected shape (time, variable) or (trajectory, time, variable), got {tuple(xt.shape)}"
        )
    tt = as_float_tensor(t, "t", dtype=torch.float64)
    check_nonempty(tt, "t")
    if tt.ndim != 1:
        raise ValueError(f"t: expected a 1-D array of sample times, got shape {tuple(tt.shape)}")
    if tt.shape[0] != xt.shape[1]:
        raise ValueError(
            f"t and X: expected the same number of time samples, got {tt.shape[0]} and {xt.shape[1]}"
        )
    check_finite(tt, "t")
    if tt.shape[0] > 1 and not bool((torch.diff(tt) > 0).all()):
        raise ValueError("t: expected strictly increasing sample times")
    return tt.to(xt.device), xt


def fit_sindy(
    t: Any,
    X: Any,
    *,
    names: Sequence[str],
    library: Library | None = None,
    degree: int = 2,
    trig: int = 0,
    custom: Sequence[str] = (),
    include_bias: bool = True,
    derivatives: Any = None,
    method: str = "savgol",
    window: int | None = None,
    weak: bool = False,
    n_test: int | None = None,
    selection: str = "bic",
    threshold: float | None = None,
    folds: int = 5,
    ensemble: int = 0,
    inclusion: float = 0.5,
    ridge: float = 1e-10,
    max_iter: int = 25,
    seed: int = 0,
) -> SINDyResult:
    """Discover ``x' = f(x)`` as one sparse law per state variable.

    Parameters
    ----------
    t : array_like (n,)
        Sample times (strictly increasing; uniform for ``method="savgol"``).
    X : array_like (n, m) or (r, n, m)
        State trajectories; ``r`` trajectories share the time grid ``t``.
    names : sequence of str
        State variable names (``m`` of them).
    library : Library, optional
        Candidate terms; default ``Library(names, degree=degree, trig=trig,
        custom=custom, include_bias=include_bias)``.
    derivatives : array_like, optional
        Measured/known ``X'`` (same shape as ``X``); then no differentiation is done.
    method : {"savgol", "finite_difference"}
        Derivative estimate (ignored with ``weak=True`` or given derivatives).
    weak : bool
        Use the weak (integral) form; robust to measurement noise.
    n_test : int, optional
        Number of test functions per trajectory for the weak form.
    selection : {"bic", "aic", "cv"}
        How the threshold is chosen per equation along the STLSQ path, unless
        ``threshold`` is given.
    threshold : float, optional
        Fixed threshold on the coefficients of the column-normalised problem.
    folds : int
        Folds for ``selection="cv"``.
    ensemble : int
        Number of bootstrap models (0 = no bagging).  The final support keeps terms
        with inclusion probability >= ``inclusion``; coefficients are refit on all data.
    ridge : float
        Ridge term of each least-squares solve (normalised problem).
    seed : int
        Seed of the bootstrap and CV splits.

    Returns
    -------
    SINDyResult

    Computations run in float64 whatever the input dtype; the result's tensors have
    the input's dtype.

    Raises
    ------
    ValueError
        NaN/inf in the data, mismatched lengths, a constant state variable, fewer
        samples (or weak-form rows) than library terms, or bad options.

    Notes
    -----
    Each equation ``i`` solves ``min ||A xi_i - b_i||^2`` with ``A`` the library
    matrix (rows = samples, or test functions in the weak form) scaled to unit
    column norms, and a hard threshold ``|xi_ij| >= tau_i``.  The candidate thresholds
    are the geometric midpoints between consecutive sorted least-squares coefficient
    magnitudes (robust inside a gap that spans orders of magnitude);
    the chosen ``tau_i`` minimises ``BIC = R log(RSS/R) + k log R`` (or AIC, or the
    K-fold validation error).

    References
    ----------
    Brunton, Proctor & Kutz, PNAS 113 (2016) 3932.  Messenger & Bortz, J. Comput. Phys.
    443 (2021) 110525 (weak SINDy).  Fasel et al., Proc. R. Soc. A 478 (2022) 20210904
    (ensemble SINDy).

    Examples
    --------
    >>> t = torch.linspace(0, 2, 201, dtype=torch.float64)
    >>> X = torch.exp(-0.5 * t)[:, None]
    >>> law = fit_sindy(t, X, names=["x"], degree=1).expressions[0]
    >>> law.terms, round(law.constants["c0"], 4)
    (('x',), -0.5)
    """
    check_in(selection, "selection", ("bic", "aic", "cv"))
    check_positive(ridge, "ridge", strict=False)
    tt, xt = _as_trajectories(t, X)
    check_finite(xt, "X")
    out_dtype = xt.dtype
    xt = xt.to(torch.float64)  # the normal equations need double precision
    r, n, m = xt.shape
    names = [str(v) for v in names]
    if len(names) != m:
        raise ValueError(
            f"names: expected {m} names (one per state variable), got {len(names)}: {names}"
        )
    std = xt.reshape(-1, m).std(0) if r * n > 1 else xt.new_zeros(m)
    for i, s in enumerate(std.tolist()):
        if not s > 0:
            raise ValueError(
                f"X: state variable {names[i]!r} is constant; SINDy cannot identify its dynamics (drop it or add variation)"
            )
    lib = (
        library
        if library is not None
        else Library(names, degree=degree, trig=trig, custom=custom, include_bias=include_bias)
    )
    if lib.names != names:
        raise ValueError(f"library: built for variables {lib.names}, but names are {names}")
    theta = lib(xt)  # (r, n, p)
    p = theta.shape[-1]
    if r * n < p:
        raise ValueError(
            f"X: {r * n} samples are fewer than the {p} library terms; give more data or a smaller library"
        )
    if derivatives is not None:
        dx = as_float_tensor(derivatives, "derivatives").to(xt.dtype).to(xt.device)
        dx = dx.reshape(xt.shape) if dx.numel() == xt.numel() else dx
        if dx.shape != xt.shape:
            raise ValueError(
                f"derivatives: expected the shape of X {tuple(xt.shape)}, got {tuple(dx.shape)}"
            )
        check_finite(dx, "derivatives")
        a, b = theta.reshape(-1, p), dx.reshape(-1, m)
    elif weak:
        a, b = weak_form(tt, xt, theta, n_test=n_test)
    else:
        a, b = (
            theta.reshape(-1, p),
            differentiate(xt, tt, method=method, window=window).reshape(-1, m),
        )
    rows = a.shape[0]
    if rows < p:
        raise ValueError(
            f"X: {rows} {'weak-form rows' if weak and derivatives is None else 'samples'} are fewer than the {p} library terms; give more data or a smaller library"
        )
    if not bool(torch.isfinite(a).all()):
        raise ValueError(
            "library: a candidate term is not finite on the data (e.g. division by zero); remove it"
        )
    scale = a.norm(dim=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    an = a / scale
    if threshold is not None:
        check_positive(threshold, "threshold", strict=False)
    xi, mask, thr, score = sparse_regression(
        an,
        b,
        threshold=threshold,
        selection=selection,
        folds=folds,
        ridge=ridge,
        max_iter=max_iter,
        seed=seed,
    )
    ata, atb = an.T @ an, an.T @ b
    incl = mask.to(a.dtype)
    if ensemble:
        gen = torch.Generator().manual_seed(seed + 1)
        # subsampling without replacement (each model sees a random 60 % of the rows)
        keys = torch.rand(int(ensemble), rows, generator=gen)
        counts = (keys.argsort(1).argsort(1) < max(p, int(0.6 * rows))).to(a.dtype).to(a.device)
        ata_b = torch.einsum("br,rp,rq->bpq", counts, an, an)
        atb_b = torch.einsum("br,rp,rm->bpm", counts, an, b)
        # bags use a threshold inside the gap between the selected threshold and the
        # smallest kept coefficient (geometric middle), so subsampling noise does not
        # let pruned terms back in
        kept_min = torch.where(mask, xi.abs(), torch.full_like(xi, float("inf"))).amin(-1)
        thr_b = torch.where(torch.isfinite(kept_min), (thr * kept_min).sqrt(), thr)
        xi_b, mask_b = stlsq(ata_b, atb_b, thr_b, ridge=ridge, max_iter=max_iter)
        incl = mask_b.to(a.dtype).mean(0)
        # bragging: the median bagged coefficient must itself pass the threshold
        mask = (incl >= inclusion) & (xi_b.median(0).values.abs() >= thr_b[:, None])
        xi = _masked_solve(ata, atb, mask, ridge)
    # final debiased refit on the support without ridge (falls back to the ridge solution
    # when the kept columns are exactly collinear)
    try:
        xi0 = _masked_solve(ata, atb, mask, 0.0)
        if bool(torch.isfinite(xi0).all()):
            xi = xi0
    except RuntimeError:  # torch.linalg.LinAlgError: singular support
        pass
    coef = xi / scale
    exprs = _expressions(coef, mask, lib, names)
    return SINDyResult(
        coefficients=coef.to(out_dtype),
        inclusion=incl.to(out_dtype),
        threshold=thr.to(out_dtype),
        score=score.to(out_dtype),
        terms=tuple(lib.terms),
        expressions=exprs,
    )


def _expressions(
    coef: torch.Tensor, mask: torch.Tensor, lib: Library, names: Sequence[str]
) -> list[Expression]:
    out = []
    c = coef.detach().cpu().tolist()
    mk = mask.detach().cpu().tolist()
    for i, name in enumerate(names):
        template = sp.Integer(0)
        consts: dict[str, float] = {}
        kept = []
        for j, (term, tname) in enumerate(zip(lib.exprs, lib.terms)):
            if mk[i][j]:
                cname = f"c{len(consts)}"
                while cname in names:
                    cname = "_" + cname
                consts[cname] = c[i][j]
                template = template + sp.Symbol(cname, real=True) * term
                kept.append(tname)
        out.append(Expression(template, names, consts, output=f"d{name}/dt", terms=kept))
    return out


# --------------------------------------------------------------------------------------
# component
# --------------------------------------------------------------------------------------
def sindy(
    t: torch.Tensor,
    x: torch.Tensor,
    *,
    names: Sequence[str],
    degree: int = 2,
    trig: int = 0,
    custom: Sequence[str] = (),
    include_bias: bool = True,
    weak: bool = False,
    method: str = "savgol",
    window: int | None = None,
    selection: str = "bic",
    threshold: float | None = None,
    ensemble: int = 0,
    seed: int = 0,
) -> SINDyResult:
    """Tensor entry point of the :class:`SINDy` component (see :func:`fit_sindy`)."""
    return fit_sindy(
        t,
        x,
        names=names,
        degree=degree,
        trig=trig,
        custom=custom,
        include_bias=include_bias,
        weak=weak,
        method=method,
        window=window,
        selection=selection,
        threshold=threshold,
        ensemble=ensemble,
        seed=seed,
    )


class SINDy(Component):
    """SINDy as a pipeline stage: ``(t, x) -> SINDyResult`` (coefficients + laws).

    Parameters
    ----------
    names : list of str
        State variable names.
    degree, trig, custom, include_bias, weak, method, window, selection, threshold, ensemble, seed
        See :func:`fit_sindy`.

    Raises
    ------
    ValueError
        If ``t`` and ``x`` disagree in length, hold NaN/inf, a state variable is
        constant, or there are fewer samples than library terms.

    Examples
    --------
    >>> t = torch.linspace(0, 2, 201, dtype=torch.float64)
    >>> res = SINDy(names=["x"], degree=1)(t, torch.exp(-t)[:, None])
    >>> res.terms
    ('1', 'x')
    """

    name = "rules.sindy"
    function = staticmethod(sindy)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        names: Sequence[str],
        degree: int = 2,
        trig: int = 0,
        custom: Sequence[str] = (),
        include_bias: bool = True,
        weak: bool = False,
        method: str = "savgol",
        window: int | None = None,
        selection: str = "bic",
        threshold: float | None = None,
        ensemble: int = 0,
        seed: int = 0,
    ) -> None:
        check_in(selection, "selection", ("bic", "aic", "cv"))
        check_in(method, "method", ("savgol", "finite_difference"))
        super().__init__(
            names=list(names),
            degree=int(degree),
            trig=int(trig),
            custom=list(custom),
            include_bias=bool(include_bias),
            weak=bool(weak),
            method=method,
            window=window,
            selection=selection,
            threshold=threshold,
            ensemble=int(ensemble),
            seed=int(seed),
        )

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> SINDyResult:
        return sindy(t, x, **self._config)

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        t = np.linspace(0, 1, 50)
        x = np.stack([np.sin(t), np.cos(t)], 1)
        xn = x.copy()
        xn[3, 0] = np.nan
        return [
            ({"t": t[:40], "x": x}, ValueError, "same number of time samples"),
            ({"t": t, "x": xn}, ValueError, "finite"),
            ({"t": t[:4], "x": x[:4]}, ValueError, "fewer than"),
            ({"t": t, "x": np.stack([np.sin(t), np.ones_like(t)], 1)}, ValueError, "constant"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.rules import _reference

        def limb_example() -> dict[str, np.ndarray]:
            t, ang = _reference.limb_angle(0, n=300)
            return {"t": t, "x": ang.astype(np.float32)}

        def cell_example() -> dict[str, np.ndarray]:
            tab = _reference.cell_bead_track(0, n=200)
            return {"t": tab[:, 0], "x": tab[:, 1:].astype(np.float32)}

        common: dict[str, Any] = {"differentiable": False, "authors": ("learndock",)}
        return [
            Declaration(
                spec=SemanticSpec(
                    name="rules.sindy.biomechanics",
                    family="rules",
                    task="equation-discovery",
                    modality="biomechanics",
                    scale="macro",
                    inputs={
                        "t": TensorSchema(axes="t", dtype="float64", units="s"),
                        "x": TensorSchema(
                            axes="tc",
                            dtype="any",
                            description="joint angle [rad] and angular velocity [rad/s]",
                        ),
                    },
                    outputs={
                        "coefficients": TensorSchema(
                            axes="cn",
                            dtype="any",
                            description="SINDy coefficients per state and library term",
                        )
                    },
                    description="Joint-angle dynamics of a tracked limb (damped pendulum-like swing) by SINDy with a polynomial + Fourier library, threshold by BIC.",
                    tags=("sindy", "joint-angle", "pendulum", "motion-law", "ode"),
                    **common,
                ),
                params={"names": ["theta", "omega"], "degree": 1, "trig": 1, "include_bias": False},
                reference_data=lambda seed: _reference.limb_markers(seed),
                example=limb_example,
                rtol=1e-3,
                atol=1e-4,
            ),
            Declaration(
                spec=SemanticSpec(
                    name="rules.sindy.cell-mechanics",
                    family="rules",
                    task="equation-discovery",
                    modality="tabular",
                    scale="micro",
                    inputs={
                        "t": TensorSchema(axes="t", dtype="float64", units="s"),
                        "x": TensorSchema(
                            axes="tc",
                            dtype="any",
                            units="um",
                            description="tracked bead position (y, x)",
                        ),
                    },
                    outputs={
                        "coefficients": TensorSchema(
                            axes="cn",
                            dtype="any",
                            description="SINDy coefficients per state and library term",
                        )
                    },
                    description="Restoring-force law of a bead in a cell (overdamped, strain-stiffening cortex) from a tracked spot, by weak-form SINDy with a cubic library.",
                    tags=("sindy", "cell-mechanics", "microrheology", "tracking", "weak-form"),
                    **common,
                ),
                params={"names": ["y", "x"], "degree": 3, "include_bias": False, "weak": True},
                reference_data=lambda seed: _reference.cell_bead_track(seed),
                example=cell_example,
                rtol=1e-3,
                atol=1e-4,
            ),
        ]
