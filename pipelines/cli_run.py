"""``learndock run``: run a configured pipeline as a Hydra application.

Hydra owns the arguments: ``learndock run pipeline=gait-smoothing data=file
data.path=walk.c3d refine.enabled=true``; ``learndock run -m seed=0,1`` sweeps, to SLURM
with ``hydra/launcher=submitit_slurm``.  The working directory is never changed; every
run writes under ``${hydra:runtime.output_dir}``:

``result.json``      metrics (vs ground truth when known), output paths, timings
``outputs.zarr``     every stage output (one array per field)
``provenance.json``  resolved config, overrides, versions, git commit, data source
``report.html``      the self-contained report

Structured configs (the dataclasses below, stored in Hydra's ConfigStore) sit under
the YAML in ``conf/``, so a typo'd key fails at compose time; :func:`compose_config`
adds the list of valid keys to that error.  Plug-in packages add config groups through
the entry-point group ``learndock.conf`` (each entry resolves to a search-path string
such as ``"pkg://my_lab.conf"`` or a directory): they are appended to
``hydra.searchpath``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines._cli_common import (
    CONF_DIR,
    ConfigKeyError,
    compose,
    container,
    hydra_app,
    jsonable,
    now_utc,
    plugin_searchpath,
    provenance,
    report_user_errors,
    with_searchpath,
    write_json,
)

__all__ = [
    "CONF_DIR",
    "ConfigKeyError",
    "DataConfig",
    "PipelineConfig",
    "RefineConfig",
    "RegistryConfig",
    "ReportConfig",
    "RunConfig",
    "compose_config",
    "execute",
    "load_data",
    "main",
    "plugin_searchpath",
    "register_configs",
]


# --------------------------------------------------------------------------------------
# structured configs
# --------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Where the data comes from: a file/store (``path``) or a generated ``sample``."""

    path: str | None = None
    modality: str | None = None
    sample: str | None = None
    size: str = "small"
    seed: int = 0
    variable: str | None = None


@dataclass
class PipelineConfig:
    """A pipeline: ordered named stages (component configs) and their wiring."""

    name: str = "pipeline"
    description: str = ""
    flagship: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    order: list[str] | None = None
    gradient: dict[str, str] = field(default_factory=dict)
    adapt: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefineConfig:
    """``Pipeline.refine`` settings (off unless ``refine.enabled=true`` or a flagship
    enables it)."""

    enabled: bool = False
    steps: int = 50
    lr: float = 0.01
    budget: float | None = 60.0
    patience: int = 10
    loss: str = "self-supervised"
    optimizer: str = "adam"
    stages: list[str] | None = None


@dataclass
class RegistryConfig:
    root: str | None = None
    url: str | None = None
    seed_builtins: bool = False


@dataclass
class PathsConfig:
    runs: str = "outputs"
    registry: str = "~/.learndock/registry"
    cache: str = "~/.cache/learndock"


@dataclass
class ReportConfig:
    enabled: bool = True
    title: str | None = None


@dataclass
class RunConfig:
    """Schema of the primary config of ``learndock run``."""

    data: DataConfig = field(default_factory=DataConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    feedback: Any = None
    detection: Any = None
    rules: Any = None
    batch: Any = None
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    batch_threshold_mb: float = 2048.0


_SCHEMAS: dict[str, type] = {
    "": RunConfig,
    "data": DataConfig,
    "pipeline": PipelineConfig,
    "refine": RefineConfig,
    "registry": RegistryConfig,
    "paths": PathsConfig,
    "report": ReportConfig,
}


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    import warnings

    from hydra.core.config_store import ConfigStore

    # conf/hydra/launcher/submitit_*.yaml extend the plug-in's schema of the same name on
    # purpose (validated, with learndock's defaults): silence Hydra 1.1's notice about it.
    warnings.filterwarnings(
        "ignore",
        message=r"(?s).*validated against ConfigStore schema with the same name",
        category=UserWarning,
    )
    cs = ConfigStore.instance()
    cs.store(name="learndock_run", node=RunConfig)
    for group, node in (
        ("data", DataConfig),
        ("pipeline", PipelineConfig),
        ("registry", RegistryConfig),
        ("paths", PathsConfig),
    ):
        cs.store(group=f"schema/{group}", name="base", node=node)


def compose_config(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_name: str = "config",
    return_hydra_config: bool = False,
) -> Any:
    """Compose ``conf/`` with overrides through Hydra's compose API.

    Parameters
    ----------
    overrides : list of str
        Hydra overrides (``"pipeline=gait-dynamics"``, ``"data.path=x.c3d"``).
    config_name : str
        Primary config (``"config"``).
    return_hydra_config : bool
        Keep the ``hydra`` node (needed to resolve ``${hydra:...}``).

    Returns
    -------
    omegaconf.DictConfig

    Raises
    ------
    ConfigKeyError
        A key that the schema does not have; the message lists the valid keys.
    hydra.errors.HydraException
        Any other composition error (unknown group option: Hydra lists the options).

    Examples
    --------
    >>> cfg = compose_config(["experiment=gait-dynamics"])
    >>> cfg.pipeline.name
    'gait-dynamics'
    """
    register_configs()
    try:
        return compose(
            config_name,
            overrides,
            job_name="learndock_run",
            schemas=_SCHEMAS,
            return_hydra_config=return_hydra_config,
        )
    except ConfigKeyError:
        raise
    except Exception as exc:
        msg = _explain_component_param(exc, with_searchpath(overrides), config_name)
        if msg:
            raise ConfigKeyError(msg) from exc
        raise


def _explain_component_param(
    exc: BaseException, overrides: list[str], config_name: str
) -> str | None:
    """A typo'd parameter of a component config (``pipeline.stages.smooth.qq=1``): list
    the component's constructor parameters."""
    import inspect

    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    m = re.search(r"Could not override '([^']+)'", str(exc))
    if not m:
        return None
    key = m.group(1)
    parent, _, name = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
    try:
        cfg = hydra_compose(config_name=config_name, overrides=rest)
        node = OmegaConf.select(cfg, parent)
        target = node.get("_target_") if node is not None and hasattr(node, "get") else None
        if target is None:
            return None
        from components.base import get_component

        sig = inspect.signature(get_component(str(target)).__init__)
    except Exception:
        return None
    valid = [n for n in sig.parameters if n != "self"]
    if name in valid:
        return None
    return f"unknown config key {key!r}: component {target!r} at {parent!r} takes the parameters {valid}"


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
@dataclass
class RunData:
    """Inputs of a run: named arrays, ground truth when known, and where they came from."""

    inputs: dict[str, Any]
    truth: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_data(data_cfg: dict[str, Any], input_names: list[str] | None = None) -> RunData:
    """Read ``data.path`` through :func:`pipelines.io.open_dataset`, or generate ``data.sample``.

    Raises
    ------
    ValueError
        If neither ``path`` nor ``sample`` is given, or the file cannot be read.
    """
    path, sample = data_cfg.get("path"), data_cfg.get("sample")
    if sample:
        from pipelines import flagships

        return flagships.load_sample(
            str(sample), seed=int(data_cfg.get("seed", 0)), size=str(data_cfg.get("size", "small"))
        )
    if not path:
        raise ValueError(
            "data: give data.path=PATH (any file or store the IO layer reads) or data=<sample>, e.g. data=gait-sample"
        )
    from pipelines.io import open_dataset

    ds = open_dataset(str(path), modality=data_cfg.get("modality"))
    arrays: dict[str, Any] = {}
    if isinstance(ds.data, dict):
        for k, v in ds.data.items():
            arrays[k] = np.asarray(v)
    else:
        arrays["data"] = np.asarray(ds.data)
    attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, int | float | str | bool)}
    meta = {
        "source": str(path),
        "format": ds.format,
        "modality": ds.modality,
        "axes": ds.axes,
        "units": ds.units,
        "attrs": attrs,
        "provenance": ds.provenance,
    }
    inputs: dict[str, Any] = {}
    names = list(input_names or [])
    var = data_cfg.get("variable")
    if var:
        if var not in arrays:
            raise ValueError(f"data.variable: {var!r} is not in {path} (has {sorted(arrays)})")
        arrays = {var: arrays[var]}
    aliases = {
        "positions": ("points", "positions", "data"),
        "image": ("data",),
        "movie": ("data",),
        "flux": ("flux",),
        "time": ("time",),
    }
    for n in names:
        for cand in (n, *aliases.get(n, ())):
            if cand in arrays:
                inputs[n] = arrays[cand]
                break
    if names and len(inputs) < len(names) and len(arrays) == 1:
        inputs[names[0]] = next(iter(arrays.values()))
    if not inputs:
        inputs = arrays
    if "rate" in ds.attrs:
        meta["rate"] = float(ds.attrs["rate"])
    return RunData(inputs=inputs, meta=meta)


# --------------------------------------------------------------------------------------
# outputs and provenance
# --------------------------------------------------------------------------------------
def write_outputs(arrays: dict[str, np.ndarray], path: Path) -> dict[str, dict[str, Any]]:
    """Write named arrays into one Zarr group; returns ``{name: {shape, dtype}}``."""
    import zarr

    g = zarr.open_group(str(path), mode="w")
    index: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype.kind not in "biuf" or a.size == 0:
            continue
        key = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip("_.") or "output"
        z = g.create_array(name=key, shape=a.shape, dtype=a.dtype)
        z[...] = a
        index[key] = {"shape": list(a.shape), "dtype": str(a.dtype)}
    return index


# --------------------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------------------
def execute(
    cfg: Any, output_dir: str | Path, *, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run one configured pipeline and write its outputs under ``output_dir``.

    Parameters
    ----------
    cfg : DictConfig or dict
        A composed run config (see :class:`RunConfig`).
    output_dir : path
        Where ``result.json``, ``outputs.zarr``, ``provenance.json`` and ``report.html``
        go (Hydra's run dir under ``learndock run``).
    overrides : list of str, optional
        Recorded in the provenance.

    Returns
    -------
    dict
        The content of ``result.json``.
    """
    import torch

    from components.base import resolve_device, set_threads
    from pipelines import report as rep

    plain = container(cfg)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = set_threads(plain.get("threads"))
    device = resolve_device(plain.get("device") or "cpu")
    seed = int(plain.get("seed", 0))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    started = now_utc()
    pcfg = plain.get("pipeline") or {}
    if pcfg.get("flagship"):
        from pipelines import flagships

        run = flagships.run_flagship(str(pcfg["flagship"]), plain, device=device)
    else:
        run = _run_generic(plain, device, out)
    seconds = time.perf_counter() - t0
    index = (
        run.outputs_index
        if run.outputs_index is not None
        else write_outputs(run.outputs, out / "outputs.zarr")
    )
    prov = provenance(
        "learndock_run",
        started=started,
        seconds=seconds,
        output_dir=out,
        overrides=overrides,
        config=plain,
        threads=threads,
        seed=seed,
        device=device,
        pipeline=run.pipeline_config,
        data=run.data_meta,
    )
    write_json(out / "provenance.json", prov)
    report_path = None
    if (plain.get("report") or {}).get("enabled", True):
        title = (plain.get("report") or {}).get(
            "title"
        ) or f"learndock · {pcfg.get('name', 'pipeline')}"
        report_path = rep.render_report(
            out / "report.html",
            title=title,
            subtitle=pcfg.get("description", ""),
            sections=run.sections,
            metrics=run.metrics,
            provenance=jsonable(prov),
            refine=run.refine,
            attribution=(run.refine or {}).get("attribution") if run.refine else None,
            pipeline=run.description,
        )
    result = {
        "pipeline": pcfg.get("name"),
        "metrics": jsonable(run.metrics),
        "passed": run.passed,
        "outputs": {"zarr": str((out / "outputs.zarr").resolve()), "arrays": index},
        "report": str(report_path.resolve()) if report_path else None,
        "provenance": str((out / "provenance.json").resolve()),
        "refine": jsonable(
            {k: v for k, v in (run.refine or {}).items() if k not in ("history", "grad_norms")}
        )
        or None,
        "seconds": round(seconds, 3),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


@dataclass
class RunOutcome:
    """What a pipeline run produced, before it is written to disk."""

    outputs: dict[str, np.ndarray]
    metrics: dict[str, Any]
    sections: list[Any]
    description: str = ""
    refine: dict[str, Any] | None = None
    pipeline_config: dict[str, Any] | None = None
    data_meta: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    outputs_index: dict[str, Any] | None = None  # set when the batch runner wrote outputs.zarr


def _batch_if_large(pipe: Any, plain: dict[str, Any], device: Any, out: Path) -> RunOutcome | None:
    """Delegate to the chunked, resumable batch runner when ``data.path`` is larger than
    ``batch_threshold_mb`` (single-input pipelines); None when the data fits in memory."""
    path = (plain.get("data") or {}).get("path")
    if not path or len(pipe.input_schema) != 1:
        return None
    try:
        from pipelines.batch import run_batch  # noqa: F401
        from pipelines.io import open_dataset
    except ImportError:
        return None
    ds = open_dataset(str(path), modality=(plain.get("data") or {}).get("modality"))
    if isinstance(ds.data, dict):
        return None
    nbytes = float(getattr(ds.data, "nbytes", 0))
    if nbytes <= float(plain.get("batch_threshold_mb", 2048.0)) * 2**20:
        return None
    from pipelines.report import Section

    opts = {k: v for k, v in dict(plain.get("batch") or {}).items() if v is not None}
    res = pipe.run_batch(ds, out / "outputs.zarr", device=str(device), config=plain, **opts)
    info = (
        {k: v for k, v in vars(res).items() if isinstance(v, int | float | str | bool)}
        if hasattr(res, "__dict__")
        else {}
    )
    return RunOutcome(
        outputs={},
        metrics={
            "input_mb": nbytes / 2**20,
            **{k: v for k, v in info.items() if isinstance(v, int | float)},
        },
        sections=[
            Section(
                "Batch processing",
                text=f"{nbytes / 2**30:.2f} GiB processed chunk by chunk with halo {pipe.footprint} (resumable).",
                table=info or None,
            )
        ],
        description=pipe.describe(),
        pipeline_config=pipe.config(),
        data_meta={"source": str(path), "format": ds.format, "provenance": ds.provenance},
        outputs_index={"batch": info},
    )


def _run_generic(plain: dict[str, Any], device: Any, out: Path | None = None) -> RunOutcome:
    """A configured chain of stages on ``data``: build, (refine), trace, collect outputs."""
    from components.base import outputs_to_arrays
    from pipelines.pipeline import Pipeline
    from pipelines.report import Section, figure_png, new_figure

    pcfg = dict(plain.get("pipeline") or {})
    stages = {k: v for k, v in (pcfg.get("stages") or {}).items() if v is not None}
    if not stages:
        raise ValueError(
            f"pipeline {pcfg.get('name')!r} has no stages: choose pipeline=<name> (see conf/pipeline/) or a "
            "component with feedback=..., detection=... or rules=..."
        )
    pcfg["stages"] = stages
    pipe = Pipeline.from_config(pcfg, device=device)
    if out is not None:
        batched = _batch_if_large(pipe, plain, device, out)
        if batched is not None:
            return batched
    data = load_data(plain.get("data") or {}, list(pipe.input_schema))
    inputs = {}
    import torch

    for k, v in data.inputs.items():
        if k in pipe.input_schema:
            a = np.asarray(v)
            inputs[k] = torch.as_tensor(
                a.astype(np.float32) if a.dtype.kind == "f" and a.dtype.itemsize < 4 else a
            )
    refine = None
    rcfg = plain.get("refine") or {}
    if rcfg.get("enabled"):
        res = pipe.refine(
            inputs,
            rcfg.get("loss", "self-supervised"),
            steps=int(rcfg.get("steps", 50)),
            lr=float(rcfg.get("lr", 0.01)),
            budget=rcfg.get("budget"),
            patience=int(rcfg.get("patience", 10)),
            optimizer=str(rcfg.get("optimizer", "adam")),
            stages=rcfg.get("stages"),
        )
        refine = res.to_dict()
    with torch.no_grad():
        board = pipe.trace(**inputs)
    outputs: dict[str, np.ndarray] = {}
    sections = []
    for k, v in inputs.items():
        outputs[f"input.{k}"] = v.detach().cpu().numpy()
    sections.append(
        Section(
            "Input overview",
            table={k: f"shape {tuple(v.shape)}, {v.dtype}" for k, v in inputs.items()}
            | {"source": data.meta.get("source", "")},
        )
    )
    for info in pipe.plan:
        arrs = outputs_to_arrays(board[info.name], info.name)
        outputs.update(arrs)
        figs = []
        for name, a in list(arrs.items())[:2]:
            if a.ndim >= 1 and a.size > 1 and a.dtype.kind == "f":
                fig, ax = new_figure()
                flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a
                if a.ndim >= 2 and a.shape[-1] > 8 and a.shape[-2] > 8:
                    ax[0, 0].imshow(a.reshape(-1, *a.shape[-2:])[0], cmap="magma")
                else:
                    ax[0, 0].plot(flat[:, : min(flat.shape[1], 6)] if flat.ndim > 1 else flat, lw=1)
                ax[0, 0].set_title(name)
                figs.append(figure_png(fig, name))
        sections.append(
            Section(
                f"Stage {info.name} ({info.source})",
                table={k: f"shape {tuple(a.shape)}" for k, a in arrs.items()},
                figures=figs,
            )
        )
    return RunOutcome(
        outputs=outputs,
        metrics={},
        sections=sections,
        description=pipe.describe(),
        refine=refine,
        pipeline_config=pipe.config(),
        data_meta=data.meta,
    )


def _task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    result = report_user_errors(
        "learndock run",
        lambda: execute(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task)),
    )
    print(f"learndock run: {result['pipeline']} -> {hc.runtime.output_dir}")
    if result.get("metrics"):
        print(json.dumps(result["metrics"], indent=2))
    if result.get("report"):
        print(f"report: {result['report']}")


def main() -> None:
    """Entry point (``pipelines.cli`` sets ``sys.argv`` to the Hydra overrides)."""
    register_configs()
    args = sys.argv[1:]
    # Validate single-run overrides first so that a typo lists the valid keys.
    multirun = any(a in ("-m", "--multirun") for a in args)
    if not any(a.startswith("-") for a in args) and not multirun:
        try:
            compose_config([a for a in args if not a.startswith("hydra")])
        except ConfigKeyError as exc:
            print(f"learndock run: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception:
            pass  # Hydra reports other composition errors itself below
    hydra_app("config", _task)()


if __name__ == "__main__":  # pragma: no cover
    main()
