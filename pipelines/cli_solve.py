"""``learndock solve``: solve a task from the dock as a Hydra application.

Hydra owns the arguments::

    learndock solve task=find-transits data.path=kplr.fits labels.values.period=3.52
    learndock solve task.goal=reconstruct task.modality=microscopy task.scale=micro \\
        data.path=cells.ome.zarr labels.path=truth.npy solve.budget_s=120
    learndock solve task_file=task.yaml --publish

A ``task_file`` is a YAML file with any of the top-level keys (``task``, ``data``,
``labels``, ``solve``), merged under the command-line overrides.  ``--publish`` is
``solve.publish=true``.  Every run writes under ``${hydra:runtime.output_dir}`` the same
run folder as ``learndock run`` -- ``result.json``, ``outputs.zarr``, ``provenance.json``,
``report.html`` -- plus ``solve.json``, the trace of the loop (what was recalled, each
candidate tried with its score or failure, the reuse modes, refinement rounds, what was
swapped and why).  The task library is the one beside the registry
(``registry.root``, default ``$LEARNDOCK_REGISTRY``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines._cli_common import (
    ConfigKeyError,
    compose,
    container,
    hydra_app,
    jsonable,
    now_utc,
    provenance,
    report_user_errors,
    write_json,
)
from pipelines.cli_run import (
    DataConfig,
    PathsConfig,
    RegistryConfig,
    ReportConfig,
    write_outputs,
)

__all__ = [
    "LabelsConfig",
    "SolveConfig",
    "SolveOptions",
    "TaskConfig",
    "compose_solve_config",
    "execute_solve",
    "main",
    "register_solve_configs",
]


@dataclass
class TaskConfig:
    """What to solve (``conf/task/*.yaml`` presets)."""

    goal: str = "???"
    modality: str | None = None
    scale: str | None = None
    description: str = ""
    tags: list[str] = field(default_factory=list)
    items: bool = False
    target: float | None = None


@dataclass
class LabelsConfig:
    """Optional ground truth: an ``.npy``/``.npz`` file, a key of the loaded data or of
    the sample's truth, or scalars (``labels.period=3.52`` for transits; others with
    ``+labels.values.NAME=VALUE``)."""

    path: str | None = None
    key: str | None = None
    period: float | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class SolveOptions:
    """Budget and knobs of :func:`pipelines.solve.solve`."""

    budget_s: float = 120.0
    steps: int = 60
    top_k: int = 3
    max_combos: int = 12
    recall_mmd: float = 0.1
    modes: list[str] = field(default_factory=lambda: ["direct", "ensemble", "select"])
    lr: float = 0.05
    round_steps: int = 10
    max_swaps: int = 3
    polish_steps: int = 10
    quick_items: int = 8
    remember: bool = True
    publish: bool = False


@dataclass
class SolveConfig:
    """Schema of the primary config of ``learndock solve``."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    solve: SolveOptions = field(default_factory=SolveOptions)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    task_file: str | None = None
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None


_SCHEMAS: dict[str, type] = {
    "": SolveConfig,
    "task": TaskConfig,
    "labels": LabelsConfig,
    "solve": SolveOptions,
    "data": DataConfig,
    "registry": RegistryConfig,
    "paths": PathsConfig,
    "report": ReportConfig,
}


def register_solve_configs() -> None:
    """Store the schema in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from pipelines.cli_run import register_configs

    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="learndock_solve", node=SolveConfig)
    # The primary config lives here (conf/ holds only its groups: task/, solve/, data/ ...).
    cs.store(
        name="learndock_solve_config",
        node={
            "defaults": [
                "learndock_solve",
                {"data": "none"},
                {"paths": "default"},
                {"registry": "local"},
                {"task": "none"},
                {"solve": "default"},
                "_self_",
            ],
            "hydra": {
                "job": {"chdir": False},
                "run": {"dir": "${paths.runs}/solve/${task.goal}/${now:%Y-%m-%d_%H-%M-%S}"},
                "sweep": {
                    "dir": "${paths.runs}/multirun-solve/${now:%Y-%m-%d_%H-%M-%S}",
                    "subdir": "${hydra.job.num}",
                },
            },
        },
    )


def _hydra_value(v: Any) -> str:
    """A YAML value written in Hydra's override grammar."""
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_hydra_value(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _task_file_overrides(overrides: list[str]) -> list[str]:
    """Turn ``task_file=PATH`` into overrides for its keys (command line wins)."""
    path = next((o.split("=", 1)[1] for o in overrides if o.startswith("task_file=")), None)
    if not path:
        return overrides
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"task_file: no such file {str(p)!r}")
    content = yaml.safe_load(p.read_text()) or {}
    if not isinstance(content, dict):
        raise ValueError(
            f"task_file: expected a YAML mapping (task:, data:, labels:, solve:), got {type(content).__name__}"
        )
    allowed = {"task", "data", "labels", "solve", "registry", "device", "seed", "threads"}
    bad = sorted(set(content) - allowed)
    if bad:
        raise ValueError(f"task_file: unknown top-level keys {bad}; valid keys: {sorted(allowed)}")
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    extra = []

    def flat(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                flat(f"{prefix}.{k}" if prefix else str(k), x)
        elif prefix not in given:
            # free-form entries (labels.values.*) are not in the schema: force-add them
            plus = "++" if prefix.startswith("labels.values.") else ""
            extra.append(f"{plus}{prefix}={_hydra_value(v)}")

    flat("", content)
    return [*extra, *overrides]


def compose_solve_config(
    overrides: list[str] | tuple[str, ...] = (), *, return_hydra_config: bool = False
) -> Any:
    """Compose the solve config (groups ``task/``, ``solve/``, ``data/`` ... of ``conf/``)
    with overrides through Hydra's compose API.

    Raises
    ------
    pipelines._cli_common.ConfigKeyError
        A mistyped key (``solve.budgt=3``); the message lists the valid keys.

    Examples
    --------
    >>> cfg = compose_solve_config(["task=find-transits"])
    >>> cfg.task.goal, cfg.task.modality
    ('find-transits', 'light-curve')
    """
    register_solve_configs()
    return compose(
        "learndock_solve_config",
        _task_file_overrides(list(overrides)),
        job_name="learndock_solve",
        schemas=_SCHEMAS,
        return_hydra_config=return_hydra_config,
    )


# --------------------------------------------------------------------------------------
# data and labels
# --------------------------------------------------------------------------------------
def _load_labels(lcfg: dict[str, Any], run: Any) -> Any:
    values = {k: v for k, v in (lcfg.get("values") or {}).items() if v is not None}
    if lcfg.get("period") is not None:
        values["period"] = float(lcfg["period"])
    arr = None
    if lcfg.get("path"):
        p = Path(str(lcfg["path"])).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"labels.path: no such file {str(p)!r}")
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            key = lcfg.get("key") or loaded.files[0]
            if key not in loaded.files:
                raise ValueError(f"labels.key: {key!r} is not in {p} (has {loaded.files})")
            arr = loaded[key]
        else:
            arr = loaded
    elif lcfg.get("key"):
        key = str(lcfg["key"])
        pool = {**(run.truth or {}), **run.inputs}
        if key not in pool:
            raise ValueError(
                f"labels.key: {key!r} is neither in the data nor in its ground truth (have {sorted(pool)})"
            )
        arr = np.asarray(pool[key])
    if arr is not None and values:
        raise ValueError(
            "labels: give either an array (labels.path / labels.key) or scalar labels.values, not both"
        )
    if arr is not None:
        return arr
    return values or None


def _as_inputs(arrays: dict[str, Any]) -> dict[str, Any]:
    import torch

    out = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            continue
        if a.dtype.kind in "biu":
            a = a.astype(np.float32)  # raw counts (uint16 images) -> float32 by value
        elif a.dtype.itemsize < 4:
            a = a.astype(np.float32)
        out[k] = torch.from_numpy(np.ascontiguousarray(a))
    return out


# --------------------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------------------
def execute_solve(
    cfg: Any, output_dir: str | Path, *, overrides: list[str] | None = None, source: Any = None
) -> dict[str, Any]:
    """Solve the configured task and write the run folder.

    Parameters
    ----------
    cfg : DictConfig or dict
        A composed solve config (:class:`SolveConfig`).
    output_dir : path
        Where ``result.json``, ``solve.json``, ``outputs.zarr``, ``provenance.json`` and
        ``report.html`` go.
    overrides : list of str, optional
        Recorded in the provenance.
    source : CandidateSource, optional
        Where candidates come from (default: the registry, else the declarations).

    Returns
    -------
    dict
        The content of ``result.json``.

    Raises
    ------
    ValueError
        Missing goal/modality/scale, unreadable labels.
    pipelines.solve.NoCandidateError, pipelines.solve.BudgetTooSmallError
        See :func:`pipelines.solve.solve`.
    """
    import torch
    from omegaconf.errors import MissingMandatoryValue

    from components.base import outputs_to_arrays, set_threads
    from pipelines import report as rep
    from pipelines import solve as S
    from pipelines.cli_run import load_data
    from specs.tasks import TaskLibrary

    try:
        plain = container(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", "") or "task.goal"
        hint = (
            f", one of {sorted(S.GOALS)} (e.g. task=find-transits or task.goal=reconstruct)"
            if "goal" in key
            else ""
        )
        raise ValueError(f"{key}: a value is required{hint}") from None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = set_threads(plain.get("threads"))
    t0 = time.perf_counter()
    started = now_utc()
    tcfg, scfg = plain.get("task") or {}, plain.get("solve") or {}
    goal = tcfg.get("goal")
    if not goal or goal == "???":
        raise ValueError(
            f"task.goal: give a goal, one of {sorted(S.GOALS)} (e.g. task=find-transits or task.goal=reconstruct)"
        )
    run = load_data(plain.get("data") or {})
    modality = (
        tcfg.get("modality")
        or run.meta.get("modality")
        or (plain.get("data") or {}).get("modality")
    )
    scale = tcfg.get("scale") or {
        "microscopy": "micro",
        "biomechanics": "macro",
        "light-curve": "cosmic",
    }.get(str(modality))
    if not modality:
        raise ValueError(
            "task.modality: could not be deduced from the data; give task.modality=..."
        )
    if not scale:
        raise ValueError(
            f"task.scale: could not be deduced for modality {modality!r}; give task.scale=micro|macro|cosmic"
        )
    labels = _load_labels(plain.get("labels") or {}, run)
    inputs = _as_inputs(run.inputs)
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(
            np.ascontiguousarray(
                labels.astype(np.float64 if labels.dtype == np.float64 else np.float32)
            )
        )
    root = (plain.get("registry") or {}).get("root") or (plain.get("paths") or {}).get("registry")
    library = TaskLibrary(Path(str(root)).expanduser() if root else None)
    if source is None and (plain.get("registry") or {}).get("seed_builtins"):
        source = _seeded_source(library.root)
    task = S.Task(
        goal=str(goal),
        modality=str(modality),
        scale=str(scale),
        data=inputs,
        labels=labels,
        budget_s=float(scfg.get("budget_s", 120.0)),
        steps=int(scfg.get("steps", 60)),
        target=tcfg.get("target"),
        items=bool(tcfg.get("items", False)),
        quick_items=int(scfg.get("quick_items", 8)),
        description=str(tcfg.get("description", "")),
        tags=tuple(tcfg.get("tags") or ()),
    )
    res = S.solve(
        task,
        library=library,
        source=source,
        top_k=int(scfg.get("top_k", 3)),
        max_combos=int(scfg.get("max_combos", 12)),
        recall_mmd=float(scfg.get("recall_mmd", 0.1)),
        modes=tuple(scfg.get("modes") or ("direct",)),
        lr=float(scfg.get("lr", 0.05)),
        round_steps=int(scfg.get("round_steps", 10)),
        max_swaps=int(scfg.get("max_swaps", 3)),
        polish_steps=int(scfg.get("polish_steps", 10)),
        remember=bool(scfg.get("remember", True)),
        seed=int(plain.get("seed", 0)),
    )
    # the final pipeline on the full data
    with torch.no_grad():
        final = res.pipeline.eval()(**task.data)
    metrics: dict[str, Any] = {
        "score": res.score,
        "score_kind": "labelled" if labels is not None else "self-supervised",
    }
    if labels is not None:
        try:
            metrics["score_full_data"] = S.metric_score(task.goal, final, labels)
        except Exception as exc:
            metrics["score_full_data"] = f"n/a ({type(exc).__name__})"
    metrics["time_to_target_s"] = res.time_to_target
    published: list[str] = []
    if scfg.get("publish"):
        published = _publish(res, library.root, task)
    seconds = time.perf_counter() - t0
    arrays = {f"input.{k}": v.detach().cpu().numpy() for k, v in task.data.items()}
    arrays.update(outputs_to_arrays(final, "output"))
    index = write_outputs(arrays, out / "outputs.zarr")
    trace = dict(res.trace)
    trace["published"] = published
    write_json(out / "solve.json", trace)
    prov = provenance(
        "learndock_solve",
        started=started,
        seconds=seconds,
        output_dir=out,
        overrides=overrides,
        config=plain,
        threads=threads,
        seed=int(plain.get("seed", 0)),
        pipeline=res.config,
        task_id=res.solved.task_id if res.solved else None,
        task_library=str(library.path),
        data=run.meta,
    )
    write_json(out / "provenance.json", prov)
    report_path = None
    if (plain.get("report") or {}).get("enabled", True):
        report_path = rep.render_report(
            out / "report.html",
            title=(plain.get("report") or {}).get("title") or f"learndock solve · {task.goal}",
            subtitle=task.description,
            sections=_sections(res, task),
            metrics=jsonable(metrics),
            provenance=jsonable(prov),
            pipeline=" -> ".join(
                f"{r}: {'+'.join(n)}"
                for r, n in zip(S.stage_roles(res.pipeline), res.trace["result"]["stages"])
            ),
        )
    result = {
        "goal": task.goal,
        "pipeline": res.config,
        "metrics": jsonable(metrics),
        "origin": res.trace["result"]["origin"],
        "task_id": res.solved.task_id if res.solved else None,
        "published": published,
        "outputs": {"zarr": str((out / "outputs.zarr").resolve()), "arrays": index},
        "report": str(report_path.resolve()) if report_path else None,
        "provenance": str((out / "provenance.json").resolve()),
        "trace": str((out / "solve.json").resolve()),
        "seconds": round(seconds, 3),
    }
    write_json(out / "result.json", result)
    return jsonable(result)


def _sections(res: Any, task: Any) -> list[Any]:
    from pipelines.report import Section

    tr = res.trace
    secs = [
        Section(
            "Task",
            table={
                "goal": task.goal,
                "modality": task.modality,
                "scale": task.scale,
                "labels": task.labels is not None,
                "budget (s)": task.budget_s,
                "refinement steps": task.steps,
            },
        ),
        Section(
            "Recall",
            text="Nearest solved tasks in the task library (squared MMD between data RKMEs)."
            if tr["recall"]
            else "Nothing remembered for this goal and modality.",
            table=[{k: v for k, v in r.items()} for r in tr["recall"]] or None,  # type: ignore[arg-type]
        ),
        Section(
            "Candidates tried",
            table=[
                {
                    "stages": ", ".join(f"{k}={v}" for k, v in t["stages"].items()),
                    "score": t.get("score"),
                    "status": t["status"],
                    "error": t.get("error", ""),
                }
                for t in tr["tried"]
            ]
            or None,
        ),  # type: ignore[arg-type]
    ]
    if tr["modes"]:
        secs.append(
            Section(
                "Reuse modes",
                table=[
                    {
                        "mode": m["mode"],
                        "members": ", ".join(m["members"]),
                        "score": m.get("score"),
                        "status": m["status"],
                    }
                    for m in tr["modes"]
                ],
            )
        )  # type: ignore[arg-type]
    if tr["refine"]:
        secs.append(
            Section(
                "Refinement rounds",
                table=[
                    {
                        k: r.get(k)
                        for k in (
                            "origin",
                            "status",
                            "steps",
                            "loss_first",
                            "loss_last",
                            "score",
                            "accepted",
                        )
                    }
                    for r in tr["refine"]
                ],
            )
        )  # type: ignore[arg-type]
    if tr["swaps"]:
        secs.append(
            Section(
                "Swaps",
                table=[
                    {k: s.get(k) for k in ("stage", "from", "to", "reason", "score", "accepted")}
                    for s in tr["swaps"]
                ],
            )
        )  # type: ignore[arg-type]
    secs.append(
        Section(
            "Result",
            table={
                "score": res.score,
                "origin": tr["result"]["origin"],
                "mode": tr["result"]["mode"],
                "time (s)": tr["result"]["time_s"],
                "time to target (s)": tr["result"]["time_to_target"],
            },
        )
    )
    return secs


def _seeded_source(root: Path) -> Any:
    """The registry at ``root`` seeded with the built-in learnwares, as a candidate source."""
    from pipelines.solve import DeclarationSource, RegistrySource

    try:
        from specs.registry import Registry

        reg = Registry(root)
        reg.seed()
        return RegistrySource(reg)
    except ImportError:
        return DeclarationSource()


def _publish(res: Any, root: Path, task: Any) -> list[str]:
    """Publish the tuned stages as new learnwares in the registry at ``root``.

    Each member of the final pipeline whose learnware is a discovered declaration becomes
    ``<learnware>.tuned-<task>``: the same component and constructor params, its tuned
    parameters as weights, the declaration's example, and an RKME of this task's data
    (raw data is not stored).  Returns the registered ids, or a note per member that
    could not be published."""
    import tempfile

    import torch

    from components.base import discover_learnwares
    from pipelines.solve import EnsembleStage, SelectStage, stage_modules
    from specs.package import build_package
    from specs.registry import Registry

    reg = Registry(root)
    decls = discover_learnwares()
    tag = (res.solved.task_id if res.solved else f"{int(time.time())}")[-8:].lower()
    data = {k: v.detach().cpu().numpy() for k, v in task.data.items()}
    ref = data if len(data) > 1 else next(iter(data.values()))
    out: list[str] = []
    for st, module in zip(res.config["stages"], stage_modules(res.pipeline)):
        members = (
            list(module.members) if isinstance(module, EnsembleStage | SelectStage) else [module]
        )
        for mem, m in zip(st["members"], members):
            lw = mem["learnware"]
            if lw not in decls:
                out.append(f"{lw}: not published (not a discovered declaration)")
                continue
            cls, decl = decls[lw]
            name = f"{lw}.tuned-{tag}"
            spec = decl.spec.model_copy(
                update={
                    "name": name,
                    "description": f"{decl.spec.description} Tuned by learndock solve ({task.goal}, {task.description or 'task ' + tag}).",
                    "tags": (*decl.spec.tags, "tuned"),
                }
            )
            params = {k: v for k, v in mem["config"].items() if not str(k).startswith("_")}
            weights = {
                k: v.detach().cpu().clone()
                for k, v in m.state_dict().items()
                if isinstance(v, torch.Tensor)
            }
            try:
                with tempfile.TemporaryDirectory() as d:
                    pkg = build_package(
                        cls,
                        (spec, params),
                        Path(d) / "pkg",
                        data=ref,
                        example=decl.example(),
                        weights=weights or None,
                    )
                    out.append(reg.submit(pkg))
            except Exception as exc:
                out.append(f"{name}: not published ({type(exc).__name__}: {exc})"[:300])
    return out


def _task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from pipelines import solve as S

    hc = HydraConfig.get()
    result = report_user_errors(
        "learndock solve",
        lambda: execute_solve(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task)),
        errors=(ValueError, TypeError, LookupError, OSError, S.BudgetTooSmallError),
    )
    print(f"learndock solve: {result['goal']} -> {hc.runtime.output_dir}")
    print(json.dumps({"origin": result["origin"], **result["metrics"]}, indent=2))
    if result.get("report"):
        print(f"report: {result['report']}")


def main() -> None:
    """Entry point (``pipelines.cli`` sets ``sys.argv`` to the Hydra overrides)."""
    register_solve_configs()
    args = [("solve.publish=true" if a == "--publish" else a) for a in sys.argv[1:]]
    try:
        args = _task_file_overrides(args)
    except (OSError, ValueError) as exc:
        print(f"learndock solve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # validate single-run overrides first so that a typo lists the valid keys
    if not any(a.startswith("-") for a in args):
        try:
            compose_solve_config([a for a in args if not a.startswith("hydra")])
        except ConfigKeyError as exc:
            print(f"learndock solve: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception:
            pass  # Hydra reports other composition errors itself below
    sys.argv = [sys.argv[0], *args]
    hydra_app("learndock_solve_config", _task)()


if __name__ == "__main__":  # pragma: no cover
    main()
