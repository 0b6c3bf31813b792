"""The contract suite every learndock component must pass (built-in or plug-in).

Plug-in authors run it on their own components in one of three ways.

1. As a pytest plugin (recommended; the ``learndock new-plugin`` scaffold does this).
   In the plug-in's ``tests/conftest.py``::

       pytest_plugins = ["learndock.pytest_plugin"]

   in its ``pyproject.toml``::

       [tool.pytest.ini_options]
       learndock_package = "my_plugin"

   and in a test module::

       def test_contract(learndock_case, learndock_check):
           learndock_check(learndock_case)

2. With explicit parametrisation::

       from learndock.testing import CHECKS, contract_cases
       import pytest

       @pytest.mark.parametrize("case", contract_cases(package="my_plugin"), ids=str)
       @pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
       def test_contract(case, check):
           check(case)

3. Outside pytest, :func:`run_contract` returns a :class:`ContractReport` (what passed,
   what failed, expected versus got) -- this is what ``learndock package`` runs before
   it builds a learnware package.

A *case* is one learnware declaration of one component.  The checks:

``declaration``  spec complete and valid, params instantiate through the allow-list,
                 reference data deterministic and featurizable, example inputs named
                 like ``forward``'s arguments
``example``      the example runs and reproduces itself within the declared tolerance
``function``     ``module(**inputs) == function(**inputs, **config)`` (when declared),
                 and every constructor argument is a keyword argument of the function
``gradient``     for differentiable components, autograd agrees with a float64 central
                 difference along a random direction, and every parameter gets a gradient
``device``       float64 inputs give float64 outputs; ``.to(device)`` moves every
                 parameter and buffer; outputs live on the input's device; on CUDA the
                 same result as on CPU
``hydra``        ``instantiate(module.hydra_config())`` rebuilds an equivalent module,
                 also through an OmegaConf YAML round trip
``bad_input``    an empty input and each declared bad example raise as documented
``documented_errors``
                 the error raised for an empty input names the offending argument, and
                 every exception type in ``bad_examples()`` is listed in the ``Raises``
                 section of the component function's docstring
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import time
import traceback
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
    "CHECKS",
    "CheckResult",
    "ContractCase",
    "ContractReport",
    "check_bad_input",
    "check_contract",
    "check_declaration",
    "check_device",
    "check_documented_errors",
    "check_example",
    "check_function",
    "check_gradient",
    "check_hydra_roundtrip",
    "contract_cases",
    "run_contract",
]


@dataclasses.dataclass(frozen=True)
class ContractCase:
    """One learnware declaration of one component class."""

    cls: type[Component]
    decl: Declaration

    def __str__(self) -> str:
        return self.decl.name

    def build(self, **overrides: Any) -> Component:
        """Instantiate the declared component through the allow-list."""
        return instantiate({"_target_": self.cls.name, **dict(self.decl.params)}, **overrides)


def contract_cases(*, package: str | None = None, names: Any = None) -> list[ContractCase]:
    """Discovered learnware declarations as contract cases.

    Parameters
    ----------
    package : str, optional
        Keep only declarations whose component class lives in this module prefix
        (e.g. ``"my_plugin"``).
    names : iterable of str, optional
        Keep only these learnware names.

    Returns
    -------
    list of ContractCase
        Sorted by learnware name.

    Examples
    --------
    >>> cases = contract_cases(package="no_such_package")
    >>> cases
    []
    """
    wanted = None if names is None else set(names)
    cases = []
    for _, (cls, decl) in discover_learnwares().items():
        if package is not None and not (
            cls.__module__ == package or cls.__module__.startswith(package + ".")
        ):
            continue
        if wanted is not None and decl.name not in wanted:
            continue
        cases.append(ContractCase(cls, decl))
    return cases


def _assert_close(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], rtol: float, atol: float, what: str
) -> None:
    if set(a) != set(b):
        raise AssertionError(f"{what}: output keys differ: expected {sorted(b)}, got {sorted(a)}")
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            raise AssertionError(f"{what}: output {k!r} has shape {x.shape}, expected {y.shape}")
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                err = float(np.nanmax(diff)) if x.size else 0.0
                where = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if x.size else ()
                raise AssertionError(
                    f"{what}: output {k!r} differs: max abs error {err:.3g} at index {tuple(int(i) for i in where)} "
                    f"(got {x[where]!r}, expected {y[where]!r}; rtol={rtol}, atol={atol})"
                )
        elif not np.array_equal(x, y):
            n = int(np.sum(x != y))
            raise AssertionError(f"{what}: output {k!r} differs in {n} of {x.size} entries")


def _example_tensors(case: ContractCase) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v)) for k, v in case.decl.example().items()}


# --------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------
def check_declaration(case: ContractCase) -> None:
    """The declaration is complete: valid spec, instantiable params, a non-empty example
    named like ``forward``'s inputs, deterministic reference data that the modality's
    featurizer accepts."""
    decl, cls = case.decl, case.cls
    assert decl.spec.name == decl.name
    assert cls.name, f"{cls.__qualname__}: class attribute 'name' is empty"
    assert decl.spec.description, f"{decl.name}: spec.description is empty"
    assert decl.spec.inputs, f"{decl.name}: spec.inputs is empty"
    assert decl.spec.outputs, f"{decl.name}: spec.outputs is empty"
    assert decl.spec.differentiable == cls.differentiable, (
        f"{decl.name}: spec.differentiable={decl.spec.differentiable} but {cls.name}.differentiable={cls.differentiable}"
    )
    assert decl.rtol >= 0 and decl.atol >= 0, (
        f"{decl.name}: tolerances must be >= 0, got rtol={decl.rtol}, atol={decl.atol}"
    )
    case.build()
    ex = decl.example()
    assert isinstance(ex, Mapping) and ex, (
        f"{decl.name}: example() must return a non-empty dict of arrays, got {type(ex).__name__}"
    )
    sig = inspect.signature(cls.forward)
    with_default = {p.name for p in sig.parameters.values() if p.default is not p.empty}
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    missing = set(cls.input_names()) - set(ex) - with_default
    assert not missing, (
        f"{decl.name}: example() lacks inputs {sorted(missing)} of {cls.name}.forward"
    )
    unknown = set(ex) - set(sig.parameters)
    assert accepts_kwargs or not unknown, (
        f"{decl.name}: example() has keys {sorted(unknown)} that {cls.name}.forward does not accept "
        f"(expected a subset of {sorted(set(sig.parameters) - {'self'})})"
    )
    r1, r2 = decl.reference_data(0), decl.reference_data(0)
    _assert_close(
        outputs_to_arrays(r1),
        outputs_to_arrays(r2),
        0,
        0,
        f"{decl.name}: reference_data(0) not deterministic",
    )
    try:
        from specs.features import featurize
    except ImportError:  # featurizers not available yet
        return
    feats = np.asarray(featurize(r1, modality=decl.spec.modality, featurizer=decl.featurizer))
    assert feats.ndim == 2 and feats.shape[0] >= 1, (
        f"{decl.name}: featurizer gave shape {tuple(feats.shape)}, expected (n >= 1, d)"
    )
    assert np.isfinite(feats).all(), f"{decl.name}: featurized reference data has NaN/inf"


def check_example(case: ContractCase) -> dict[str, np.ndarray]:
    """The example runs, gives non-empty output, and a fresh instance reproduces it
    within the declared tolerance."""
    decl = case.decl
    out1 = run_example(case.build(), decl.example())
    assert out1, f"{decl.name}: the example produced no array output"
    out2 = run_example(case.build(), decl.example())
    _assert_close(out2, out1, decl.rtol, decl.atol, f"{decl.name}: example not reproducible")
    return out1


def check_function(case: ContractCase) -> None:
    """``module(**inputs)`` equals ``function(**inputs, **config)`` when a function is
    declared, and every constructor argument is a keyword argument of the function."""
    fn: Callable[..., Any] | None = case.cls.function
    if fn is None:
        return
    module = case.build().eval()
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        extra = set(module.config()) - set(params)
        assert not extra, (
            f"{case.decl.name}: constructor arguments {sorted(extra)} are not keyword arguments of "
            f"{fn.__module__}.{fn.__name__} (expected a subset of {sorted(params)})"
        )
    ex = _example_tensors(case)
    with torch.no_grad():
        a = outputs_to_arrays(module(**ex))
        b = outputs_to_arrays(fn(**ex, **module.config()))
    _assert_close(a, b, case.decl.rtol, case.decl.atol, f"{case.decl.name}: module != function")


def _float_outputs(out: Any, *, grad_only: bool = True) -> list[torch.Tensor]:
    """Floating tensors of an output, in a fixed order (optionally only those with grad)."""
    res: list[torch.Tensor] = []
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() and (out.requires_grad or not grad_only):
            res.append(out)
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        for f in dataclasses.fields(out):
            res += _float_outputs(getattr(out, f.name), grad_only=grad_only)
    elif isinstance(out, Mapping):
        for v in out.values():
            res += _float_outputs(v, grad_only=grad_only)
    elif isinstance(out, list | tuple):
        for v in out:
            res += _float_outputs(v, grad_only=grad_only)
    return res


def check_gradient(case: ContractCase, *, seed: int = 0) -> None:
    """For differentiable components: the directional derivative by autograd equals a
    float64 central difference, and every trainable parameter receives a finite gradient."""
    if not case.cls.differentiable:
        return
    gen = torch.Generator().manual_seed(seed)
    module = case.build().double().eval()
    inputs = _example_tensors(case)
    inputs = {
        k: (v.double().requires_grad_(True) if v.is_floating_point() else v)
        for k, v in inputs.items()
    }
    out = module(**inputs)
    assert _float_outputs(out), (
        f"{case.decl.name}: declared differentiable but no output carries a gradient"
    )
    outs = _float_outputs(out, grad_only=False)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]

    def scalar(o: Any) -> torch.Tensor:
        fo = _float_outputs(o, grad_only=False)
        assert [t.shape for t in fo] == [t.shape for t in outs], (
            f"{case.decl.name}: output structure changed between calls"
        )
        return sum(
            ((a * w).sum() for a, w in zip(fo, weights)), torch.zeros((), dtype=torch.float64)
        )

    s = scalar(out)
    leaf_names = [k for k, v in inputs.items() if v.requires_grad]
    leaves = [inputs[k] for k in leaf_names]
    params: list[torch.Tensor] = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(s, leaves + params, allow_unused=True)
    names = dict(module.named_parameters())
    inv = {id(p): n for n, p in names.items()}
    for p, g in zip(params, grads[len(leaves) :]):
        assert g is not None and torch.isfinite(g).all(), (
            f"{case.decl.name}: parameter {inv.get(id(p), '?')!r} of shape {tuple(p.shape)} received no finite gradient"
        )
    if not leaves:
        return
    dirs = [torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in leaves]
    auto = sum(
        ((g * d).sum() for g, d in zip(grads[: len(leaves)], dirs) if g is not None),
        torch.zeros((), dtype=torch.float64),
    )
    # Central differences at decreasing steps: piecewise-smooth components (medians,
    # max-pooling, sorting) are differentiable almost everywhere, and a large step may
    # cross a kink; agreement at any step (all well above float64 round-off) passes.
    tried = []
    for eps in (1e-6, 1e-7, 1e-8):
        with torch.no_grad():
            plus = {**inputs, **{k: inputs[k] + eps * d for k, d in zip(leaf_names, dirs)}}
            minus = {**inputs, **{k: inputs[k] - eps * d for k, d in zip(leaf_names, dirs)}}
            fd = (scalar(module(**plus)) - scalar(module(**minus))) / (2 * eps)
        tol = 1e-4 * max(1.0, abs(float(fd)), abs(float(auto)))
        if abs(float(auto) - float(fd)) <= tol:
            return
        tried.append(f"{float(fd):.6g} (step {eps:g})")
    raise AssertionError(
        f"{case.decl.name}: directional derivative along a random direction of {leaf_names}: "
        f"autograd gives {float(auto):.6g}, float64 central differences give {', '.join(tried)} "
        f"(relative tolerance 1e-4)"
    )


def _tensors_of(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return [t for f in dataclasses.fields(out) for t in _tensors_of(getattr(out, f.name))]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _tensors_of(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _tensors_of(v)]
    return []


def check_device(case: ContractCase, *, device: str | torch.device | None = None) -> None:
    """Dtype and device follow the input.

    * float64 in -> float64 out (outputs whose key ends in ``_f32`` are exempt);
    * ``module.double()`` turns every floating parameter and buffer into float64;
    * ``module.to(device)`` moves every parameter and buffer, and every output tensor
      lives on the input's device;
    * on CUDA (when present and declared in ``spec.devices``) the result equals the CPU
      result within ``max(rtol, 1e-3)``, ``max(atol, 1e-4)``.

    Parameters
    ----------
    case : ContractCase
    device : str or torch.device, optional
        Target device of the move (default: CUDA when present and declared, else CPU).
    """
    name = case.decl.name
    ex = case.decl.example()
    ex64 = {
        k: (np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else v)
        for k, v in ex.items()
    }
    m64 = case.build().double()
    for n, t in [*m64.named_parameters(), *m64.named_buffers()]:
        if t.is_floating_point():
            assert t.dtype == torch.float64, (
                f"{name}: after .double() parameter/buffer {n!r} is {t.dtype}, expected torch.float64"
            )
    if any(np.asarray(v).dtype.kind == "f" for v in ex.values()):
        out = run_example(m64, ex64)
        for k, v in out.items():
            if v.dtype.kind == "f" and not k.endswith("_f32"):
                assert v.dtype == np.float64, (
                    f"{name}: float64 input gave {v.dtype} output {k!r}, expected float64"
                )
    cuda_ok = torch.cuda.is_available() and "cuda" in case.decl.spec.devices
    target = (
        torch.device(device) if device is not None else torch.device("cuda" if cuda_ok else "cpu")
    )
    if target.type == "cuda" and not cuda_ok:
        return
    moved = case.build().to(target)
    for n, t in [*moved.named_parameters(), *moved.named_buffers()]:
        assert t.device.type == target.type, (
            f"{name}: after .to({target}) parameter/buffer {n!r} is on {t.device}"
        )
    inputs = {k: torch.as_tensor(np.asarray(v)).to(target) for k, v in ex.items()}
    with torch.no_grad():
        out_t = moved.eval()(**inputs)
    for t in _tensors_of(out_t):
        assert t.device.type == target.type, (
            f"{name}: inputs on {target} gave an output tensor on {t.device}"
        )
    if target.type == "cuda":
        cpu = run_example(case.build(), ex)
        gpu = outputs_to_arrays(out_t)
        _assert_close(
            gpu, cpu, max(case.decl.rtol, 1e-3), max(case.decl.atol, 1e-4), f"{name}: CUDA != CPU"
        )


def check_hydra_roundtrip(case: ContractCase) -> None:
    """``instantiate(module.hydra_config())`` gives an equivalent module, also after an
    OmegaConf YAML round trip, and the rebuilt module gives the same example output."""
    from omegaconf import OmegaConf

    m = case.build()
    cfg = m.hydra_config()
    assert cfg.get("_target_") == case.cls.name, (
        f"{case.decl.name}: hydra_config()['_target_'] is {cfg.get('_target_')!r}, expected {case.cls.name!r}"
    )
    m2 = instantiate(OmegaConf.create(cfg))  # type: ignore[arg-type]
    assert type(m2) is type(m) and m2.config() == m.config(), (
        f"{case.decl.name}: hydra round trip changed the config: expected {m.config()!r}, got {m2.config()!r}"
    )
    yaml_text = OmegaConf.to_yaml(OmegaConf.create(cfg))
    m3 = instantiate(OmegaConf.create(yaml_text))  # type: ignore[arg-type]
    assert m3.config() == m.config(), (
        f"{case.decl.name}: YAML round trip changed the config: expected {m.config()!r}, got {m3.config()!r}"
    )
    if case.cls.function is not None:
        a = run_example(m, case.decl.example())
        b = run_example(m3, case.decl.example())
        _assert_close(
            b, a, case.decl.rtol, case.decl.atol, f"{case.decl.name}: module rebuilt from YAML"
        )


def _expect_raises(
    case: ContractCase, inputs: Mapping[str, Any], exc: Any, match: str | None, what: str
) -> BaseException:
    try:
        run_example(case.build(), inputs)
    except exc as err:
        if match is not None and not re.search(match, str(err)):
            raise AssertionError(
                f"{case.decl.name}: {what} raised {type(err).__name__}({str(err)!r}), expected the message to match {match!r}"
            ) from err
        return err
    except Exception as err:
        names = exc.__name__ if isinstance(exc, type) else " or ".join(e.__name__ for e in exc)
        raise AssertionError(
            f"{case.decl.name}: {what} raised {type(err).__name__}({str(err)[:200]!r}), expected {names}"
        ) from err
    names = exc.__name__ if isinstance(exc, type) else " or ".join(e.__name__ for e in exc)
    raise AssertionError(f"{case.decl.name}: {what} raised nothing, expected {names}")


def _empty_input(case: ContractCase) -> tuple[str, dict[str, Any]] | None:
    ex = case.decl.example()
    first = next(iter(ex))
    arr = np.asarray(ex[first])
    if arr.ndim >= 1 and arr.dtype.kind == "f":
        empty = dict(ex)
        empty[first] = np.zeros((0,) * arr.ndim, dtype=arr.dtype)
        return first, empty
    return None


def check_bad_input(case: ContractCase) -> None:
    """An empty input raises ValueError/TypeError, and every declared bad example raises
    the declared exception with a message matching the declared fragment."""
    e = _empty_input(case)
    if e is not None:
        _expect_raises(case, e[1], (ValueError, TypeError), None, f"an empty {e[0]!r}")
    for i, (inputs, exc, match) in enumerate(case.cls.bad_examples()):
        _expect_raises(case, inputs, exc, match, f"bad_examples()[{i}]")


_RAISES_RE = re.compile(
    r"^\s*Raises\s*\n\s*-{3,}\s*\n(?P<body>.*?)(?:\n\s*\n\s*[A-Z][A-Za-z ]+\n\s*-{3,}|\Z)",
    re.S | re.M,
)


def _documented_raises(fn: Any) -> set[str]:
    doc = inspect.getdoc(fn) or ""
    m = _RAISES_RE.search(doc)
    if not m:
        return set()
    return {
        w
        for line in m.group("body").splitlines()
        if line and not line[0].isspace()
        for w in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", line)
    }


def check_documented_errors(case: ContractCase) -> None:
    """Errors are actionable and documented: the error for an empty input names the
    offending argument, and each exception type of ``bad_examples()`` appears in the
    ``Raises`` section of the component function's (or class's) numpydoc docstring."""
    e = _empty_input(case)
    if e is not None:
        err = _expect_raises(case, e[1], (ValueError, TypeError), None, f"an empty {e[0]!r}")
        assert e[0] in str(err), (
            f"{case.decl.name}: the error for an empty {e[0]!r} does not name the argument: got {str(err)!r}, "
            f'expected a message like "{e[0]}: expected a non-empty input, got ..."'
        )
    bad = case.cls.bad_examples()
    if not bad:
        return
    documented = (
        _documented_raises(case.cls.function)
        | _documented_raises(case.cls)
        | _documented_raises(case.cls.forward)
    )
    for _, exc, _ in bad:
        assert exc.__name__ in documented or f"{exc.__module__}.{exc.__name__}" in documented, (
            f"{case.decl.name}: bad_examples() expects {exc.__name__}, but the Raises section of the docstring "
            f"lists {sorted(documented) or 'nothing'}"
        )


CHECKS: tuple[Callable[[ContractCase], Any], ...] = (
    check_declaration,
    check_example,
    check_function,
    check_gradient,
    check_device,
    check_hydra_roundtrip,
    check_bad_input,
    check_documented_errors,
)
"""Every check, in the order :func:`check_contract` runs them."""


def check_contract(case: ContractCase) -> None:
    """Run every check of :data:`CHECKS` on one case (stops at the first failure)."""
    for check in CHECKS:
        check(case)


# --------------------------------------------------------------------------------------
# reporting outside pytest
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of one check on one case."""

    learnware: str
    check: str
    passed: bool
    message: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class ContractReport:
    """Results of :func:`run_contract`: one :class:`CheckResult` per case and check."""

    results: list[CheckResult] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def format(self) -> str:
        """A plain-text table: one line per check, failures with their message."""
        lines = []
        for r in self.results:
            status = "PASS" if r.passed else "FAIL"
            lines.append(f"{status}  {r.learnware:<40} {r.check:<18} {r.seconds:6.2f}s")
            if not r.passed:
                lines.extend("      " + m for m in r.message.splitlines())
        n_fail = len(self.failures)
        lines.append(f"{len(self.results) - n_fail} passed, {n_fail} failed")
        return "\n".join(lines)


def run_contract(cases: ContractCase | list[ContractCase], *, checks: Any = None) -> ContractReport:
    """Run the contract on cases and collect every result instead of stopping.

    Parameters
    ----------
    cases : ContractCase or list of ContractCase
    checks : iterable of callables, optional
        Default: :data:`CHECKS`.

    Returns
    -------
    ContractReport

    Examples
    --------
    >>> run_contract([]).ok
    True
    """
    if isinstance(cases, ContractCase):
        cases = [cases]
    report = ContractReport()
    for case in cases:
        for check in checks or CHECKS:
            label = check.__name__.removeprefix("check_")
            t0 = time.perf_counter()
            try:
                check(case)
            except Exception as exc:  # report everything, including crashes in the component
                msg = str(exc) or type(exc).__name__
                if not isinstance(exc, AssertionError):
                    tb = traceback.extract_tb(exc.__traceback__)[-1]
                    msg = f"{type(exc).__name__}: {msg} (at {tb.filename}:{tb.lineno})"
                report.results.append(
                    CheckResult(case.decl.name, label, False, msg, time.perf_counter() - t0)
                )
            else:
                report.results.append(
                    CheckResult(case.decl.name, label, True, "", time.perf_counter() - t0)
                )
    return report
