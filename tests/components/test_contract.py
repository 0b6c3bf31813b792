"""Registry-wide contract: every discovered learnware declaration passes every check."""

from __future__ import annotations

import pytest

from learndock.testing import CHECKS, ContractCase, contract_cases

CASES = contract_cases()


def test_components_are_discovered() -> None:
    from components.base import discover_components

    assert discover_components(), "no component registered under the entry-point group"


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize(
    "check",
    CHECKS,
    ids=lambda f: f.__name__.removeprefix("check_"),
)
def test_contract(case: ContractCase, check) -> None:
    check(case)
