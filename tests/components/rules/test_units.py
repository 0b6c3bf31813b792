"""Units: parsing, dimension inference, Buckingham-pi reduction, rejection of inconsistent laws."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from components.rules.units import buckingham_pi, dimension_vector, is_consistent, parse_units


def test_unknown_unit_string_names_variable() -> None:
    with pytest.raises(ValueError, match=r"unknown unit string 'meterz' for variable 'x'"):
        parse_units({"x": "meterz"})


def test_inconsistent_candidates_rejected() -> None:
    m, v, g, h = sp.symbols("m v g h", real=True)
    units = {"m": "kg", "v": "m/s", "g": "m/s2", "h": "m"}
    assert is_consistent(m * v**2 / 2 + m * g * h, units, "J") == (True, "")
    ok, why = is_consistent(m * v**2 + m * h, units, "J")
    assert not ok and "sum of unlike" in why
    ok, why = is_consistent(sp.exp(h) * m, units)
    assert not ok and "exp" in why
    ok, why = is_consistent(m * v, units, "J")
    assert not ok and "expected" in why
    # a dimensionless argument is fine
    assert is_consistent(m * g * h * sp.cos(g * h / v**2), units, "J")[0]


def test_dimension_vector_ignores_scale() -> None:
    assert dimension_vector("km/h") == dimension_vector("m/s")


def test_buckingham_pi_relativistic_mass() -> None:
    r = buckingham_pi(["m_0", "v", "c"], {"m_0": "kg", "v": "m/s", "c": "m/s"}, "kg")
    assert r.prefactor == sp.Symbol("m_0", real=True)
    assert len(r.groups) == 1
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 2, (10, 3))
    pi, yred = r.transform(X, X[:, 0] * 3.0)
    assert pi.shape == (10, 1)
    np.testing.assert_allclose(yred, 3.0)
    law = r.back(sp.Integer(1) / sp.sqrt(1 - sp.Symbol("pi0", real=True) ** 2))
    assert is_consistent(law, {"m_0": "kg", "v": "m/s", "c": "m/s"}, "kg")[0]


def test_buckingham_pi_impossible_output() -> None:
    with pytest.raises(ValueError, match="cannot be formed"):
        buckingham_pi(["x"], {"x": "m"}, "kg")
