"""Symbolic regression: planted laws recovered exactly, Pareto front, units, snapping, errors."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
import sympy as sp
import torch

from components.rules.symbolic import SymbolicRegression, discover, snap_constants

X_, Y_ = sp.symbols("x y", real=True)
EASY = [
    "x*y",
    pytest.param("x**2/2 + y", marks=pytest.mark.slow),
    pytest.param("3*x - 2*y", marks=pytest.mark.slow),
    "y + sin(x)",
    pytest.param("y*exp(-x)", marks=pytest.mark.slow),
]
HARDER = ["x/(x + y)", "sqrt(x)*y", "y**2*cos(x)", "log(x) + 1"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(0).uniform(1, 3, (200, 2))


@pytest.mark.parametrize("law", EASY)
def test_planted_law_recovered_exactly(law: str, data: np.ndarray) -> None:
    truth = sp.sympify(law, locals={"x": X_, "y": Y_})
    y = sp.lambdify([X_, Y_], truth)(data[:, 0], data[:, 1])
    res = discover(data, y, names=["x", "y"], budget_s=60, max_evaluations=20_000, seed=0)
    assert sp.simplify(res.best.sympy - truth) == 0, str(res)
    assert res.r2 > 1 - 1e-10
    assert res.dimensionally_consistent is None


@pytest.mark.slow
@pytest.mark.parametrize("law", HARDER)
def test_harder_planted_law_recovered_exactly(law: str, data: np.ndarray) -> None:
    truth = sp.sympify(law, locals={"x": X_, "y": Y_})
    y = sp.lambdify([X_, Y_], truth)(data[:, 0], data[:, 1])
    res = discover(data, y, names=["x", "y"], budget_s=10, max_evaluations=200_000, seed=0)
    assert sp.simplify(res.best.sympy - truth) == 0, str(res)


def test_pareto_front_is_monotone_with_one_choice(data: np.ndarray) -> None:
    y = data[:, 0] ** 2 * np.cos(data[:, 1])
    res = discover(data, y, names=["x", "y"], budget_s=60, max_evaluations=20_000, seed=1)
    comp = [e.complexity for e in res.pareto]
    loss = [e.loss for e in res.pareto]
    assert comp == sorted(comp) and all(a > b for a, b in itertools.pairwise(loss))
    assert sum(e.chosen for e in res.pareto) == 1
    assert res.best is next(e.expression for e in res.pareto if e.chosen)


def test_units_give_consistent_law_and_reject_inconsistent(data: np.ndarray) -> None:
    m, v = data[:, 0], data[:, 1]
    units = {"m": "kg", "v": "m/s"}
    res = discover(
        data,
        0.5 * m * v**2,
        names=["m", "v"],
        units=units,
        output_unit="J",
        budget_s=1,
        max_evaluations=2_000,
    )
    assert res.dimensionally_consistent is True
    assert (
        sp.simplify(res.best.sympy - sp.Symbol("m", real=True) * sp.Symbol("v", real=True) ** 2 / 2)
        == 0
    )
    assert all(e.expression.dimensionally_consistent for e in res.pareto)
    assert res.reduction is not None and res.reduction.groups == []


def test_snap_constants_to_pi_and_rationals() -> None:
    x = np.linspace(1, 2, 80)[:, None]
    y = x[:, 0] ** 2 / (4 * np.pi)
    e, mse = snap_constants(sp.sympify("0.0795775*x**2.0000001"), x, y, ["x"])
    assert sp.simplify(e - sp.Symbol("x", real=True) ** 2 / (4 * sp.pi)) == 0
    assert mse < 1e-25


def test_noisy_law_keeps_structure(data: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    y = 2.5 * data[:, 0] * data[:, 1]
    y = y + 0.001 * y.std() * rng.standard_normal(len(y))
    res = discover(data, y, names=["x", "y"], budget_s=60, max_evaluations=5_000)
    assert sp.simplify(res.best.sympy - sp.Rational(5, 2) * X_ * Y_) == 0


def test_module_returns_prediction_in_input_dtype(data: np.ndarray) -> None:
    x = torch.as_tensor(data[:64], dtype=torch.float32)
    m = SymbolicRegression(names=["x", "y"], budget_s=60, max_evaluations=2_000)
    fit = m(x, x[:, 0] * x[:, 1])
    assert fit.prediction.dtype == torch.float32 and fit.prediction.shape == (64,)
    torch.testing.assert_close(fit.prediction, x[:, 0] * x[:, 1])
    assert str(fit.result.best.sympy) == "x*y"


def test_bad_inputs(data: np.ndarray) -> None:
    y = data[:, 0]
    with pytest.raises(ValueError, match="same number of samples"):
        discover(data, y[:-1], names=["x", "y"])
    bad = data.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        discover(bad, y, names=["x", "y"])
    with pytest.raises(ValueError, match=r"\['c'\] are constant"):
        discover(np.column_stack([data, np.ones(len(y))]), y, names=["x", "y", "c"])
    with pytest.raises(ValueError, match="unknown unit string 'parsec2x'"):
        discover(data, y, names=["x", "y"], units={"x": "parsec2x", "y": "m"}, output_unit="m")
    with pytest.raises(ValueError, match="backend"):
        discover(data, y, names=["x", "y"], backend="eureqa")
    with pytest.raises(ValueError, match="names"):
        discover(data, y, names=["x"])


@pytest.mark.skipif(
    shutil.which("julia") is not None, reason="Julia is present: the pysr backend is available"
)
def test_missing_pysr_backend_names_the_extra(data: np.ndarray) -> None:
    with pytest.raises(ImportError, match=r"learndock\[pysr\]"):
        discover(data, data[:, 0] * 2, names=["x", "y"], backend="pysr", budget_s=1)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("julia") is None, reason="PySR needs a Julia runtime (not found on PATH)"
)
def test_pysr_backend_recovers_product(data: np.ndarray) -> None:  # pragma: no cover - needs Julia
    pytest.importorskip("pysr")
    res = discover(data, data[:, 0] * data[:, 1], names=["x", "y"], backend="pysr", budget_s=30)
    assert sp.simplify(res.best.sympy - X_ * Y_) == 0
