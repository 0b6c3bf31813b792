"""Units as a hard prior for law discovery.

Variables carry astropy units.  Before a search, :func:`buckingham_pi` reduces the
problem to dimensionless groups (Buckingham's pi theorem): the target is written as
``y = prefactor(x) * F(pi_1, ..., pi_k)`` with a monomial prefactor of the right units
and dimensionless ``pi_j``, so any ``F`` the search finds is dimensionally consistent.
:func:`dimension_of` infers the dimension of a candidate expression and
:func:`is_consistent` rejects inconsistent ones (sums of unlike quantities,
transcendental functions of dimensional arguments).  Free numeric constants are taken
as dimensionless: that is the hard prior.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import sympy as sp

__all__ = [
    "DimensionError",
    "PiReduction",
    "buckingham_pi",
    "dimension_of",
    "dimension_vector",
    "is_consistent",
    "parse_units",
]

#: SI base dimensions in the order of :func:`dimension_vector`.
BASES: tuple[str, ...] = ("m", "s", "kg", "A", "K", "mol", "cd")


class DimensionError(ValueError):
    """A dimensionally inconsistent expression (sum of unlike terms, log of metres, ...)."""


def parse_units(units: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``{variable: unit}`` with astropy; strings, ``Unit`` objects or ``None``
    (= dimensionless) are accepted.

    Raises
    ------
    ValueError
        For an unknown unit string (naming the variable and the string) or a variable
        that is not in ``names``.

    Examples
    --------
    >>> u = parse_units({"v": "m/s", "t": "s"})
    >>> str(u["v"])
    'm / s'
    """
    from astropy import units as u

    out: dict[str, Any] = {}
    for k, v in units.items():
        if names is not None and k not in names:
            raise ValueError(f"units: {k!r} is not one of the variables {list(names)}")
        if v is None or v == "" or v == 1:
            out[k] = u.dimensionless_unscaled
            continue
        if isinstance(v, u.UnitBase):
            out[k] = v
            continue
        try:
            out[k] = u.Unit(str(v), parse_strict="raise")
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"units: unknown unit string {v!r} for variable {k!r} (astropy could not parse it: {exc})"
            ) from exc
    return out


def dimension_vector(unit: Any) -> tuple[Fraction, ...]:
    """Exponents of the SI base dimensions ``(m, s, kg, A, K, mol, cd)`` of ``unit``.

    The scale (``km`` vs ``m``) is ignored: it is a constant factor.

    Examples
    --------
    >>> from astropy import units as u
    >>> dimension_vector(u.N)[:3]
    (Fraction(1, 1), Fraction(-2, 1), Fraction(1, 1))
    """
    from astropy import units as u

    unit = u.Unit(unit) if not isinstance(unit, u.UnitBase) else unit
    dec = unit.decompose(bases=u.si.bases)
    vec = dict.fromkeys(BASES, Fraction(0))
    for b, p in zip(dec.bases, dec.powers):
        key = b.to_string()
        if key not in vec:  # pragma: no cover - astropy si bases are the 7 above
            raise ValueError(f"units: unexpected base unit {key!r} in {unit}")
        vec[key] = Fraction(p).limit_denominator(1000)
    return tuple(vec[b] for b in BASES)


_ZERO = (Fraction(0),) * len(BASES)


def dimension_of(expr: sp.Expr, dims: Mapping[str, tuple[Fraction, ...]]) -> tuple[Fraction, ...]:
    """Dimension vector of ``expr`` given the variables' dimension vectors.

    Numbers and constants are dimensionless; ``+`` needs equal dimensions; ``*``/``**``
    add/scale exponents (exponents must be numbers when the base has a dimension);
    every other function needs a dimensionless argument and returns one
    (``Abs``/``sign``-like odd functions keep their argument's dimension).

    Raises
    ------
    DimensionError
        Describing the first inconsistency found.
    """
    if isinstance(expr, sp.Symbol):
        return tuple(dims.get(expr.name, _ZERO))
    if expr.is_Number or isinstance(expr, sp.NumberSymbol):
        return _ZERO
    if isinstance(expr, sp.Add):
        ds = [dimension_of(a, dims) for a in expr.args]
        # a pure number added to a dimensional term is inconsistent too
        first = ds[0]
        for a, d in zip(expr.args[1:], ds[1:]):
            if d != first:
                raise DimensionError(
                    f"sum of unlike quantities: {expr.args[0]} [{_fmt(first)}] + {a} [{_fmt(d)}]"
                )
        return first
    if isinstance(expr, sp.Mul):
        tot = list(_ZERO)
        for a in expr.args:
            tot = [x + y for x, y in zip(tot, dimension_of(a, dims))]
        return tuple(tot)
    if isinstance(expr, sp.Pow):
        db = dimension_of(expr.args[0], dims)
        de = dimension_of(expr.args[1], dims)
        if de != _ZERO:
            raise DimensionError(f"dimensional exponent in {expr}")
        if db == _ZERO:
            return _ZERO
        e = expr.args[1]
        if not e.is_Number:
            raise DimensionError(f"non-numeric power of a dimensional quantity: {expr}")
        f = Fraction(str(sp.nsimplify(e))) if not e.is_Rational else Fraction(int(e.p), int(e.q))
        return tuple(x * f for x in db)
    if expr.func in (sp.Abs, sp.sign) or getattr(expr.func, "__name__", "") in ("Abs",):
        return dimension_of(expr.args[0], dims) if expr.func is sp.Abs else _ZERO
    name = getattr(expr.func, "__name__", str(expr.func))
    if name in ("pdiv", "aq") and len(expr.args) == 2:
        da, db = dimension_of(expr.args[0], dims), dimension_of(expr.args[1], dims)
        if name == "aq":
            if db != _ZERO:
                raise DimensionError(f"aq needs a dimensionless second argument: {expr}")
            return da
        return tuple(x - y for x, y in zip(da, db))
    if name == "psqrt":
        return tuple(x / 2 for x in dimension_of(expr.args[0], dims))
    for a in expr.args:
        d = dimension_of(a, dims)
        if d != _ZERO:
            raise DimensionError(f"{name}() of a dimensional argument {a} [{_fmt(d)}]")
    return _ZERO


def _fmt(d: Sequence[Fraction]) -> str:
    parts = [f"{b}^{x}" if x != 1 else b for b, x in zip(BASES, d) if x != 0]
    return " ".join(parts) or "dimensionless"


def is_consistent(
    expr: sp.Expr, units: Mapping[str, Any], output_unit: Any = None
) -> tuple[bool, str]:
    """Whether ``expr`` is dimensionally consistent (and has ``output_unit``, if given).

    Returns
    -------
    ok : bool
    reason : str
        Empty when consistent, else what is wrong.

    Examples
    --------
    >>> x, t = sp.symbols("x t")
    >>> is_consistent(x / t, {"x": "m", "t": "s"}, "m/s")
    (True, '')
    >>> is_consistent(x + t, {"x": "m", "t": "s"})[0]
    False
    """
    parsed = parse_units(units)
    dims = {k: dimension_vector(v) for k, v in parsed.items()}
    try:
        d = dimension_of(expr, dims)
    except DimensionError as exc:
        return False, str(exc)
    if output_unit is not None:
        want = dimension_vector(parse_units({"_out": output_unit})["_out"])
        if d != want:
            return False, f"result has dimension [{_fmt(d)}], expected [{_fmt(want)}]"
    return True, ""


@dataclasses.dataclass
class PiReduction:
    """A Buckingham-pi reduction ``y = prefactor * F(groups)``.

    Attributes
    ----------
    prefactor : sympy.Expr
        Monomial in the variables with the units of ``y``.
    groups : list of sympy.Expr
        Independent dimensionless monomials (the new inputs of the search).
    group_names : list of str
        ``pi0, pi1, ...``.
    """

    names: list[str]
    prefactor: sp.Expr
    groups: list[sp.Expr]
    group_names: list[str]

    def transform(self, X: Any, y: Any) -> tuple[Any, Any]:
        """Map data ``(X, y)`` to ``(Pi, y / prefactor)`` (numpy arrays)."""
        import numpy as np

        syms = [sp.Symbol(n, real=True) for n in self.names]
        cols = [np.asarray(X[:, i], dtype=np.float64) for i in range(X.shape[1])]
        f = sp.lambdify(syms, self.prefactor, "numpy")
        pre = np.broadcast_to(np.asarray(f(*cols), dtype=np.float64), (X.shape[0],))
        pis = [
            np.broadcast_to(
                np.asarray(sp.lambdify(syms, g, "numpy")(*cols), dtype=np.float64), (X.shape[0],)
            )
            for g in self.groups
        ]
        pi = np.stack(pis, axis=1) if pis else np.zeros((X.shape[0], 0))
        return pi, np.asarray(y, dtype=np.float64) / pre

    def back(self, expr: sp.Expr) -> sp.Expr:
        """Rewrite a law found over the groups as a law over the original variables."""
        subs = {sp.Symbol(g, real=True): grp for g, grp in zip(self.group_names, self.groups)}
        return self.prefactor * expr.xreplace(subs)


def buckingham_pi(names: Sequence[str], units: Mapping[str, Any], output_unit: Any) -> PiReduction:
    """Reduce ``y(x_1..x_n)`` to ``y = prefactor * F(pi_1..pi_k)`` with dimensionless ``pi``.

    Parameters
    ----------
    names : sequence of str
        Input variable names (all need a unit; missing ones count as dimensionless).
    units : mapping
        ``{name: unit}`` (astropy strings or units).
    output_unit : str or astropy unit
        Unit of the target.

    Returns
    -------
    PiReduction

    Raises
    ------
    ValueError
        If an unit string is unknown, or the output's units cannot be formed from the
        inputs' units (the law cannot be dimensionally consistent).

    Notes
    -----
    With ``D`` the (base dimension x variable) exponent matrix, the groups are an
    integer basis of the null space of ``D`` (``k = n - rank D`` groups) and the
    prefactor exponents ``a`` solve ``D a = d_y``; free directions of ``a`` are set
    to zero, preferring few variables.  Exact rational arithmetic (sympy).

    References
    ----------
    Buckingham, Phys. Rev. 4 (1914) 345.  Udrescu & Tegmark, Sci. Adv. 6 (2020) eaay2631.

    Examples
    --------
    >>> r = buckingham_pi(["m", "v", "c"], {"m": "kg", "v": "m/s", "c": "m/s"}, "kg")
    >>> r.prefactor, r.groups
    (m, [v/c])
    """
    names = [str(n) for n in names]
    parsed = parse_units({k: units.get(k) for k in names}, names)
    out = parse_units({"_y": output_unit})["_y"]
    d = sp.Matrix(
        [
            [sp.Rational(x.numerator, x.denominator) for x in dimension_vector(parsed[n])]
            for n in names
        ]
    ).T  # (7, n)
    dy = sp.Matrix([sp.Rational(x.numerator, x.denominator) for x in dimension_vector(out)])
    syms = [sp.Symbol(n, real=True) for n in names]
    # prefactor: D a = dy
    try:
        sol, params = d.gauss_jordan_solve(dy)
    except ValueError as exc:
        raise ValueError(
            f"units: the output unit {out} cannot be formed from the input units {dict((k, str(v)) for k, v in parsed.items())}; the law cannot be dimensionally consistent"
        ) from exc
    a = sol.subs(dict.fromkeys(params, 0))
    prefactor = sp.Mul(*[s ** a[i] for i, s in enumerate(syms)])
    groups = []
    for vec in d.nullspace():
        den = sp.ilcm(1, *[sp.fraction(v)[1] for v in vec])
        vec = vec * den
        g = sp.Integer(1)
        # orient so that the first non-zero exponent is positive
        first = next(v for v in vec if v != 0)
        sign = 1 if first > 0 else -1
        for i, s in enumerate(syms):
            g = g * s ** (sign * vec[i])
        groups.append(g)
    return PiReduction(
        names=names,
        prefactor=prefactor,
        groups=groups,
        group_names=[f"pi{i}" for i in range(len(groups))],
    )
