"""Registry-wide contract: every discovered learnware declaration passes every check."""

from __future__ import annotations

import pytest

from learndock.testing import (
    ContractCase,
    check_bad_input,
    check_declaration,
    check_device,
    check_example,
    check_function,
    check_gradient,
    check_hydra_roundtrip,
    contract_cases,
)

CASES = contract_cases()


def test_components_are_discovered() -> None:
    from components.base import discover_components

    assert discover_components(), "no component registered under the entry-point group"


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize(
    "check",
    [check_declaration, check_example, check_function, check_gradient, check_device, check_hydra_roundtrip, check_bad_input],
    ids=lambda f: f.__name__.removeprefix("check_"),
)
def test_contract(case: ContractCase, check) -> None:
    check(case)
