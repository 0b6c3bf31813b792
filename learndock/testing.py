"""The contract suite every learndock component must pass (built-in or plug-in).

Plug-in authors run it on their own components with two lines in a test module::

    from learndock.testing import contract_cases, check_contract
    import pytest

    @pytest.mark.parametrize("case", contract_cases(package="my_plugin"), ids=str)
    def test_contract(case):
        check_contract(case)

or call each ``check_*`` function directly.  A *case* is one learnware declaration of
one component.  The checks:

``declaration``  spec complete and valid, params instantiate through the allow-list,
                 reference data deterministic and featurizable
``example``      the example runs and reproduces itself within the declared tolerance
``function``     ``module(**inputs) == function(**inputs, **config)`` (when declared)
``gradient``     for differentiable components, autograd agrees with a float64 central
                 difference along a random direction, and every parameter gets a gradient
``device``       float64 inputs give float64 outputs; on CUDA, the same result as on CPU
``hydra``        ``instantiate(module.hydra_config())`` rebuilds an equivalent module
``bad_input``    an empty input and each declared bad example raise as documented
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from components.base import (
    Component,
    Declaration,
    discover_learnwares,
    instantiate,
    outputs_to_arrays,
    run_example,
)

__all__ = [
    "ContractCase",
    "check_bad_input",
    "check_contract",
    "check_declaration",
    "check_device",
    "check_example",
    "check_function",
    "check_gradient",
    "check_hydra_roundtrip",
    "contract_cases",
]


@dataclasses.dataclass(frozen=True)
class ContractCase:
    """One learnware declaration of one component class."""

    cls: type[Component]
    decl: Declaration

    def __str__(self) -> str:
        return self.decl.name

    def build(self, **overrides: Any) -> Component:
        return instantiate({"_target_": self.cls.name, **dict(self.decl.params)}, **overrides)


def contract_cases(*, package: str | None = None) -> list[ContractCase]:
    """All discovered learnware declarations, optionally only those whose component
    class lives in ``package`` (a module prefix such as ``"my_plugin"``)."""
    cases = []
    for _, (cls, decl) in discover_learnwares().items():
        if package is None or cls.__module__ == package or cls.__module__.startswith(package + "."):
            cases.append(ContractCase(cls, decl))
    return cases


def _assert_close(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], rtol: float, atol: float, what: str) -> None:
    if set(a) != set(b):
        raise AssertionError(f"{what}: output keys differ: {sorted(a)} vs {sorted(b)}")
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            raise AssertionError(f"{what}: output {k!r} shape {x.shape} vs {y.shape}")
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                err = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.size else 0.0
                raise AssertionError(f"{what}: output {k!r} differs (max abs error {err:.3g}, rtol={rtol}, atol={atol})")
        elif not np.array_equal(x, y):
            raise AssertionError(f"{what}: output {k!r} differs")


def check_declaration(case: ContractCase) -> None:
    """The declaration is complete: valid spec, instantiable params, deterministic
    reference data that the modality's featurizer accepts, a non-empty example."""
    decl, cls = case.decl, case.cls
    assert decl.spec.name == decl.name
    assert cls.name, f"{cls.__qualname__}: class attribute 'name' is empty"
    assert decl.spec.description, f"{decl.name}: spec.description is empty"
    assert decl.spec.inputs, f"{decl.name}: spec.inputs is empty"
    assert decl.spec.outputs, f"{decl.name}: spec.outputs is empty"
    assert decl.spec.differentiable == cls.differentiable, (
        f"{decl.name}: spec.differentiable={decl.spec.differentiable} but {cls.name}.differentiable={cls.differentiable}"
    )
    case.build()
    r1, r2 = decl.reference_data(0), decl.reference_data(0)
    _assert_close(outputs_to_arrays(r1), outputs_to_arrays(r2), 0, 0, f"{decl.name}: reference_data(0) not deterministic")
    try:
        from specs.features import featurize
    except ImportError:  # featurizers not available yet
        return
    feats = featurize(r1, modality=decl.spec.modality, featurizer=decl.featurizer)
    assert feats.ndim == 2 and feats.shape[0] >= 1, f"{decl.name}: featurizer gave shape {tuple(feats.shape)}"
    assert np.isfinite(np.asarray(feats)).all(), f"{decl.name}: featurized reference data has NaN/inf"
    ex = decl.example()
    assert isinstance(ex, Mapping) and ex, f"{decl.name}: example() must return a non-empty dict of arrays"
    missing = set(cls.input_names()) - set(ex)
    sig_defaults = {
        p.name for p in __import__("inspect").signature(cls.forward).parameters.values() if p.default is not p.empty
    }
    assert not (missing - sig_defaults), f"{decl.name}: example lacks inputs {sorted(missing - sig_defaults)}"


def check_example(case: ContractCase) -> dict[str, np.ndarray]:
    """The example runs, gives non-empty output, and a fresh instance reproduces it."""
    decl = case.decl
    ex = decl.example()
    out1 = run_example(case.build(), ex)
    assert out1, f"{decl.name}: the example produced no array output"
    out2 = run_example(case.build(), decl.example())
    _assert_close(out1, out2, decl.rtol, decl.atol, f"{decl.name}: example not reproducible")
    return out1


def check_function(case: ContractCase) -> None:
    """``module(**inputs)`` equals ``function(**inputs, **config)`` when a function is declared."""
    fn: Callable[..., Any] | None = case.cls.function
    if fn is None:
        return
    module = case.build().eval()
    ex = {k: torch.as_tensor(np.asarray(v)) for k, v in case.decl.example().items()}
    with torch.no_grad():
        a = outputs_to_arrays(module(**ex))
        b = outputs_to_arrays(fn(**ex, **module.config()))
    _assert_close(a, b, case.decl.rtol, case.decl.atol, f"{case.decl.name}: module != function")


def _float_outputs(out: Any) -> list[torch.Tensor]:
    res: list[torch.Tensor] = []
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() and out.requires_grad:
            res.append(out)
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        for f in dataclasses.fields(out):
            res += _float_outputs(getattr(out, f.name))
    elif isinstance(out, Mapping):
        for v in out.values():
            res += _float_outputs(v)
    elif isinstance(out, list | tuple):
        for v in out:
            res += _float_outputs(v)
    return res


def check_gradient(case: ContractCase, *, seed: int = 0) -> None:
    """For differentiable components: directional derivative by autograd equals a
    float64 central difference, and every trainable parameter receives a finite gradient."""
    if not case.cls.differentiable:
        return
    gen = torch.Generator().manual_seed(seed)
    module = case.build().double().eval()
    ex = case.decl.example()
    inputs = {k: torch.as_tensor(np.asarray(v)) for k, v in ex.items()}
    inputs = {k: (v.double().requires_grad_(True) if v.is_floating_point() else v) for k, v in inputs.items()}
    out = module(**inputs)
    outs = _float_outputs(out)
    assert outs, f"{case.decl.name}: declared differentiable but no output carries a gradient"
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]

    def scalar(o: Any) -> torch.Tensor:
        fo = _float_outputs(o)
        return sum(((a * w).sum() for a, w in zip(fo, weights)), torch.zeros((), dtype=torch.float64))

    s = scalar(out)
    leaves = [v for v in inputs.values() if v.requires_grad]
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(s, leaves + params, allow_unused=True)
    for p, g in zip(params, grads[len(leaves):]):
        assert g is not None and torch.isfinite(g).all(), f"{case.decl.name}: a parameter of shape {tuple(p.shape)} received no finite gradient"
    if not leaves:
        return
    dirs = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in leaves]
    auto = sum(((g * d).sum() for g, d in zip(grads[: len(leaves)], dirs) if g is not None), torch.zeros((), dtype=torch.float64))
    eps = 1e-6
    with torch.no_grad():
        plus = {**inputs, **{k: v + eps * d for (k, v), d in zip([(k, v) for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad], dirs)}}
        minus = {**inputs, **{k: v - eps * d for (k, v), d in zip([(k, v) for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad], dirs)}}
        fd = (scalar(module(**plus)) - scalar(module(**minus))) / (2 * eps)
    tol = 1e-4 * max(1.0, abs(float(fd)))
    assert abs(float(auto) - float(fd)) <= tol, f"{case.decl.name}: autograd {float(auto):.6g} vs finite difference {float(fd):.6g}"


def check_device(case: ContractCase) -> None:
    """float64 in -> float64 out (dtype follows the input); CUDA agrees with CPU when present."""
    ex = case.decl.example()
    ex64 = {k: (np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else v) for k, v in ex.items()}
    if any(np.asarray(v).dtype.kind == "f" for v in ex.values()):
        out = run_example(case.build().double(), ex64)
        for k, v in out.items():
            if v.dtype.kind == "f" and not k.endswith("_f32"):
                assert v.dtype == np.float64, f"{case.decl.name}: float64 input gave {v.dtype} output {k!r}"
    if torch.cuda.is_available() and "cuda" in case.decl.spec.devices:
        cpu = run_example(case.build(), ex)
        gpu = run_example(case.build(), ex, device="cuda")
        _assert_close(cpu, gpu, max(case.decl.rtol, 1e-3), max(case.decl.atol, 1e-4), f"{case.decl.name}: CUDA != CPU")


def check_hydra_roundtrip(case: ContractCase) -> None:
    """``instantiate(module.hydra_config())`` gives an equivalent module, also after an
    OmegaConf round trip."""
    from omegaconf import OmegaConf

    m = case.build()
    cfg = m.hydra_config()
    m2 = instantiate(OmegaConf.create(cfg))
    assert type(m2) is type(m) and m2.config() == m.config(), f"{case.decl.name}: hydra round trip changed the config"


def check_bad_input(case: ContractCase) -> None:
    """An empty input and every declared bad example raise the documented error."""
    import pytest

    ex = case.decl.example()
    first = next(iter(ex))
    arr = np.asarray(ex[first])
    if arr.ndim >= 1 and arr.dtype.kind == "f":
        empty = dict(ex)
        empty[first] = np.zeros((0,) * arr.ndim, dtype=arr.dtype)
        with pytest.raises((ValueError, TypeError)):
            run_example(case.build(), empty)
    for inputs, exc, match in case.cls.bad_examples():
        with pytest.raises(exc, match=match):
            run_example(case.build(), inputs)


def check_contract(case: ContractCase) -> None:
    """Run every check on one case."""
    check_declaration(case)
    check_example(case)
    check_function(case)
    check_gradient(case)
    check_device(case)
    check_hydra_roundtrip(case)
    check_bad_input(case)
