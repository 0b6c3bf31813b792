"""Conserved quantities by the weak form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.rules import _reference as R
from components.rules.conservation import ConservationLaw, find_conserved


def test_quartic_oscillator_energy_recovered() -> None:
    t, X = R.pendulum_energy_trajectories(0, noise=0.001, k=2.0)
    res = find_conserved(t, X, names=["q", "p"], max_degree=4)
    terms = dict(zip(res.terms, res.coefficients.tolist()))
    # H = p^2/2 + k q^2/2 + q^4/4, normalised so that the largest coefficient (q^2) is 1
    assert terms["q**2"] == pytest.approx(1.0)
    assert terms["p**2"] == pytest.approx(0.5, rel=0.01)
    assert terms["q**4"] == pytest.approx(0.25, rel=0.02)
    assert set(res.expression.terms) == {"q**2", "p**2", "q**4"}
    assert float(res.residual) < 1e-2


def test_lowest_degree_invariant_first() -> None:
    tt = torch.linspace(0, 10, 500, dtype=torch.float64)
    X = torch.stack([torch.cos(tt), -torch.sin(tt)], 1)
    res = ConservationLaw(names=["q", "p"], max_degree=4)(tt, X)
    assert res.terms == ("q", "p", "q**2", "p*q", "p**2")
    assert str(res.expression.sympy) == "p**2 + q**2"


def test_bad_input() -> None:
    t = np.linspace(0, 1, 50)
    with pytest.raises(ValueError, match="constant"):
        find_conserved(t, np.stack([np.sin(t), np.zeros_like(t)], 1), names=["a", "b"])
    with pytest.raises(ValueError, match="names"):
        find_conserved(t, np.stack([np.sin(t), np.cos(t)], 1), names=["a"])
