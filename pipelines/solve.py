"""The customizable learning loop: task -> recall -> compose -> score -> refine -> swap -> remember.

Given a task (goal, modality, scale, data, optional labels, a budget in seconds and
refinement steps) :func:`solve` builds a solution from what is in the dock instead of
training from scratch:

1. **Recall** -- the task library (:mod:`specs.tasks`) is searched for solved tasks with
   the same goal and modality; they are ranked by the squared MMD between the RKME of this
   task's data and theirs.  A close hit (``mmd <= recall_mmd``) gives the initial
   pipeline, tuned parameters included.
2. **Compose** -- otherwise (or when the recalled pipeline misses the target) every
   *stage role* that the goal needs (:data:`GOALS`) is searched among the learnwares
   (semantic filter on task and modality, ranked by MMD to this data); the top
   ``top_k`` candidates per role are combined, combinations that solved earlier tasks
   first (the library is a source of composition patterns), and each combination is
   assembled into a :class:`~pipelines.pipeline.Pipeline` (:func:`compose_pipeline`:
   every edge checked against the learnwares' declared port schemas, mechanical
   mismatches bridged by adapters) and scored quickly on a subsample.  A crashing or
   incompatible candidate is marked failed in the trace and the loop goes on.
3. **Reuse modes** -- for the best combination the loop also scores an averaging
   ensemble of the top-k learnwares of the last role and per-item job selection
   (each item -- tile, star, trial -- routed to the learnware whose RKME is nearest to
   it), and keeps the best by the quick score.  Differentiable fine-tuning is step 4.
4. **Refine** -- the parameters of the chosen pipeline are fine-tuned with
   :meth:`Pipeline.refine <pipelines.pipeline.Pipeline.refine>` on the labels (or the
   stages' self-supervised criteria).  When the score stalls below the target, the stage
   that helps least (no gradient attribution first, then ablation: score change when the
   stage is removed) is swapped for its role's next candidate, and refinement goes on --
   within the budget.
5. **Remember** -- the task (semantic description, data RKME, final pipeline config with
   tuned parameters, scores, time, provenance) is stored in the task library.

The result carries the trace (``solve.json``): what was recalled, every candidate tried
with its score or failure, what was swapped and why, and when the target was reached.

Scores are "higher is better".  With labels the goal's metric is used (:data:`METRICS`);
a ``scorer``/``loss`` given with the task overrides it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import itertools
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from components.base import Component, single_intra_op_thread
from pipelines.pipeline import Pipeline
from specs.tasks import LEGACY_METHOD, Embedding, SolvedTask, TaskLibrary, mmd_batch

__all__ = [
    "GOALS",
    "METRICS",
    "BudgetTooSmallError",
    "Candidate",
    "CandidateSource",
    "DeclarationSource",
    "EnsembleStage",
    "NoCandidateError",
    "Role",
    "SelectStage",
    "SolveResult",
    "Task",
    "build_pipeline",
    "compose_pipeline",
    "embed",
    "primary_name",
    "primary_output",
    "register_goal",
    "solve",
    "stage_modules",
    "stage_roles",
]


class NoCandidateError(LookupError):
    """A stage role that the goal needs has no registered learnware."""


class BudgetTooSmallError(ValueError):
    """The time or step budget does not allow a single candidate to be tried."""


# --------------------------------------------------------------------------------------
# goals and roles
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Role:
    """One stage of a goal: which learnware tasks may fill it.

    Parameters
    ----------
    name : str
        Role name used in configs and the trace (``"background"``, ``"detector"``).
    tasks : tuple of str
        Semantic tasks (:func:`specs.semantic.known_tasks`) a learnware may have to fill it.
    optional : bool
        If True the composition may also leave the role out.
    """

    name: str
    tasks: tuple[str, ...]
    optional: bool = False


GOALS: dict[str, tuple[Role, ...]] = {
    "detect-transients": (
        Role("background", ("background-separation", "detrending"), optional=True),
        Role("detector", ("anomaly-detection", "spot-detection")),
    ),
    "detect-spots": (
        Role("restore", ("deconvolution",), optional=True),
        Role("detector", ("spot-detection",)),
    ),
    "find-transits": (
        Role("detrend", ("detrending",), optional=True),
        Role("search", ("transit-search",)),
    ),
    "discover-law": (
        Role("smoother", ("trajectory-smoothing",), optional=True),
        Role("law", ("equation-discovery", "symbolic-regression", "conservation-law")),
    ),
    "reconstruct": (
        Role("restore", ("deconvolution", "adaptive-sampling", "trajectory-smoothing")),
    ),
}
"""Goal -> the stage roles it needs, in data-flow order."""

METRICS: dict[str, str] = {
    "detect-transients": "ap",
    "detect-spots": "ap",
    "find-transits": "period",
    "discover-law": "r2",
    "reconstruct": "snr",
}
"""Goal -> the labelled metric: ``snr`` (dB of signal over residual), ``ap`` (average
precision of a score map against a binary mask), ``r2`` (coefficient of determination),
``period`` (1 at the true period, falling linearly to 0 at 5 % relative error)."""


def register_goal(name: str, roles: Sequence[Role], *, metric: str = "r2") -> None:
    """Add or replace a goal.

    Examples
    --------
    >>> register_goal("smooth-gait", [Role("smoother", ("trajectory-smoothing",))], metric="snr")
    >>> [r.name for r in GOALS["smooth-gait"]]
    ['smoother']
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty goal name, got {name!r}")
    roles = tuple(roles)
    if not roles or not all(isinstance(r, Role) for r in roles):
        raise ValueError(f"roles: expected a non-empty sequence of Role, got {roles!r}")
    if metric not in ("snr", "ap", "r2", "period"):
        raise ValueError(f"metric: expected one of ['snr', 'ap', 'r2', 'period'], got {metric!r}")
    GOALS[name] = roles
    METRICS[name] = metric


# --------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Task:
    """A task to solve.

    Parameters
    ----------
    goal : str
        One of :data:`GOALS`.
    modality, scale : str
        The data's modality (``microscopy``, ``light-curve``, ``biomechanics``...) and scale.
    data : Tensor or dict of Tensor
        The input; a dict maps names to tensors (the first entry is the primary input,
        e.g. ``{"flux": ..., "time": ...}``).
    labels : optional
        Ground truth for the goal's metric (a tensor, or a dict such as ``{"period": P}``).
    budget_s : float
        Wall-time budget in seconds.
    steps : int
        Budget of refinement (gradient) steps in total.
    target : float, optional
        The score that counts as "solved"; the loop stops early once reached.
    items : bool
        True if the leading axis of the primary input enumerates independent items (stars,
        tiles, trials): enables subsampled quick scoring and per-item job selection.
    quick_items : int
        Items used for quick scoring when ``items`` is True.
    scorer, loss : callable, optional
        ``scorer(output, labels, data) -> float`` (higher is better) and a differentiable
        ``loss(output, labels, data) -> Tensor`` that override the goal's metric.
    description, tags : str, tuple
        Free text stored with the solved task.
    """

    goal: str
    modality: str
    scale: str
    data: Any
    labels: Any = None
    budget_s: float = 60.0
    steps: int = 60
    target: float | None = None
    items: bool = False
    quick_items: int = 8
    scorer: Callable[..., float] | None = None
    loss: Callable[..., torch.Tensor] | None = None
    description: str = ""
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise ValueError(f"goal: expected one of {sorted(GOALS)}, got {self.goal!r}")
        for name in ("modality", "scale"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"{name}: expected a non-empty string, got {v!r}")
        if isinstance(self.data, torch.Tensor | np.ndarray):
            self.data = {"data": self.data}
        if not isinstance(self.data, Mapping) or not self.data:
            raise ValueError(
                f"data: expected a tensor or a non-empty dict of tensors, got {type(self.data).__name__}"
            )
        self.data = {str(k): _as_tensor(v, f"data[{k!r}]") for k, v in self.data.items()}
        first = self.data[primary_name(self.data)]
        if first.numel() == 0:
            raise ValueError(
                f"data: the primary input {primary_name(self.data)!r} is empty (shape {tuple(first.shape)})"
            )
        if (
            not (isinstance(self.budget_s, int | float) and math.isfinite(self.budget_s))
            or self.budget_s <= 0
        ):
            raise BudgetTooSmallError(
                f"budget_s: expected a time budget > 0 seconds, got {self.budget_s!r}"
            )
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(
                f"steps: expected an integer >= 0 (refinement steps), got {self.steps!r}"
            )
        if not isinstance(self.quick_items, int) or self.quick_items < 1:
            raise ValueError(f"quick_items: expected an integer >= 1, got {self.quick_items!r}")

    @property
    def primary(self) -> str:
        return primary_name(self.data)

    def n_items(self) -> int:
        """Number of independent items (1 unless ``items`` and the primary input has a
        leading item axis, i.e. at least 2 dimensions)."""
        x = self.data[self.primary]
        return int(x.shape[0]) if self.items and x.ndim >= 2 else 1


def _as_tensor(v: Any, name: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    arr = np.asarray(v)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


# --------------------------------------------------------------------------------------
# RKME of task data
# --------------------------------------------------------------------------------------
_FALLBACK_FEATURIZER = "solve-stats/1"


def _features(data: Any, modality: str) -> tuple[np.ndarray, str, float | None]:
    """Feature rows, featurizer id and its fixed bandwidth (None: median heuristic)."""
    try:
        from specs.features import featurize, get_featurizer

        feat = get_featurizer(modality=modality)
        tries = [data]
        if isinstance(data, Mapping) and data:
            tries.append(data[primary_name(data)])
        for d in tries:
            try:
                rows = featurize(d, modality=modality)
                return rows.numpy().astype(np.float32), feat.id, feat.bandwidth
            except (ValueError, TypeError, KeyError, IndexError):
                continue
    except (ImportError, ValueError):
        pass
    x = data[primary_name(data)] if isinstance(data, Mapping) else data
    x = torch.as_tensor(x).detach().double().cpu()
    x = (
        x.reshape(x.shape[0], -1)
        if x.ndim >= 2
        else x[: (x.numel() // 64) * 64].reshape(-1, 64)
        if x.numel() >= 64
        else x.reshape(1, -1)
    )
    x = torch.nan_to_num(x)
    mu, sd = (
        x.mean(1),
        x.std(1).clamp_min(1e-12) if x.shape[1] > 1 else torch.ones(x.shape[0], dtype=x.dtype),
    )
    z = (x - mu[:, None]) / sd[:, None]
    q = torch.quantile(z, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=x.dtype), dim=1).T
    d1 = z.diff(dim=1) if z.shape[1] > 1 else torch.zeros_like(z)
    rows = torch.cat(
        [
            torch.sign(mu)[:, None] * torch.log1p(mu.abs())[:, None],
            torch.log(sd.clamp_min(1e-12))[:, None],
            q,
            (z**3).mean(1, keepdim=True),
            (z**4).mean(1, keepdim=True).clamp_min(1e-12).log(),
            d1.std(1, keepdim=True),
        ],
        dim=1,
    )
    return rows.float().numpy(), _FALLBACK_FEATURIZER, None


def embed(data: Any, modality: str, *, m: int = 32, seed: int = 0) -> Embedding:
    """The RKME (as an :class:`~specs.tasks.Embedding`) of ``data`` in the modality's
    featurizer space, fitted by the dock's :meth:`specs.rkme.RKME.fit`.

    Parameters
    ----------
    data : Tensor or dict of Tensor
        The task's data (featurized by :func:`specs.features.featurize` for the modality;
        a modality without a featurizer uses per-row summary statistics).
    modality : str
        The data's modality.
    m : int
        Size of the reduced set.
    seed : int
        Seed of the fit (deterministic given the seed).

    Returns
    -------
    Embedding
        Reduced set, simplex weights, kernel parameter and featurizer id, with
        ``method`` :data:`specs.tasks.EMBEDDING_METHOD`.

    Notes
    -----
    The kernel mean :math:`\\frac1n \\sum_i k(x_i, \\cdot)` of the feature rows is
    approximated by :math:`\\sum_j \\beta_j k(z_j, \\cdot)`, :math:`\\beta` on the simplex
    (see :mod:`specs.rkme`); the Gaussian kernel is
    :math:`k(a, b) = \\exp(-\\gamma \\lVert a - b \\rVert^2)`, :math:`\\gamma = 1 / (2 h^2)`, with
    the featurizer's fixed bandwidth ``h`` (or the median heuristic).  The same code
    builds the RKMEs of registry learnwares, so task and learnware embeddings compare.

    Examples
    --------
    >>> e = embed(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), "unknown-modality")
    >>> e.points.shape[0] <= 32 and abs(float(e.weights.sum()) - 1) < 1e-5
    True
    """
    from specs.rkme import RKME

    rows, feat_id, bw = _features(data, modality)
    with _one_thread(rows.shape[0] * min(m, rows.shape[0]) <= _SMALL_FIT):
        rk = RKME.fit(torch.from_numpy(rows), m=m, seed=seed, bandwidth=bw, featurizer=feat_id)
    return Embedding.from_any(rk)


_SMALL_FIT = 1 << 18
"""Kernel-matrix size (rows x reduced set) below which the fit runs on one thread: its
matrices are too small to gain from threads, and on a loaded machine the thread
synchronisation of dozens of tiny kernels costs more than the arithmetic (measured on the
2-core CI machine: 30 ms on one thread, up to 2 s on two)."""


_one_thread = single_intra_op_thread


# --------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Candidate:
    """A learnware that may fill a role: its name, component config and MMD to the data."""

    role: str
    learnware: str
    config: dict[str, Any]
    task: str = ""
    mmd: float = float("inf")
    rkme: Embedding | None = None
    differentiable: bool = False
    loader: Callable[[], nn.Module] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    schema: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)
    """``{"inputs": {...}, "outputs": {...}}`` from the learnware's semantic spec: the
    port schemas that :class:`~pipelines.pipeline.Pipeline` checks and adapts."""

    def build(self) -> nn.Module:
        """A fresh module: from the registry (with weights) when it came from there, else
        through the allow-list from its config."""
        from components.base import instantiate

        if self.loader is not None:
            return self.loader()
        return instantiate(self.config)


class CandidateSource(Protocol):
    """Where candidates come from (the registry, or the discovered declarations)."""

    def search(self, role: Role, task: Task, query: Embedding, k: int) -> list[Candidate]: ...

    def describe(self) -> list[str]: ...


class DeclarationSource:
    """Candidates from the built-in/plug-in learnware declarations
    (:func:`components.base.discover_learnwares`), with RKMEs computed from each
    declaration's ``reference_data(0)`` (cached)."""

    def __init__(self) -> None:
        self._emb: dict[tuple[str, str], Embedding | None] = {}

    def _decls(self) -> dict[str, Any]:
        from components.base import discover_learnwares

        return discover_learnwares()

    def describe(self) -> list[str]:
        return [
            f"{n} (task={d.spec.task}, modality={d.spec.modality})"
            for n, (_, d) in self._decls().items()
        ]

    def _embedding(self, name: str, decl: Any, modality: str) -> Embedding | None:
        key = (name, modality)
        if key not in self._emb:
            try:
                self._emb[key] = embed(decl.reference_data(0), modality)
            except Exception:
                self._emb[key] = None
        return self._emb[key]

    def search(self, role: Role, task: Task, query: Embedding, k: int) -> list[Candidate]:
        out = []
        for name, (cls, decl) in self._decls().items():
            if decl.spec.task not in role.tasks or decl.spec.modality != task.modality:
                continue
            emb = self._embedding(name, decl, task.modality)
            d = float(mmd_batch(query, [emb])[0]) if emb is not None else float("inf")
            cfg = {"_target_": cls.name, **dict(decl.params)}
            out.append(
                Candidate(
                    role.name,
                    name,
                    cfg,
                    decl.spec.task,
                    d,
                    emb,
                    bool(cls.differentiable),
                    schema=_spec_schema(decl.spec),
                )
            )
        out.sort(key=lambda c: (c.mmd, c.learnware))
        return out[:k]


def _spec_schema(spec: Any) -> dict[str, Any] | None:
    """``{"inputs", "outputs"}`` port schemas (plain dicts) of a semantic spec (pydantic
    model or its dict form); None when it declares none."""
    d = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec or {})
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs"):
        ports = d.get(part) or {}
        if isinstance(ports, Mapping) and ports:
            out[part] = {
                str(k): {x: y for x, y in dict(v).items() if x in ("axes", "dtype", "units")}
                for k, v in ports.items()
                if isinstance(v, Mapping) and "axes" in v
            }
    return out or None


def _registry_loader(registry: Any, lid: str) -> Callable[[], nn.Module]:
    def load() -> nn.Module:
        return registry.load(lid)

    return load


class RegistrySource(DeclarationSource):
    """Candidates from a :class:`specs.registry.Registry`: its semantic filter, then its
    MMD ranking to this data (the query RKME is handed over, raw data never is when the
    featurizer is shared); learnwares are loaded with their weights.  Falls back to the
    declarations when the registry holds nothing for a role."""

    def __init__(self, registry: Any) -> None:
        super().__init__()
        self.registry = registry

    def describe(self) -> list[str]:
        try:
            names = [
                f"{r.name} (task={r.spec.get('task')}, modality={r.spec.get('modality')})"
                for r in self.registry.list()
            ]
        except Exception:
            names = []
        return names or super().describe()

    def _query(self, query: Embedding, task: Task) -> dict[str, Any]:
        try:
            from specs.features import known_featurizers
            from specs.rkme import RKME

            if query.featurizer in known_featurizers():
                rk = RKME(
                    z=torch.from_numpy(query.points),
                    beta=torch.from_numpy(query.weights / query.weights.sum()),
                    bandwidth=math.sqrt(1.0 / (2.0 * query.gamma)),
                    featurizer=query.featurizer,
                )
                return {"rkme": rk}
        except Exception:
            pass
        return {"data": task.data if len(task.data) > 1 else task.data[task.primary]}

    def search(self, role: Role, task: Task, query: Embedding, k: int) -> list[Candidate]:
        out: list[Candidate] = []
        q = self._query(query, task)
        for t in role.tasks:
            try:
                hits = self.registry.search(task=t, modality=task.modality, top=k, **q)
            except Exception:
                hits = []
            for h in hits:
                try:
                    rec = self.registry.get(h.id)
                except Exception:
                    continue
                emb = None
                with contextlib.suppress(Exception):
                    emb = Embedding.from_any(self.registry.rkme(h.id))
                d = (
                    float(h.mmd)
                    if h.mmd is not None
                    else (float(mmd_batch(query, [emb])[0]) if emb is not None else float("inf"))
                )
                cfg = {"_target_": rec.component, **dict(rec.params)}
                reg, rid = self.registry, h.id
                out.append(
                    Candidate(
                        role.name,
                        rec.name,
                        cfg,
                        t,
                        d,
                        emb,
                        bool(rec.spec.get("differentiable", False)),
                        loader=_registry_loader(reg, rid),
                        schema=_spec_schema(rec.spec),
                    )
                )
        if not out:
            return super().search(role, task, query, k)
        out.sort(key=lambda c: (c.mmd, c.learnware))
        return out[:k]


# --------------------------------------------------------------------------------------
# composition: chains, ensembles, job selection
# --------------------------------------------------------------------------------------
_PRIMARY_KEYS = (
    "output",
    "score",
    "scores",
    "restored",
    "estimate",
    "smoothed",
    "detrended",
    "residual",
    "foreground",
    "prediction",
    "power",
    "positions",
)


def _fields(out: Any) -> dict[str, Any]:
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return dict(zip(out._fields, out))  # type: ignore[attr-defined]
    return {}


def primary_output(out: Any) -> torch.Tensor:
    """The main tensor of a stage output: the tensor itself, or the first field named
    like an output (``output``, ``score``, ``restored``, ...), or the first floating tensor.

    Raises
    ------
    TypeError
        If the output holds no tensor.
    """
    if isinstance(out, torch.Tensor):
        return out
    f = _fields(out)
    for k in _PRIMARY_KEYS:
        if isinstance(f.get(k), torch.Tensor):
            return f[k]
    for v in f.values():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    if isinstance(out, list | tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(
        f"stage output: expected a tensor or a structure holding one, got {type(out).__name__}"
    )


def _signature(module: nn.Module) -> list[tuple[str, bool]]:
    sig = inspect.signature(type(module).forward)
    return [
        (p.name, p.default is inspect.Parameter.empty)
        for p in list(sig.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


_AUX_NAMES = ("time", "t", "rate", "flux_err", "quality", "mask", "weights")


def primary_name(data: Mapping[str, Any]) -> str:
    """The primary input of a data dict: the first key that is not auxiliary (``time``,
    ``flux_err``, ``quality``, ``mask``...); the first key if all are.

    Examples
    --------
    >>> primary_name({"time": 0, "flux": 1})
    'flux'
    """
    for k in data:
        if k not in _AUX_NAMES:
            return str(k)
    return str(next(iter(data)))


def _arg_names(module: nn.Module) -> list[tuple[str, bool]]:
    """``(name, required)`` of the module's named inputs, as the pipeline wires them."""
    from pipelines.pipeline import _forward_args

    return [(p.name, p.default is inspect.Parameter.empty) for p in _forward_args(module)]


def _bind_names(
    names: Sequence[tuple[str, bool]], available: Sequence[str] | Mapping[str, Any], primary: str
) -> tuple[str | None, list[str]]:
    """Which input takes the running value, and which are taken by name.

    The running value (the primary input, then each stage's primary output) goes to the
    input named like the primary input or, failing that, to the first input that is not
    available by name; every other input is taken by name from the data and the fields
    produced upstream (``time`` for a light curve, ...).

    Raises
    ------
    TypeError
        If a required input is neither the running value nor available by name.
    """
    arg = [n for n, _ in names]
    target = (
        primary
        if primary in arg
        else next((n for n in arg if n not in available), arg[0] if arg else None)
    )
    by_name = []
    for name, required in names:
        if name == target:
            continue
        if name in available:
            by_name.append(name)
        elif required:
            raise TypeError(
                f"input {name!r} is neither produced upstream nor in the data (have {sorted(available)})"
            )
    return target, by_name


def _primary_field(outputs: Sequence[str]) -> str | None:
    """The declared output that carries a stage's main value (see :func:`primary_output`)."""
    for k in _PRIMARY_KEYS:
        if k in outputs:
            return k
    return outputs[0] if outputs else None


def _stage_schemas(module: nn.Module, schema: Mapping[str, Any] | None) -> tuple[list[str], Any]:
    """Declared output names of a stage (explicit ``schema`` first, then the module's own
    declaration) and the schema of its primary output."""
    from pipelines.pipeline import _declared_schemas

    _, outs = _declared_schemas(module)
    outs = dict(outs)
    for k, v in dict((schema or {}).get("outputs") or {}).items():
        outs[k] = v
    names = list(outs)
    prim = _primary_field(names)
    return names, (outs.get(prim) if prim else None)


def compose_pipeline(
    stages: Sequence[tuple[str, nn.Module]],
    data: Mapping[str, Any] | Sequence[str],
    *,
    schemas: Mapping[str, Mapping[str, Any] | None] | None = None,
    adapt: bool = True,
    name: str = "solve",
) -> Pipeline:
    """Assemble role stages into a :class:`~pipelines.pipeline.Pipeline`.

    Each stage is wired the way a chain of analysis steps reads: the running value (the
    primary input of the data, then each stage's primary output) goes to the stage's
    input named like the primary input, or else to its first input not available by
    name; every other input is taken by name from the data (``time`` of a light curve)
    or from the fields produced upstream.  The pipeline then checks every edge against
    the declared port schemas and inserts mechanical adapters (units, axis order,
    singleton axes, dtype) where they differ; anything else raises.

    Parameters
    ----------
    stages : sequence of (role, module)
        Stages in data-flow order; the role is the stage name.
    data : mapping or sequence of str
        The pipeline inputs (names; the values are not used), the primary one first
        among the non-auxiliary names (:func:`primary_name`).
    schemas : mapping, optional
        Role -> ``{"inputs": {...}, "outputs": {...}}`` port schemas (the learnware's
        semantic spec) overriding the module's own declaration.
    adapt : bool
        Insert mechanical adapters (default); if False every mismatch is an error.
    name : str
        Pipeline name.

    Returns
    -------
    Pipeline
        Call it with the data as keyword arguments: ``pipe(**data)``.

    Raises
    ------
    ValueError
        No stage, or no data.
    TypeError
        A required stage input that is neither the running value nor available by name.
    pipelines.adapters.IncompatibleStagesError
        Two connected stages whose schemas no mechanical adapter reconciles (the
        message names both stages).

    Examples
    --------
    >>> class Double(nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> p = compose_pipeline([("a", Double()), ("b", Double())], {"x": None})
    >>> p(x=torch.ones(2)).tolist()
    [4.0, 4.0]
    """
    if not stages:
        raise ValueError("stages: a pipeline needs at least one stage")
    names = [str(k) for k in data]
    if not names:
        raise ValueError("data: expected at least one input name, got none")
    schemas = dict(schemas or {})
    primary = primary_name(dict.fromkeys(names))
    env: dict[str, str] = {n: f"input.{n}" for n in names}
    cur = f"input.{primary}"
    wiring: dict[str, dict[str, str]] = {}
    for role, module in stages:
        if isinstance(module, EnsembleStage | SelectStage):
            module.primary = primary
        try:
            target, by_name = _bind_names(_arg_names(module), env, primary)
        except TypeError as exc:
            raise TypeError(
                f"stage {role!r} ({getattr(module, 'name', type(module).__name__)}): {exc}"
            ) from None
        w = {n: env[n] for n in by_name}
        if target is not None:
            w[target] = cur
        wiring[role] = w
        outs, _ = _stage_schemas(module, schemas.get(role))
        prim = _primary_field(outs)
        cur = f"{role}.{prim}" if prim else role
        env.update({k: f"{role}.{k}" for k in outs})
    return Pipeline(
        [(r, m) for r, m in stages],
        inputs=dict.fromkeys(names),
        schemas={k: v for k, v in schemas.items() if v},
        wiring=wiring,
        adapt=adapt,
        name=name,
    )


def stage_roles(pipe: Pipeline) -> list[str]:
    """The role stages of a composed pipeline, in order (adapters left out)."""
    return pipe.stage_names(adapters=False)


def stage_modules(pipe: Pipeline) -> list[nn.Module]:
    """The role stages' modules, in order (adapters left out)."""
    return [pipe.stages[r] for r in stage_roles(pipe)]


class _MemberStage(nn.Module):
    """Several learnwares of one role, each fed like the stage it replaces.

    The stage's inputs are the running value (named like the data's primary input,
    ``primary``) and the union of the members' other inputs (optional); each member gets
    the running value on its own primary input (see :func:`compose_pipeline`) and its
    other inputs by name.
    """

    primary: str

    def __init__(self, members: Sequence[nn.Module], *, primary: str = "x") -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.primary = primary
        self.differentiable = all(bool(getattr(m, "differentiable", True)) for m in members)

    def forward_parameters(self) -> list[inspect.Parameter]:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        out = [inspect.Parameter(self.primary, kind)]
        seen = {self.primary}
        for m in self.members:
            for n, _ in _arg_names(m):
                if n not in seen:
                    seen.add(n)
                    out.append(inspect.Parameter(n, kind, default=None))
        return out

    def _call_member(self, m: nn.Module, x: torch.Tensor, given: Mapping[str, Any]) -> Any:
        target, by_name = _bind_names(_arg_names(m), given, self.primary)
        kw = {n: given[n] for n in by_name}
        if target is not None:
            kw[target] = x
        return m(**kw)

    @staticmethod
    def _given(kwargs: Mapping[str, Any], primary: str) -> dict[str, Any]:
        return {k: v for k, v in kwargs.items() if k != primary and v is not None}


class EnsembleStage(_MemberStage):
    """Averaging ensemble of several learnwares of one role.

    The members' primary outputs are averaged; with ``standardize`` (score maps of
    detectors, whose scales differ) each is first z-scored.

    Parameters
    ----------
    members : sequence of nn.Module
        At least two learnwares of one role.
    standardize : bool
        z-score each member's output before averaging.
    primary : str
        Name of the running input (the data's primary input); set by
        :func:`compose_pipeline`.
    """

    def __init__(
        self, members: Sequence[nn.Module], *, standardize: bool = False, primary: str = "x"
    ) -> None:
        if len(members) < 2:
            raise ValueError(f"members: an ensemble needs at least 2 members, got {len(members)}")
        super().__init__(members, primary=primary)
        self.standardize = standardize

    def forward(self, **inputs: Any) -> torch.Tensor:
        if self.primary not in inputs:
            raise TypeError(f"ensemble: missing its running input {self.primary!r}")
        x, given = inputs[self.primary], self._given(inputs, self.primary)
        outs = []
        for m in self.members:
            y = primary_output(self._call_member(m, x, given))
            if self.standardize:
                y = (y - y.mean()) / y.std().clamp_min(1e-12)
            outs.append(y)
        if len({tuple(o.shape) for o in outs}) != 1:
            raise ValueError(
                f"ensemble: member outputs differ in shape: {[tuple(o.shape) for o in outs]}"
            )
        return torch.stack(outs).mean(0)


class SelectStage(_MemberStage):
    """Per-item job selection: each item (leading axis) goes to the member whose RKME is
    nearest (smallest MMD) to the item's own embedding.

    Parameters
    ----------
    members : sequence of nn.Module
        At least two learnwares of one role.
    embeddings : sequence of Embedding
        One RKME per member.
    modality : str
        Featurizer space of the item embeddings.
    primary : str
        Name of the running input; set by :func:`compose_pipeline`.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        embeddings: Sequence[Embedding],
        *,
        modality: str,
        primary: str = "x",
    ) -> None:
        if len(members) < 2 or len(members) != len(embeddings):
            raise ValueError(
                f"members: job selection needs >= 2 members with one RKME each, got {len(members)} and {len(embeddings)}"
            )
        super().__init__(members, primary=primary)
        self.embeddings = list(embeddings)
        self.modality = modality
        self.last_routes: list[int] = []

    def route(self, x: torch.Tensor) -> list[int]:
        routes = []
        for i in range(x.shape[0]):
            q = embed(x[i : i + 1].detach(), self.modality, m=8)
            routes.append(int(np.argmin(mmd_batch(q, self.embeddings))))
        return routes

    def forward(self, **inputs: Any) -> torch.Tensor:
        if self.primary not in inputs:
            raise TypeError(f"job selection: missing its running input {self.primary!r}")
        cur, given = inputs[self.primary], self._given(inputs, self.primary)
        routes = self.route(cur)
        self.last_routes = routes
        n = cur.shape[0]
        out: torch.Tensor | None = None
        for j, m in enumerate(self.members):
            idx = [i for i, r in enumerate(routes) if r == j]
            if not idx:
                continue
            it = torch.tensor(idx, device=cur.device)
            sub = {
                k: (
                    v.index_select(0, it)
                    if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n
                    else v
                )
                for k, v in given.items()
            }
            y = primary_output(self._call_member(m, cur.index_select(0, it), sub))
            if y.ndim == 0 or y.shape[0] != len(idx):
                raise ValueError(
                    f"job selection: member output must keep the item axis, got shape {tuple(y.shape)} for {len(idx)} items"
                )
            if out is None:
                out = y.new_zeros((n, *y.shape[1:]))
            out = out.index_copy(0, it, y)
        assert out is not None
        return out


def _member_schema(cands: Sequence[Candidate], module: nn.Module) -> dict[str, Any] | None:
    """Port schemas of a stage made of ``cands``: the learnware's own for a direct stage;
    for an ensemble / job selection, the first member's running input and primary output
    (the stage's output is that one tensor)."""
    first = cands[0].schema if cands else None
    if not isinstance(module, EnsembleStage | SelectStage):
        return first
    member = module.members[0]
    _, prim = _stage_schemas(member, first)
    arg = [n for n, _ in _arg_names(member)]
    target = module.primary if module.primary in arg else (arg[0] if arg else None)
    ins = dict((first or {}).get("inputs") or {})
    d: dict[str, Any] = {"outputs": {"output": prim}}
    if target is not None and target in ins:
        d["inputs"] = {module.primary: ins[target]}
    return d


def _assemble(
    stages: Sequence[tuple[str, nn.Module]],
    cands: Sequence[Sequence[Candidate]] | None,
    data: Mapping[str, Any],
) -> Pipeline:
    """:func:`compose_pipeline` with the candidates' declared port schemas."""
    schemas: dict[str, Any] = {}
    for i, (role, module) in enumerate(stages):
        cs = cands[i] if cands is not None and i < len(cands) else []
        if isinstance(module, EnsembleStage | SelectStage):
            module.primary = primary_name(data)
        sch = _member_schema(list(cs), module)
        if sch:
            schemas[role] = sch
    return compose_pipeline(stages, data, schemas=schemas)


def _run(pipe: Pipeline, data: Mapping[str, Any]) -> Any:
    return pipe(**data)


def _ssl_of(pipe: Pipeline, board: Mapping[str, Any]) -> torch.Tensor | None:
    """Sum of the stages' self-supervised criteria on a traced blackboard (a stage whose
    criterion fails is left out; None when no stage has one)."""
    total = None
    for info in pipe.plan:
        fn = getattr(pipe.stages[info.name], "self_supervised_loss", None)
        if not callable(fn) or info.name not in board:
            continue
        with contextlib.suppress(Exception):
            v = fn({a: board[k] for a, k in info.inputs.items()}, board[info.name])
            if isinstance(v, torch.Tensor):
                total = v if total is None else total + v
    return total


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------
def _flat_pair(out: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    y = primary_output(out)
    t = (
        labels
        if isinstance(labels, torch.Tensor)
        else primary_output(labels)
        if _fields(labels)
        else torch.as_tensor(np.asarray(labels))
    )
    if y.numel() != t.numel():
        raise ValueError(
            f"labels: expected {y.numel()} values like the output (shape {tuple(y.shape)}), got shape {tuple(t.shape)}"
        )
    return y.reshape(-1), t.reshape(-1).to(y)


def _average_precision(score: torch.Tensor, mask: torch.Tensor) -> float:
    s, m = score.detach().double().cpu().numpy(), mask.detach().cpu().numpy() > 0.5
    if not m.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    hits = m[order]
    prec = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(prec[hits].sum() / hits.sum())


def _find_period(out: Any) -> float:
    f = _fields(out)
    for k in ("period", "best_period", "periods"):
        if k in f:
            v = torch.as_tensor(f[k]).detach().reshape(-1)
            if k == "periods" and "power" in f:
                v = v[torch.as_tensor(f["power"]).detach().reshape(-1).argmax()]
            return float(v.reshape(-1)[0])
    raise ValueError(
        "output: the find-transits metric needs a 'period' or 'best_period' field in the output"
    )


def metric_score(goal: str, out: Any, labels: Any) -> float:
    """The goal's labelled metric (higher is better), see :data:`METRICS`."""
    kind = METRICS.get(goal, "r2")
    if kind == "period":
        p0 = float(labels["period"] if isinstance(labels, Mapping) else labels)
        p = _find_period(out)
        return max(0.0, 1.0 - abs(p - p0) / p0 / 0.05)
    y, t = _flat_pair(out, labels)
    y, t = y.detach().double(), t.detach().double()
    if kind == "ap":
        return _average_precision(y, t)
    if kind == "snr":
        return float(
            10 * torch.log10(((t - t.mean()) ** 2).sum() / ((y - t) ** 2).sum().clamp_min(1e-30))
        )
    return float(1 - ((y - t) ** 2).sum() / ((t - t.mean()) ** 2).sum().clamp_min(1e-30))


def metric_loss(goal: str, out: Any, labels: Any) -> torch.Tensor | None:
    """A differentiable surrogate of the goal's metric (lower is better), or None."""
    kind = METRICS.get(goal, "r2")
    if kind == "period":
        return None
    if kind == "ap":
        prob = _fields(out).get("probability")
        if isinstance(prob, torch.Tensor) and prob.requires_grad:
            _, t = _flat_pair(out, labels)
            p = prob.reshape(-1).clamp(1e-6, 1 - 1e-6)
            t = t.to(p)
            w = (1 - t).sum() / t.sum().clamp_min(1)  # balance the rare positives
            return -(w * t * p.log() + (1 - t) * (1 - p).log()).sum() / (
                w * t.sum() + (1 - t).sum()
            )
    y, t = _flat_pair(out, labels)
    if kind == "ap":
        yc, tc = y - y.mean(), t - t.mean()
        return 1 - (yc * tc).sum() / (yc.norm() * tc.norm()).clamp_min(1e-12)
    return ((y - t) ** 2).mean() / t.var().clamp_min(1e-12)


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class SolveResult:
    """What :func:`solve` returns.

    Attributes
    ----------
    pipeline : Pipeline
        The final pipeline (tuned): a schema-checked
        :class:`~pipelines.pipeline.Pipeline` whose stages are named by role (plus any
        adapters it inserted); call it as ``pipeline(**task.data)``.
    config : dict
        Its plain-data config (rebuild with :func:`build_pipeline`).
    score : float
        Its quick score (higher is better).
    trace : dict
        The trace written to ``solve.json``.
    solved : SolvedTask or None
        The record stored in the task library (None when not remembered).
    time_to_target : float or None
        Seconds until the target score was first reached (None if never / no target).
    """

    pipeline: Pipeline
    config: dict[str, Any]
    score: float
    trace: dict[str, Any]
    solved: SolvedTask | None
    time_to_target: float | None


def _state_of(module: nn.Module, limit: int = 20000) -> dict[str, Any]:
    sd = {k: v.detach().cpu() for k, v in module.state_dict().items() if v.is_floating_point()}
    if sum(v.numel() for v in sd.values()) > limit:
        return {}
    return {
        k: {"shape": list(v.shape), "values": v.double().reshape(-1).tolist()}
        for k, v in sd.items()
    }


def _load_state(module: nn.Module, state: Mapping[str, Any]) -> None:
    if not state:
        return
    own = module.state_dict()
    new = {}
    for k, v in state.items():
        if k in own and list(own[k].shape) == list(v["shape"]):
            new[k] = torch.tensor(v["values"], dtype=own[k].dtype).reshape(own[k].shape)
    module.load_state_dict(new, strict=False)


def _stage_config(
    role: str, mode: str, cands: Sequence[Candidate], module: nn.Module
) -> dict[str, Any]:
    members = list(module.members) if isinstance(module, EnsembleStage | SelectStage) else [module]
    cfgs = []
    for c, m in zip(cands, members):
        hc = m.hydra_config() if isinstance(m, Component) else dict(c.config)
        cfgs.append(
            {
                "learnware": c.learnware,
                "config": hc,
                "state": _state_of(m),
                "schema": c.schema,
            }
        )
    d: dict[str, Any] = {"role": role, "mode": mode, "members": cfgs}
    if mode == "select":
        d["rkme"] = [
            {
                "points": c.rkme.points.tolist(),
                "weights": c.rkme.weights.tolist(),
                "gamma": c.rkme.gamma,
                "featurizer": c.rkme.featurizer,
                "method": c.rkme.method,
            }
            for c in cands
            if c.rkme is not None
        ]
    if mode == "ensemble":
        d["standardize"] = bool(getattr(module, "standardize", False))
    return d


def build_pipeline(
    config: Mapping[str, Any],
    *,
    modality: str | None = None,
    data: Mapping[str, Any] | Sequence[str] | None = None,
) -> Pipeline:
    """Rebuild a pipeline from its config (as stored in the task library / ``result.json``).

    Parameters
    ----------
    config : mapping
        ``{"stages": [{"role", "mode", "members": [{"learnware", "config", "state",
        "schema"}]}], "inputs": [...]}`` as written by :func:`solve`.
    modality : str, optional
        Featurizer space of job selection (default: the config's).
    data : mapping or sequence of str, optional
        The inputs it will be called with (default: the config's ``inputs``).

    Returns
    -------
    Pipeline

    Raises
    ------
    ValueError
        A config without stages, or without inputs when ``data`` is not given.

    Examples
    --------
    >>> build_pipeline({"stages": []})
    Traceback (most recent call last):
    ...
    ValueError: stages: a pipeline needs at least one stage
    """
    from components.base import instantiate

    if not config.get("stages"):
        raise ValueError("stages: a pipeline needs at least one stage")
    names = list(data) if data is not None else list(config.get("inputs") or [])
    if not names:
        raise ValueError(
            "data: the config does not name its inputs (written before they were recorded); "
            "give data=the task's data"
        )
    primary = primary_name(dict.fromkeys(names))
    stages = []
    for st in config.get("stages", []):
        members = []
        for mem in st["members"]:
            m = instantiate(mem["config"])
            _load_state(m, mem.get("state", {}))
            members.append(m)
        mode = st.get("mode", "direct")
        if mode == "ensemble":
            mod: nn.Module = EnsembleStage(
                members, standardize=bool(st.get("standardize", False)), primary=primary
            )
        elif mode == "select":
            embs = [
                Embedding(
                    np.asarray(e["points"]),
                    np.asarray(e["weights"]),
                    e["gamma"],
                    e["featurizer"],
                    e.get("method", LEGACY_METHOD),
                )
                for e in st["rkme"]
            ]
            mod = SelectStage(
                members, embs, modality=modality or config.get("modality", ""), primary=primary
            )
        else:
            mod = members[0]
        stages.append((st["role"], mod))
    return _assemble(stages, _cands_from_config(config), dict.fromkeys(names))


class _Clock:
    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()


def _subsample(task: Task, seed: int) -> tuple[dict[str, torch.Tensor], Any]:
    n = task.n_items()
    if n <= task.quick_items:
        return task.data, task.labels
    idx = torch.from_numpy(
        np.sort(np.random.default_rng(seed).choice(n, task.quick_items, replace=False))
    )

    def take(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n:
            return v.index_select(0, idx.to(v.device))
        if isinstance(v, Mapping):
            return {k: take(x) for k, x in v.items()}
        return v

    return take(task.data), take(task.labels)


def solve(
    task: Task,
    *,
    library: TaskLibrary | None = None,
    source: CandidateSource | None = None,
    top_k: int = 3,
    max_combos: int = 12,
    recall_mmd: float = 0.1,
    modes: Sequence[str] = ("direct", "ensemble", "select"),
    lr: float = 0.05,
    round_steps: int = 10,
    max_swaps: int = 3,
    stall_tol: float = 1e-3,
    polish_steps: int = 0,
    remember: bool = True,
    seed: int = 0,
) -> SolveResult:
    """Solve ``task`` from the dock: recall, compose, score, refine, swap, remember.

    Parameters
    ----------
    task : Task
        What to solve, with its budget.
    library : TaskLibrary, optional
        The task library (default: the one beside the registry, ``LEARNDOCK_REGISTRY``).
    source : CandidateSource, optional
        Where candidates come from (default: the registry when it exists, else the
        discovered learnware declarations).
    top_k : int
        Candidates per role.
    max_combos : int
        At most this many combinations are scored.
    recall_mmd : float
        A remembered task whose squared MMD to this data is at most this is a "close hit".
    modes : sequence of str
        Reuse modes to try beyond ``direct``: ``ensemble``, ``select``.
    lr : float
        Adam step size for refinement.
    round_steps : int
        Refinement steps between two evaluations (stall checks).
    max_swaps : int
        At most this many stage swaps.
    stall_tol : float
        A refinement round that improves the score by less than this (relative to
        ``max(1, |score|)``) counts as a stall, which triggers a swap.
    polish_steps : int
        Refinement steps spent after the target is reached (within the budget), so that
        the remembered pipeline is better than just good enough; they do not change the
        time to target.
    remember : bool
        Store the solved task in the library.
    seed : int
        Seed of the subsample.

    Returns
    -------
    SolveResult

    Raises
    ------
    NoCandidateError
        If a required role has no registered learnware (the message names the role and
        lists what is registered).
    BudgetTooSmallError
        If the budget runs out before a single candidate could be scored.
    """
    small = sum(v.numel() for v in task.data.values()) <= _SMALL_TASK
    with _one_thread(small):
        return _solve(
            task,
            library=library,
            source=source,
            top_k=top_k,
            max_combos=max_combos,
            recall_mmd=recall_mmd,
            modes=modes,
            lr=lr,
            round_steps=round_steps,
            max_swaps=max_swaps,
            stall_tol=stall_tol,
            polish_steps=polish_steps,
            remember=remember,
            seed=seed,
        )


_SMALL_TASK = 1 << 16
"""Elements of task data below which the whole loop runs on one torch thread (its
kernels are too small to gain from threads; see :data:`_SMALL_FIT`)."""


def _solve(
    task: Task,
    *,
    library: TaskLibrary | None,
    source: CandidateSource | None,
    top_k: int,
    max_combos: int,
    recall_mmd: float,
    modes: Sequence[str],
    lr: float,
    round_steps: int,
    max_swaps: int,
    stall_tol: float,
    polish_steps: int,
    remember: bool,
    seed: int,
) -> SolveResult:
    for name, v, lo in (
        ("top_k", top_k, 1),
        ("max_combos", max_combos, 1),
        ("round_steps", round_steps, 1),
        ("max_swaps", max_swaps, 0),
        ("polish_steps", polish_steps, 0),
    ):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
    for mode in modes:
        if mode not in ("direct", "ensemble", "select"):
            raise ValueError(
                f"modes: expected a subset of ['direct', 'ensemble', 'select'], got {list(modes)!r}"
            )
    clock = _Clock(task.budget_s)
    library = library if library is not None else TaskLibrary()
    source = source if source is not None else _default_source(library.root)
    roles = GOALS[task.goal]
    trace: dict[str, Any] = {
        "task": {
            "goal": task.goal,
            "modality": task.modality,
            "scale": task.scale,
            "budget_s": task.budget_s,
            "steps": task.steps,
            "target": task.target,
            "labels": task.labels is not None,
            "description": task.description,
        },
        "roles": [dataclasses.asdict(r) for r in roles],
        "recall": [],
        "candidates": {},
        "tried": [],
        "modes": [],
        "refine": [],
        "swaps": [],
        "events": [],
    }
    sub_data, sub_labels = _subsample(task, seed)
    query = embed(task.data, task.modality)
    trace["rkme"] = {
        "featurizer": query.featurizer,
        "m": int(query.points.shape[0]),
        "gamma": query.gamma,
    }
    best: dict[str, Any] = {
        "score": -math.inf,
        "chain": None,
        "cands": None,
        "mode": "direct",
        "origin": None,
    }
    reached: list[float] = []

    def score_of(pipe: Pipeline) -> float:
        pipe.eval()
        with torch.no_grad():
            if task.scorer is not None:
                return float(task.scorer(_run(pipe, sub_data), sub_labels, sub_data))
            if task.labels is not None:
                return metric_score(task.goal, _run(pipe, sub_data), sub_labels)
            ssl = _ssl_of(pipe, pipe.trace(**sub_data))
            return -float(ssl) if ssl is not None else float("nan")

    def offer(
        chain: Pipeline, cands: list[list[Candidate]], mode: str, origin: str, score: float
    ) -> bool:
        cur = best["score"] if math.isfinite(best["score"]) else -math.inf
        if best["chain"] is None or (math.isfinite(score) and score > cur):
            best.update(score=score, chain=chain, cands=cands, mode=mode, origin=origin)
            if task.target is not None and score >= task.target and not reached:
                reached.append(clock.elapsed())
                trace["events"].append(
                    {
                        "t": round(clock.elapsed(), 4),
                        "event": "target reached",
                        "score": score,
                        "by": origin,
                    }
                )
            return True
        return False

    def done() -> bool:
        return bool(reached) or clock.left() <= 0

    # 1. recall ------------------------------------------------------------------------
    hits = library.nearest(
        goal=task.goal, modality=task.modality, scale=task.scale, rkme=query, k=3
    )
    patterns: dict[tuple[str, ...], int] = {}
    for t in library.list(goal=task.goal):
        key = tuple(
            m["learnware"] for st in t.pipeline.get("stages", []) for m in st.get("members", [])[:1]
        )
        patterns[key] = patterns.get(key, 0) + 1
    for h in hits:
        entry = {
            "task_id": h.task.task_id,
            "mmd": h.mmd,
            "score": h.task.score,
            "same_scale": h.same_scale,
            "close": h.mmd <= recall_mmd,
            "embedding": h.task.rkme.method if h.task.rkme is not None else None,
        }
        trace["recall"].append(entry)
        if not entry["close"] or done():
            continue
        try:
            chain = build_pipeline(h.task.pipeline, modality=task.modality, data=task.data)
            s = score_of(chain)
            cands = _cands_from_config(h.task.pipeline)
            entry["rescored"] = s
            offer(
                chain,
                cands,
                h.task.pipeline.get("stages", [{}])[-1].get("mode", "direct"),
                f"recall:{h.task.task_id}",
                s,
            )
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        if reached:
            break

    # 2. compose -----------------------------------------------------------------------
    per_role: dict[str, list[Candidate]] = {}
    for r in roles:
        cs = source.search(r, task, query, top_k)
        trace["candidates"][r.name] = [
            {"learnware": c.learnware, "task": c.task, "mmd": c.mmd} for c in cs
        ]
        if not cs and not r.optional:
            raise NoCandidateError(
                f"role {r.name!r} of goal {task.goal!r} needs a learnware with task in {list(r.tasks)} and modality "
                f"{task.modality!r}, but none is registered; registered learnwares: {source.describe()}"
            )
        per_role[r.name] = cs
    options = [per_role[r.name] + ([None] if r.optional else []) for r in roles]  # type: ignore[operator]
    combos = [c for c in itertools.product(*options) if any(x is not None for x in c)]

    def prior(combo: tuple[Candidate | None, ...]) -> tuple[float, float]:
        key = tuple(c.learnware for c in combo if c is not None)
        present = [c.mmd if math.isfinite(c.mmd) else 1e3 for c in combo if c is not None]
        return (-patterns.get(key, 0), sum(present) / max(len(present), 1))

    combos.sort(key=prior)
    combos = combos[:max_combos]
    recalled = (
        best["chain"] is not None
        and str(best["origin"]).startswith("recall:")
        and math.isfinite(best["score"])
    )
    if recalled:
        # a close hit is the initial pipeline: refine it; the other candidates stay in
        # reserve for swaps (their search is cheap, scoring them is not)
        trace["events"].append(
            {
                "t": round(clock.elapsed(), 4),
                "event": "composition skipped: refining the recalled pipeline",
            }
        )
    all_combos = list(combos)
    if recalled:
        combos = []
    scored: list[tuple[float, tuple[Candidate | None, ...]]] = []
    tried_keys: set[tuple[str | None, ...]] = set()

    def try_combo(combo: tuple[Candidate | None, ...], origin: str = "compose") -> None:
        names = tuple(c.learnware if c else None for c in combo)
        tried_keys.add(names)
        rec: dict[str, Any] = {
            "stages": dict(zip([r.name for r in roles], names)),
            "mode": "direct",
            "t": None,
        }
        if origin != "compose":
            rec["origin"] = origin
        try:
            chain = _assemble(
                [(c.role, c.build()) for c in combo if c is not None],
                [[c] for c in combo if c is not None],
                task.data,
            )
            if chain.adapters:
                rec["adapters"] = list(chain.adapters)
            s = score_of(chain)
            rec.update(
                score=s, status="ok" if not math.isnan(s) or task.labels is None else "failed"
            )
            if rec["status"] == "failed":
                rec["error"] = "non-finite score (the output holds NaN or inf)"
            scored.append((s, combo))
            offer(chain, [[c] for c in combo if c is not None], "direct", origin, s)
        except Exception as exc:
            rec.update(score=None, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        rec["t"] = round(clock.elapsed(), 4)
        trace["tried"].append(rec)

    for combo in combos:
        if done():
            break
        try_combo(combo)
    if best["chain"] is None:
        if trace["tried"] and all(r["status"] == "failed" for r in trace["tried"]):
            raise RuntimeError(
                f"every candidate composition failed for goal {task.goal!r}: {[r['error'] for r in trace['tried']]}"[
                    :2000
                ]
            )
        raise BudgetTooSmallError(
            f"budget_s: the budget of {task.budget_s:g} s is too small to try any candidate "
            f"(featurizing and recall took {clock.elapsed():.2f} s and {len(combos)} combinations are waiting); give a larger budget"
        )

    # 3. reuse modes: ensemble / job selection of the last role's top-k ---------------
    if scored and not done():
        base = max(scored, key=lambda x: x[0] if math.isfinite(x[0]) else -math.inf)[1]
        last = roles[-1].name
        pool = [c for c in per_role[last]]
        head = [(c.role, c.build()) for c in base if c is not None and c.role != last]
        for mode in modes:
            if mode == "direct" or len(pool) < 2 or done():
                continue
            if mode == "select" and (task.n_items() < 2 or any(c.rkme is None for c in pool)):
                continue
            rec: dict[str, Any] = {"mode": mode, "members": [c.learnware for c in pool]}
            try:
                members = [c.build() for c in pool]
                st: nn.Module = (
                    EnsembleStage(members, standardize=METRICS.get(task.goal) == "ap")
                    if mode == "ensemble"
                    else SelectStage(
                        members,
                        [c.rkme for c in pool if c.rkme is not None],
                        modality=task.modality,
                    )
                )  # type: ignore[misc]
                cands = [[c] for c in base if c is not None and c.role != last] + [pool]
                chain = _assemble([*head, (last, st)], cands, task.data)
                if chain.adapters:
                    rec["adapters"] = list(chain.adapters)
                s = score_of(chain)
                rec.update(score=s, status="ok")
                offer(chain, cands, mode, f"mode:{mode}", s)
            except Exception as exc:
                rec.update(score=None, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            trace["modes"].append(rec)

    # 4. refine and swap ---------------------------------------------------------------
    steps_left = task.steps
    tried_alt: set[tuple[str, str]] = set()
    swaps = 0
    step_lr = [lr]  # halved (down to lr / 8) when a round's first steps overshoot

    def refine_round(
        chain: Pipeline, cands: list[list[Candidate]], origin: str, n: int | None = None
    ) -> tuple[Pipeline, float, int, dict[str, float]]:
        tuned, used, grads, info = _refine(
            chain, task, sub_data, sub_labels, clock, min(steps_left, n or round_steps), step_lr[0]
        )
        s = score_of(tuned) if info.get("status") == "ok" else float("nan")
        info.update(score=s, origin=origin, lr=step_lr[0], t=round(clock.elapsed(), 4))
        trace["refine"].append(info)
        return tuned, s, used, grads

    while not done() and steps_left > 0:
        before = best["score"]
        tuned, s, used, grads = refine_round(best["chain"], best["cands"], "refine")
        steps_left -= max(used, 1)
        trace["refine"][-1]["accepted"] = offer(tuned, best["cands"], best["mode"], "refine", s)
        ran = trace["refine"][-1].get("status") == "ok"
        gain = (best["score"] - before if math.isfinite(before) else math.inf) if ran else 0.0
        if done() or gain > stall_tol * max(1.0, abs(before) if math.isfinite(before) else 1.0):
            continue
        if task.target is None and not ran:
            break  # nothing to refine and no target to reach: the composition stands
        info = trace["refine"][-1]
        if ran and info["loss_best"] >= info["loss_first"] and step_lr[0] > lr / 8:
            # no step of the round lowered the loss: each round restarts Adam, whose first
            # steps move every parameter by ~lr -- too far near an optimum.  Smaller steps
            # before concluding that the stage itself is the problem.
            step_lr[0] /= 2
            trace["events"].append(
                {
                    "t": round(clock.elapsed(), 4),
                    "event": f"refinement overshoots: step size halved to {step_lr[0]:.4g}",
                }
            )
            continue
        # stalled below the target: swap the stage that helps least, refine the swapped pipeline
        accepted = False
        for i, alt, reason in _swap_options(
            best, roles, per_role, score_of, grads, tried_alt, task.data
        ):
            if swaps >= max_swaps or done() or steps_left <= 0:
                break
            swaps += 1
            role = stage_roles(best["chain"])[i]
            tried_alt.add((role, alt.learnware if alt else "-"))
            tried_alt.update((role, c.learnware) for c in best["cands"][i])
            srec: dict[str, Any] = {
                "stage": role,
                "from": [c.learnware for c in best["cands"][i]],
                "to": alt.learnware if alt else None,
                "reason": reason,
            }
            try:
                new_stages = [
                    (r, copy.deepcopy(m))
                    for r, m in zip(stage_roles(best["chain"]), stage_modules(best["chain"]))
                ]
                new_cands = list(best["cands"])
                if alt is None:
                    del new_stages[i], new_cands[i]
                else:
                    new_stages[i] = (alt.role, alt.build())
                    new_cands[i] = [alt]
                chain = _assemble(new_stages, new_cands, task.data)
                s0 = score_of(chain)
                tuned, s1, used, _ = refine_round(chain, new_cands, f"swap:{role}")
                steps_left -= used
                pick, sc = (
                    (tuned, s1)
                    if math.isfinite(s1) and (not math.isfinite(s0) or s1 >= s0)
                    else (chain, s0)
                )
                accepted = offer(pick, new_cands, best["mode"], f"swap:{role}", sc)
                srec.update(score_untuned=s0, score=sc, accepted=accepted)
                if accepted:
                    step_lr[0] = lr
            except Exception as exc:
                srec.update(score=None, accepted=False, error=f"{type(exc).__name__}: {exc}"[:500])
            srec["t"] = round(clock.elapsed(), 4)
            trace["swaps"].append(srec)
            if accepted:
                break
        if not accepted:
            break

    # 4c. polish: the target is reached; a few more steps make a better memory ---------
    if reached and polish_steps > 0 and steps_left > 0 and clock.left() > 0:
        tuned, s, used, _ = refine_round(best["chain"], best["cands"], "polish", polish_steps)
        steps_left -= used
        trace["refine"][-1]["accepted"] = offer(tuned, best["cands"], best["mode"], "polish", s)
        if trace["refine"][-1].get("status") != "ok":
            # nothing differentiable to polish (a BLS search): polish by scoring the
            # compositions not tried yet instead, while the budget lasts
            current = tuple(cs[0].learnware for cs in best["cands"] if len(cs) == 1)
            for combo in all_combos:
                key = tuple(c.learnware if c else None for c in combo)
                if clock.left() <= 0:
                    break
                if key in tried_keys or tuple(k for k in key if k) == current:
                    continue
                try_combo(combo, "polish")

    # 5. remember ----------------------------------------------------------------------
    chain = best["chain"]
    config = {
        "goal": task.goal,
        "modality": task.modality,
        "mode": best["mode"],
        "inputs": list(task.data),
        "adapters": list(chain.adapters),
        "stages": [
            _stage_config(
                r,
                "direct"
                if not isinstance(m, EnsembleStage | SelectStage)
                else ("ensemble" if isinstance(m, EnsembleStage) else "select"),
                cs,
                m,
            )
            for r, m, cs in zip(stage_roles(chain), stage_modules(chain), best["cands"])
        ],
    }
    final_score = best["score"]
    elapsed = clock.elapsed()
    trace["result"] = {
        "score": final_score,
        "origin": best["origin"],
        "mode": best["mode"],
        "stages": [[c.learnware for c in cs] for cs in best["cands"]],
        "adapters": list(chain.adapters),
        "time_s": round(elapsed, 4),
        "time_to_target": reached[0] if reached else None,
    }
    solved = None
    if remember:
        solved = library.add(
            SolvedTask(
                goal=task.goal,
                modality=task.modality,
                scale=task.scale,
                pipeline=config,
                scores={"score": final_score},
                rkme=query,
                description=task.description,
                tags=tuple(task.tags),
                time_s=elapsed,
                provenance=_provenance(),
            )
        )
        trace["result"]["task_id"] = solved.task_id
    return SolveResult(chain, config, final_score, trace, solved, reached[0] if reached else None)


def _cands_from_config(config: Mapping[str, Any]) -> list[list[Candidate]]:
    out = []
    for st in config.get("stages", []):
        out.append(
            [
                Candidate(st["role"], m["learnware"], dict(m["config"]), schema=m.get("schema"))
                for m in st["members"]
            ]
        )
    return out


def _default_source(root: Any = None) -> CandidateSource:
    """The registry at ``root`` (default ``LEARNDOCK_REGISTRY``) when it holds learnwares,
    else the discovered declarations."""
    try:
        from specs.registry import Registry

        reg = Registry(root)
        if reg.list():
            return RegistrySource(reg)
    except Exception:
        pass
    return DeclarationSource()


def _provenance() -> dict[str, Any]:
    import getpass

    user = "unknown"
    with contextlib.suppress(Exception):
        user = getpass.getuser()
    try:
        from importlib.metadata import version

        ver = version("learndock")
    except Exception:
        ver = "unknown"
    return {
        "learndock": ver,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "user": user,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _NoCriterion(ValueError):
    """Raised inside a refinement when the pipeline gives no differentiable criterion."""


def _refine(
    pipe: Pipeline, task: Task, data: Any, labels: Any, clock: _Clock, steps: int, lr: float
) -> tuple[Pipeline, int, dict[str, float], dict[str, Any]]:
    """Fine-tune a copy of ``pipe`` with :meth:`Pipeline.refine` (Adam, up to ``steps``
    steps, within the time left) on the labels' loss (or the task's loss, or the stages'
    self-supervised criteria).

    Returns the tuned copy (best parameters restored), the steps used, the per-stage
    gradient attribution (mean gradient norm) and a trace record."""
    pipe = copy.deepcopy(pipe)
    if steps <= 0:
        return pipe, 0, {}, {"status": "skipped", "reason": "no refinement steps left"}
    if not any(p.requires_grad and p.is_floating_point() for p in pipe.parameters()):
        return pipe, 0, {}, {"status": "skipped", "reason": "no trainable parameters"}
    left = clock.left()
    if left <= 0:
        return pipe, 0, {}, {"status": "skipped", "reason": "no time left"}

    def loss(out: Any, trace: Mapping[str, Any] | None = None) -> torch.Tensor:
        v: torch.Tensor | None
        if task.loss is not None:
            v = task.loss(out, labels, data)
        elif task.labels is not None:
            v = metric_loss(task.goal, out, labels)
        else:
            v = _ssl_of(pipe, trace or {})
        if not isinstance(v, torch.Tensor) or (torch.is_grad_enabled() and not v.requires_grad):
            raise _NoCriterion("no differentiable criterion")
        return v

    try:
        res = pipe.refine(
            data, loss, steps=steps, lr=lr, budget=left, patience=steps + 1, min_delta=0.0
        )
    except Exception as exc:
        return pipe, 0, {}, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    pipe.eval()
    if res.steps == 0:
        if "no differentiable criterion" in res.stopped:
            return pipe, 0, {}, {"status": "skipped", "reason": "no differentiable criterion"}
        return pipe, 0, {}, {"status": "failed", "error": res.stopped[:500]}
    return (
        pipe,
        res.steps,
        dict(res.attribution),
        {
            "status": "ok",
            "steps": res.steps,
            "stopped": res.stopped,
            "loss_first": res.initial_loss,
            "loss_last": res.history[-1],
            "loss_best": res.best_loss,
            "grad_norm": dict(res.attribution),
        },
    )


def _swap_options(
    best: Mapping[str, Any],
    roles: Sequence[Role],
    per_role: Mapping[str, list[Candidate]],
    score_of: Callable[[Pipeline], float],
    grads: Mapping[str, float],
    tried: set[tuple[str, str]],
    data: Mapping[str, Any],
) -> list[tuple[int, Candidate | None, str]]:
    """Swaps to try, the stage that helps least first.

    Stages that refinement cannot move (no gradient signal) come first, then by ablation:
    the score lost when the stage is removed (small or negative = helps least)."""
    pipe: Pipeline = best["chain"]
    names, mods = stage_roles(pipe), stage_modules(pipe)
    optional = {r.name for r in roles if r.optional}
    full = best["score"]
    rank = []
    for i, role in enumerate(names):
        delta = math.inf
        if len(names) > 1:
            with contextlib.suppress(Exception):
                s = score_of(
                    _assemble(
                        [(r, m) for j, (r, m) in enumerate(zip(names, mods)) if j != i],
                        [c for j, c in enumerate(best["cands"]) if j != i],
                        data,
                    )
                )
                delta = full - s if math.isfinite(s) else math.inf
        g = float(grads.get(role, 0.0))
        rank.append((g > 0, delta, i, role, g))
    rank.sort(key=lambda x: (x[0], x[1]))
    out: list[tuple[int, Candidate | None, str]] = []
    for _, delta, i, role, g in rank:
        current = {c.learnware for c in best["cands"][i]}
        alts: list[Candidate | None] = [
            c
            for c in per_role.get(role, [])
            if c.learnware not in current and (role, c.learnware) not in tried
        ]
        if role in optional and math.isfinite(delta) and delta <= 0 and (role, "-") not in tried:
            alts.insert(0, None)
        why = f"stage {role!r} helps least: gradient norm {g:.4g}" + (
            f", ablation d_score {delta:.4g}" if math.isfinite(delta) else ", ablation not possible"
        )
        out.extend((i, a, why) for a in alts)
    return out
