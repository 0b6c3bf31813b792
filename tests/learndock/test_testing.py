"""The contract suite catches each kind of broken component with an actionable message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from components import base
from components.base import Component, Declaration
from learndock.testing import (
    CHECKS,
    ContractCase,
    ContractReport,
    check_contract,
    contract_cases,
    run_contract,
)
from learndock.validation import as_float_tensor, check_nonempty
from specs.semantic import SemanticSpec, TensorSchema


def scale(x: torch.Tensor, *, factor: float = 2.0) -> torch.Tensor:
    """Multiply by a factor.

    Raises
    ------
    TypeError
        If ``x`` is not real.
    ValueError
        If ``x`` is empty.
    """
    x = as_float_tensor(x, "x")
    check_nonempty(x, "x")
    return x * factor


def _spec(name: str, differentiable: bool = True) -> SemanticSpec:
    return SemanticSpec(
        name=name,
        family="detection",
        task="anomaly-detection",
        modality="tabular",
        scale="micro",
        inputs={"x": TensorSchema(axes="nd", dtype="any")},
        outputs={"output": TensorSchema(axes="nd", dtype="any")},
        differentiable=differentiable,
        description="test component of the kit",
    )


def _decl(name: str, **kw) -> Declaration:
    return Declaration(
        spec=_spec(name, kw.pop("differentiable", True)),
        params={"factor": 3.0},
        reference_data=kw.pop(
            "reference_data", lambda seed: np.random.default_rng(seed).normal(size=(64, 3))
        ),
        example=lambda: {"x": np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)},
        **kw,
    )


class Scale(Component):
    name = "test.kit.scale"
    function = staticmethod(scale)
    differentiable = True

    def __init__(self, *, factor: float = 2.0) -> None:
        super().__init__(factor=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale(x, **self.config())

    @classmethod
    def bad_examples(cls):
        return [({"x": np.array([1 + 1j])}, TypeError, "x: expected a real-valued input")]


class IgnoresParam(Scale):
    name = "test.kit.ignores-param"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale(x, factor=2.0)


class _WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return 2 * x

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return 3 * g


class WrongGradient(Scale):
    name = "test.kit.wrong-gradient"
    function = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _WrongBackward.apply(scale(x, factor=1.0))


class CastsToFloat32(Scale):
    name = "test.kit.casts"
    function = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale(x, **self.config()).float()


class NoEmptyCheck(Scale):
    name = "test.kit.no-empty-check"
    function = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(x) * self.config()["factor"]

    @classmethod
    def bad_examples(cls):
        return []


class VagueMessage(NoEmptyCheck):
    name = "test.kit.vague"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            raise ValueError("bad input")
        return x * self.config()["factor"]


class ChangesConfig(Scale):
    name = "test.kit.changes-config"
    function = None

    def __init__(self, *, factor: float = 2.0) -> None:
        super().__init__(factor=2 * factor)


class UndocumentedError(Scale):
    name = "test.kit.undocumented"

    @classmethod
    def bad_examples(cls):
        return [({"x": np.zeros((0, 3), np.float32)}, IndexError, "")]


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch):
    def _register(*classes: type[Component]) -> None:
        comps = dict(base.discover_components())
        comps.update({c.name: c for c in classes})
        monkeypatch.setattr(base, "_components", comps)

    return _register


def _failed(report: ContractReport) -> dict[str, str]:
    return {r.check: r.message for r in report.failures}


def test_good_component_passes_every_check(register) -> None:
    register(Scale)
    report = run_contract(ContractCase(Scale, _decl("test.kit.scale.default")))
    assert report.ok, report.format()
    assert [r.check for r in report.results] == [c.__name__.removeprefix("check_") for c in CHECKS]
    check_contract(ContractCase(Scale, _decl("test.kit.scale.default")))


@pytest.mark.parametrize(
    ("cls", "failing", "fragment"),
    [
        (IgnoresParam, "function", "module != function: output 'output' differs"),
        (WrongGradient, "gradient", "autograd gives"),
        (CastsToFloat32, "device", "float64 input gave float32 output 'output'"),
        (
            NoEmptyCheck,
            "bad_input",
            "an empty 'x' raised nothing, expected ValueError or TypeError",
        ),
        (VagueMessage, "documented_errors", "does not name the argument"),
        (ChangesConfig, "hydra_roundtrip", "hydra round trip changed the config"),
        (UndocumentedError, "documented_errors", "expects IndexError, but the Raises section"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_each_broken_component_is_caught(register, cls, failing, fragment) -> None:
    register(cls)
    report = run_contract(ContractCase(cls, _decl(f"{cls.name}.default")))
    failed = _failed(report)
    assert failing in failed, report.format()
    assert fragment in failed[failing], failed[failing]
    assert "FAIL" in report.format() and fragment in report.format()


def test_nondeterministic_reference_data_is_caught(register) -> None:
    register(Scale)
    decl = _decl(
        "test.kit.scale.random",
        reference_data=lambda seed: np.random.default_rng().normal(size=(64, 3)),
    )
    failed = _failed(run_contract(ContractCase(Scale, decl)))
    assert "not deterministic" in failed["declaration"]


def test_declared_differentiability_must_match(register) -> None:
    register(Scale)
    failed = _failed(
        run_contract(ContractCase(Scale, _decl("test.kit.scale.nd", differentiable=False)))
    )
    assert (
        "spec.differentiable=False but test.kit.scale.differentiable=True" in failed["declaration"]
    )


def test_example_keys_must_match_forward(register) -> None:
    register(Scale)
    decl = dataclasses.replace(
        _decl("test.kit.scale.keys"), example=lambda: {"image": np.ones((2, 3), np.float32)}
    )
    failed = _failed(run_contract(ContractCase(Scale, decl)))
    assert "lacks inputs ['x']" in failed["declaration"]


def test_contract_cases_filters_by_package() -> None:
    assert contract_cases(package="no_such_package_xyz") == []
    every = contract_cases()
    assert all(isinstance(c, ContractCase) for c in every)
    if every:
        first = every[0]
        assert [str(c) for c in contract_cases(names=[str(first)])] == [str(first)]
