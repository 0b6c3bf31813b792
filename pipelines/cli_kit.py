"""``learndock new-plugin`` and ``learndock package``: the authoring kit for labs.

``new-plugin NAME`` scaffolds an installable plug-in package (see
:mod:`learndock.scaffold`); ``package COMPONENT --data SAMPLE --out PKG.zip`` builds a
learnware package from an installed component, its params and the lab's sample data:
the RKME is computed locally and the raw data never enter the package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["load_sample", "parse_params", "register"]


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def parse_params(params_file: Path | None, sets: list[str] | None) -> dict[str, Any]:
    """Constructor params from a YAML/JSON file and ``key=value`` overrides.

    Values of ``key=value`` are parsed as YAML scalars (``3``, ``0.5``, ``true``,
    ``[1, 2]``); a ``_target_`` key in the file is ignored.

    Raises
    ------
    ValueError
        If the file is not a mapping or an override has no ``=``.
    """
    import yaml

    params: dict[str, Any] = {}
    if params_file is not None:
        data = yaml.safe_load(Path(params_file).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"--params: expected a YAML/JSON mapping of constructor arguments, got {type(data).__name__}"
            )
        params.update({str(k): v for k, v in data.items() if not str(k).startswith("_")})
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = yaml.safe_load(v)
    return params


def load_sample(path: Path, modality: str) -> Any:
    """Read the lab's sample data for the RKME: ``.npy``, ``.npz`` (all arrays, or the
    ``flux``/``time`` pair for light curves) or anything :mod:`pipelines.io` opens
    (OME-Zarr, TIFF, FITS light curves, C3D).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file holds no array.
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data: {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if not arrays:
            raise ValueError(f"--data: {str(path)!r} holds no array")
        if modality == "light-curve" and "flux" in arrays:
            return {k: v for k, v in arrays.items() if k in ("flux", "time")}
        return arrays[next(iter(arrays))] if len(arrays) == 1 else arrays
    try:
        from pipelines.io import open_dataset
    except ImportError as exc:  # pragma: no cover - io layer absent
        raise ValueError(
            f"--data: cannot read {path.suffix!r} files without pipelines.io; use .npy or .npz"
        ) from exc
    ds = open_dataset(path)
    data = ds.data
    if hasattr(data, "compute"):
        data = data.compute()
    if modality == "light-curve" and isinstance(data, dict) and "flux" in data:
        flux = np.array(data["flux"], dtype=np.float64)
        if "good" in data:  # quality-flagged cadences become gaps, not data
            flux[~np.asarray(data["good"], dtype=bool)] = np.nan
        out = {"flux": flux}
        if "time" in data:
            out["time"] = np.asarray(data["time"], dtype=np.float64)
        return out
    return data


def _new_plugin(
    name: Annotated[
        str, typer.Argument(help="plug-in name, e.g. lab-flares (import name lab_flares)")
    ],
    directory: Annotated[
        Path, typer.Option("--dir", help="parent directory of the new package")
    ] = Path("."),
    family: Annotated[str, typer.Option(help="feedback | detection | rules")] = "detection",
    task: Annotated[
        str, typer.Option(help="task word; a new one is added to the plug-in's vocabulary")
    ] = "anomaly-detection",
    modality: Annotated[
        str, typer.Option(help="modality word; a new one is added to the vocabulary")
    ] = "light-curve",
    scale: Annotated[str, typer.Option(help="micro | macro | cosmic")] = "cosmic",
    author: Annotated[
        str, typer.Option(help="author written into pyproject, README and spec")
    ] = "A. Lab",
    force: Annotated[
        bool, typer.Option("--force", help="write into an existing non-empty directory")
    ] = False,
) -> None:
    """Scaffold an installable learndock plug-in package NAME.

    The package has a src layout, the `learndock.components` entry point, one example component with its learnware declaration, Hydra configs in learndock's family group exposed through a search-path plugin, tests running the contract suite, and a README. It passes its own tests right after `pip install -e .`.
    """
    from learndock.scaffold import create_plugin, plugin_names

    try:
        root = create_plugin(
            name,
            directory,
            family=family,
            task=task,
            modality=modality,
            scale=scale,
            author=author,
            force=force,
        )
    except (ValueError, FileExistsError) as exc:
        _fail(str(exc))
        return
    names = plugin_names(name)
    typer.echo(f"created {root}")
    typer.echo(f"  component  {names.component}   learnware  {names.learnware}")
    typer.echo("next:")
    typer.echo(f"  cd {root}")
    typer.echo("  pip install -e . --no-build-isolation")
    typer.echo("  pytest")
    typer.echo(f"  learndock package {names.component} --data SAMPLE.npy --out {names.pkg}.zip")


def _package(
    component: Annotated[
        str, typer.Argument(help="installed component name (or module.Class), or a learnware name")
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="the lab's sample data (.npy, .npz, OME-Zarr, TIFF, FITS, C3D)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="output package (.zip, or a directory)")],
    learnware: Annotated[
        str | None,
        typer.Option(
            help="declaration whose spec and example to start from (default: the component's only one)"
        ),
    ] = None,
    params: Annotated[
        Path | None, typer.Option("--params", help="YAML/JSON file of constructor params")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE param override (repeatable)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="learnware name (default: the declaration's)")
    ] = None,
    version: Annotated[str | None, typer.Option(help="learnware version, e.g. 1.1.0")] = None,
    description: Annotated[str | None, typer.Option(help="spec description")] = None,
    skip_checks: Annotated[
        bool, typer.Option("--skip-checks", help="do not run the contract suite first")
    ] = False,
) -> None:
    """Build a learnware package from an installed COMPONENT, its params and sample data.

    The statistical spec (RKME) is computed locally from --data in the modality's featurizer space; the raw data are never written into the package. The contract suite runs on the configured component first (use --skip-checks to bypass), and the package is verified after it is written.
    """
    from components.base import ComponentNotFoundError, discover_learnwares, get_component

    try:
        p = parse_params(params, set_)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return
    decls = discover_learnwares()
    if component in decls and learnware is None:
        cls, decl = decls[component]
    else:
        try:
            cls = get_component(component)
        except ComponentNotFoundError as exc:
            _fail(f"{exc}. Is the plug-in installed in this environment (`pip install -e .`)?")
            return
        own = {n: d for n, (c, d) in decls.items() if c is cls}
        if learnware is not None:
            if learnware not in own:
                _fail(
                    f"--learnware: {learnware!r} is not a declaration of {cls.name}; known: {sorted(own)}"
                )
                return
            decl = own[learnware]
        elif len(own) == 1:
            decl = next(iter(own.values()))
        elif not own:
            _fail(
                f"{cls.name} has no learnware declaration: add one in its learnwares() classmethod (it provides the spec and the example)"
            )
            return
        else:
            _fail(
                f"{cls.name} has {len(own)} declarations; choose one with --learnware: {sorted(own)}"
            )
            return
    import dataclasses

    spec_updates = {
        k: v
        for k, v in (("name", name), ("version", version), ("description", description))
        if v is not None
    }
    try:
        spec = decl.spec.model_copy(update=spec_updates) if spec_updates else decl.spec
        spec = type(decl.spec).model_validate(spec.model_dump())
    except Exception as exc:
        _fail(f"spec: {exc}")
        return
    decl = dataclasses.replace(decl, spec=spec, params={**dict(decl.params), **p})
    try:
        sample = load_sample(data, spec.modality)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return
    if not skip_checks:
        from learndock.testing import (
            ContractCase,
            check_declaration,
            check_example,
            check_function,
            run_contract,
        )

        report = run_contract(
            ContractCase(cls, decl), checks=[check_declaration, check_example, check_function]
        )
        if not report.ok:
            typer.echo(report.format(), err=True)
            _fail(
                "the configured component fails the contract; fix it or pass --skip-checks", code=1
            )
            return
    try:
        result = _build(cls, decl, sample, out)
    except Exception as exc:
        _fail(f"could not build the package: {exc}", code=1)
        return
    typer.echo(json.dumps(result, indent=2, default=str))
    typer.echo(
        f"next: learndock registry verify {out} && learndock registry test {out} && learndock registry submit {out}"
    )


def _build(cls: Any, decl: Any, sample: Any, out: Path) -> dict[str, Any]:
    """Build the package with :func:`specs.package.build_package`, then verify it."""
    from specs.package import build_package, read_package, verify_package

    path = build_package(cls, decl, out, data=sample)
    problems = verify_package(path)
    if problems:
        raise ValueError("the package fails verification: " + "; ".join(str(p) for p in problems))
    pkg = read_package(path)
    return {
        "package": str(path),
        "learnware": pkg.name,
        "version": decl.spec.version,
        "component": cls.name,
        "params": dict(decl.params),
        "featurizer": getattr(pkg, "featurizer", None),
        "content_id": getattr(pkg, "content_id", None),
        "bytes": sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
        if Path(path).is_dir()
        else Path(path).stat().st_size,
    }


def register(app: typer.Typer) -> None:
    """Add ``new-plugin`` and ``package`` to the ``learndock`` typer app."""
    app.command("new-plugin")(_new_plugin)
    app.command("package")(_package)
