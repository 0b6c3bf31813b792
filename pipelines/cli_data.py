"""``learndock sample-data`` and ``learndock batch``.

``sample-data`` writes every sample set with its ``truth.json``; ``batch`` runs a
registered component or a pipeline config over an archive, chunk by chunk, resumably.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

__all__ = ["load_batch_config", "register", "resolve_target"]

_CONF = Path(__file__).resolve().parents[1] / "conf"


def _parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{what}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def resolve_target(target: str, params: dict[str, Any] | None = None) -> Any:
    """A component (registered name) or a pipeline (config name under ``conf/pipeline``).

    Raises
    ------
    LookupError
        If ``target`` is neither; the message lists the known names.
    """
    from components.base import ComponentNotFoundError, discover_components, instantiate

    params = dict(params or {})
    try:
        return instantiate({"_target_": target, **params})
    except ComponentNotFoundError:
        pass
    pipe_dir = _CONF / "pipeline"
    known_pipes = sorted(p.stem for p in pipe_dir.glob("*.yaml")) if pipe_dir.is_dir() else []
    if target in known_pipes:
        try:
            from pipelines.pipeline import Pipeline  # owned by the pipeline layer
        except ImportError as exc:  # pragma: no cover - depends on that layer
            raise LookupError(
                f"target: {target!r} is a pipeline config but pipelines.pipeline is unavailable ({exc})"
            ) from exc
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(config_dir=str(_CONF), version_base=None):
            cfg = compose(
                config_name="config",
                overrides=[f"pipeline={target}", *(f"pipeline.{k}={v}" for k, v in params.items())],
            )
        pipe_cfg: Any = OmegaConf.to_container(cfg.pipeline, resolve=True)
        return Pipeline.from_config(pipe_cfg)
    raise LookupError(
        f"target: {target!r} is neither a registered component {sorted(discover_components())} nor a pipeline config {known_pipes}"
    )


def load_batch_config(name: str | None) -> dict[str, Any]:
    """Scheduler settings from ``conf/batch/<name>.yaml`` (or a path to a YAML file)."""
    if not name:
        return {}
    p = Path(name)
    if not p.is_file():
        p = _CONF / "batch" / f"{name}.yaml"
    if not p.is_file():
        known = (
            sorted(q.stem for q in (_CONF / "batch").glob("*.yaml"))
            if (_CONF / "batch").is_dir()
            else []
        )
        raise typer.BadParameter(f"--config: no batch config {name!r}; known: {known}")
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, dict):
        raise typer.BadParameter(f"--config: {p} must hold a mapping, got {type(cfg).__name__}")
    return cfg


def register(app: typer.Typer) -> None:
    """Add the ``sample-data`` and ``batch`` commands to the main app."""

    @app.command("sample-data")
    def sample_data_cmd(
        out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path(
            "learndock-sample-data"
        ),
        size: Annotated[
            str, typer.Option("--size", help="small (a few MB each) or large.")
        ] = "small",
        seed: Annotated[int, typer.Option("--seed", help="Seed of every generator.")] = 0,
        only: Annotated[
            list[str] | None, typer.Option("--only", help="Write only these samples (repeatable).")
        ] = None,
    ) -> None:
        """Write the sample data sets (OME-Zarr, Zarr, FITS, C3D) with truth.json."""
        from sample_data import write_sample_data

        if size not in ("small", "large"):
            raise typer.BadParameter(f"--size: expected 'small' or 'large', got {size!r}")
        manifest = write_sample_data(out, size=size, seed=seed, samples=only or None)
        for name, entry in manifest["samples"].items():
            typer.echo(
                f"{name:18s} {entry['format']:22s} {', '.join(entry['files'][:3])}{' ...' if len(entry['files']) > 3 else ''}"
            )
        typer.echo(f"truth: {out / 'truth.json'}")

    @app.command("batch")
    def batch_cmd(
        target: Annotated[
            str, typer.Argument(help="Registered component name or pipeline config name.")
        ],
        input: Annotated[
            Path,
            typer.Option("--input", help="Input dataset (Zarr, OME-Zarr, TIFF, FITS, C3D...)."),
        ],
        output: Annotated[
            Path, typer.Option("--output", help="Output Zarr group; re-running resumes.")
        ],
        halo: Annotated[
            int | None,
            typer.Option("--halo", help="Halo in samples (default: the target's footprint)."),
        ] = None,
        scheduler: Annotated[
            str | None,
            typer.Option(
                "--scheduler", help="local | synchronous | distributed | slurm | tcp://address"
            ),
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Threads, worker processes or SLURM jobs.")
        ] = None,
        memory_limit: Annotated[
            str | None, typer.Option("--memory-limit", help="e.g. 2GB: refuse to run above it.")
        ] = None,
        chunks: Annotated[
            str | None, typer.Option("--chunks", help="Block shape, e.g. 1,512,512.")
        ] = None,
        array: Annotated[
            str | None, typer.Option("--array", help="Array of a multi-array dataset.")
        ] = None,
        param: Annotated[
            list[str] | None,
            typer.Option("--param", help="Target parameter KEY=VALUE (repeatable)."),
        ] = None,
        cluster_option: Annotated[
            list[str] | None,
            typer.Option("--cluster-option", help="LocalCluster/SLURMCluster option KEY=VALUE."),
        ] = None,
        config: Annotated[
            str | None,
            typer.Option("--config", help="Scheduler config: conf/batch/NAME.yaml or a YAML path."),
        ] = None,
        output_key: Annotated[
            str | None,
            typer.Option(
                "--output-key", help="Field of a dict/table output to store (e.g. score)."
            ),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an output of a different job.")
        ] = False,
        table: Annotated[
            bool | None,
            typer.Option(
                "--table/--no-table",
                help="Keep the row table of a table output (default: when it has positions).",
            ),
        ] = None,
        columns: Annotated[
            str | None,
            typer.Option(
                "--columns", help="Light-curve archives: arrays passed to TARGET (time,flux)."
            ),
        ] = None,
        targets_per_task: Annotated[
            int | None,
            typer.Option("--targets-per-task", help="Light-curve archives: targets per task."),
        ] = None,
        quality_bitmask: Annotated[
            str | None,
            typer.Option(
                "--quality-bitmask",
                help="Light-curve archives: NaN-out flagged cadences (default, hard, hardest or an int).",
            ),
        ] = None,
    ) -> None:
        """Apply a component or pipeline over an archive, chunk by chunk, resumably."""
        from pipelines.batch import run_batch

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        cfg = load_batch_config(config)
        try:
            fn = resolve_target(target, _parse_kv(param, "--param"))
        except (LookupError, TypeError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="TARGET") from exc
        cluster_options = {
            **dict(cfg.get("cluster_options") or {}),
            **_parse_kv(cluster_option, "--cluster-option"),
        }
        chunk_spec = tuple(int(c) for c in chunks.split(",")) if chunks else cfg.get("chunks")
        from pipelines.io.core import DatasetError

        try:
            result = run_batch(
                fn,
                input,
                output,
                halo=halo if halo is not None else cfg.get("halo"),
                scheduler=scheduler or cfg.get("scheduler", "local"),
                chunks=chunk_spec,
                array=array,
                n_workers=workers or cfg.get("n_workers"),
                threads_per_worker=int(cfg.get("threads_per_worker", 1)),
                memory_limit=memory_limit or cfg.get("memory_limit"),
                cluster_options=cluster_options,
                overwrite=overwrite,
                output_key=output_key,
                table=table,
                columns=tuple(c.strip() for c in columns.split(","))
                if columns
                else ("time", "flux"),
                targets_per_task=targets_per_task,
                quality_bitmask=int(quality_bitmask)
                if quality_bitmask is not None and quality_bitmask.isdigit()
                else quality_bitmask,
                config={
                    "cli": {
                        "target": target,
                        "params": _parse_kv(param, "--param"),
                        "batch_config": config,
                    }
                },
            )
        except (DatasetError, FileNotFoundError, ValueError, TypeError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(
            f"{result.output}: {result.n_shards} shards ({result.n_skipped} already done, {result.n_computed} computed) in {result.seconds:.1f} s"
        )
        rows = (result.provenance.get("output") or {}).get("table", {}).get("rows")
        if result.dtype == "record":
            rows = result.shape[0]
        if rows is not None:
            typer.echo(f"table: {rows} rows in {result.output / 'table'}")
