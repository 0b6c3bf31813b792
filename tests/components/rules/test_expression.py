"""Expression IR: sympy -> torch -> sympy round trip, protected operators, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from components.rules.expression import (
    Expression,
    ExpressionModule,
    evaluate_expression,
    from_sympy,
    parse_expression,
    pdiv,
    plog,
    psqrt,
    to_torch,
    unprotect,
)

LAWS = [
    "0.1234567890123456789*x*y + 2.5",
    "exp(-x**2/2)/sqrt(2*pi)",
    "1.7*sin(0.3*x - y) + cos(y)**2",
    "x/(1.0000000001 + y) - 3.14159*log(x)",
    "plog(x - y) + psqrt(y - x) + pdiv(x, y - 2.0)",
    "tanh(x)*0.5 + atan(y)*1e-12",
]


@pytest.mark.parametrize("law", LAWS)
def test_roundtrip_sympy_torch_sympy_is_exact(law: str) -> None:
    expr = parse_expression(law, ["x", "y"])
    # constants are IEEE doubles: make the input's Floats doubles first
    expr = expr.xreplace({f: sp.Float(float(f)) for f in expr.atoms(sp.Float)})
    e = from_sympy(expr, ["x", "y"])
    # sympy -> Expression is lossless: substituting the constants gives the input back
    assert sp.srepr(e.sympy) == sp.srepr(expr)
    # -> ExpressionModule (constants as Parameters) -> back to sympy: exact
    back = e.to_module().to_expression()
    assert back.constants == e.constants
    assert sp.srepr(back.sympy) == sp.srepr(e.sympy)
    # the torch function agrees with sympy's numerical evaluation
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.5, (64, 2))
    params, f = to_torch(e)
    got = f(params, torch.as_tensor(X)).numpy()
    modules = [
        {
            "plog": lambda a: np.log(np.abs(a)),
            "psqrt": lambda a: np.sqrt(np.abs(a)),
            "pdiv": lambda a, b: a / b,
        },
        "numpy",
    ]
    want = sp.lambdify(sp.symbols("x y", real=True), expr, modules=modules)(X[:, 0], X[:, 1])
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-12, atol=1e-12)


def test_constants_keep_full_precision() -> None:
    v = 0.1 + 1e-16 * 3  # not representable in float32
    e = from_sympy(sp.Float(v, 17) * sp.Symbol("x", real=True), ["x"])
    assert e.constants["c0"] == v
    m = e.to_module()
    assert m.constants.dtype == torch.float64
    assert m.to_expression().constants["c0"] == v


def test_protected_operators_are_finite_and_unprotect() -> None:
    x = torch.tensor([[0.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    e = from_sympy("plog(x) + psqrt(x) + pdiv(y, x)", ["x", "y"])
    out = e.evaluate(x)
    assert torch.isfinite(out).all()
    xs = sp.Symbol("x", positive=True)
    assert unprotect(plog(xs) + psqrt(xs) + pdiv(1, xs)) == sp.log(xs) + sp.sqrt(xs) + 1 / xs


def test_module_equals_function_and_dtypes() -> None:
    m = ExpressionModule(
        expression="a*x**2 + b*sin(y)", variables=["x", "y"], constants={"a": 1.5, "b": -0.25}
    )
    for dt in (torch.float32, torch.float64):
        x = torch.rand(10, 2, dtype=dt, generator=torch.Generator().manual_seed(1))
        out = m(x)
        assert out.dtype == dt and out.shape == (10,)
        torch.testing.assert_close(out, evaluate_expression(x, **m.config()))


def test_finetuning_moves_constants_to_truth() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, generator=gen, dtype=torch.float64) * 2 + 0.5
    y = 2.0 * x[:, 0] * torch.exp(-0.7 * x[:, 1])
    m = ExpressionModule(
        expression="a*x*exp(-b*v)", variables=["x", "v"], constants={"a": 1.0, "b": 0.2}
    )
    opt = torch.optim.LBFGS(
        m.parameters(),
        max_iter=200,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    tuned = m.to_expression().constants
    assert tuned["a"] == pytest.approx(2.0, rel=1e-6)
    assert tuned["b"] == pytest.approx(0.7, rel=1e-6)
    # the Hydra config carries the tuned constants
    assert m.config()["constants"]["b"] == pytest.approx(0.7, rel=1e-6)


def test_gradients_flow_to_inputs_and_constants() -> None:
    m = ExpressionModule(
        expression="k*x*sqrt(y)", variables=["x", "y"], constants={"k": 3.0}
    ).double()
    x = torch.tensor([[1.0, 4.0]], dtype=torch.float64, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and m.constants.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([[6.0, 3.0 * 1.0 / 4.0]], dtype=torch.float64))


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="unknown names"):
        parse_expression("x + zz", ["x"])
    with pytest.raises(ValueError, match="without a value"):
        ExpressionModule(expression="a*x", variables=["x"], constants={})
    m = ExpressionModule(expression="a*x", variables=["x"], constants={"a": 1.0})
    with pytest.raises(ValueError, match="columns"):
        m(torch.ones(3, 2))
    with pytest.raises(ValueError, match="non-empty"):
        m(torch.ones(0, 1))
    with pytest.raises(ValueError, match="neither variables"):
        Expression(sp.Symbol("q") + 1, ["x"])


def test_expression_metadata() -> None:
    e = from_sympy(
        "0.5*m*v**2", ["m", "v"], units={"m": "kg", "v": "m/s"}, output="E", output_unit="J"
    )
    assert e.complexity == len(list(sp.preorder_traversal(e.template)))
    assert "E = " in str(e)
    assert e.with_constants({"c0": 0.25}).constants == {"c0": 0.25}
    with pytest.raises(KeyError):
        e.with_constants({"zz": 1.0})
