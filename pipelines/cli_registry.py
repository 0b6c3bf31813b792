"""``learndock registry ...``: the spec registry from the command line.

Every command honours ``--registry DIR`` (or ``LEARNDOCK_REGISTRY``) and exits non-zero
with a one-line reason on failure.  ``list``, ``show`` and ``search`` accept ``--json``
for machine-readable output (``search --json`` prints a list of objects with ``id``,
``name``, ``score``, ``mmd`` and, for ``--mixture``, ``weight``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

__all__ = ["app", "load_data_file"]

app = typer.Typer(
    name="registry",
    help="The learnware spec registry: submit, list, search, export, verify, seed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        "-r",
        envvar="LEARNDOCK_REGISTRY",
        help="registry directory (default ~/.learndock/registry)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]

T = TypeVar("T")


def _fail(msg: str, code: int = 1) -> None:
    line = " ".join(str(msg).split())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except typer.Exit:
        raise
    except KeyError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    except Exception as exc:
        _fail(
            f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ValueError | FileNotFoundError | FileExistsError)
            else str(exc)
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _registry(root: Path | None) -> Any:
    from specs.registry import Registry

    return Registry(root)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*r)
    Console(width=max(120, 20)).print(t)


def load_data_file(path: Path) -> tuple[Any, str | None]:
    """Read a user's data file for ``search --data``: ``.npy``/``.npz`` directly (no
    pickle), other formats (zarr, fits, c3d) through :func:`pipelines.io.open_dataset`
    when the IO layer provides it.  Returns ``(data, modality or None)``."""
    import numpy as np

    suffix = "".join(path.suffixes[-1:]).lower()
    if not path.exists():
        raise FileNotFoundError(f"--data: no such file {path}")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if not arrays:
            raise ValueError(f"--data: {path} holds no arrays")
        if {"time", "flux"} <= set(arrays) or "positions" in arrays:
            return arrays, ("light-curve" if "flux" in arrays else "biomechanics")
        if len(arrays) == 1:
            return next(iter(arrays.values())), None
        return arrays, None
    try:
        from pipelines.io import open_dataset  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ValueError(
            f"--data: {path.suffix or path.name} files need the IO layer (pipelines.io.open_dataset), which is not available; give .npy or .npz"
        ) from exc
    ds = open_dataset(path)
    return ds, getattr(ds, "modality", None)


@app.callback()
def _main(ctx: typer.Context, registry: RegistryOpt = None) -> None:
    """Manage the learnware spec registry."""
    ctx.obj = {"registry": registry}


def _root(ctx: typer.Context, registry: Path | None) -> Path | None:
    return registry if registry is not None else (ctx.obj or {}).get("registry")


@app.command("init")
def init(ctx: typer.Context, registry: RegistryOpt = None) -> None:
    """Create an empty registry (idempotent)."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    typer.echo(f"registry at {reg.root} ({len(reg)} learnwares)")


@app.command("submit")
def submit(
    ctx: typer.Context,
    path: Path,
    registry: RegistryOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds the example may run")] = 60.0,
    isolate: Annotated[
        bool, typer.Option(help="run the example in a separate process, killed at the limit")
    ] = False,
) -> None:
    """Check a learnware package (directory or .zip) and register it."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    reg.isolation = "process" if isolate else "thread"
    lid = _guard(lambda: reg.submit(path, timeout=timeout))
    typer.echo(lid)


@app.command("verify")
def verify(path: Path) -> None:
    """Check a package without running it: schema, vocabulary, hashes, safe paths, allow-list."""
    from specs.package import verify_package

    problems = _guard(lambda: verify_package(path))
    if problems:
        for p in problems[1:]:
            typer.echo(f"  {p}", err=True)
        _fail(f"{len(problems)} problem(s): {problems[0]}")
    typer.echo(f"ok: {path}")


@app.command("test")
def test(
    path: Path,
    timeout: Annotated[float, typer.Option(help="seconds the example may run")] = 60.0,
    isolate: Annotated[
        bool, typer.Option(help="run the example in a separate process, killed at the limit")
    ] = False,
) -> None:
    """Run a package's example and compare it with the expected output."""
    from specs.package import test_package

    isolation = "process" if isolate else "thread"
    rep = _guard(lambda: test_package(path, timeout=timeout, isolation=isolation))
    if not rep.ok:
        for p in rep.problems[1:]:
            typer.echo(f"  {p}", err=True)
        _fail(f"{len(rep.problems)} problem(s): {rep.problems[0]}")
    typer.echo(f"ok: example reproduced in {rep.seconds:.2f} s")


def _filters(
    family: str | None,
    task: str | None,
    modality: str | None,
    scale: str | None,
    tag: list[str] | None,
    text: str | None,
) -> dict[str, Any]:
    return {
        "family": family,
        "task": task,
        "modality": modality,
        "scale": scale,
        "tags": tuple(tag or ()),
        "text": text,
    }


Family = Annotated[str | None, typer.Option(help="feedback | detection | rules")]
Task = Annotated[str | None, typer.Option(help="task, e.g. spot-detection")]
Modality = Annotated[
    str | None, typer.Option(help="microscopy | biomechanics | light-curve | tabular | ...")
]
Scale = Annotated[str | None, typer.Option(help="micro | macro | cosmic")]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="required tag (repeatable)")]
Text = Annotated[str | None, typer.Option(help="words to look for in name, description and tags")]


@app.command("list")
def list_(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    family: Family = None,
    task: Task = None,
    modality: Modality = None,
    scale: Scale = None,
    tag: Tag = None,
    text: Text = None,
    json_: JsonOpt = False,
) -> None:
    """List registered learnwares (optionally filtered)."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    recs = _guard(lambda: reg.list(**_filters(family, task, modality, scale, tag, text)))
    if json_:
        typer.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "name": r.name,
                        "version": r.version,
                        "family": r.spec["family"],
                        "task": r.spec["task"],
                        "modality": r.spec["modality"],
                        "scale": r.spec["scale"],
                        "component": r.component,
                    }
                    for r in recs
                ],
                indent=2,
            )
        )
        return
    _table(
        f"{len(recs)} learnwares in {reg.root}",
        ["id", "name", "version", "family", "task", "modality", "scale"],
        [
            [
                r.id,
                r.name,
                r.version,
                r.spec["family"],
                r.spec["task"],
                r.spec["modality"],
                r.spec["scale"],
            ]
            for r in recs
        ],
    )


@app.command("show")
def show(ctx: typer.Context, id: str, registry: RegistryOpt = None, json_: JsonOpt = False) -> None:
    """Show one learnware (id, id prefix or name)."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    rec = _guard(lambda: reg.get(id))
    if json_:
        typer.echo(json.dumps(rec.to_dict(), indent=2))
        return
    s = rec.spec
    typer.echo(f"{rec.id}  {rec.name} {rec.version}")
    typer.echo(
        f"  {s['family']} / {s['task']} / {s['modality']} / {s['scale']}  differentiable={s['differentiable']}"
    )
    typer.echo(f"  component: {rec.component}  params: {json.dumps(rec.params)}")
    typer.echo(f"  featurizer: {rec.featurizer}")
    ins = ", ".join(f"{k}[{v['axes']}]" for k, v in s["inputs"].items())
    outs = ", ".join(f"{k}[{v['axes']}]" for k, v in s["outputs"].items())
    typer.echo(f"  inputs: {ins}  outputs: {outs}")
    if s.get("tags"):
        typer.echo(f"  tags: {', '.join(s['tags'])}")
    typer.echo(f"  {s['description']}")


@app.command("export")
def export(
    ctx: typer.Context,
    id: str,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory or .zip to write")],
    registry: RegistryOpt = None,
) -> None:
    """Write a registered learnware's package to a directory or .zip."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    path = _guard(lambda: reg.export(id, out))
    typer.echo(str(path))


@app.command("remove")
def remove(ctx: typer.Context, id: str, registry: RegistryOpt = None) -> None:
    """Unregister a learnware."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    typer.echo(_guard(lambda: reg.remove(id)))


@app.command("search")
def search(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    family: Family = None,
    task: Task = None,
    modality: Modality = None,
    scale: Scale = None,
    tag: Tag = None,
    text: Text = None,
    data: Annotated[
        Path | None,
        typer.Option(help="sample data: .npy/.npz (zarr/fits/c3d through the IO layer)"),
    ] = None,
    top: Annotated[int, typer.Option(help="number of results")] = 5,
    mixture: Annotated[
        bool, typer.Option("--mixture", help="k learnwares with mixture weights")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Search: semantic filter, then MMD ranking against the RKME of --data."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    filt = _filters(family, task, modality, scale, tag, text)
    arr = None
    if data is not None:
        arr, mod = _guard(lambda: load_data_file(data))
        if filt["modality"] is None:
            filt["modality"] = mod
    if mixture:
        res = _guard(lambda: reg.search_mixture(data=arr, k=top, **filt))
    else:
        res = _guard(lambda: reg.search(data=arr, top=top, **filt))
    if json_:
        out = []
        for r in res:
            d = {
                "id": r.id,
                "name": r.name,
                "score": r.score,
                "mmd": r.mmd,
                "family": r.spec["family"],
                "task": r.spec["task"],
                "explanation": r.explanation,
            }
            if r.weight is not None:
                d["weight"] = r.weight
            out.append(d)
        typer.echo(json.dumps(out, indent=2))
        return
    cols = ["rank", "id", "name", "task", "score", "mmd"] + (["weight"] if mixture else [])
    rows = []
    for i, r in enumerate(res, 1):
        row = [
            str(i),
            r.id,
            r.name,
            r.spec["task"],
            f"{r.score:.3f}",
            "-" if r.mmd is None else f"{r.mmd:.4f}",
        ]
        if mixture:
            row.append(f"{r.weight:.3f}")
        rows.append(row)
    _table(f"{len(res)} results", cols, rows)
    if res:
        typer.echo(f"top: {res[0].explanation}")


@app.command("seed")
def seed(ctx: typer.Context, registry: RegistryOpt = None) -> None:
    """Register every built-in (and installed plug-in) learnware (idempotent)."""
    reg = _guard(lambda: _registry(_root(ctx, registry)))
    ids = _guard(lambda: reg.seed())
    typer.echo(f"{len(ids)} learnwares registered in {reg.root}")


if __name__ == "__main__":  # pragma: no cover
    app(sys.argv[1:])
