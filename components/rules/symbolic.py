"""Symbolic regression behind one interface, with the same post-processing for every backend.

``discover(X, y, names=...)`` searches for a closed-form law ``y = f(x)``:

1. **units** (optional): Buckingham-pi reduction to dimensionless groups
   (:mod:`components.rules.units`), so every law found is dimensionally consistent;
2. **structure pre-search** (:mod:`components.rules._structure`): a power law fitted in
   log space, sparse polynomials, multiplicative separability tested on the data
   (variables entering as powers are factored out and the search continues on the
   reduced problem), sparse linear and rational fits of transforms of ``y`` over Laurent
   monomials; when one of these reproduces the data to round-off the backend is skipped;
3. **search backend** on the (reduced) problem: ``"operon"`` (pyoperon, the default:
   multi-objective GP with Levenberg-Marquardt constant optimisation, budget in
   evaluations *and* seconds) or ``"pysr"`` (PySR, when a Julia runtime is present);
4. **post-processing**, identical for every backend: expand, snap each constant to a small
   integer/rational (times ``pi``, ``sqrt(2)``, ``sqrt(pi)`` powers) when the loss does not
   get significantly worse, refit the remaining constants in float64, canonicalise;
5. a **Pareto front** (complexity vs mean squared error) with the model chosen by an
   information criterion.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction
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
from components.base import Component, Declaration, import_optional
from components.rules.expression import (
    Expression,
    count_nodes,
    from_sympy,
    pdiv,
    plog,
    psqrt,
)
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "BACKENDS",
    "ParetoEntry",
    "SymbolicFit",
    "SymbolicRegression",
    "SymbolicResult",
    "discover",
    "snap_constants",
    "symbolic_regression",
]

BACKENDS: tuple[str, ...] = ("operon", "pysr")
DEFAULT_OPERATORS = "add,sub,mul,div,constant,variable,sin,cos,exp,log,sqrt,square"


@dataclasses.dataclass
class ParetoEntry:
    """One model of the Pareto front."""

    expression: Expression
    complexity: int
    loss: float
    chosen: bool = False
    source: str = ""

    def __repr__(self) -> str:
        star = "*" if self.chosen else " "
        return f"{star} c={self.complexity:3d} mse={self.loss:.3g} {self.expression.sympy} [{self.source}]"


class SymbolicResult:
    """Result of :func:`discover`.

    Attributes
    ----------
    pareto : list of ParetoEntry
        Non-dominated models by increasing complexity; exactly one has ``chosen=True``.
    best : Expression
        The chosen model (``best.sympy`` is the law over the original variables).
    r2 : float
        Coefficient of determination of ``best`` on the data.
    dimensionally_consistent : bool or None
        Whether ``best`` is dimensionally consistent (None when no units were given).
    backend : str
    elapsed_s : float
    reduction : PiReduction or None
        The Buckingham-pi reduction used, if any.
    """

    def __init__(
        self,
        pareto: list[ParetoEntry],
        best: Expression,
        r2: float,
        dimensionally_consistent: bool | None,
        backend: str,
        elapsed_s: float,
        reduction: Any = None,
    ) -> None:
        # a plain class (not a dataclass): timing fields must not be flattened into
        # the component's array outputs
        self.pareto = pareto
        self.best = best
        self.r2 = r2
        self.dimensionally_consistent = dimensionally_consistent
        self.backend = backend
        self.elapsed_s = elapsed_s
        self.reduction = reduction

    def __repr__(self) -> str:
        return f"SymbolicResult(best={self.best.sympy}, r2={self.r2:.6g}, backend={self.backend!r}, n_pareto={len(self.pareto)})"

    def __str__(self) -> str:
        return "\n".join(repr(e) for e in self.pareto)


# --------------------------------------------------------------------------------------
# constant fitting and snapping
# --------------------------------------------------------------------------------------
_LAMBDA_MODULES = [
    {
        "plog": lambda a: np.log(np.maximum(np.abs(a), 1e-10)),
        "psqrt": lambda a: np.sqrt(np.abs(a)),
        "pdiv": lambda a, b: a / np.where(np.abs(b) < 1e-10, np.where(b < 0, -1e-10, 1e-10), b),
        "aq": lambda a, b: a / np.sqrt(1 + b * b),
    },
    "numpy",
]


class _Model:
    """A template with float slots; evaluates and refits in float64 numpy."""

    def __init__(self, expr: sp.Expr, syms: Sequence[sp.Symbol]) -> None:
        floats: list[sp.Float] = []
        for a in sp.preorder_traversal(expr):
            if isinstance(a, sp.Float) and a not in floats:
                floats.append(a)
        self.cs = [sp.Symbol(f"_k{i}") for i in range(len(floats))]
        self.template = expr.xreplace(dict(zip(floats, self.cs)))
        self.values = np.array([float(f) for f in floats], dtype=np.float64)
        self.syms = list(syms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.f = sp.lambdify([*self.syms, *self.cs], self.template, modules=_LAMBDA_MODULES)

    def predict(self, cols: Sequence[np.ndarray], values: np.ndarray | None = None) -> np.ndarray:
        v = self.values if values is None else values
        with np.errstate(all="ignore"):
            out = self.f(*cols, *v)
        return (
            np.broadcast_to(np.asarray(out, dtype=np.float64), cols[0].shape)
            if cols
            else np.asarray(out, dtype=np.float64)
        )

    def loss(
        self, cols: Sequence[np.ndarray], y: np.ndarray, values: np.ndarray | None = None
    ) -> float:
        with np.errstate(all="ignore"):
            r = self.predict(cols, values) - y
            v = float(np.mean(r * r))
        return v if math.isfinite(v) else math.inf

    def refit(
        self, cols: Sequence[np.ndarray], y: np.ndarray, free: Sequence[int], values: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Levenberg-Marquardt on the ``free`` slots from ``values``; returns (values, mse)."""
        values = values.copy()
        if len(free) == 0:
            return values, self.loss(cols, y, values)
        from scipy.optimize import least_squares

        free = list(free)

        def res(p: np.ndarray) -> np.ndarray:
            v = values.copy()
            v[free] = p
            r = self.predict(cols, v) - y
            return np.where(np.isfinite(r), r, 1e150)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sol = least_squares(
                    res,
                    values[free],
                    method="lm" if len(y) >= len(free) else "trf",
                    max_nfev=200 * (len(free) + 1),
                    xtol=1e-15,
                    ftol=1e-15,
                    gtol=1e-15,
                )
            cand = values.copy()
            cand[free] = sol.x
            lc = self.loss(cols, y, cand)
            l0 = self.loss(cols, y, values)
            if lc <= l0:
                return cand, lc
            return values, l0
        except Exception:  # pragma: no cover - numerical failure keeps the start values
            return values, self.loss(cols, y, values)

    def expr(self, values: np.ndarray, exact: Mapping[int, sp.Expr] | None = None) -> sp.Expr:
        exact = exact or {}
        subs = {
            c: (exact[i] if i in exact else sp.Float(float(values[i])))
            for i, c in enumerate(self.cs)
        }
        return self.template.xreplace(subs)


def _snap_candidates(v: float) -> list[tuple[sp.Expr, float]]:
    """Exact numbers to try for ``v``: 0 and sign(v)*1 (absorbed by the other constants
    when the model is over-parameterised), then integers, small rationals and rationals
    times pi^{+-1}, sqrt(2)^{+-1}, sqrt(pi)^{+-1}, sqrt(2 pi)^{+-1} within 0.2 % of ``v``,
    simplest first."""
    out: list[tuple[sp.Expr, float]] = []
    if not math.isfinite(v) or v == 0:
        return [(sp.Integer(0), 0.0)]
    factors = [
        sp.Integer(1),
        sp.pi,
        1 / sp.pi,
        sp.sqrt(2),
        1 / sp.sqrt(2),
        sp.sqrt(sp.pi),
        1 / sp.sqrt(sp.pi),
        sp.sqrt(2 * sp.pi),
        1 / sp.sqrt(2 * sp.pi),
    ]
    for fac in factors:
        fv = float(fac)
        q = v / fv
        for maxden in (1, 2, 3, 4, 6, 8, 12):
            fr = Fraction(q).limit_denominator(maxden)
            if fr == 0:
                continue
            if abs(float(fr) - q) <= 2e-3 * abs(q):
                e = sp.Rational(fr.numerator, fr.denominator) * fac
                if all(e != o for o, _ in out):
                    out.append((e, float(e)))
                break
    out.sort(key=lambda t: (count_nodes(t[0]), abs(t[1] - v)))
    # 0 and +-1 first: a constant that another (refitted) constant can absorb, or a
    # numerically vanishing term, simplifies the law most
    head = [(sp.Integer(0), 0.0), (sp.Integer(1), 1.0) if v > 0 else (sp.Integer(-1), -1.0)]
    return head + [o for o in out if o[1] not in (0.0, 1.0, -1.0)][:5]


def snap_constants(
    expr: sp.Expr,
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    rel_tol: float | None = None,
) -> tuple[sp.Expr, float]:
    """Replace fitted constants by simple exact numbers when the loss does not get worse.

    Each Float of ``expr`` in turn (largest magnitude first) is replaced by the simplest
    nearby exact number (see Notes); the other constants are refitted
    (Levenberg-Marquardt, float64); the replacement is kept when the mean squared error
    stays within ``mse * (1 + rel_tol) + 1e-12 var(y)``.

    Parameters
    ----------
    expr : sympy.Expr
        Law over ``names`` with Float constants.
    X : ndarray (n, d), y : ndarray (n,)
    rel_tol : float, optional
        Allowed relative increase of the MSE; default ``4 / n`` (about two standard
        deviations of the chi-square change from fixing one parameter at its fitted
        value's neighbour under Gaussian noise).

    Returns
    -------
    expr : sympy.Expr
        With snapped constants (exact sympy numbers) and refitted Floats.
    mse : float

    Notes
    -----
    Candidates are 0, +-1 and ``p/q * f`` with ``q <= 12`` within 0.2 % of the value, ``f`` in
    ``{1, pi, sqrt(2), sqrt(pi), sqrt(2 pi)}`` or their inverses.

    Examples
    --------
    >>> x = np.linspace(1, 2, 50)[:, None]
    >>> e, _ = snap_constants(sp.sympify("0.4999999*x**2.0000001"), x, 0.5 * x[:, 0] ** 2, ["x"])
    >>> e
    x**2/2
    """
    syms = [sp.Symbol(n, real=True) for n in names]
    expr = expr.xreplace(
        {s: syms[names.index(s.name)] for s in expr.free_symbols if s.name in names}
    )
    cols = [np.asarray(X[:, i], dtype=np.float64) for i in range(X.shape[1])]
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    rel = 4.0 / max(n, 1) if rel_tol is None else float(rel_tol)
    floor = 1e-12 * float(np.var(y)) + 1e-300
    model = _Model(expr, syms)
    k = len(model.cs)
    if k == 0:
        return expr, model.loss(cols, y)
    if k > 12:
        return expr, model.loss(cols, y)  # too many constants to snap one by one
    values, mse = model.refit(cols, y, list(range(k)), model.values)
    exact: dict[int, sp.Expr] = {}
    order = sorted(range(k), key=lambda i: -abs(values[i]))
    for i in order:
        base = mse * (1 + rel) + floor
        cands = _snap_candidates(float(values[i]))
        free = [j for j in range(k) if j != i and j not in exact]
        done = False
        # cheap pass: the snapped value as is, no refit
        for e, ev in cands:
            trial = values.copy()
            trial[i] = ev
            tl = model.loss(cols, y, trial)
            if tl <= base:
                exact[i] = e
                values, mse, done = trial, tl, True
                break
        if done or len(free) > 6:
            continue
        for e, ev in cands[:4]:
            trial = values.copy()
            trial[i] = ev
            tv, tl = model.refit(cols, y, free, trial)
            if tl <= base:
                exact[i] = e
                values, mse = tv, tl
                break
    return model.expr(values, exact), mse


def _canonical(expr: sp.Expr) -> sp.Expr:
    """Cheap deterministic canonical form: expand products of numbers, merge powers."""
    if count_nodes(expr) > 120:
        return expr  # large trees: sympy's expand/cancel can take minutes
    try:
        e = sp.expand(
            expr,
            deep=True,
            power_base=False,
            power_exp=False,
            log=False,
            multinomial=count_nodes(expr) < 60,
        )
        e2 = sp.powsimp(e)
        cand = [expr, e, e2]
        if count_nodes(e2) < 40:
            cand.append(sp.factor_terms(sp.cancel(e2)))
        return min(cand, key=count_nodes)
    except Exception:  # pragma: no cover - sympy corner cases keep the input
        return expr


# --------------------------------------------------------------------------------------
# analytic candidates
# --------------------------------------------------------------------------------------
def _power_law(X: np.ndarray, y: np.ndarray, syms: Sequence[sp.Symbol]) -> list[sp.Expr]:
    """``y = C prod x_i^a_i`` fitted in log space when signs allow; exponents snapped to
    halves/thirds/quarters."""
    if np.any(X == 0) or np.any(y == 0):
        return []
    sx, sy = np.sign(X), np.sign(y)
    if not (np.all(sx == sx[0]) and np.all(sy == sy[0])):
        return []
    a = np.column_stack([np.log(np.abs(X)), np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(a, np.log(np.abs(y)), rcond=None)
    out = []
    for maxden in (1, 2, 3, 4):
        ex = [Fraction(float(c)).limit_denominator(maxden) for c in coef[:-1]]
        e = sp.Float(float(sy[0]) * math.exp(coef[-1]))
        for s, q in zip(syms, ex):
            e = e * s ** sp.Rational(q.numerator, q.denominator)
        out.append(e)
    return out


def _sparse_poly(X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> list[sp.Expr]:
    """Sparse polynomials (STLSQ path + BIC) fitted to invertible transforms of ``y``.

    For ``g`` in {identity, 1/y, y^2, 1/y^2, sqrt(y), log(y)} (where defined on the
    data) a sparse expansion ``p(x)`` is fitted to ``g(y)`` and ``y = g^-1(p(x))``
    becomes a candidate -- the polynomial-fit step of AI Feynman (Udrescu & Tegmark
    2020), applied to every problem alike.  Libraries: polynomials of degree 3
    (d <= 3) or 2 (d <= 6); for d <= 3 also monomials of degree <= 2 times sin/cos of
    one variable; for d <= 4 degree-2 polynomials in ``(x, 1/x)``."""
    from components.rules.sindy import Library

    d = X.shape[1]
    if d > 6:
        return []
    libs = [(Library(list(names), degree=3 if d <= 3 else 2), X)]
    if d <= 3:
        # monomials of degree <= 2 times sin/cos of one variable (e.g. r F sin(theta))
        monos = [str(e) for e in Library(list(names), degree=2).exprs]
        trig = [f"{f}({n})" for n in names for f in ("sin", "cos")]
        custom = [f"({m})*{t}" for m in monos for t in trig]
        libs.append((Library(list(names), degree=3, custom=custom), X))
    if d <= 4 and np.all(X != 0):
        # rational monomials: degree 2 in (x, 1/x)
        inv_names = [f"_inv{i}" for i in range(d)]
        lib_r = Library([*names, *inv_names], degree=2)
        libs.append((lib_r, np.column_stack([X, 1 / X])))
    inv_subs = {
        sp.Symbol(f"_inv{i}", real=True): 1 / sp.Symbol(n, real=True) for i, n in enumerate(names)
    }
    out = []
    for lib, feats in libs:
        out += _sparse_poly_one(lib, feats, y, inv_subs)
    return out


def _sparse_poly_one(
    lib: Any, feats: np.ndarray, y: np.ndarray, inv_subs: Mapping[sp.Symbol, sp.Expr]
) -> list[sp.Expr]:
    from components.rules._structure import _transforms, stlsq_path

    a = lib(torch.as_tensor(feats, dtype=torch.float64)).numpy()
    if a.shape[0] < a.shape[1] + 2 or not np.all(np.isfinite(a)):
        return []
    out = []
    for _name, g, inv in _transforms(y):
        fit = stlsq_path(a, g, max_terms=15)
        if fit is None:
            continue
        e = sp.Add(*[sp.Float(float(c)) * t for c, t in zip(fit[0], lib.exprs) if c != 0])
        if e != 0:
            out.append(inv(e.xreplace(inv_subs)))
    return out


# --------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------
def _operon(
    X: np.ndarray,
    y: np.ndarray,
    syms: Sequence[sp.Symbol],
    *,
    budget_s: float,
    max_evaluations: int,
    seed: int,
    threads: int,
    operators: str,
    max_length: int,
    population_size: int,
) -> list[sp.Expr]:
    mod = import_optional("pyoperon.sklearn", "operon")
    reg = mod.SymbolicRegressor(
        allowed_symbols=operators,
        objectives=["r2", "length"],
        optimizer_iterations=10,
        local_search_probability=1.0,
        max_length=max_length,
        population_size=population_size,
        pool_size=population_size,
        generations=100000,
        max_evaluations=int(max_evaluations),
        max_time=max(1, math.ceil(budget_s)),
        n_threads=max(1, int(threads)),
        random_state=int(seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(X, y)
    tmp = [f"x{i}" for i in range(X.shape[1])]
    out = []
    for p in list(reg.pareto_front_)[:25]:
        s = reg.get_model_string(p["tree"], 17, tmp)
        e = _parse_engine(s, tmp, syms)
        if e is not None:
            out.append(e)
    return out


def _parse_engine(s: str, tmp: Sequence[str], syms: Sequence[sp.Symbol]) -> sp.Expr | None:
    s = s.replace("^", "**")
    local = {t: syms[i] for i, t in enumerate(tmp)}
    local.update({"abs": sp.Abs, "plog": plog, "psqrt": psqrt, "pdiv": pdiv})
    try:
        e = sp.sympify(s, locals=local)
    except (sp.SympifyError, SyntaxError, TypeError):
        return None
    # operon's protected forms on the data domain: log(abs(.)), sqrt(abs(.)) stay as written
    return e if e.is_real is not False else None


def _julia_available() -> bool:
    import shutil

    return shutil.which("julia") is not None


def _pysr(
    X: np.ndarray,
    y: np.ndarray,
    syms: Sequence[sp.Symbol],
    *,
    budget_s: float,
    max_evaluations: int,
    seed: int,
    threads: int,
    operators: str,
    max_length: int,
    population_size: int,
) -> list[sp.Expr]:
    if not _julia_available():
        raise ImportError(
            "backend 'pysr' needs PySR and a Julia runtime: install it with `pip install learndock[pysr]` and make `julia` available on PATH"
        )
    pysr = import_optional("pysr", "pysr")
    unary = [o for o in operators.split(",") if o in ("sin", "cos", "exp", "log", "sqrt", "square")]
    binary = [
        {"add": "+", "sub": "-", "mul": "*", "div": "/"}[o]
        for o in operators.split(",")
        if o in ("add", "sub", "mul", "div")
    ]
    tmp = [f"x{i}" for i in range(X.shape[1])]
    reg = pysr.PySRRegressor(
        binary_operators=binary,
        unary_operators=unary,
        maxsize=max_length,
        population_size=min(population_size, 100),
        timeout_in_seconds=float(budget_s),
        max_evals=int(max_evaluations),
        niterations=1000,
        deterministic=True,
        parallelism="serial",
        random_state=int(seed),
        progress=False,
        verbosity=0,
        temp_equation_file=True,
    )
    reg.fit(X, y, variable_names=tmp)
    out = []
    for s in reg.equations_["equation"]:
        e = _parse_engine(str(s), tmp, syms)
        if e is not None:
            out.append(e)
    return out


_BACKEND_FUNCS = {"operon": _operon, "pysr": _pysr}


# --------------------------------------------------------------------------------------
# discover
# --------------------------------------------------------------------------------------
def _validate(X: Any, y: Any, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    xt = as_float_tensor(X, "X")
    yt = as_float_tensor(y, "y")
    check_nonempty(xt, "X")
    check_nonempty(yt, "y")
    if xt.ndim == 1:
        xt = xt[:, None]
    if xt.ndim != 2:
        raise ValueError(f"X: expected shape (sample, variable), got {tuple(xt.shape)}")
    if yt.ndim != 1:
        raise ValueError(f"y: expected shape (sample,), got {tuple(yt.shape)}")
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(
            f"X and y: expected the same number of samples, got {xt.shape[0]} and {yt.shape[0]}"
        )
    check_finite(xt, "X")
    check_finite(yt, "y")
    if len(names) != xt.shape[1]:
        raise ValueError(
            f"names: expected {xt.shape[1]} names (one per column of X), got {len(names)}: {list(names)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"names: expected distinct names, got {list(names)}")
    if xt.shape[0] < 3:
        raise ValueError(f"X: expected at least 3 samples, got {xt.shape[0]}")
    xn = xt.detach().cpu().double().numpy()
    const = [n for n, s in zip(names, xn.std(0)) if not s > 0]
    if const:
        raise ValueError(
            f"X: variables {const} are constant; a law cannot depend on them identifiably (drop them)"
        )
    return xn, yt.detach().cpu().double().numpy()


def _require_backend(backend: str) -> None:
    """Raise ImportError (naming the extra to install) when ``backend`` is not usable."""
    if backend == "pysr":
        if not _julia_available():
            raise ImportError(
                "backend 'pysr' needs PySR and a Julia runtime: install it with `pip install learndock[pysr]` and make `julia` available on PATH"
            )
        import_optional("pysr", "pysr")
    else:
        import_optional("pyoperon.sklearn", "operon")


def _one_blas_thread() -> Any:
    from components.rules._structure import one_blas_thread

    return one_blas_thread()


def _is_exact(e: sp.Expr, X: np.ndarray, y: np.ndarray, syms: Sequence[sp.Symbol]) -> bool:
    """Whether ``e`` reproduces ``y`` to float64 round-off (relative MSE < 1e-24) with at
    most 12 constants (a dense rational approximant of a smooth function can reach 1e-21)."""
    try:
        m = _Model(e, syms)
        if len(m.cs) > 12:
            return False
        return m.loss([X[:, i] for i in range(X.shape[1])], y) <= 1e-24 * float(np.mean(y * y))
    except Exception:
        return False


def _structured_search(
    Xs: np.ndarray,
    ys: np.ndarray,
    syms: Sequence[sp.Symbol],
    snames: Sequence[str],
    *,
    t0: float,
    budget_s: float,
    analytic: bool,
    backend: str,
    **search_kw: Any,
) -> list[tuple[sp.Expr, str]]:
    """Candidates from the structure pre-search and the backend.

    1. power-law and sparse polynomial fits on the full problem;
    2. multiplicative separability (:func:`~components.rules._structure.power_separable`):
       variables entering as ``x_i^a`` are factored out and the rest of the search runs
       on the reduced problem ``y / prod x_i^a`` over fewer variables;
    3. sparse linear/rational fits of transforms of the (reduced) target over Laurent
       monomials (:func:`~components.rules._structure.sparse_candidates`);
    4. the backend search on the (reduced) problem -- skipped when a structured
       candidate already reproduces the data to round-off.
    Candidates over the reduced variables are multiplied back by the factored powers.
    """
    from components.rules import _structure

    cands: list[tuple[sp.Expr, str]] = []
    prefactor: sp.Expr = sp.Integer(1)
    Xr, yr, rsyms = Xs, ys, list(syms)
    if analytic:
        cands += [(e, "power-law") for e in _power_law(Xs, ys, syms)]
        cands += [(e, "polynomial") for e in _sparse_poly(Xs, ys, snames)]
        cands.append((sp.Float(float(np.mean(ys))), "constant"))
        sep = _structure.power_separable(Xs, ys)
        if sep:
            keep = [i for i in range(Xs.shape[1]) if i not in sep]
            for i, a in sep.items():
                prefactor = prefactor * syms[i] ** sp.Rational(a.numerator, a.denominator)
            with np.errstate(all="ignore"):
                scale = np.prod(
                    [np.abs(Xs[:, i]) ** float(a) for i, a in sep.items()], axis=0
                ) * np.prod([np.sign(Xs[0, i]) ** a.numerator for i, a in sep.items()])
            Xr, yr, rsyms = Xs[:, keep], ys / scale, [syms[i] for i in keep]
            if Xr.shape[1] == 0 or not np.all(np.isfinite(yr)):
                Xr, yr, rsyms = Xs, ys, list(syms)
                prefactor = sp.Integer(1)
        structured: list[sp.Expr] = _structure.sparse_candidates(Xr, yr, rsyms)
        if prefactor != 1:
            structured += _power_law(Xr, yr, rsyms)
            structured += _sparse_poly(Xr, yr, [s.name for s in rsyms])
            structured.append(sp.Float(float(np.mean(yr))))
        cands += [(prefactor * e, "structure") for e in structured]
        small = [e for e in structured if count_nodes(e) <= 60]
        if any(_is_exact(e, Xr, yr, rsyms) for e in sorted(small, key=count_nodes)):
            return cands
    # the search gets 60 % of the wall budget; post-processing has the rest
    remaining = 0.6 * budget_s - (time.perf_counter() - t0)
    found = _BACKEND_FUNCS[backend](Xr, yr, rsyms, budget_s=max(remaining, 0.5), **search_kw)
    cands += [(prefactor * e, backend) for e in found]
    return cands


def discover(
    X: Any,
    y: Any,
    *,
    names: Sequence[str],
    units: Mapping[str, Any] | None = None,
    output_unit: Any = None,
    backend: str = "operon",
    budget_s: float = 30.0,
    max_evaluations: int = 500_000,
    seed: int = 0,
    threads: int = 1,
    operators: str = DEFAULT_OPERATORS,
    max_length: int = 40,
    population_size: int = 500,
    analytic: bool = True,
    snap: bool = True,
    output: str = "y",
) -> SymbolicResult:
    """Discover a closed-form law ``y = f(X)``.

    Parameters
    ----------
    X : array_like (n, d)
        One column per variable.
    y : array_like (n,)
        Target.
    names : sequence of str
        Variable names (``d`` of them).
    units : mapping, optional
        ``{name: astropy unit string}`` for every variable; with ``output_unit`` the
        search runs on Buckingham-pi groups and inconsistent candidates are rejected.
    output_unit : str, optional
        Unit of ``y``.
    backend : {"operon", "pysr"}
    budget_s : float
        Wall-clock budget in seconds: 60 % for the backend search, the rest for
        refitting and snapping (the best model is always post-processed, so a run may
        overshoot by the time of one snapping pass).
    max_evaluations : int
        Budget of the backend in model evaluations; the search stops at whichever of
        the two budgets is hit first.
    seed : int
        Random seed (results are deterministic for a given seed when the evaluation
        budget, not the time budget, stops the search).
    threads : int
        Backend threads (1 = deterministic).
    operators : str
        Comma-separated operator set (operon names).
    analytic : bool
        Run the structure pre-search (power law, sparse polynomials, separability,
        sparse rational fits of transforms of ``y``); see
        :mod:`components.rules._structure`.
    snap : bool
        Snap constants to simple exact numbers (see :func:`snap_constants`).

    Returns
    -------
    SymbolicResult

    Raises
    ------
    ValueError
        Bad shapes, NaN/inf, constant variables, mismatched lengths, unknown unit
        strings, output units that the inputs cannot form, unknown backend.
    ImportError
        If the backend is not installed (naming the extra ``learndock[operon]`` or
        ``learndock[pysr]``).

    Notes
    -----
    Every candidate is scored by its mean squared error ``L`` and complexity ``C``
    (tree nodes); the chosen model minimises ``n log(max(L, 1e-10 var y)) + C log n``.

    References
    ----------
    Burlacu, Kronberger & Kommenda, GECCO 2020 (Operon).  Cranmer, arXiv:2305.01582
    (PySR).  La Cava et al., NeurIPS 2021 datasets (SRBench).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(1, 3, (200, 2))
    >>> res = discover(X, 0.5 * X[:, 0] * X[:, 1] ** 2, names=["m", "v"], budget_s=1, max_evaluations=2000)
    >>> res.best.sympy
    m*v**2/2
    """
    t0 = time.perf_counter()
    check_in(backend, "backend", BACKENDS)
    check_positive(budget_s, "budget_s")
    check_positive(max_evaluations, "max_evaluations")
    names = [str(n) for n in names]
    Xn, yn = _validate(X, y, names)
    _require_backend(backend)  # before any search: a missing backend is an error, always
    reduction = None
    if units is not None:
        from components.rules.units import buckingham_pi, parse_units

        missing = [n for n in names if n not in units]
        if missing:
            raise ValueError(
                f"units: no unit given for variables {missing} (use '' for dimensionless)"
            )
        if output_unit is None:
            raise ValueError(
                "output_unit: required when units are given (use '' for a dimensionless output)"
            )
        parse_units(units, names)
        reduction = buckingham_pi(names, units, output_unit)
        Xs, ys = reduction.transform(Xn, yn)
        snames = reduction.group_names
        if not np.all(np.isfinite(ys)) or not np.all(np.isfinite(Xs)):
            raise ValueError(
                "units: the dimensionless groups are not finite on the data (a variable is zero?)"
            )
    else:
        Xs, ys, snames = Xn, yn, names
    syms = [sp.Symbol(n, real=True) for n in snames]
    cands: list[tuple[sp.Expr, str]] = []
    if Xs.shape[1] == 0:
        cands.append((sp.Float(float(np.mean(ys))), "constant"))
    else:
        with _one_blas_thread():
            cands += _structured_search(
                Xs,
                ys,
                syms,
                snames,
                t0=t0,
                budget_s=budget_s,
                analytic=analytic,
                backend=backend,
                max_evaluations=max_evaluations,
                seed=seed,
                threads=threads,
                operators=operators,
                max_length=max_length,
                population_size=population_size,
            )
    entries = _postprocess(cands, Xs, ys, snames, snap=snap, deadline=t0 + budget_s)
    # back to the original variables
    out_entries: list[ParetoEntry] = []
    consistent_any: bool | None = None
    for e, mse, src in entries:
        law = reduction.back(e) if reduction is not None else e
        law = _canonical(law) if reduction is not None else law
        dc = None
        if units is not None:
            from components.rules.units import is_consistent

            dc, _ = is_consistent(law, units, output_unit)
            if not dc:
                continue  # hard prior: inconsistent candidates are rejected
            consistent_any = True
        ex = from_sympy(
            law,
            names,
            units={k: str(v) for k, v in units.items()} if units else None,
            output=output,
            output_unit=None if output_unit is None else str(output_unit),
        )
        ex.loss = mse
        ex.dimensionally_consistent = dc
        out_entries.append(ParetoEntry(ex, ex.complexity, mse, source=src))
    if not out_entries:  # pragma: no cover - the constant model is always there
        raise RuntimeError("symbolic regression produced no valid candidate")
    front = _pareto(out_entries)
    n = len(yn)
    floor = 1e-10 * float(np.var(yn)) + 1e-300
    scores = [n * math.log(max(e.loss, floor)) + e.complexity * math.log(n) for e in front]
    best_i = int(np.argmin(scores))
    front[best_i].chosen = True
    best = front[best_i].expression
    r2 = 1.0 - front[best_i].loss / max(float(np.var(yn)), 1e-300)
    return SymbolicResult(
        pareto=front,
        best=best,
        r2=r2,
        dimensionally_consistent=consistent_any if units is not None else None,
        backend=backend,
        elapsed_s=time.perf_counter() - t0,
        reduction=reduction,
    )


def _pareto(entries: list[ParetoEntry]) -> list[ParetoEntry]:
    entries = sorted(entries, key=lambda e: (e.complexity, e.loss))
    front: list[ParetoEntry] = []
    for e in entries:
        if not front or e.loss < front[-1].loss * (1 - 1e-9) - 1e-300:
            front.append(e)
    return front


def _postprocess(
    cands: list[tuple[sp.Expr, str]],
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    snap: bool,
    n_snap: int = 6,
    n_refit: int = 12,
    deadline: float = math.inf,
) -> list[tuple[sp.Expr, float, str]]:
    """Canonicalise every candidate, refit the constants of the ``n_refit`` best by the
    selection criterion in float64 and snap the constants of the ``n_snap`` best
    (refitting and snapping are the expensive steps)."""
    syms = [sp.Symbol(n, real=True) for n in names]
    cols = [X[:, i] for i in range(X.shape[1])]
    n = len(y)
    floor = 1e-10 * float(np.var(y)) + 1e-300
    seen: set[str] = set()
    fitted = []
    prelim: list[tuple[float, _Model, str]] = []
    for e, src in cands:
        try:
            key = sp.srepr(e)
            if key in seen:
                continue
            seen.add(key)
            m = _Model(e, syms)
            loss0 = m.loss(cols, y)
            if math.isfinite(loss0):
                prelim.append(
                    (n * math.log(max(loss0, floor)) + count_nodes(e) * math.log(n), m, src)
                )
        except Exception:
            continue
    prelim.sort(key=lambda f: f[0])
    for i, (_, m, src) in enumerate(prelim[: max(n_refit, 20)]):
        late = i >= 2 and time.perf_counter() > deadline  # the best two are always refitted
        exact = m.loss(cols, y) <= 1e-20 * float(np.mean(y * y))
        refit = (src in BACKENDS and len(m.cs) <= 12) or (src == "structure" and len(m.cs) <= 8)
        if refit and not exact and i < n_refit and not late:
            # engine constants (operon optimises in float32): refit in float64
            v, mse = m.refit(cols, y, list(range(len(m.cs))), m.values)
        else:
            # analytic candidates are float64 least-squares fits already; engine
            # candidates past the deadline keep their own constants
            v, mse = m.values, m.loss(cols, y)
        if math.isfinite(mse):
            fitted.append((m.expr(v), mse, src))
    fitted.sort(key=lambda f: n * math.log(max(f[1], floor)) + count_nodes(f[0]) * math.log(n))
    # one model per structure (the same law found by several sources differs only in
    # the last digits of its constants): keep the best-scored one
    kc = sp.Symbol("_const")
    structures: set[str] = set()
    unique = []
    for f in fitted:
        key = sp.srepr(f[0].xreplace({c: kc for c in f[0].atoms(sp.Float)}))
        if key not in structures:
            structures.add(key)
            unique.append(f)
    fitted = unique
    out = []
    for i, (e, mse, src) in enumerate(fitted):
        n_const = len(e.atoms(sp.Float))
        # dense models (many constants) do not become exact laws by snapping, and
        # snapping them costs seconds of Levenberg-Marquardt refits: the best model is
        # snapped up to 12 constants, the next ones up to 6
        if snap and (
            (i < 1 and n_const <= 12)
            or (i < n_snap and n_const <= 6 and time.perf_counter() < deadline)
        ):
            try:
                e2, mse2 = snap_constants(e, X, y, list(names))
                # the snapped law replaces the refitted one (its loss is within tolerance)
                out.append((_canonical(e2), float(mse2), src))
                continue
            except Exception:  # pragma: no cover - keep the unsnapped model
                pass
        out.append((e, float(mse), src))
    return out


# --------------------------------------------------------------------------------------
# component
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class SymbolicFit:
    """Tensor output of :class:`SymbolicRegression`: the chosen law's prediction and scores,
    plus the full :class:`SymbolicResult` (``result``, not an array)."""

    prediction: torch.Tensor
    loss: torch.Tensor
    complexity: torch.Tensor
    result: SymbolicResult | None = dataclasses.field(default=None, repr=False)


def symbolic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    names: Sequence[str],
    units: Mapping[str, str] | None = None,
    output_unit: str | None = None,
    backend: str = "operon",
    budget_s: float = 30.0,
    max_evaluations: int = 500_000,
    seed: int = 0,
    operators: str = DEFAULT_OPERATORS,
    max_length: int = 40,
) -> SymbolicFit:
    """Tensor entry point of :class:`SymbolicRegression`: runs :func:`discover` and
    evaluates the chosen law on ``x`` (in ``x``'s dtype and device)."""
    xt = as_float_tensor(x, "x")
    if xt.ndim == 1:
        xt = xt[:, None]
    res = discover(
        xt,
        y,
        names=names,
        units=units,
        output_unit=output_unit,
        backend=backend,
        budget_s=budget_s,
        max_evaluations=max_evaluations,
        seed=seed,
        operators=operators,
        max_length=max_length,
    )
    pred = res.best.evaluate(xt.detach().to(torch.float64))
    assert isinstance(pred, torch.Tensor)  # tensor in, tensor out
    pred = pred.to(xt.dtype)
    return SymbolicFit(
        prediction=pred,
        loss=xt.new_tensor(res.pareto[[e.chosen for e in res.pareto].index(True)].loss),
        complexity=torch.tensor(res.best.complexity),
        result=res,
    )


class SymbolicRegression(Component):
    """Symbolic regression as a pipeline stage: ``(x, y) -> SymbolicFit``.

    Parameters
    ----------
    names, units, output_unit, backend, budget_s, max_evaluations, seed, operators, max_length
        See :func:`discover`.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` disagree in length, hold NaN/inf, a variable is constant,
        or the input is empty.

    Examples
    --------
    >>> x = torch.linspace(1, 2, 64, dtype=torch.float64)[:, None]
    >>> fit = SymbolicRegression(names=["x"], budget_s=1, max_evaluations=1000)(x, 3 * x[:, 0] ** 2)
    >>> fit.result.best.sympy
    3*x**2
    """

    name = "rules.symbolic"
    function = staticmethod(symbolic_regression)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        names: Sequence[str],
        units: Mapping[str, str] | None = None,
        output_unit: str | None = None,
        backend: str = "operon",
        budget_s: float = 30.0,
        max_evaluations: int = 500_000,
        seed: int = 0,
        operators: str = DEFAULT_OPERATORS,
        max_length: int = 40,
    ) -> None:
        check_in(backend, "backend", BACKENDS)
        super().__init__(
            names=list(names),
            units=dict(units) if units else None,
            output_unit=output_unit,
            backend=backend,
            budget_s=float(budget_s),
            max_evaluations=int(max_evaluations),
            seed=int(seed),
            operators=operators,
            max_length=int(max_length),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> SymbolicFit:
        return symbolic_regression(x, y, **self._config)

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        x = np.linspace(0, 1, 20)[:, None]
        y = np.sin(x[:, 0])
        yn = y.copy()
        yn[2] = np.nan
        return [
            ({"x": x, "y": y[:10]}, ValueError, "same number of samples"),
            ({"x": x, "y": yn}, ValueError, "finite"),
            ({"x": np.ones((20, 1)), "y": y}, ValueError, "constant"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.rules import _reference

        def example() -> dict[str, np.ndarray]:
            lc = _reference.light_curve(0, n=120, noise=0.0)
            phase = np.mod(lc["time"] / 0.5667, 1.0)
            return {"x": phase[:, None], "y": lc["flux"]}

        spec = SemanticSpec(
            name="rules.symbolic.light-curve",
            family="rules",
            task="symbolic-regression",
            modality="light-curve",
            scale="cosmic",
            inputs={
                "x": TensorSchema(
                    axes="nc", dtype="any", description="phase in [0, 1) of a folded light curve"
                ),
                "y": TensorSchema(axes="n", dtype="any", description="relative flux"),
            },
            outputs={
                "prediction": TensorSchema(
                    axes="n", dtype="any", description="flux predicted by the discovered shape law"
                )
            },
            differentiable=False,
            description="Closed-form shape law of a periodic (pulsating/eclipsing) stellar light curve, flux as a function of phase, by symbolic regression (operon) with constant snapping.",
            tags=("symbolic-regression", "light-curve", "periodic", "variable-star", "operon"),
            authors=("learndock",),
        )
        return [
            Declaration(
                spec=spec,
                params={
                    "names": ["phase"],
                    "budget_s": 600.0,  # the evaluation budget stops the search: deterministic
                    "max_evaluations": 3000,
                    "seed": 0,
                    "operators": "add,sub,mul,constant,variable,sin,cos",
                    "max_length": 20,
                },
                reference_data=lambda seed: _reference.light_curve(seed),
                example=example,
                rtol=1e-3,
                atol=1e-4,
            )
        ]
