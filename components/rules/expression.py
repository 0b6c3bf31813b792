"""One intermediate representation for discovered laws: sympy <-> torch.

A discovered law is an :class:`Expression`: a sympy *template* over named variables
and named constants (``c0, c1, ...``), the fitted constant values at full double
precision, optional units, and bookkeeping (complexity, loss, library terms kept).

* :func:`to_torch` compiles it into a functional ``(params, f)`` pair,
  ``f(params, x) -> Tensor`` with ``x`` of shape ``(..., n_variables)``;
* :class:`ExpressionModule` is the same law as a differentiable pipeline stage whose
  constants are ``nn.Parameter`` s, so that ``Pipeline.refine`` can fine-tune them;
  :meth:`ExpressionModule.to_expression` gives the law back with the tuned constants.

Protected operators (``plog``, ``psqrt``, ``pdiv``, ``aq``), as produced by symbolic
regression engines, are explicit sympy functions with an explicit torch mapping; they
become ordinary sympy with :func:`unprotect`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch
from torch import nn

from components._validation import as_float_tensor, check_ndim, check_nonempty
from components.base import Component, Declaration
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "Expression",
    "ExpressionModule",
    "aq",
    "count_nodes",
    "evaluate_expression",
    "from_sympy",
    "parse_expression",
    "pdiv",
    "plog",
    "psqrt",
    "to_torch",
    "unprotect",
]

_EPS = 1e-10


# --------------------------------------------------------------------------------------
# protected operators
# --------------------------------------------------------------------------------------
class plog(sp.Function):
    """Protected logarithm: ``log(|x|)`` (``log(eps)`` at 0)."""

    nargs = 1

    def _eval_rewrite_as_log(self, x: sp.Expr, **kw: Any) -> sp.Expr:
        return sp.log(sp.Abs(x))


class psqrt(sp.Function):
    """Protected square root: ``sqrt(|x|)``."""

    nargs = 1


class pdiv(sp.Function):
    """Protected division: ``a / b`` with ``|b|`` clamped below by ``1e-10`` (sign kept)."""

    nargs = 2


class aq(sp.Function):
    """Analytic quotient ``a / sqrt(1 + b**2)`` (Ni et al., 2013)."""

    nargs = 2


_PROTECTED = {"plog": plog, "psqrt": psqrt, "pdiv": pdiv, "aq": aq}


def unprotect(expr: sp.Expr) -> sp.Expr:
    """Replace protected operators by their plain sympy meaning on their safe domain.

    ``plog(x) -> log(|x|)``, ``psqrt(x) -> sqrt(|x|)``, ``pdiv(a, b) -> a/b``,
    ``aq(a, b) -> a/sqrt(1 + b**2)``.

    Examples
    --------
    >>> x = sp.Symbol("x", positive=True)
    >>> unprotect(psqrt(x) + pdiv(1, x))
    sqrt(x) + 1/x
    """
    return (
        expr.replace(plog, lambda a: sp.log(sp.Abs(a)))
        .replace(psqrt, lambda a: sp.sqrt(sp.Abs(a)))
        .replace(pdiv, lambda a, b: a / b)
        .replace(aq, lambda a, b: a / sp.sqrt(1 + b**2))
    )


def _tpdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    b = torch.as_tensor(b, dtype=a.dtype if isinstance(a, torch.Tensor) else None)
    sign = torch.where(b < 0, -torch.ones_like(b), torch.ones_like(b))
    return a / (sign * b.abs().clamp_min(_EPS))


_TORCH_FUNCS: dict[Any, Callable[..., torch.Tensor]] = {
    sp.sin: torch.sin,
    sp.cos: torch.cos,
    sp.tan: torch.tan,
    sp.exp: torch.exp,
    sp.log: torch.log,
    sp.Abs: torch.abs,
    sp.tanh: torch.tanh,
    sp.sinh: torch.sinh,
    sp.cosh: torch.cosh,
    sp.asin: torch.asin,
    sp.acos: torch.acos,
    sp.atan: torch.atan,
    sp.sign: torch.sign,
    sp.erf: torch.erf,
    plog: lambda a: torch.log(a.abs().clamp_min(_EPS)),
    psqrt: lambda a: torch.sqrt(a.abs()),
    pdiv: _tpdiv,
    aq: lambda a, b: a / torch.sqrt(1 + b * b),
}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def count_nodes(expr: sp.Expr) -> int:
    """Complexity of an expression: the number of nodes of its sympy tree.

    Examples
    --------
    >>> x, y = sp.symbols("x y")
    >>> count_nodes(x * y + 1)
    5
    """
    return sum(1 for _ in sp.preorder_traversal(expr))


def _symbols(names: Sequence[str]) -> dict[str, sp.Symbol]:
    return {n: sp.Symbol(n, real=True) for n in names}


def parse_expression(text: str, variables: Sequence[str], constants: Sequence[str] = ()) -> sp.Expr:
    """Parse ``text`` with every name in ``variables``/``constants`` as a real sympy Symbol.

    Raises
    ------
    ValueError
        If the text does not parse or uses a name that is neither a variable, a
        constant nor a known function.

    Examples
    --------
    >>> parse_expression("E*x**2/2", ["E", "x"])
    E*x**2/2
    """
    local: dict[str, Any] = {**_symbols([*variables, *constants]), **_PROTECTED}
    try:
        expr = sp.sympify(text, locals=local)
    except (sp.SympifyError, SyntaxError, TypeError) as exc:
        raise ValueError(f"expression: could not parse {text!r}: {exc}") from exc
    unknown = {s.name for s in expr.free_symbols} - set(variables) - set(constants)
    if unknown:
        raise ValueError(
            f"expression: {text!r} uses unknown names {sorted(unknown)}; variables are {list(variables)}"
        )
    return expr


def _is_float(a: sp.Basic) -> bool:
    return isinstance(a, sp.Float)


def from_sympy(
    expr: sp.Expr | str,
    variables: Sequence[str],
    *,
    units: Mapping[str, str] | None = None,
    output: str = "y",
    output_unit: str | None = None,
    prefix: str = "c",
    **meta: Any,
) -> Expression:
    """Build an :class:`Expression` from sympy: every Float becomes a fitted constant.

    Integers, rationals and ``pi`` stay exact structure; every floating-point number
    becomes a named constant ``c0, c1, ...`` (in tree order) whose value keeps full
    double precision.

    Examples
    --------
    >>> e = from_sympy("2.5*x**2 + 1/3", ["x"])
    >>> e.template, e.constants
    (c0*x**2 + 1/3, {'c0': 2.5})
    """
    if isinstance(expr, str):
        expr = parse_expression(expr, variables)
    vsyms = _symbols(variables)
    # rebind same-named symbols with other assumptions to our real symbols
    expr = expr.xreplace({s: vsyms[s.name] for s in expr.free_symbols if s.name in vsyms})
    floats: list[sp.Float] = []
    for a in sp.preorder_traversal(expr):
        if _is_float(a) and a not in floats and a not in (sp.Float(1.0), sp.Float(-1.0)):
            floats.append(a)
    repl = {}
    constants: dict[str, float] = {}
    for i, f in enumerate(floats):
        name = f"{prefix}{i}"
        while name in vsyms:
            name = "_" + name
        repl[f] = sp.Symbol(name, real=True)
        constants[name] = float(f)
    template = expr.xreplace(repl) if repl else expr
    template = template.xreplace({sp.Float(1.0): sp.Integer(1), sp.Float(-1.0): sp.Integer(-1)})
    return Expression(
        template, variables, constants, units=units, output=output, output_unit=output_unit, **meta
    )


class Expression:
    """A discovered law: sympy template + named variables + fitted constants (+ units).

    Parameters
    ----------
    template : sympy.Expr
        Expression over the variable symbols and the constant symbols.
    variables : sequence of str
        Names of the input variables, in column order of the data.
    constants : mapping, optional
        ``{constant name: value}``; values are kept as Python floats (full double).
    units : mapping, optional
        ``{variable name: astropy unit string}``.
    output, output_unit : str, optional
        Name and unit of the modelled quantity.
    loss, complexity : float, int, optional
        Fit loss (mean squared error) and complexity (tree nodes, default computed).
    terms : sequence of str, optional
        For library methods (SINDy): the library terms this law kept.
    dimensionally_consistent : bool or None
        Set when units were given and checked.

    Examples
    --------
    >>> e = from_sympy("0.5*m*v**2", ["m", "v"])
    >>> float(e.evaluate(np.array([[2.0, 3.0]]))[0])
    9.0
    >>> e.sympy
    0.5*m*v**2
    """

    def __init__(
        self,
        template: sp.Expr,
        variables: Sequence[str],
        constants: Mapping[str, float] | None = None,
        *,
        units: Mapping[str, str] | None = None,
        output: str = "y",
        output_unit: str | None = None,
        loss: float | None = None,
        complexity: int | None = None,
        terms: Sequence[str] = (),
        dimensionally_consistent: bool | None = None,
    ) -> None:
        self.variables = tuple(str(v) for v in variables)
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"variables: expected distinct names, got {list(self.variables)}")
        self.constants = {str(k): float(v) for k, v in (constants or {}).items()}
        clash = set(self.constants) & set(self.variables)
        if clash:
            raise ValueError(f"constants: names {sorted(clash)} clash with variable names")
        known = set(self.variables) | set(self.constants)
        unknown = {s.name for s in template.free_symbols} - known
        if unknown:
            raise ValueError(
                f"template: symbols {sorted(unknown)} are neither variables {list(self.variables)} nor constants {sorted(self.constants)}"
            )
        self.template = template
        self.units = dict(units) if units else None
        self.output = output
        self.output_unit = output_unit
        self.loss = None if loss is None else float(loss)
        self.terms = tuple(terms)
        self.dimensionally_consistent = dimensionally_consistent
        self._complexity = complexity

    # -- views -----------------------------------------------------------------------
    @property
    def sympy(self) -> sp.Expr:
        """The law with its constants substituted (full-precision sympy Floats)."""
        if not self.constants:
            return self.template
        subs = {sp.Symbol(k, real=True): sp.Float(v) for k, v in self.constants.items()}
        return self.template.xreplace(subs)

    @property
    def complexity(self) -> int:
        """Number of nodes of the template tree (constants count one node each)."""
        return self._complexity if self._complexity is not None else count_nodes(self.template)

    def with_constants(self, constants: Mapping[str, float]) -> Expression:
        """A copy with some constants replaced (unknown names raise ``KeyError``)."""
        new = dict(self.constants)
        for k, v in constants.items():
            if k not in new:
                raise KeyError(
                    f"constants: {k!r} is not a constant of this expression ({sorted(new)})"
                )
            new[k] = float(v)
        return Expression(
            self.template,
            self.variables,
            new,
            units=self.units,
            output=self.output,
            output_unit=self.output_unit,
            loss=self.loss,
            terms=self.terms,
            dimensionally_consistent=self.dimensionally_consistent,
        )

    def evaluate(self, x: Any) -> np.ndarray | torch.Tensor:
        """Evaluate on ``x`` of shape ``(..., n_variables)``; numpy in, numpy out."""
        params, f = to_torch(self)
        if isinstance(x, torch.Tensor):
            return f(params, x)
        with torch.no_grad():
            return f(params, torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()

    def to_module(self) -> ExpressionModule:
        """The law as an :class:`ExpressionModule` (constants as ``nn.Parameter``)."""
        return ExpressionModule(
            expression=str(self.template),
            variables=list(self.variables),
            constants=dict(self.constants),
        )

    def __str__(self) -> str:
        return f"{self.output} = {self.sympy}"

    def __repr__(self) -> str:
        extra = f", loss={self.loss:.3g}" if self.loss is not None else ""
        return f"Expression({self.output} = {self.sympy}, complexity={self.complexity}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        return (
            self.variables == other.variables
            and self.constants == other.constants
            and sp.srepr(self.template) == sp.srepr(other.template)
        )

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------
# sympy -> torch
# --------------------------------------------------------------------------------------
_Fn = Callable[[torch.Tensor, torch.Tensor], Any]


def _compile(node: sp.Basic, var_idx: Mapping[str, int], const_idx: Mapping[str, int]) -> _Fn:
    if isinstance(node, sp.Symbol):
        if node.name in var_idx:
            i = var_idx[node.name]
            return lambda x, c: x[..., i]
        if node.name in const_idx:
            j = const_idx[node.name]
            return lambda x, c: c[j]
        raise ValueError(f"expression: unknown symbol {node.name!r}")
    if node.is_Number or node in (sp.pi, sp.E) or isinstance(node, sp.NumberSymbol):
        if not node.is_real:
            raise ValueError(f"expression: non-real number {node} is not supported")
        v = float(node)
        return lambda x, c: v
    args = [_compile(a, var_idx, const_idx) for a in node.args]
    if isinstance(node, sp.Add):

        def f_add(x: torch.Tensor, c: torch.Tensor) -> Any:
            out = args[0](x, c)
            for a in args[1:]:
                out = out + a(x, c)
            return out

        return f_add
    if isinstance(node, sp.Mul):

        def f_mul(x: torch.Tensor, c: torch.Tensor) -> Any:
            out = args[0](x, c)
            for a in args[1:]:
                out = out * a(x, c)
            return out

        return f_mul
    if isinstance(node, sp.Pow):
        base, ex = args
        e = node.args[1]
        if e == sp.Rational(1, 2):
            return lambda x, c: torch.sqrt(torch.as_tensor(base(x, c), dtype=x.dtype))
        if e == sp.Rational(-1, 2):
            return lambda x, c: torch.rsqrt(torch.as_tensor(base(x, c), dtype=x.dtype))
        if e == -1:
            return lambda x, c: 1.0 / torch.as_tensor(base(x, c), dtype=x.dtype)
        if e.is_Integer:
            k = int(e)
            return lambda x, c: torch.as_tensor(base(x, c), dtype=x.dtype) ** k
        return lambda x, c: torch.pow(torch.as_tensor(base(x, c), dtype=x.dtype), ex(x, c))
    fn = _TORCH_FUNCS.get(node.func)
    if fn is None:
        raise ValueError(
            f"expression: function {node.func} has no torch mapping; supported: {sorted(str(k) for k in _TORCH_FUNCS)}"
        )

    def f_call(x: torch.Tensor, c: torch.Tensor) -> Any:
        vals = [a(x, c) for a in args]
        vals = [
            v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=x.dtype, device=x.device)
            for v in vals
        ]
        return fn(*vals)

    return f_call


def to_torch(
    expr: Expression,
) -> tuple[
    dict[str, torch.Tensor], Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
]:
    """Compile an :class:`Expression` into a functional torch ``(params, f)`` pair.

    Returns
    -------
    params : dict of str to Tensor
        The constants as 0-d float64 tensors.
    f : callable
        ``f(params, x) -> Tensor``: evaluates the law on ``x`` of shape
        ``(..., n_variables)`` and returns shape ``(...)``, in ``x``'s dtype and device.
        Pure function of its arguments (usable with ``torch.func``).

    Examples
    --------
    >>> e = from_sympy("1.5*sin(x) + y", ["x", "y"])
    >>> params, f = to_torch(e)
    >>> f(params, torch.tensor([[0.0, 2.0]]))
    tensor([2.])
    """
    names = list(expr.constants)
    body = _compile(
        expr.template,
        {v: i for i, v in enumerate(expr.variables)},
        {n: j for j, n in enumerate(names)},
    )
    params = {n: torch.tensor(v, dtype=torch.float64) for n, v in expr.constants.items()}
    nvar = len(expr.variables)

    def f(p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != nvar:
            raise ValueError(
                f"x: expected last axis of length {nvar} (variables {list(expr.variables)}), got shape {tuple(x.shape)}"
            )
        c = (
            torch.stack([p[n] for n in names]).to(dtype=x.dtype, device=x.device)
            if names
            else x.new_zeros(0)
        )
        out = body(x, c)
        return (
            out + x.new_zeros(x.shape[:-1])
            if isinstance(out, torch.Tensor)
            else x.new_full(x.shape[:-1], float(out))
        )

    return params, f


# --------------------------------------------------------------------------------------
# the pipeline stage
# --------------------------------------------------------------------------------------
def evaluate_expression(
    x: torch.Tensor,
    *,
    expression: str,
    variables: Sequence[str],
    constants: Mapping[str, float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluate a law given as text on a table of variables.

    Parameters
    ----------
    x : Tensor, shape (n, d) or (..., d)
        One column per variable, in the order of ``variables``.
    expression : str
        The law over the variables and named constants (sympy syntax; protected
        operators ``plog, psqrt, pdiv, aq`` allowed).
    variables : sequence of str
        Column names.
    constants : mapping or 1-D Tensor, optional
        Constant values by name, or a tensor in the order of ``constants`` names as
        sorted by first appearance in ``expression`` (the order an
        :class:`ExpressionModule` stores them in).  Gradients flow through a tensor.

    Returns
    -------
    Tensor, shape (...)
        The law evaluated per row, in ``x``'s dtype.

    Raises
    ------
    ValueError
        If ``x`` is empty, has the wrong number of columns, or the expression uses
        unknown names.

    Examples
    --------
    >>> evaluate_expression(torch.tensor([[2.0]]), expression="a*x**2", variables=["x"], constants={"a": 0.5})
    tensor([2.])
    """
    x = as_float_tensor(x, "x")
    check_nonempty(x, "x")
    check_ndim(x, "x", (1, 2, 3, 4), axes="(..., variable)")
    variables = list(variables)
    if x.shape[-1] != len(variables):
        raise ValueError(
            f"x: expected {len(variables)} columns (variables {variables}), got shape {tuple(x.shape)}"
        )
    if isinstance(constants, torch.Tensor):
        names = _constant_names(expression, variables)
        if constants.numel() != len(names):
            raise ValueError(
                f"constants: expected {len(names)} values for {names}, got {constants.numel()}"
            )
        cvals: dict[str, Any] = dict(zip(names, constants.reshape(-1).unbind(0))) if names else {}
    else:
        cvals = dict(constants or {})
        names = list(cvals)
    body = _compiled(expression, tuple(variables), tuple(names))
    c = (
        torch.stack([torch.as_tensor(cvals[n], dtype=x.dtype, device=x.device) for n in names]).to(
            x.dtype
        )
        if names
        else x.new_zeros(0)
    )
    out = body(x, c)
    return (
        out + x.new_zeros(x.shape[:-1])
        if isinstance(out, torch.Tensor)
        else x.new_full(x.shape[:-1], float(out))
    )


@functools.lru_cache(maxsize=256)
def _compiled(expression: str, variables: tuple[str, ...], names: tuple[str, ...]) -> _Fn:
    """Parse and compile once per (expression, variables, constants): a pipeline stage
    calls :func:`evaluate_expression` at every step."""
    template = parse_expression(expression, variables, names)
    return _compile(
        template, {v: i for i, v in enumerate(variables)}, {n: j for j, n in enumerate(names)}
    )


def _constant_names(expression: str, variables: Sequence[str]) -> list[str]:
    """Free names of ``expression`` that are not variables, in order of first appearance."""
    import re

    funcs = {
        "sin",
        "cos",
        "tan",
        "exp",
        "log",
        "sqrt",
        "Abs",
        "tanh",
        "sinh",
        "cosh",
        "asin",
        "acos",
        "atan",
        "sign",
        "erf",
        "pi",
        "E",
        *list(_PROTECTED),
    }
    seen: list[str] = []
    for tok in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", expression):
        if tok not in variables and tok not in funcs and tok not in seen:
            seen.append(tok)
    return seen


class ExpressionModule(Component):
    """A law as a differentiable pipeline stage: ``x -> f(x; constants)``.

    Parameters
    ----------
    expression : str
        The law over ``variables`` and named constants, in sympy syntax.
    variables : list of str
        Input column names.
    constants : dict of str to float
        Initial constant values; stored as one float64 ``nn.Parameter`` vector
        (``self.constants``), so gradient descent can tune them.

    Notes
    -----
    ``config()`` reports the *current* constant values, so that a fine-tuned module
    round-trips through Hydra with its tuned constants, and
    ``module(x) == evaluate_expression(x, **module.config())`` always holds.

    Examples
    --------
    >>> m = ExpressionModule(expression="k*x", variables=["x"], constants={"k": 2.0})
    >>> m(torch.tensor([[3.0]]))
    tensor([6.], grad_fn=<AddBackward0>)
    >>> m.to_expression().sympy
    2.0*x
    """

    name = "rules.expression"
    function = staticmethod(evaluate_expression)
    differentiable = True
    footprint = 0

    def __init__(
        self,
        *,
        expression: str,
        variables: Sequence[str],
        constants: Mapping[str, float] | None = None,
    ) -> None:
        variables = list(variables)
        constants = {str(k): float(v) for k, v in (constants or {}).items()}
        names = _constant_names(expression, variables)
        missing = set(names) - set(constants)
        if missing:
            raise ValueError(
                f"constants: expression {expression!r} uses {sorted(missing)} without a value"
            )
        parse_expression(expression, variables, names)  # validates
        super().__init__(expression=expression, variables=variables, constants=constants)
        self._names = names
        self.constants = nn.Parameter(
            torch.tensor([constants[n] for n in names], dtype=torch.float64)
        )

    def config(self) -> dict[str, Any]:
        vals = self.constants.detach().cpu().tolist()
        return {
            "expression": self._config["expression"],
            "variables": list(self._config["variables"]),
            "constants": dict(zip(self._names, (float(v) for v in vals))),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return evaluate_expression(
            x,
            expression=self._config["expression"],
            variables=self._config["variables"],
            constants=self.constants,
        )

    def to_expression(self, **meta: Any) -> Expression:
        """The law with the module's current (tuned) constants, back in sympy."""
        c = self.config()
        template = parse_expression(c["expression"], c["variables"], self._names)
        return Expression(template, c["variables"], c["constants"], **meta)

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [({"x": np.ones((4, 3), dtype=np.float32)}, ValueError, "columns")]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.rules import _reference

        spec = SemanticSpec(
            name="rules.expression.spring-force",
            family="rules",
            task="equation-discovery",
            modality="tabular",
            scale="macro",
            inputs={
                "x": TensorSchema(axes="nc", dtype="any", description="columns: k [N/m], x [m]")
            },
            outputs={
                "output": TensorSchema(
                    axes="n", dtype="any", units="N", description="force -k*x*(1 + a*x**2)"
                )
            },
            differentiable=True,
            description="A discovered law as a differentiable stage: Duffing spring force with tunable constants; fine-tune it with Pipeline.refine.",
            tags=("expression", "sympy", "differentiable", "law"),
            authors=("learndock",),
        )
        return [
            Declaration(
                spec=spec,
                params={
                    "expression": "-c0*k*x*(1 + c1*x**2)",
                    "variables": ["k", "x"],
                    "constants": {"c0": 1.0, "c1": 0.25},
                },
                reference_data=_reference.spring_table,
                example=lambda: {"x": _reference.spring_table(0)[:16].astype(np.float32)},
            )
        ]
