"""Differentiable pipelines: named, ordered stages with checked schemas and refinement.

A :class:`Pipeline` is a ``torch.nn.Module`` made of named stages (components built
through the dock's allow-list, registry learnwares, or any ``nn.Module``).  Before
anything runs, every stage-to-stage edge is checked against the declared schemas
(axes, dtype, units, sampling rate); mechanical mismatches get an
:class:`~pipelines.adapters.Adapter` stage inserted (and reported in
:attr:`Pipeline.adapters`), anything else raises
:class:`~pipelines.adapters.IncompatibleStagesError` naming both stages.

Data flow
---------
Values live on a blackboard keyed by ``"input.<name>"`` (the pipeline's inputs),
``"<stage>"`` (a stage's whole output) and ``"<stage>.<field>"`` (one field of a
dataclass/dict/named-tuple output, or the single declared output name of a tensor
output).  Each stage maps its ``forward`` arguments to blackboard keys; by default an
argument takes the previous stage's output field of the same name, else the pipeline
input of that name, else (first argument only) the previous stage's primary output.

Gradients
---------
Differentiable stages pass gradients by autograd.  The output of a non-differentiable
stage is detached (``gradient="detach"``, default) or passed straight through
(``gradient="straight-through"``: ``y = y.detach() + x - x.detach()``, shapes must agree),
so the gradient path around it is explicit: :meth:`Pipeline.gradient_path` lists it.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from components.base import (
    Component,
    discover_learnwares,
    get_component,
    instantiate,
    resolve_device,
)
from pipelines.adapters import Adapter, IncompatibleStagesError, PortSchema, plan_adapter

__all__ = [
    "GRADIENT_MODES",
    "IncompatibleStagesError",
    "Pipeline",
    "RefineResult",
    "StageInfo",
    "build_stage",
]

log = logging.getLogger("learndock.pipeline")

GRADIENT_MODES = ("autograd", "detach", "straight-through")
_STAGE_KEYS = ("_inputs_", "_schema_", "_gradient_", "_learnware_", "_target_", "_rate_")


@dataclasses.dataclass
class StageInfo:
    """How one stage is wired.

    Attributes
    ----------
    name : str
        Stage name (adapters: ``"<consumer>.adapt_<arg>"``).
    inputs : dict
        ``forward`` argument -> blackboard key.
    in_schema, out_schema : dict
        Port schemas (None where unknown).
    gradient : str
        One of :data:`GRADIENT_MODES`.
    kind : str
        ``"component"``, ``"module"`` or ``"adapter"``.
    source : str
        Where the stage came from (component name, learnware name, class).
    """

    name: str
    inputs: dict[str, str]
    in_schema: dict[str, PortSchema | None]
    out_schema: dict[str, PortSchema | None]
    gradient: str
    kind: str
    source: str
    differentiable: bool
    primary: str = "output"


@dataclasses.dataclass
class RefineResult:
    """Outcome of :meth:`Pipeline.refine`.

    Attributes
    ----------
    history : list of float
        Loss at every step (before the update of that step).
    grad_norms : dict
        Stage name -> list of the L2 norm of the gradient of that stage's parameters at
        every step.
    attribution : dict
        Stage name -> mean gradient norm over the run (the signal ``solve`` uses to pick
        the stage to swap: a stage with ~0 attribution is not learning).
    initial_loss, best_loss : float
    best_step, steps : int
    stopped : str
        ``"steps"``, ``"patience"`` (early stopping), ``"budget"`` (time) or ``"converged"``.
    seconds : float
    """

    history: list[float]
    grad_norms: dict[str, list[float]]
    attribution: dict[str, float]
    initial_loss: float
    best_loss: float
    best_step: int
    steps: int
    stopped: str
    seconds: float

    @property
    def improvement(self) -> float:
        """Relative loss reduction ``(initial - best) / |initial|``."""
        return (self.initial_loss - self.best_loss) / max(abs(self.initial_loss), 1e-300)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"improvement": self.improvement}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _forward_args(module: nn.Module) -> list[inspect.Parameter]:
    """The named inputs of ``module.forward``.

    A module whose ``forward`` takes ``**kwargs`` (a wrapper around other modules, such
    as the ensembles of :mod:`pipelines.solve`) names its inputs with a
    ``forward_parameters()`` method returning :class:`inspect.Parameter` objects.
    """
    custom = getattr(module, "forward_parameters", None)
    if callable(custom):
        return [
            p
            for p in custom()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    sig = inspect.signature(module.forward)
    return [
        p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _fields(out: Any, primary: str, names: Sequence[str] = ()) -> dict[str, Any]:
    """Named fields of a stage output (tensor -> {primary: tensor}; a plain tuple takes
    the declared output names when their number matches)."""
    if isinstance(out, torch.Tensor):
        return {primary: out}
    if (
        isinstance(out, tuple | list)
        and not hasattr(out, "_fields")
        and names
        and len(names) == len(out)
    ):
        return dict(zip(names, out))
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return dict(zip(out._fields, out))  # type: ignore[attr-defined]
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, list | tuple):
        return {str(i): v for i, v in enumerate(out)}
    return {primary: out}


def _primary_value(out: Any, primary: str) -> Any:
    if isinstance(out, torch.Tensor):
        return out
    f = _fields(out, primary)
    if primary in f:
        return f[primary]
    for v in f.values():
        if isinstance(v, torch.Tensor):
            return v
    return out


def _declared_schemas(
    module: nn.Module, learnware: str | None = None
) -> tuple[dict[str, PortSchema | None], dict[str, PortSchema | None]]:
    """Input/output schemas from the component's learnware declaration (or attributes)."""
    ins: dict[str, PortSchema | None] = {}
    outs: dict[str, PortSchema | None] = {}
    spec = None
    if isinstance(module, Component):
        decls = type(module).learnwares()
        if learnware:
            decls = [d for d in decls if d.name == learnware] or decls
        if decls:
            spec = decls[0].spec
    if spec is not None:
        ins = {k: PortSchema.coerce(v) for k, v in spec.inputs.items()}
        outs = {k: PortSchema.coerce(v) for k, v in spec.outputs.items()}
    for attr, store in (("input_schema", ins), ("output_schema", outs)):
        declared = getattr(module, attr, None)
        if isinstance(declared, Mapping):
            store.update({k: PortSchema.coerce(v, f"{attr}.{k}") for k, v in declared.items()})
    return ins, outs


def build_stage(
    config: Mapping[str, Any] | nn.Module, *, where: str = "stage"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build one stage module from a config and return it with its pipeline options.

    Parameters
    ----------
    config : mapping or nn.Module
        ``{"_target_": component, **params}`` (allow-listed through
        :func:`components.base.instantiate`), or ``{"_learnware_": name-or-id, **overrides}``
        (a built-in declaration by name, else a registry learnware by id), plus the
        pipeline keys ``_inputs_`` (argument -> blackboard key), ``_schema_``
        (``{"inputs": {...}, "outputs": {...}}`` overriding the declared schemas),
        ``_gradient_`` and ``_rate_``.
    where : str
        Name used in error messages.

    Returns
    -------
    module, options : nn.Module, dict
    """
    if isinstance(config, nn.Module):
        return config, {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{where}: expected a component config mapping or an nn.Module, got {type(config).__name__}"
        )
    opts = {k: config[k] for k in ("_inputs_", "_schema_", "_gradient_", "_rate_") if k in config}
    params = {k: v for k, v in config.items() if not str(k).startswith("_")}
    if "_learnware_" in config:
        ref = str(config["_learnware_"])
        decls = discover_learnwares()
        if ref in decls:
            cls, decl = decls[ref]
            module = instantiate({"_target_": cls.name, **dict(decl.params)}, **params)
            if decl.weights is not None:
                module.load_state_dict(decl.weights(), strict=False)
            opts["_learnware_"] = ref
            return module, opts
        try:
            from specs.registry import Registry  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ValueError(
                f"{where}: learnware {ref!r} is not a built-in declaration and no registry is available"
            ) from exc
        try:
            module = Registry().load(ref)
        except LookupError as exc:
            raise ValueError(
                f"{where}: learnware {ref!r} is not a built-in declaration and not in the registry "
                f"({exc}); built-ins: {sorted(decls)[:20]}"
            ) from None
        for k, v in params.items():
            module._config[k] = v  # pragma: no cover - registry overrides are rare
        opts["_learnware_"] = ref
        return module, opts
    if "_target_" not in config:
        raise ValueError(
            f"{where}: expected '_target_' (a component name) or '_learnware_' (a learnware), got keys {sorted(config)}"
        )
    _check_params(str(config["_target_"]), params, where)
    return instantiate({"_target_": config["_target_"], **params}), opts


def _check_params(target: str, params: Mapping[str, Any], where: str) -> None:
    """Reject unknown constructor parameters with the valid ones listed (a typo in a
    stage config fails before anything runs)."""
    cls = get_component(target)
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [n for n in sig.parameters if n != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"{where}: unknown parameter(s) {unknown} for component {target!r}; valid parameters are {valid}"
        )


# --------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------
def _bind_leading_axes(
    ins: Mapping[str, PortSchema | None],
    outs: dict[str, PortSchema | None],
    sources: Mapping[str, PortSchema | None],
) -> dict[str, PortSchema | None]:
    """Give a stage's batched outputs (``"*yx"``) the leading axes its batched input was
    bound to: a ``"*yx"`` stage fed a ``"tyx"`` movie returns ``"tyx"``, not ``"yx"``.

    The leading axes come from the first batched input whose source has concrete axes
    ending in that input's body; without one the outputs are returned unchanged.
    """
    lead = None
    for arg, dst in ins.items():
        src = sources.get(arg)
        if dst is None or src is None or not dst.batched or src.batched:
            continue
        if src.axes.endswith(dst.body) and len(src.axes) > len(dst.body):
            lead = src.axes[: len(src.axes) - len(dst.body)]
            break
    if not lead:
        return outs
    return {
        k: dataclasses.replace(v, axes=lead + v.body)
        if v is not None and v.batched and not set(lead) & set(v.body)
        else v
        for k, v in outs.items()
    }


class Pipeline(nn.Module):
    """Named, ordered, schema-checked stages that run as one differentiable module.

    Parameters
    ----------
    stages : mapping or sequence of (name, stage)
        Ordered stages; each is an ``nn.Module`` (usually a :class:`Component`) or a config
        accepted by :func:`build_stage`.
    inputs : mapping, optional
        Pipeline input name -> schema (``{"axes": "tyx", "units": "s", ...}``).  Default:
        one input named after the first stage's first ``forward`` argument, schema taken
        from that stage's declaration.
    schemas : mapping, optional
        Stage -> ``{"inputs": {...}, "outputs": {...}}`` overriding declared schemas.
    wiring : mapping, optional
        Stage -> ``{argument: blackboard key}`` (also ``_inputs_`` inside a stage config).
    gradient : mapping, optional
        Stage -> gradient mode for non-differentiable stages (``"detach"`` or
        ``"straight-through"``).
    adapt : bool
        Insert mechanical adapters (default True); if False every mismatch is an error.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"auto"``; default: keep the modules where they are.
    name : str
        Pipeline name (reports, provenance).

    Raises
    ------
    IncompatibleStagesError
        If two connected stages have schemas that no mechanical adapter reconciles.
    ValueError
        If a wiring key names nothing that exists before the stage, or a stage name is
        duplicated/invalid.

    Examples
    --------
    >>> class Double(nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> p = Pipeline({"a": Double(), "b": Double()})
    >>> p(torch.ones(2)).tolist()
    [4.0, 4.0]
    """

    def __init__(
        self,
        stages: Mapping[str, Any] | Sequence[tuple[str, Any]],
        *,
        inputs: Mapping[str, Any] | None = None,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
        wiring: Mapping[str, Mapping[str, str]] | None = None,
        gradient: Mapping[str, str] | None = None,
        adapt: bool = True,
        device: str | torch.device | None = None,
        name: str = "pipeline",
    ) -> None:
        super().__init__()
        items = list(stages.items()) if isinstance(stages, Mapping) else list(stages)
        if not items:
            raise ValueError("stages: expected at least one stage, got none")
        self.name = name
        self.stages = nn.ModuleDict()
        self.plan: list[StageInfo] = []
        self.adapters: list[str] = []
        self._configs: dict[str, Any] = {}
        schemas = dict(schemas or {})
        wiring = dict(wiring or {})
        gradient = dict(gradient or {})
        built: list[tuple[str, nn.Module, dict[str, Any]]] = []
        for stage_name, cfg in items:
            stage_name = str(stage_name)
            if not stage_name.isidentifier() or stage_name == "input":
                raise ValueError(
                    f"stages: stage names must be identifiers other than 'input', got {stage_name!r}"
                )
            if any(stage_name == b[0] for b in built):
                raise ValueError(f"stages: duplicate stage name {stage_name!r}")
            module, opts = build_stage(cfg, where=f"stage {stage_name!r}")
            if isinstance(cfg, Mapping) or hasattr(cfg, "keys"):
                self._configs[stage_name] = cfg
            elif isinstance(module, Component):
                self._configs[stage_name] = module.hydra_config()
            built.append((stage_name, module, opts))

        # pipeline inputs
        first_name, first_mod, first_opts = built[0]
        first_in, _ = _declared_schemas(first_mod, first_opts.get("_learnware_"))
        if inputs is None:
            args = _forward_args(first_mod)
            if not args:
                raise ValueError(f"stage {first_name!r}: forward takes no positional input")
            inputs = {args[0].name: first_in.get(args[0].name)}
        self.input_schema: dict[str, PortSchema | None] = {
            str(k): PortSchema.coerce(v, f"inputs.{k}") for k, v in dict(inputs).items()
        }
        available: dict[str, PortSchema | None] = {
            f"input.{k}": v for k, v in self.input_schema.items()
        }
        prev: StageInfo | None = None
        for stage_name, module, opts in built:
            ins, outs = _declared_schemas(module, opts.get("_learnware_"))
            over = dict(schemas.get(stage_name, {}) or {})
            over_opts = dict(opts.get("_schema_", {}) or {})
            for part in ("inputs", "outputs"):
                for k, v in {
                    **dict(over_opts.get(part, {}) or {}),
                    **dict(over.get(part, {}) or {}),
                }.items():
                    (ins if part == "inputs" else outs)[str(k)] = PortSchema.coerce(
                        v, f"{stage_name}.{part}.{k}"
                    )
            rate = opts.get("_rate_")
            if rate is not None:
                ins = {
                    k: dataclasses.replace(v, rate=float(rate)) if v else v for k, v in ins.items()
                }
                outs = {
                    k: dataclasses.replace(v, rate=float(rate)) if v else v for k, v in outs.items()
                }
            differentiable = bool(getattr(module, "differentiable", True))
            mode = gradient.get(
                stage_name, opts.get("_gradient_", "autograd" if differentiable else "detach")
            )
            if mode not in GRADIENT_MODES:
                raise ValueError(
                    f"stage {stage_name!r}: gradient must be one of {list(GRADIENT_MODES)}, got {mode!r}"
                )
            if differentiable and mode != "autograd":
                log.info(
                    "stage %s: differentiable but gradient=%s (gradient cut on purpose)",
                    stage_name,
                    mode,
                )
            if not differentiable and mode == "autograd":
                mode = "detach"
            primary = next(iter(outs), "output")
            info = StageInfo(
                name=stage_name,
                inputs={},
                in_schema=ins,
                out_schema=outs,
                gradient=mode,
                kind="component" if isinstance(module, Component) else "module",
                source=opts.get("_learnware_")
                or getattr(module, "name", "")
                or type(module).__qualname__,
                differentiable=differentiable,
                primary=primary,
            )
            explicit: dict[str, str] = dict(opts.get("_inputs_", {}) or {})
            explicit.update(dict(wiring.get(stage_name, {}) or {}))
            for i_arg, p in enumerate(_forward_args(module)):
                key = self._resolve_source(p, explicit, prev, available, stage_name, i_arg == 0)
                if key is None:
                    continue
                src_schema = available.get(key)
                dst_schema = ins.get(p.name)
                try:
                    steps, reasons = plan_adapter(src_schema, dst_schema)
                except IncompatibleStagesError as exc:
                    producer = key.split(".")[0] if not key.startswith("input.") else "input"
                    raise IncompatibleStagesError(
                        f"stage {producer!r} -> stage {stage_name!r}: output {key!r} {src_schema} does not fit "
                        f"input {p.name!r} {dst_schema}: {exc}"
                    ) from None
                if steps or reasons:
                    if not adapt:
                        raise IncompatibleStagesError(
                            f"stage {key.split('.')[0]!r} -> stage {stage_name!r}: {'; '.join(reasons)} (adapt=False)"
                        )
                    if steps:
                        aname = f"{stage_name}__adapt_{p.name}"
                        adapter = Adapter(steps, reasons)
                        self.stages[aname] = adapter
                        a_out = dataclasses.replace(dst_schema) if dst_schema else None
                        self.plan.append(
                            StageInfo(
                                name=aname,
                                inputs={"x": key},
                                in_schema={"x": src_schema},
                                out_schema={"output": a_out},
                                gradient="autograd",
                                kind="adapter",
                                source=f"{key} -> {stage_name}.{p.name}",
                                differentiable=True,
                            )
                        )
                        available[aname] = a_out
                        msg = f"inserted adapter {aname!r} between {key!r} and {stage_name}.{p.name}: {adapter.describe()}"
                        self.adapters.append(msg)
                        log.info(msg)
                        key = aname
                info.inputs[p.name] = key
            if not info.inputs:
                raise ValueError(
                    f"stage {stage_name!r}: none of its inputs could be wired; give '_inputs_'"
                )
            outs = _bind_leading_axes(
                ins, outs, {a: available.get(k) for a, k in info.inputs.items()}
            )
            info.out_schema = outs
            self.stages[stage_name] = module
            self.plan.append(info)
            available[stage_name] = outs.get(primary)
            for k, v in outs.items():
                available[f"{stage_name}.{k}"] = v
            prev = info
        self.output_stage = built[-1][0]
        self.device_ = None
        if device is not None:
            self.device_ = resolve_device(device)
            self.to(self.device_)

    # -- wiring ----------------------------------------------------------------------
    def _resolve_source(
        self,
        p: inspect.Parameter,
        explicit: Mapping[str, str],
        prev: StageInfo | None,
        available: Mapping[str, Any],
        stage: str,
        first: bool,
    ) -> str | None:
        if p.name in explicit:
            key = str(explicit[p.name])
            if key not in available and f"input.{key}" in available:
                key = f"input.{key}"
            if key not in available:
                raise ValueError(
                    f"stage {stage!r}: input {p.name!r} is wired to {key!r}, which is not produced before it; "
                    f"available: {sorted(available)}"
                )
            return key
        if prev is not None:
            for cand in (f"{prev.name}.{p.name}",):
                if cand in available:
                    return cand
        if first and prev is not None:
            return prev.name
        if f"input.{p.name}" in available:
            return f"input.{p.name}"
        if first:
            inputs = [k for k in available if k.startswith("input.")]
            if len(inputs) == 1:
                return inputs[0]
        if p.default is inspect.Parameter.empty:
            raise ValueError(
                f"stage {stage!r}: required input {p.name!r} matches no earlier output or pipeline input; "
                f"wire it with _inputs_ (available: {sorted(available)})"
            )
        return None

    @property
    def device(self) -> torch.device:
        for t in [*self.parameters(), *self.buffers()]:
            return t.device
        return self.device_ or torch.device("cpu")

    # -- running ---------------------------------------------------------------------
    def _inputs_dict(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = list(self.input_schema)
        data = dict(kwargs)
        if len(args) > len(names):
            raise TypeError(
                f"{self.name}: expected at most {len(names)} positional inputs {names}, got {len(args)}"
            )
        for n, a in zip(names, args):
            data[n] = a
        missing = [n for n in names if n not in data]
        if missing:
            raise TypeError(f"{self.name}: missing pipeline inputs {missing} (expected {names})")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise TypeError(f"{self.name}: unexpected inputs {unknown} (expected {names})")
        dev = self.device
        out = {}
        for k, v in data.items():
            if isinstance(v, torch.Tensor):
                out[k] = v.to(dev)
            elif hasattr(v, "__array__"):
                out[k] = torch.as_tensor(v).to(dev)
            else:
                out[k] = v
        return out

    def trace(self, *args: Any, until: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Run the stages and return the whole blackboard (inputs and all stage outputs).

        Keys: ``"input.<name>"``, ``"<stage>"`` and ``"<stage>.<field>"``.  With
        ``until``, stop after that stage (later stages are not run).
        """
        if until is not None and until not in self.stages:
            raise ValueError(f"until: expected a stage name {self.stage_names()}, got {until!r}")
        board: dict[str, Any] = {
            f"input.{k}": v for k, v in self._inputs_dict(args, kwargs).items()
        }
        for info in self.plan:
            module = self.stages[info.name]
            call = {arg: board[key] for arg, key in info.inputs.items()}
            out = module(**call)
            if info.gradient != "autograd":
                out = self._cut(out, info, call)
            board[info.name] = out
            for k, v in _fields(out, info.primary, tuple(info.out_schema)).items():
                board[f"{info.name}.{k}"] = v
            if info.name == until:
                break
        return board

    def _cut(self, out: Any, info: StageInfo, call: Mapping[str, Any]) -> Any:
        def det(v: Any) -> Any:
            return v.detach() if isinstance(v, torch.Tensor) else v

        if info.gradient == "detach":
            if isinstance(out, torch.Tensor):
                return out.detach()
            if dataclasses.is_dataclass(out) and not isinstance(out, type):
                return dataclasses.replace(
                    out,
                    **{
                        f.name: det(getattr(out, f.name)) for f in dataclasses.fields(out) if f.init
                    },
                )
            if isinstance(out, Mapping):
                return type(out)({k: det(v) for k, v in out.items()})  # type: ignore[call-arg]
            return out
        # straight-through: gradient of the identity w.r.t. the first input
        x = next(iter(call.values()))
        y = _primary_value(out, info.primary)
        if not isinstance(y, torch.Tensor) or not isinstance(x, torch.Tensor) or y.shape != x.shape:
            raise ValueError(
                f"stage {info.name!r}: gradient='straight-through' needs its first input and primary output of "
                f"the same shape, got {tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}"
            )
        st = y.detach() + (x - x.detach()).to(y.dtype)
        if isinstance(out, torch.Tensor):
            return st
        if dataclasses.is_dataclass(out) and not isinstance(out, type):
            return dataclasses.replace(out, **{info.primary: st})
        if isinstance(out, Mapping):
            return type(out)({**out, info.primary: st})  # type: ignore[call-arg]
        return st

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the stages and return the last stage's output."""
        return self.trace(*args, **kwargs)[self.output_stage]

    # -- introspection ---------------------------------------------------------------
    def stage_names(self, *, adapters: bool = True) -> list[str]:
        return [i.name for i in self.plan if adapters or i.kind != "adapter"]

    def gradient_path(self) -> list[dict[str, Any]]:
        """Per stage: gradient mode, whether it has trainable parameters, whether
        gradients from the final output reach it."""
        reach: set[str] = {self.output_stage}
        for info in reversed(self.plan):
            if info.name in reach and info.gradient != "detach":
                for key in info.inputs.values():
                    reach.add(key.split(".")[0] if not key.startswith("input.") else key)
        rows = []
        for info in self.plan:
            n_params = sum(
                p.numel() for p in self.stages[info.name].parameters() if p.requires_grad
            )
            rows.append(
                {
                    "stage": info.name,
                    "kind": info.kind,
                    "source": info.source,
                    "differentiable": info.differentiable,
                    "gradient": info.gradient,
                    "parameters": n_params,
                    "receives_gradient": info.name in reach and info.gradient != "detach",
                }
            )
        return rows

    def describe(self) -> str:
        """A plain-text table of the stages, their wiring, schemas and gradient mode."""
        ins = ", ".join(f"{k}{v or ''}" for k, v in self.input_schema.items())
        lines = [f"pipeline {self.name}: inputs {ins}"]
        gp = {r["stage"]: r for r in self.gradient_path()}
        for info in self.plan:
            wires = ", ".join(f"{a}<-{k}" for a, k in info.inputs.items())
            r = gp[info.name]
            lines.append(
                f"  {info.name:<28} {info.kind:<9} {info.source:<32} [{wires}] gradient={info.gradient} params={r['parameters']}"
            )
        for a in self.adapters:
            lines.append(f"  note: {a}")
        return "\n".join(lines)

    def config(self) -> dict[str, Any]:
        """A plain config that :meth:`from_config` turns back into this pipeline."""
        stages = {}
        for info in self.plan:
            if info.kind == "adapter":
                continue
            mod = self.stages[info.name]
            cfg: dict[str, Any] = (
                dict(mod.hydra_config())
                if isinstance(mod, Component)
                else {"_target_": type(mod).__qualname__}
            )
            cfg["_inputs_"] = {a: k for a, k in info.inputs.items() if "__adapt_" not in k}
            stages[info.name] = cfg
        inputs = {k: dataclasses.asdict(v) if v else None for k, v in self.input_schema.items()}
        return {"name": self.name, "inputs": inputs, "stages": stages}

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], *, device: str | torch.device | None = None
    ) -> Pipeline:
        """Build from ``{"name", "inputs", "stages", "gradient", "adapt", "device"}``.

        Examples
        --------
        >>> Pipeline.from_config({"stages": {}})
        Traceback (most recent call last):
        ...
        ValueError: stages: expected at least one stage, got none
        """
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover
            pass
        cfg = dict(cfg)
        stages = cfg.get("stages") or {}
        if not isinstance(stages, Mapping):
            raise TypeError(
                f"stages: expected a mapping stage name -> config, got {type(stages).__name__}"
            )
        order = cfg.get("order")
        items = (
            [(k, stages[k]) for k in order]
            if order
            else [(k, v) for k, v in stages.items() if v is not None]
        )
        dev = device if device is not None else cfg.get("device")
        return cls(
            items,
            inputs=cfg.get("inputs") or None,
            gradient=cfg.get("gradient") or None,
            adapt=bool(cfg.get("adapt", True)),
            device=dev,
            name=str(cfg.get("name") or "pipeline"),
        )

    @property
    def footprint(self) -> int:
        """Halo needed to process a chunk independently (sum of the stages' halos)."""
        total = 0
        for m in self.stages.values():
            fp = getattr(m, "footprint", 0)
            total += max(fp) if isinstance(fp, tuple | list) and fp else int(fp or 0)
        return total

    def run_batch(self, input: Any, output: Any, **kwargs: Any) -> Any:
        """Process a large archive chunk by chunk with halos (delegates to
        :func:`pipelines.batch.run_batch`; re-running with the same output resumes)."""
        try:
            from pipelines.batch import run_batch  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on the data layer
            raise ImportError(
                "pipelines.batch is not available: chunked processing needs the data layer"
            ) from exc
        kwargs.setdefault("halo", self.footprint)
        return run_batch(self, input, output, **kwargs)

    # -- losses and refinement ---------------------------------------------------------
    def self_supervised_loss(self, board: Mapping[str, Any]) -> torch.Tensor | None:
        """Sum of the stages' declared self-supervised losses on a traced blackboard."""
        total = None
        for info in self.plan:
            mod = self.stages[info.name]
            fn = getattr(mod, "self_supervised_loss", None)
            if fn is None:
                continue
            if info.name not in board:
                continue
            call = {arg: board[key] for arg, key in info.inputs.items()}
            val = fn(call, board[info.name])
            if val is None:
                continue
            total = val if total is None else total + val
        return total

    def stage_grad_norms(self) -> dict[str, float]:
        """L2 norm of the current ``.grad`` of each stage's parameters (stages without
        trainable parameters are left out)."""
        norms: dict[str, float] = {}
        for info in self.plan:
            params = [p for p in self.stages[info.name].parameters() if p.requires_grad]
            if not params:
                continue
            sq = sum(
                float(p.grad.detach().double().pow(2).sum()) for p in params if p.grad is not None
            )
            norms[info.name] = math.sqrt(sq)
        return norms

    def refine(
        self,
        data: Mapping[str, Any] | torch.Tensor,
        loss: Callable[..., torch.Tensor] | str | None = None,
        *,
        target: Any = None,
        steps: int = 100,
        lr: float = 1e-2,
        budget: float | None = None,
        patience: int = 20,
        min_delta: float = 1e-4,
        optimizer: str = "adam",
        stages: Iterable[str] | None = None,
    ) -> RefineResult:
        """Fine-tune the pipeline's parameters on the user's data.

        Parameters
        ----------
        data : mapping or Tensor
            Pipeline inputs (a tensor for a single-input pipeline).
        loss : callable, "self-supervised" or "mse", optional
            ``loss(output, target)`` (supervised, when ``target`` is given) or
            ``loss(output)``; a callable with a ``trace`` keyword also receives the whole
            blackboard.  ``"self-supervised"`` sums the stages' declared
            ``self_supervised_loss`` (reconstruction residual, negative log-likelihood...).
            Default: ``"mse"`` against ``target`` when given, else ``"self-supervised"``.
        target : Tensor, optional
            Labels / ground truth for supervised losses.
        steps : int
            Maximum optimisation steps.
        lr : float
            Learning rate.
        budget : float, optional
            Wall-clock budget in seconds.
        patience : int
            Early stopping: stop after this many steps without a relative improvement of
            at least ``min_delta`` over the best loss.
        optimizer : {"adam", "sgd", "lbfgs"}
        stages : iterable of str, optional
            Only refine these stages (default: all with trainable parameters).

        Returns
        -------
        RefineResult
            Loss history, per-stage gradient norms and attribution; the parameters of
            the best step are restored.

        Raises
        ------
        ValueError
            Bad hyperparameters, no trainable parameter, or no loss available.

        Notes
        -----
        Minimises :math:`L(\\theta) = \\ell(f_\\theta(x), y)` (or the sum of the stages'
        self-supervised criteria) by first-order steps, keeping the best :math:`\\theta`.
        The per-stage attribution is :math:`\\overline{\\lVert \\nabla_{\\theta_s} L \\rVert_2}`.
        """
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps!r}")
        if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
        if budget is not None and not budget > 0:
            raise ValueError(
                f"budget: expected a positive number of seconds or None, got {budget!r}"
            )
        if patience < 1:
            raise ValueError(f"patience: expected a positive integer, got {patience!r}")
        chosen = set(stages) if stages is not None else None
        if chosen is not None:
            unknown = chosen - set(self.stage_names())
            if unknown:
                raise ValueError(
                    f"stages: unknown stages {sorted(unknown)}; stages are {self.stage_names()}"
                )
        params = [
            p
            for info in self.plan
            if chosen is None or info.name in chosen
            for p in self.stages[info.name].parameters()
            if p.requires_grad
        ]
        if not params:
            raise ValueError(
                f"{self.name}: no trainable parameters to refine (stages: {self.stage_names()})"
            )
        inputs = data if isinstance(data, Mapping) else {next(iter(self.input_schema)): data}
        if isinstance(target, torch.Tensor):
            target = target.to(self.device)
        if loss is None:
            loss = "mse" if target is not None else "self-supervised"
        loss_fn = self._make_loss(loss, target)
        # a self-supervised loss needs the stages up to the last one that declares it
        until = None
        if loss == "self-supervised":
            declaring = [i.name for i in self.plan if _declares_ssl(self.stages[i.name])]
            until = declaring[-1] if declaring else None
        opt_name = optimizer.lower()
        if opt_name == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
        elif opt_name == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
        elif opt_name == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=lr, max_iter=5)
        else:
            raise ValueError(f"optimizer: expected 'adam', 'sgd' or 'lbfgs', got {optimizer!r}")

        history: list[float] = []
        norms: dict[str, list[float]] = {}
        best = math.inf
        best_step = 0
        best_state = copy.deepcopy(self.state_dict())
        since = 0
        stopped = "steps"
        t0 = time.perf_counter()
        was_training = self.training
        self.train()
        for step in range(steps):
            if budget is not None and time.perf_counter() - t0 > budget:
                stopped = "budget"
                break

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                value = loss_fn(self.trace(**inputs, until=until))
                if not isinstance(value, torch.Tensor) or value.ndim != 0:
                    raise ValueError(
                        f"loss: expected a scalar tensor, got {type(value).__name__} {getattr(value, 'shape', '')}"
                    )
                value.backward()
                return value

            try:
                value = closure()
            except (ValueError, RuntimeError) as exc:  # parameters left the valid domain
                stopped = f"invalid: {exc}"[:300]
                break
            current = float(value.detach())
            if not math.isfinite(current):
                stopped = "diverged"
                break
            history.append(current)
            for k, v in self.stage_grad_norms().items():
                norms.setdefault(k, []).append(v)
            if current < best - min_delta * max(abs(best), 1e-12) if math.isfinite(best) else True:
                best, best_step, since = current, step, 0
                best_state = copy.deepcopy(self.state_dict())
            else:
                since += 1
                if since >= patience:
                    stopped = "patience"
                    break
            try:
                if opt_name == "lbfgs":
                    opt.step(closure)  # type: ignore[arg-type]
                else:
                    opt.step()
            except (ValueError, RuntimeError) as exc:
                stopped = f"invalid: {exc}"[:300]
                break
        else:
            stopped = "steps"
        # evaluate the final parameters too, then keep the best
        with torch.no_grad():
            try:
                final = (
                    float(loss_fn(self.trace(**inputs, until=until)).detach())
                    if stopped == "steps" or stopped in ("patience", "budget")
                    else math.inf
                )
            except (ValueError, RuntimeError):
                final = math.inf
        if final < best:
            best, best_step = final, len(history)
            best_state = copy.deepcopy(self.state_dict())
        self.load_state_dict(best_state)
        self.train(was_training)
        attribution = {k: float(sum(v) / len(v)) for k, v in norms.items() if v}
        for info in self.plan:
            if info.name not in attribution and any(
                p.requires_grad for p in self.stages[info.name].parameters()
            ):
                attribution[info.name] = 0.0
        return RefineResult(
            history=history,
            grad_norms=norms,
            attribution=attribution,
            initial_loss=history[0] if history else math.nan,
            best_loss=best,
            best_step=best_step,
            steps=len(history),
            stopped=stopped,
            seconds=time.perf_counter() - t0,
        )

    def _make_loss(
        self, loss: Callable[..., torch.Tensor] | str, target: Any
    ) -> Callable[[dict[str, Any]], torch.Tensor]:
        out_key = self.output_stage
        primary = self.plan[-1].primary
        if isinstance(loss, str):
            if loss == "mse":
                if target is None:
                    raise ValueError("loss='mse' needs a target")
                return lambda board: torch.mean(
                    (_primary_value(board[out_key], primary) - target) ** 2
                )
            if loss == "self-supervised":
                if not any(_declares_ssl(self.stages[i.name]) for i in self.plan):
                    raise ValueError(
                        f"loss='self-supervised': no stage of {self.name} declares a self_supervised_loss; "
                        "give a loss callable and a target"
                    )

                def ssl(board: dict[str, Any]) -> torch.Tensor:
                    val = self.self_supervised_loss(board)
                    if val is None:
                        raise ValueError("loss='self-supervised': every stage returned None")
                    return val

                return ssl
            raise ValueError(f"loss: expected a callable, 'mse' or 'self-supervised', got {loss!r}")
        if not callable(loss):
            raise TypeError(f"loss: expected a callable, got {type(loss).__name__}")
        try:
            takes_trace = "trace" in inspect.signature(loss).parameters
        except (TypeError, ValueError):
            takes_trace = False

        def wrapped(board: dict[str, Any]) -> torch.Tensor:
            out = board[out_key]
            kw = {"trace": board} if takes_trace else {}
            return loss(out, target, **kw) if target is not None else loss(out, **kw)

        return wrapped


def _declares_ssl(module: nn.Module) -> bool:
    fn = getattr(type(module), "self_supervised_loss", None)
    if fn is None:
        return False
    return not isinstance(module, Component) or fn is not Component.self_supervised_loss


def component_schemas(
    name: str,
) -> tuple[dict[str, PortSchema | None], dict[str, PortSchema | None]]:
    """Declared input/output schemas of a discovered component (first declaration)."""
    cls = get_component(name)
    decls = cls.learnwares()
    if not decls:
        return {}, {}
    return (
        {k: PortSchema.coerce(v) for k, v in decls[0].spec.inputs.items()},
        {k: PortSchema.coerce(v) for k, v in decls[0].spec.outputs.items()},
    )
