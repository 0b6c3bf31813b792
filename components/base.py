"""Component base class, built-in learnware declarations and allow-listed discovery.

Every public algorithm is a pure tensor function plus a thin :class:`Component`
(a ``torch.nn.Module``) whose ``forward`` is one call to that function.  Components are
discovered only through the Python entry-point group ``learndock.components``: the
built-ins register there exactly like a lab's plug-in.  An entry point may resolve to

* a :class:`Component` subclass, or
* a module whose ``__all__`` lists :class:`Component` subclasses.

Instantiation from registry content (:func:`instantiate`) is allow-listed: the
``_target_`` must name a discovered component (by its ``name`` or by its
``module.Class`` path).  Nothing else is ever imported or called from a learnware.

Next to each implementation, ``Component.learnwares()`` returns its built-in learnware
:class:`Declaration` s: semantic spec, default params, a seeded generator of reference
data for the RKME, and a small example input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from specs.semantic import SemanticSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Component",
    "ComponentNotFoundError",
    "Declaration",
    "discover_components",
    "discover_learnwares",
    "get_component",
    "import_optional",
    "instantiate",
    "outputs_to_arrays",
    "resolve_device",
    "run_example",
    "set_threads",
    "single_intra_op_thread",
]

ENTRY_POINT_GROUP = "learndock.components"

ArrayDict = dict[str, np.ndarray]


class ComponentNotFoundError(LookupError):
    """A component name or ``_target_`` that is not discovered through the entry points."""


@dataclasses.dataclass(frozen=True)
class Declaration:
    """A built-in (or plug-in) learnware: a configured component plus its specification.

    Parameters
    ----------
    spec : SemanticSpec
        What the learnware does.  ``spec.name`` is the learnware name (unique).
    params : dict
        Keyword arguments of the component's constructor (plain data only).
    reference_data : callable
        ``reference_data(seed: int) -> ndarray | dict[str, ndarray]``: raw data of the
        kind this learnware was made for, in the modality's featurizer input format.  The
        RKME statistical spec is computed from it.  Must be deterministic in ``seed``.
    example : callable
        ``example() -> dict[str, ndarray]``: a small input, keyed by ``forward``
        argument name.  The expected output is produced by running the component.
    rtol, atol : float
        Tolerance with which a re-run of the example must reproduce the expected output.
    featurizer : str, optional
        Featurizer name; default: the one registered for ``spec.modality``.
    weights : callable, optional
        ``weights() -> dict[str, Tensor]``: state-dict tensors saved as safetensors
        (for trained learnwares); default: none.
    """

    spec: SemanticSpec
    params: Mapping[str, Any]
    reference_data: Callable[[int], Any]
    example: Callable[[], ArrayDict]
    rtol: float = 1e-4
    atol: float = 1e-5
    featurizer: str | None = None
    weights: Callable[[], dict[str, torch.Tensor]] | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class Component(nn.Module):
    """Base class of every learndock component.

    Subclasses set the class attributes below and implement ``forward`` as one call to
    their pure function.  Constructor arguments are the hyperparameters (keyword-only,
    plain data) so that ``type(c)(**c.config())`` rebuilds an equivalent module.

    Class attributes
    ----------------
    name : str
        Component name used in configs and learnwares, e.g. ``"detection.spots"``.
    function : callable or None
        The pure tensor function that ``forward`` calls.  The contract suite checks
        ``module(**inputs) == function(**inputs, **module.config())``; set None for
        components whose output depends on learned state (weights).
    differentiable : bool
        True if gradients flow from outputs to inputs and parameters.
    footprint : int or tuple of int
        Halo (in samples, per spatial/temporal axis) needed to process a chunk
        independently; used by the batch runner.
    input_names : tuple of str
        Names of the positional inputs of ``forward`` (default: inspected).
    """

    name: ClassVar[str] = ""
    function: ClassVar[Callable[..., Any] | None] = None
    differentiable: ClassVar[bool] = False
    footprint: ClassVar[int | tuple[int, ...]] = 0

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self._config = dict(config)

    # -- configuration ---------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments of this instance (plain data)."""
        return dict(self._config)

    def hydra_config(self) -> dict[str, Any]:
        """A Hydra-style config that :func:`instantiate` turns back into this module."""
        return {"_target_": self.name, **self.config()}

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        """Built-in learnware declarations of this component (default: none)."""
        return []

    @classmethod
    def input_names(cls) -> tuple[str, ...]:
        sig = inspect.signature(cls.forward)
        return tuple(
            p.name
            for p in list(sig.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )

    # -- optional hooks ---------------------------------------------------------------
    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        """Inputs that must be rejected: ``(inputs, exception type, message fragment)``.

        The contract suite checks each one raises as documented.  Default: none beyond
        the generic empty-input check."""
        return []

    def self_supervised_loss(self, inputs: Mapping[str, Any], output: Any) -> torch.Tensor | None:
        """A differentiable criterion computed without labels (e.g. reconstruction
        residual, negative log-likelihood), or None when the component has none."""
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())


# --------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------
_components: dict[str, type[Component]] | None = None


def _classes_from(obj: Any) -> list[type[Component]]:
    if inspect.isclass(obj):
        if issubclass(obj, Component):
            return [obj]
        raise TypeError(f"{obj!r} is not a learndock Component subclass")
    if inspect.ismodule(obj):
        out = []
        for attr in getattr(obj, "__all__", ()):
            v = getattr(obj, attr, None)
            if inspect.isclass(v) and issubclass(v, Component) and v is not Component and v.name:
                out.append(v)
        return out
    raise TypeError(f"entry point must resolve to a Component subclass or a module, got {obj!r}")


def discover_components(*, refresh: bool = False) -> dict[str, type[Component]]:
    """Components registered under the entry-point group ``learndock.components``.

    Returns
    -------
    dict
        ``{component name: class}``.

    Raises
    ------
    ValueError
        If two discovered classes claim the same component name.

    Examples
    --------
    >>> comps = discover_components()
    >>> all(isinstance(k, str) for k in comps)
    True
    """
    global _components
    if _components is not None and not refresh:
        return _components
    found: dict[str, type[Component]] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:
            warnings.warn(
                f"learndock: could not load component entry point {ep.name!r} ({ep.value}): {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        for cls in _classes_from(obj):
            other = found.get(cls.name)
            if other is not None and other is not cls:
                raise ValueError(
                    f"component name {cls.name!r} is claimed twice: by {other.__module__}.{other.__qualname__} "
                    f"and {cls.__module__}.{cls.__qualname__}"
                )
            found[cls.name] = cls
    _components = found
    return found


def get_component(name: str) -> type[Component]:
    """The discovered component class for ``name`` (component name or ``module.Class``).

    Raises
    ------
    ComponentNotFoundError
        If ``name`` is not discovered; the message lists what is.
    """
    comps = discover_components()
    if name in comps:
        return comps[name]
    for cls in comps.values():
        if name in (f"{cls.__module__}.{cls.__qualname__}", f"{cls.__module__}:{cls.__qualname__}"):
            return cls
    raise ComponentNotFoundError(
        f"unknown component {name!r}: not registered under the entry-point group "
        f"{ENTRY_POINT_GROUP!r}; known components: {sorted(comps)}"
    )


def discover_learnwares() -> dict[str, tuple[type[Component], Declaration]]:
    """Every built-in/plug-in learnware declaration, keyed by learnware name.

    Raises
    ------
    ValueError
        If two declarations share a name.
    """
    out: dict[str, tuple[type[Component], Declaration]] = {}
    for cls in discover_components().values():
        for decl in cls.learnwares():
            if decl.name in out:
                raise ValueError(
                    f"learnware name {decl.name!r} is declared twice (by {out[decl.name][0].name!r} and {cls.name!r})"
                )
            out[decl.name] = (cls, decl)
    return dict(sorted(out.items()))


def _check_plain(value: Any, path: str) -> Any:
    """Params must be plain data; nested dicts with ``_target_`` are instantiated too."""
    if isinstance(value, Mapping):
        if "_target_" in value:
            return instantiate(value)
        return {str(k): _check_plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_check_plain(v, f"{path}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, bool | int | float | str):
        return value
    # omegaconf containers arrive here when called from Hydra
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return _check_plain(OmegaConf.to_container(value, resolve=True), path)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(
        f"{path}: component params must be plain data (numbers, strings, lists, dicts), got {type(value).__name__}"
    )


def instantiate(config: Mapping[str, Any], **overrides: Any) -> Component:
    """Build a component from a Hydra-style config, through the allow-list only.

    Parameters
    ----------
    config : mapping
        ``{"_target_": <component name or module.Class of a discovered component>, **params}``.
    **overrides
        Extra keyword arguments that take precedence over ``config``.

    Returns
    -------
    Component

    Raises
    ------
    ComponentNotFoundError
        If ``_target_`` is not a discovered component.
    TypeError
        If the params are not plain data or do not match the constructor.
    """
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError(f"config: expected a mapping with a '_target_' key, got {config!r}"[:300])
    cls = get_component(str(config["_target_"]))
    params = {k: v for k, v in config.items() if not str(k).startswith("_")}
    params.update(overrides)
    params = _check_plain(params, cls.name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"{cls.name}: bad params {sorted(params)}: {exc}") from exc


# --------------------------------------------------------------------------------------
# running examples
# --------------------------------------------------------------------------------------
def outputs_to_arrays(out: Any, prefix: str = "") -> ArrayDict:
    """Flatten a component output into a dict of numpy arrays.

    Tensors become ``{"output": arr}``; dicts, dataclasses and named tuples are flattened
    by field name (nested with ``.``); plain tuples by position.  Non-array fields
    (strings, None) are skipped; numbers become 0-d arrays.
    """
    key = prefix or "output"
    if isinstance(out, torch.Tensor):
        return {key: out.detach().cpu().numpy()}
    if isinstance(out, np.ndarray):
        return {key: out}
    if isinstance(out, bool | int | float | np.number):
        return {key: np.asarray(out)}
    items: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = [(f.name, getattr(out, f.name)) for f in dataclasses.fields(out)]
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        items = list(zip(out._fields, out))  # type: ignore[attr-defined]
    elif isinstance(out, Mapping):
        items = [(str(k), v) for k, v in out.items()]
    elif isinstance(out, list | tuple):
        items = [(str(i), v) for i, v in enumerate(out)]
    result: ArrayDict = {}
    for k, v in items:
        sub = f"{prefix}.{k}" if prefix else k
        if (
            isinstance(v, torch.Tensor | np.ndarray | bool | int | float | np.number)
            or dataclasses.is_dataclass(v)
            or isinstance(v, Mapping | tuple | list)
        ):
            try:
                result.update(outputs_to_arrays(v, sub))
            except TypeError:
                continue
    return result


def run_example(
    module: Component, inputs: Mapping[str, np.ndarray], *, device: str | torch.device = "cpu"
) -> ArrayDict:
    """Run ``module`` on an example input dict and return its outputs as arrays.

    Inputs are passed to ``forward`` by keyword (float arrays keep their dtype; other
    arrays are passed as tensors of their own dtype).
    """
    module = module.to(device).eval()
    kwargs = {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in inputs.items()}
    with torch.no_grad():
        out = module(**kwargs)
    return outputs_to_arrays(out)


# --------------------------------------------------------------------------------------
# device and threads
# --------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; otherwise validated ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: CUDA was requested ({device!r}) but no CUDA device is available")
    return dev


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads deliberately (default: ``LEARNDOCK_THREADS`` or the
    number of usable cores).  Returns the number set."""
    if n is None:
        env = os.environ.get("LEARNDOCK_THREADS")
        n = (
            int(env)
            if env
            else len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    n = max(1, int(n))
    torch.set_num_threads(n)
    return n


_intra_op_lock = threading.Lock()
_intra_op_state = {"depth": 0, "saved": 1}


@contextlib.contextmanager
def single_intra_op_thread(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed block with one torch intra-op thread; the count is restored after.

    For work made of many small tensor operations (a few thousand to a million elements
    each), where every operation on several threads is a fork-join whose threads mostly
    wait for each other: one thread is faster, and does not stall when the machine is
    busy.  Torch's thread count is process-wide: blocks entered concurrently from
    several Python threads share one setting, and the count is restored when the last of
    them exits (not when the first does).

    Parameters
    ----------
    enabled : bool
        False makes this a no-op (for call sites that decide by size or device).

    Examples
    --------
    >>> n = torch.get_num_threads()
    >>> with single_intra_op_thread():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == n
    True
    """
    if not enabled:
        yield
        return
    with _intra_op_lock:
        if _intra_op_state["depth"] == 0:
            _intra_op_state["saved"] = torch.get_num_threads()
            if _intra_op_state["saved"] > 1:
                torch.set_num_threads(1)
        _intra_op_state["depth"] += 1
    try:
        yield
    finally:
        with _intra_op_lock:
            _intra_op_state["depth"] -= 1
            if _intra_op_state["depth"] == 0 and _intra_op_state["saved"] > 1:
                torch.set_num_threads(_intra_op_state["saved"])


def import_optional(module: str, extra: str) -> Any:
    """Import an optional dependency or raise ImportError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed: install it with `pip install learndock[{extra}]`"
        ) from exc
