"""SINDy: planted dynamics recovered, derivatives, weak form, selection, bagging, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.rules import _reference as R
from components.rules.sindy import Library, SINDy, differentiate, fit_sindy


def _coef(res, names_terms: dict[str, float], eq: int) -> dict[str, float]:
    out = {}
    for j, term in enumerate(res.terms):
        v = float(res.coefficients[eq, j])
        if v != 0.0:
            out[term] = v
    return out


def _assert_law(got: dict[str, float], want: dict[str, float], rel: float) -> None:
    assert set(got) == set(want), f"support {sorted(got)} != {sorted(want)}"
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=rel), f"{k}: {got[k]} vs {v}"


@pytest.mark.parametrize("weak", [False, True], ids=["savgol", "weak"])
def test_lotka_volterra_at_one_percent_noise(weak: bool) -> None:
    t = np.arange(2000) * 0.01
    X = np.stack([R.lotka_volterra(s, n=2000, dt=0.01, noise=0.01)[1] for s in range(3)])
    res = fit_sindy(t, X, names=["x", "y"], degree=2, weak=weak)
    _assert_law(_coef(res, {}, 0), {"x": 1.0, "x*y": -0.5}, rel=0.01)
    _assert_law(_coef(res, {}, 1), {"y": -1.5, "x*y": 0.5}, rel=0.01)
    assert [e.output for e in res.expressions] == ["dx/dt", "dy/dt"]
    assert set(res.expressions[0].terms) == {"x", "x*y"}


@pytest.mark.parametrize("ensemble", [0, 16])
def test_damped_oscillator_at_one_percent_noise(ensemble: int) -> None:
    t = np.arange(2000) * 0.01
    X = np.stack(
        [R.damped_oscillator(s, n=2000, dt=0.01, noise=0.01, k=4.0, c=0.3)[1] for s in range(3)]
    )
    res = fit_sindy(t, X, names=["x", "v"], degree=2, weak=True, ensemble=ensemble)
    _assert_law(_coef(res, {}, 0), {"v": 1.0}, rel=0.01)
    _assert_law(_coef(res, {}, 1), {"x": -4.0, "v": -0.3}, rel=0.01)
    if ensemble:
        assert float(res.inclusion[1, res.terms.index("x")]) >= 0.5


def test_noiseless_exact_and_given_derivatives() -> None:
    t, X, _ = R.damped_oscillator(1, n=800, dt=0.01)
    res = fit_sindy(t, X, names=["x", "v"], degree=3)
    _assert_law(_coef(res, {}, 1), {"x": -4.0, "v": -0.3}, rel=1e-4)
    dX = np.stack([X[:, 1], -4.0 * X[:, 0] - 0.3 * X[:, 1]], 1)
    res = fit_sindy(t, X, names=["x", "v"], degree=3, derivatives=dX)
    _assert_law(_coef(res, {}, 1), {"x": -4.0, "v": -0.3}, rel=1e-7)


@pytest.mark.parametrize("selection", ["aic", "cv"])
def test_other_selection_rules(selection: str) -> None:
    t, X, _ = R.lotka_volterra(2, n=1500, dt=0.01)
    res = fit_sindy(t, X, names=["x", "y"], degree=2, selection=selection)
    _assert_law(_coef(res, {}, 0), {"x": 1.0, "x*y": -0.5}, rel=1e-3)


def test_fixed_threshold_and_custom_library() -> None:
    t, ang = R.limb_angle(0, n=600)
    lib = Library(["theta", "omega"], degree=1, trig=1, include_bias=False)
    assert "sin(theta)" in lib.terms
    res = fit_sindy(t, ang, names=["theta", "omega"], library=lib)
    _assert_law(_coef(res, {}, 1), {"sin(theta)": -24.5, "omega": -0.8}, rel=1e-3)
    res2 = fit_sindy(t, ang, names=["theta", "omega"], library=lib, threshold=0.5)
    assert res2.coefficients.shape == (2, len(lib))


def test_differentiate_savgol_and_nonuniform() -> None:
    t = torch.linspace(0, 2, 401, dtype=torch.float64)
    x = torch.stack([torch.sin(3 * t), t**3], 1)
    d = differentiate(x, t, window=9)
    torch.testing.assert_close(
        d, torch.stack([3 * torch.cos(3 * t), 3 * t**2], 1), atol=1e-5, rtol=1e-5
    )
    tn = torch.sort(
        torch.rand(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).values
    dn = differentiate(tn[:, None] ** 2, tn)
    torch.testing.assert_close(dn[5:-5, 0], 2 * tn[5:-5], atol=1e-6, rtol=1e-6)


def test_float32_and_module_forward() -> None:
    t, X, _ = R.lotka_volterra(0, n=600, dt=0.01)
    m = SINDy(names=["x", "y"], degree=2)
    res = m(torch.as_tensor(t), torch.as_tensor(X, dtype=torch.float32))
    assert res.coefficients.dtype == torch.float32
    assert set(res.expressions[1].terms) == {"y", "x*y"}


def test_bad_inputs() -> None:
    t = np.linspace(0, 1, 100)
    X = np.stack([np.sin(t), np.cos(3 * t)], 1)
    with pytest.raises(ValueError, match="fewer than"):
        fit_sindy(t[:5], X[:5], names=["a", "b"], degree=3)
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_sindy(t, bad, names=["a", "b"])
    with pytest.raises(ValueError, match="'b' is constant"):
        fit_sindy(t, np.stack([np.sin(t), np.ones_like(t)], 1), names=["a", "b"])
    with pytest.raises(ValueError, match="same number of time samples"):
        fit_sindy(t[:-1], X, names=["a", "b"])
    with pytest.raises(ValueError, match="names"):
        fit_sindy(t, X, names=["a"])
    with pytest.raises(ValueError, match="selection"):
        fit_sindy(t, X, names=["a", "b"], selection="magic")
    with pytest.raises(ValueError, match="increasing"):
        fit_sindy(t[::-1].copy(), X, names=["a", "b"])


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:  # pragma: no cover - needs a GPU
    t, X, _ = R.lotka_volterra(0, n=600, dt=0.01, noise=0.01)
    a = fit_sindy(t, X, names=["x", "y"], weak=True, ensemble=8)
    b = fit_sindy(
        torch.as_tensor(t).cuda(),
        torch.as_tensor(X).cuda(),
        names=["x", "y"],
        weak=True,
        ensemble=8,
    )
    torch.testing.assert_close(a.coefficients, b.coefficients.cpu(), rtol=1e-6, atol=1e-8)
