"""One self-contained HTML report per run (figures embedded as PNG, no network access).

A report is a list of :class:`Section` s (text, key-value tables, figures, equations)
plus the run's metrics, refinement curve, per-stage gradient attribution and
provenance.  Figures are drawn with matplotlib (Agg) and embedded as base64 PNG;
equations are given as LaTeX, rendered to PNG with matplotlib's mathtext (the LaTeX
source is shown beside them), so the page needs nothing but a browser.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> path = render_report(d / "report.html", title="demo", sections=[Section("Input", text="a 4x4 image")])
>>> "<h2" in path.read_text()
True
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Figure",
    "Section",
    "equation_png",
    "figure_png",
    "new_figure",
    "refine_section",
    "render_report",
]

_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@dataclasses.dataclass
class Figure:
    """An embedded PNG (base64) with a caption."""

    png: str
    caption: str = ""
    alt: str = "figure"


@dataclasses.dataclass
class Section:
    """One block of the report.

    Parameters
    ----------
    title : str
    text : str
        Plain text (escaped; blank lines separate paragraphs).
    table : mapping or list of mappings, optional
        A key -> value table, or rows with the same keys.
    figures : list of Figure
    equations : list of (label, latex)
        Rendered with mathtext; the LaTeX source is shown as well.
    """

    title: str
    text: str = ""
    table: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    figures: list[Figure] = dataclasses.field(default_factory=list)
    equations: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def new_figure(
    ncols: int = 1, nrows: int = 1, *, width: float = 9.0, height: float = 3.2
) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg canvas (never touches a display)."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height * nrows), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def figure_png(fig: Any, caption: str = "", *, dpi: int = 90) -> Figure:
    """Encode a matplotlib figure as an embedded :class:`Figure`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return Figure(
        base64.b64encode(buf.getvalue()).decode("ascii"), caption, alt=caption or "figure"
    )


def equation_png(latex: str, *, fontsize: int = 15) -> Figure | None:
    """Render one LaTeX equation with matplotlib mathtext; None when mathtext cannot
    parse it (the report then shows only the LaTeX source)."""
    from matplotlib.figure import Figure as MplFigure

    text = latex.strip().strip("$")
    if not text:
        return None
    fig = MplFigure(figsize=(0.1, 0.1), dpi=110)
    fig.text(0, 0, f"${text}$", fontsize=fontsize)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.06, transparent=False)
    except Exception:  # mathtext supports a subset of LaTeX
        return None
    return Figure(base64.b64encode(buf.getvalue()).decode("ascii"), latex, alt=latex)


def refine_section(
    refine: Mapping[str, Any] | None, attribution: Mapping[str, float] | None = None
) -> Section | None:
    """The refinement curve and the per-stage gradient attribution as a section."""
    if not refine and not attribution:
        return None
    figs: list[Figure] = []
    history = list((refine or {}).get("history") or [])
    attribution = dict(attribution or (refine or {}).get("attribution") or {})
    if history:
        fig, ax = new_figure(2 if attribution else 1, 1, width=10)
        a0 = ax[0, 0]
        a0.plot(range(len(history)), history, color="#1f5fa8", lw=1.8)
        if all(h > 0 for h in history):
            a0.set_yscale("log")
        a0.set_xlabel("step")
        a0.set_ylabel("loss")
        a0.set_title("refinement curve")
        a0.grid(alpha=0.3)
        if attribution:
            a1 = ax[0, 1]
            names = list(attribution)
            vals = [attribution[n] for n in names]
            a1.barh(names, vals, color="#c4572a")
            a1.set_xlabel("mean gradient norm")
            a1.set_title("per-stage gradient attribution")
            if (
                any(v > 0 for v in vals)
                and max(vals) / max(min(v for v in vals if v > 0), 1e-300) > 1e3
            ):
                a1.set_xscale("log")
        figs.append(figure_png(fig, "Loss per refinement step and mean gradient norm per stage"))
    table = {}
    if refine:
        for k in (
            "initial_loss",
            "best_loss",
            "improvement",
            "best_step",
            "steps",
            "stopped",
            "seconds",
        ):
            if k in refine:
                table[k] = refine[k]
    table.update({f"attribution[{k}]": v for k, v in attribution.items()})
    return Section(
        "Refinement and gradient attribution",
        text="Parameters were refined by gradient descent on the pipeline's loss; the best step was kept. "
        "The attribution is the mean L2 norm of each stage's parameter gradient: the stage with the "
        "weakest signal is the first candidate for a swap.",
        table=table,
        figures=figs,
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.4e}"
        return f"{v:.6g}"
    if isinstance(v, Mapping | list | tuple):
        return json.dumps(v, default=str)[:400]
    return str(v)


def _rows(
    table: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
) -> tuple[list[str], list[list[str]]]:
    if table is None:
        return [], []
    if isinstance(table, Mapping):
        return ["", ""], [[str(k), _fmt(v)] for k, v in table.items()]
    rows = list(table)
    if not rows:
        return [], []
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(str(k))
    return cols, [[_fmt(r.get(c, "")) for c in cols] for r in rows]


def render_report(
    path: str | Path,
    *,
    title: str,
    sections: Sequence[Section] = (),
    metrics: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    refine: Mapping[str, Any] | None = None,
    attribution: Mapping[str, float] | None = None,
    pipeline: str | None = None,
    subtitle: str = "",
) -> Path:
    """Write the self-contained HTML report.

    Parameters
    ----------
    path : path
        Output file (``report.html``).
    title, subtitle : str
    sections : list of Section
        Input overview and each stage's output, in pipeline order.
    metrics : mapping, optional
        Scores (vs ground truth when known): shown first, highlighted.
    provenance : mapping, optional
        Shown at the end as JSON.
    refine, attribution : optional
        :meth:`RefineResult.to_dict` and per-stage attribution.
    pipeline : str, optional
        :meth:`Pipeline.describe` text.

    Returns
    -------
    Path
        The written file.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    all_sections = list(sections)
    rs = refine_section(refine, attribution)
    if rs is not None:
        all_sections.append(rs)
    rendered = []
    for s in all_sections:
        cols, rows = _rows(s.table)
        eqs = []
        for label, latex in s.equations:
            eqs.append({"label": label, "latex": latex, "figure": equation_png(latex)})
        paragraphs = [p.strip() for p in s.text.split("\n\n") if p.strip()]
        rendered.append(
            {
                "title": s.title,
                "paragraphs": paragraphs,
                "cols": cols,
                "rows": rows,
                "figures": s.figures,
                "equations": eqs,
            }
        )
    metric_rows = [[str(k), _fmt(v)] for k, v in (metrics or {}).items()]
    page = env.get_template("report.html.j2").render(
        title=title,
        subtitle=subtitle,
        sections=rendered,
        metrics=metric_rows,
        pipeline=pipeline,
        provenance=json.dumps(provenance or {}, indent=2, default=str),
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def escape(text: str) -> str:
    """HTML-escape (for callers assembling captions)."""
    return html.escape(text)
