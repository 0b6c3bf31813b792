"""``learndock demo``: the three flagship pipelines on the bundled sample data.

Runs ``experiment=microscopy-transients``, ``experiment=gait-dynamics`` and
``experiment=lightcurve-transits`` (generated sample data with exact ground truth),
prints their scores against the truth and where the reports are; with ``--registry``
it then shows the dock at work: a temporary registry seeded with the built-in
learnwares, searched with a sample of each modality (ranked by MMD between RKMEs).

``make demo`` runs it; a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register", "run_demo", "registry_search_demo"]

FLAGSHIP_ORDER = ("microscopy-transients", "gait-dynamics", "lightcurve-transits")

_HEADLINE = {
    "microscopy-transients": ("spot_f1", "D_rel_error", "flash_f1"),
    "gait-dynamics": ("marker_rmse_gaps_mm", "law_sin_theta_rel_error", "law_damping_abs_error"),
    "lightcurve-transits": (
        "period_recovered_0.1pct",
        "false_alarm_rate",
        "variable_period_median_error",
    ),
}


def run_demo(
    out: str | Path | None = None,
    *,
    only: list[str] | None = None,
    quick: bool = False,
    seed: int = 0,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the flagships and return ``{name: result.json content or {"error": ...}}``.

    Parameters
    ----------
    out : path, optional
        Parent directory of the runs (default ``outputs/demo/<timestamp>``).
    only : list of str, optional
        Subset of the flagships.
    quick : bool
        Skip the refinement step (faster).
    seed : int
        Seed of the sample data.
    overrides : list of str, optional
        Extra Hydra overrides applied to every flagship.
    """
    from pipelines.cli_run import compose_config, execute

    names = list(only or FLAGSHIP_ORDER)
    unknown = sorted(set(names) - set(FLAGSHIP_ORDER))
    if unknown:
        raise ValueError(
            f"only: unknown flagships {unknown}; expected some of {list(FLAGSHIP_ORDER)}"
        )
    root = (
        Path(out)
        if out
        else Path("outputs") / "demo" / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    )
    results: dict[str, Any] = {}
    for name in names:
        ov = [f"experiment={name}", f"data.seed={seed}", *(overrides or [])]
        if quick:
            ov.append("refine.enabled=false")
        t0 = time.perf_counter()
        try:
            cfg = compose_config(ov)
            res = execute(cfg, root / name, overrides=ov)
        except Exception as exc:  # one missing family must not hide the others
            res = {"pipeline": name, "error": f"{type(exc).__name__}: {exc}"}
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        results[name] = res
    (root).mkdir(parents=True, exist_ok=True)
    (root / "demo.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def registry_search_demo(*, top: int = 3) -> list[dict[str, Any]]:
    """Seed a temporary registry with the built-in learnwares and search it with one
    sample per modality; returns rows ``{query, rank, learnware, mmd, score}``."""
    import tempfile

    try:
        from specs.registry import Registry  # type: ignore[import-not-found]
    except ImportError:
        return []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="learndock-demo-registry-") as tmp:
        reg = Registry(tmp)
        from components.base import discover_learnwares

        for name in discover_learnwares():  # one broken declaration must not stop the rest
            try:
                reg.seed(names=[name])
            except Exception:
                continue
        queries = _queries()
        for label, modality, data in queries:
            try:
                hits = reg.search(modality=modality, data=data, top=top)
            except Exception as exc:
                rows.append(
                    {
                        "query": label,
                        "rank": "-",
                        "learnware": f"search failed: {exc}"[:120],
                        "mmd": None,
                        "score": None,
                    }
                )
                continue
            h: Any
            for r, h in enumerate(hits, 1):
                rows.append(
                    {
                        "query": label,
                        "rank": r,
                        "learnware": getattr(h, "name", str(h)),
                        "mmd": getattr(h, "mmd", None),
                        "score": getattr(h, "score", None),
                    }
                )
    return rows


def _queries() -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    try:
        from sample_data import fluorescence_timelapse, gait_markers, light_curves

        movie, _ = fluorescence_timelapse(seed=1, size=(8, 64, 64))
        out.append(("fluorescence movie", "microscopy", movie.astype("float32")))
        markers, _ = gait_markers(seed=1)
        out.append(("gait markers", "biomechanics", markers))
        lc, _ = light_curves(seed=1, size=(4, 3.0))
        out.append(("light curves", "light-curve", {"time": lc["time"], "flux": lc["flux"][0]}))
    except Exception:
        pass
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to the main typer app."""

    @app.command("demo")
    def demo(
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="parent directory of the runs (default: outputs/demo/<timestamp>)"
            ),
        ] = None,
        only: Annotated[
            list[str] | None, typer.Option("--only", help="run only this flagship (repeatable)")
        ] = None,
        quick: Annotated[bool, typer.Option("--quick", help="skip the refinement step")] = False,
        seed: Annotated[int, typer.Option("--seed", help="seed of the generated sample data")] = 0,
        registry: Annotated[
            bool,
            typer.Option(
                "--registry/--no-registry",
                help="also seed a temporary registry with the built-in learnwares and search it "
                "with sample data (1-2 min more)",
            ),
        ] = False,
    ) -> None:
        """Run the three flagship pipelines on the bundled sample data and print where the reports are."""
        from rich.console import Console
        from rich.table import Table

        from components.base import set_threads

        set_threads()
        console = Console()
        console.print(
            "[bold]learndock demo[/bold]: three flagship pipelines on generated sample data with ground truth"
        )
        results = run_demo(out, only=only or None, quick=quick, seed=seed)
        table = Table(title="flagships vs ground truth", show_lines=False)
        for col in ("pipeline", "scores", "passed", "seconds"):
            table.add_column(col)
        failed = 0
        for name, res in results.items():
            if "error" in res:
                failed += 1
                table.add_row(
                    name,
                    f"[red]{res['error'][:160]}[/red]",
                    "[red]error[/red]",
                    _fmt(res.get("wall_s")),
                )
                continue
            m = res.get("metrics") or {}
            scores = ", ".join(f"{k}={_fmt(m.get(k))}" for k in _HEADLINE.get(name, ()) if k in m)
            ok = res.get("passed")
            failed += ok is False
            table.add_row(
                name,
                scores,
                "[green]yes[/green]" if ok else "[red]no[/red]" if ok is False else "-",
                _fmt(res.get("wall_s")),
            )
        console.print(table)
        console.print("[bold]reports[/bold]:")
        for name, res in results.items():
            if res.get("report"):
                console.print(f"  {name}: {res['report']}")
        if registry:
            t0 = time.perf_counter()
            try:
                rows = registry_search_demo()
            except Exception as exc:
                rows = []
                console.print(
                    f"[yellow]registry demo skipped: {type(exc).__name__}: {exc}[/yellow]"
                )
            if rows:
                rt = Table(
                    title=f"registry search with sample data ({time.perf_counter() - t0:.1f} s)"
                )
                for col in ("query", "rank", "learnware", "mmd", "score"):
                    rt.add_column(col)
                for r in rows:
                    rt.add_row(
                        *(_fmt(r[c]) for c in ("query", "rank", "learnware", "mmd", "score"))
                    )
                console.print(rt)
        if failed:
            raise typer.Exit(code=1)
