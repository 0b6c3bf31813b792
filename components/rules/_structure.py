"""Structure pre-search for symbolic regression (used by :func:`~components.rules.symbolic.discover`).

Two cheap, general analyses that run before (and alongside) the genetic search:

* :func:`power_separable` -- multiplicative separability of single variables, tested on
  the data: ``y = x_i^a g(x_{-i})`` holds when ``log|y|`` is additively separable in
  ``log x_i`` (an additive fit is as good as a fit with interaction terms).  The
  variables that factor out as powers (exponent snapped to a small rational; ``a = 0``
  drops an irrelevant variable) are removed and the search continues on the reduced
  problem ``y / prod x_i^a_i`` (AI Feynman's separability step, with a linear-model
  test in place of a neural surrogate).
* :func:`sparse_candidates` -- sparse linear and *rational* fits of invertible
  transforms ``g(y)`` (identity, ``1/y``, ``y^2``, ``1/y^2``, ``sqrt y``, ``log y``,
  ``exp y``, ``sin y``, ``cos y``) over Laurent monomials ``prod x_i^e_i`` (``|e_i| <= 2``) and,
  for ``log y``, ``log x_i``.  The rational fit solves ``g = P(x) + g Q(x)`` linearly
  (``g = P / (1 - Q)``), the implicit form of SINDy-PI.  Every fit is a sequentially
  thresholded least-squares path whose model is chosen by BIC.

Nothing here knows any particular law: the same transforms and libraries are tried on
every problem.

References
----------
Udrescu & Tegmark, Sci. Adv. 6 (2020) eaay2631 (AI Feynman).  Kaheman, Kutz & Brunton,
Proc. R. Soc. A 476 (2020) 20200279 (SINDy-PI).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import sympy as sp

__all__ = ["laurent_exponents", "power_separable", "sparse_candidates", "stlsq_path"]


def one_blas_thread() -> Any:
    """Context limiting BLAS to one thread for the many small least-squares fits
    (oversubscribed OpenBLAS threads make them 10-50x slower on a shared machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _single_threaded(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return f(*args, **kwargs)

    return wrapper


def _poly_features(Z: np.ndarray, degree: int) -> np.ndarray:
    """All monomials of total degree 1..degree of the columns of ``Z`` (no constant)."""
    cols = []
    d = Z.shape[1]
    for k in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(d), k):
            c = np.ones(Z.shape[0])
            for j in combo:
                c = c * Z[:, j]
            cols.append(c)
    return np.column_stack(cols) if cols else np.zeros((Z.shape[0], 0))


def _standardize(Z: np.ndarray) -> np.ndarray:
    s = Z.std(0)
    return (Z - Z.mean(0)) / np.where(s > 0, s, 1.0)


def _rss(A: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    coef, *_ = np.linalg.lstsq(A, b, rcond=None)
    r = b - A @ coef
    return float(r @ r), coef


@_single_threaded
def power_separable(
    X: np.ndarray, y: np.ndarray, *, ratio: float = 0.5, max_den: int = 3, atol: float = 0.02
) -> dict[int, Fraction]:
    """Variables that factor out of ``y`` as a power: ``y = x_i^a_i g(other variables)``.

    Parameters
    ----------
    X : ndarray (n, d)
    y : ndarray (n,)
    ratio : float
        The additive model of ``log|y|`` (``a log x_i + h(others)``) is accepted when its
        residual sum of squares is at most ``1 / ratio`` times that of the model with
        interaction terms ``log x_i * h'(others)`` (plus a floor at 1e-12 of the
        variance): interactions must not explain the residual.
    max_den, atol : int, float
        Exponents are snapped to fractions with denominator ``<= max_den`` within ``atol``.

    Returns
    -------
    dict
        ``{column: exponent}`` of the separable variables (exponent 0: irrelevant variable).

    Notes
    -----
    With ``l = log|y|`` and ``u = log|x_i|``: ``y = x_i^a g(x_{-i})`` iff
    ``l = a u + h(x_{-i})``.  ``h`` is modelled by a polynomial of degree 4/3/2 (for
    1-3 / 4-5 / more other variables) of the standardised other variables; the
    interaction model adds ``u^2, u^3`` and ``u`` times the linear and quadratic terms.
    For a separable law the interaction terms only fit the polynomial approximation
    error of ``h`` by chance (``x_i`` is sampled independently of the others), so the
    RSS ratio stays near ``1 - k/n``; otherwise it drops by orders of magnitude.
    """
    n, d = X.shape
    if d < 2 or n < 30:
        return {}
    if np.any(X == 0) or np.any(y == 0):
        return {}
    if not np.all(np.sign(X) == np.sign(X[0])):
        return {}  # a power of a variable that changes sign is not real for all exponents
    lx = np.log(np.abs(X))
    ly = np.log(np.abs(y)) if np.all(np.sign(y) == np.sign(y[0])) else None
    out: dict[int, Fraction] = {}
    for i in range(d):
        others = [j for j in range(d) if j != i]
        deg = 4 if len(others) <= 3 else 3 if len(others) <= 5 else 2
        Z = _standardize(X[:, others])
        H = _poly_features(Z, deg)
        H2 = _poly_features(Z, 2)
        if H.shape[1] + H2.shape[1] + 6 > n // 3:
            continue
        u = lx[:, i]
        us = (u - u.mean()) / (u.std() or 1.0)
        inter = np.column_stack([us**2, us**3, us[:, None] * H2, (us**2)[:, None] * Z])
        found = None
        conclusive = False
        if ly is not None:
            # log space: log|y| = a log|x_i| + h(others); the exponent is fitted
            base = np.column_stack([np.ones(n), u, H])
            rss_a, coef = _rss(base, ly)
            rss_f, _ = _rss(np.column_stack([base, inter]), ly)
            tss = float(np.sum((ly - ly.mean()) ** 2)) + 1e-300
            # the additive log model explains log|y| well: the test is conclusive, and
            # a rejection here is not overturned by the linear-space test below
            conclusive = rss_a <= 1e-3 * tss
            if conclusive and rss_a <= max(rss_f, 1e-12 * tss) / ratio:
                a = float(coef[1])
                fr = Fraction(a).limit_denominator(max_den)
                if abs(float(fr) - a) <= atol:
                    found = fr
        if found is None and not conclusive and deg >= 3:
            # linear space (y changes sign, or log|y| has spikes near zeros of y):
            # y / x_i^a = g(others) for a small exponent; only with a polynomial of
            # degree >= 3 for g (with degree 2 the approximation error of g dominates
            # both models and the test accepts anything)
            base = np.column_stack([np.ones(n), H])
            full = np.column_stack([base, us, inter])
            for ex in _EXPONENTS:
                t = y / np.abs(X[:, i]) ** float(ex)
                tss = float(np.sum((t - t.mean()) ** 2)) + 1e-300
                rss_a, _ = _rss(base, t)
                if rss_a > 1e-2 * tss:
                    continue
                rss_f, _ = _rss(full, t)
                if rss_a <= max(rss_f, 1e-12 * tss) / ratio:
                    found = ex
                    break
        if found is not None:
            out[i] = found
    return out


_EXPONENTS = [Fraction(k) for k in (1, -1, 2, -2, 0, 3, -3)] + [
    Fraction(1, 2),
    Fraction(-1, 2),
]


def laurent_exponents(d: int) -> list[tuple[int, ...]]:
    """Exponent vectors of the Laurent monomial library for ``d`` variables.

    ``d <= 3``: every ``e`` with ``|e_i| <= 2`` and ``sum |e_i| <= 4``; ``d = 4``:
    ``|e_i| <= 1``, ``sum |e_i| <= 3`` and the pure squares; ``d = 5, 6``: degree <= 2
    polynomial monomials and the inverses ``1/x_i``; larger ``d``: none.
    """
    if d <= 3:
        rng = range(-2, 3)
        return [e for e in itertools.product(rng, repeat=d) if sum(map(abs, e)) <= 4]
    if d == 4:
        out = [e for e in itertools.product(range(-1, 2), repeat=d) if sum(map(abs, e)) <= 3]
        for i in range(d):
            for s in (-2, 2):
                e = [0] * d
                e[i] = s
                out.append(tuple(e))
        return out
    if d <= 6:
        out = [(0,) * d]
        for k in (1, 2):
            for combo in itertools.combinations_with_replacement(range(d), k):
                e = [0] * d
                for j in combo:
                    e[j] += 1
                out.append(tuple(e))
        for i in range(d):
            e = [0] * d
            e[i] = -1
            out.append(tuple(e))
        return out
    return []


def stlsq_path(
    A: np.ndarray, b: np.ndarray, *, max_terms: int = 12, floor_rel: float = 1e-14
) -> tuple[np.ndarray, float] | None:
    """Sparse least squares ``b ~ A xi``: sequentially thresholded least squares along a
    path of thresholds and forward stepwise selection, the model chosen by BIC, then
    backward elimination while BIC improves.

    Columns are scaled to unit norm; the thresholds are the geometric midpoints of the
    sorted magnitudes of the full least-squares solution that keep at most ``max_terms``
    terms.  Returns ``(xi, bic)`` in the original column scale, or None.

    Notes
    -----
    ``BIC = n log(max(RSS, floor) / n) + k log n`` with ``floor = floor_rel * |b|^2``:
    the floor makes numerically exact fits tie, so the sparsest exact model wins.
    """
    n, p = A.shape
    if p == 0 or n < p + 2:
        return None
    scale = np.linalg.norm(A, axis=0)
    if not np.all(np.isfinite(scale)) or np.any(scale == 0):
        return None
    An = A / scale
    btb = float(b @ b)
    if not math.isfinite(btb) or btb == 0:
        return None
    xi_ls, *_ = np.linalg.lstsq(An, b, rcond=None)
    mags = np.sort(np.abs(xi_ls))[::-1]
    thresholds = [(mags[k] * mags[k + 1]) ** 0.5 for k in range(min(max_terms, p - 1))]
    thresholds.append(0.0)
    floor = floor_rel * btb + 1e-300
    best: tuple[float, np.ndarray] | None = None
    seen: set[bytes] = set()
    for thr in thresholds:
        mask = np.abs(xi_ls) >= thr
        if mask.sum() > max_terms:
            continue
        xi = np.zeros(p)
        for _ in range(20):
            if not mask.any():
                break
            sol, *_ = np.linalg.lstsq(An[:, mask], b, rcond=None)
            xi = np.zeros(p)
            xi[mask] = sol
            new = mask & (np.abs(xi) >= thr)
            if np.array_equal(new, mask):
                break
            mask = new
        key = mask.tobytes()
        if key in seen or not mask.any():
            continue
        seen.add(key)
        r = b - An @ xi
        rss = float(r @ r)
        bic = n * math.log(max(rss, floor) / n) + int(mask.sum()) * math.log(n)
        if best is None or bic < best[0]:
            best = (bic, xi / scale)
    # forward stepwise selection (orthogonal matching pursuit) on the same criterion: it
    # does not rely on the magnitudes of the full least-squares solution, which are
    # meaningless for nearly collinear libraries fitted to noisy targets
    C = An.copy()
    r = b.copy()
    selected: list[int] = []
    for _ in range(min(max_terms, p)):
        norms = np.einsum("ij,ij->j", C, C)
        ok = norms > 1e-10
        if selected:
            ok[selected] = False
        if not ok.any():
            break
        score = np.where(ok, (C.T @ r) ** 2 / np.where(ok, norms, 1.0), -1.0)
        j = int(np.argmax(score))
        q = C[:, j] / math.sqrt(norms[j])
        selected.append(j)
        r = r - q * (q @ r)
        C = C - np.outer(q, q @ C)
        rss = float(r @ r)
        k = len(selected)
        bic = n * math.log(max(rss, floor) / n) + k * math.log(n)
        if best is None or bic < best[0] - 1e-9:
            sol, *_ = np.linalg.lstsq(An[:, selected], b, rcond=None)
            xi = np.zeros(p)
            xi[selected] = sol
            best = (bic, xi / scale)
    if best is None:
        return None
    # backward elimination from the selected model: a greedy path can pick a proxy
    # column first and compensate later; dropping terms whose removal improves BIC
    # recovers the sparse law
    support = [int(j) for j in np.flatnonzero(best[1])]
    bic_best = best[0]
    improved = True
    while improved and len(support) > 1:
        improved = False
        trials = []
        for j in support:
            rest = [m for m in support if m != j]
            sol, *_ = np.linalg.lstsq(An[:, rest], b, rcond=None)
            r = b - An[:, rest] @ sol
            bic = n * math.log(max(float(r @ r), floor) / n) + len(rest) * math.log(n)
            trials.append((bic, rest, sol))
        bic, rest, sol = min(trials, key=lambda t: t[0])
        if bic < bic_best - 1e-9:
            xi = np.zeros(p)
            xi[rest] = sol
            best, bic_best, support, improved = (bic, xi / scale), bic, rest, True
    return best[1], best[0]


_Inverse = Callable[[sp.Expr], sp.Expr]


def _transforms(y: np.ndarray) -> list[tuple[str, np.ndarray, _Inverse]]:
    """Invertible transforms ``g(y)`` defined on the data, with ``y = inverse(g)``."""
    pos, neg = bool(np.all(y > 0)), bool(np.all(y < 0))
    sign = 1 if pos else -1
    out: list[tuple[str, np.ndarray, _Inverse]] = [("y", y, lambda e: e)]
    with np.errstate(all="ignore"):
        if pos or neg:
            out += [
                ("1/y", 1 / y, lambda e: 1 / e),
                ("y^2", y**2, lambda e: sign * sp.sqrt(e)),
                ("1/y^2", 1 / y**2, lambda e: sign / sp.sqrt(e)),
            ]
        if pos:
            out += [("sqrt", np.sqrt(y), lambda e: e**2), ("log", np.log(y), sp.exp)]
        if np.ptp(y) <= 30:
            out.append(("exp", np.exp(y - np.max(y)), lambda e: sp.log(e) + float(np.max(y))))
        if np.all(np.abs(y) <= math.pi / 2):
            out.append(("sin", np.sin(y), sp.asin))
        if np.all((y >= 0) & (y <= math.pi)):
            out.append(("cos", np.cos(y), sp.acos))
    return [t for t in out if np.all(np.isfinite(t[1]))]


@_single_threaded
def sparse_candidates(
    X: np.ndarray, y: np.ndarray, syms: Sequence[sp.Symbol], *, rational: bool = True
) -> list[sp.Expr]:
    """Candidate laws from sparse (rational) fits of transforms of ``y`` over Laurent
    monomials of the variables (see the module docstring).  One model (BIC-best) per
    transform and library; the constants are float64 least-squares values."""
    n, d = X.shape
    if d == 0:
        return []
    exps = laurent_exponents(d)
    if not exps or np.any(X == 0):
        return []
    with np.errstate(all="ignore"):
        L = np.column_stack([np.prod(X ** np.array(e, dtype=np.float64), axis=1) for e in exps])
    if not np.all(np.isfinite(L)):
        return []
    terms = [sp.Mul(*[s**k for s, k in zip(syms, e)]) for e in exps]
    const = [i for i, e in enumerate(exps) if not any(e)]
    nonconst = [i for i in range(len(exps)) if i not in const]
    logX = np.log(np.abs(X)) if np.all(X > 0) else None
    out: list[sp.Expr] = []
    max_terms = 10
    for name, g, inv in _transforms(y):
        # linear in the library (plus log x_i for log y)
        A, tm = L, list(terms)
        if name == "log" and logX is not None:
            A = np.column_stack([L, logX])
            tm = tm + [sp.log(s) for s in syms]
        fit = stlsq_path(A, g, max_terms=max_terms)
        if fit is not None:
            e = sp.Add(*[sp.Float(float(c)) * t for c, t in zip(fit[0], tm) if c != 0])
            if e != 0:
                out.append(inv(e))
        # rational: g = P + g Q  ->  g = P / (1 - Q)
        if rational and d <= 4 and 2 * len(exps) < n // 3:
            A = np.column_stack([L, g[:, None] * L[:, nonconst]])
            fit = stlsq_path(A, g, max_terms=max_terms)
            if fit is not None:
                xi = fit[0]
                p_ = sp.Add(
                    *[sp.Float(float(c)) * t for c, t in zip(xi[: len(exps)], terms) if c != 0]
                )
                q_ = sp.Add(
                    *[
                        sp.Float(float(c)) * terms[j]
                        for c, j in zip(xi[len(exps) :], nonconst)
                        if c != 0
                    ]
                )
                if p_ != 0 and q_ != 0:
                    out.append(inv(p_ / (1 - q_)))
    return out
