"""mkdocs hooks of the learndock documentation (``hooks:`` in ``mkdocs.yml``).

* **reference**: ``reference/cli.md``, ``reference/config.md`` and
  ``reference/api/<package>.md`` are generated at build time by
  ``docs/gen_reference.py`` (typer app, ``conf/``, numpydoc docstrings);
* **gallery**: every ``docs/gallery/*.py`` script is *executed* (in a fresh temporary
  directory, with ``LEARNDOCK_GALLERY_OUT`` pointing to where it may save figures and
  ``LEARNDOCK_REGISTRY`` to a scratch registry); each becomes a page with its
  description, code, printed output and figures.  A script that fails or exceeds its time
  limit aborts the build (``make docs`` and ``make test-all`` fail on a broken example);
* **nav**: pages that other parts of the project add (``components/*.md``,
  ``reference/*.md``, other top-level pages) are appended to the navigation.

Environment: ``LEARNDOCK_GALLERY_TIMEOUT`` (seconds per script, default 600),
``LEARNDOCK_GALLERY_SKIP=1`` to skip running the gallery (pages then say so; for
``mkdocs serve`` while writing prose, never in CI).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.learndock")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SCALES = ("micro", "macro", "cosmic")
FAMILIES = ("feedback", "detection", "rules")


def _gen_reference() -> Any:
    spec = importlib.util.spec_from_file_location(
        "learndock_docs_gen_reference", DOCS / "gen_reference.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------
# gallery
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class GalleryResult:
    """One executed gallery script."""

    path: Path
    title: str
    description: str
    code: str
    family: str
    scale: str
    ok: bool
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    images: dict[str, bytes] = dataclasses.field(default_factory=dict)
    skipped: bool = False

    @property
    def stem(self) -> str:
        return self.path.stem


class GalleryError(RuntimeError):
    """A gallery script failed; the message names the script and shows its stderr."""


def _split_script(src: str, path: Path) -> tuple[str, str, str]:
    tree = ast.parse(src, filename=str(path))
    doc = ast.get_docstring(tree) or ""
    code = src
    if (
        tree.body
        and isinstance(tree.body[0], ast.Expr)
        and isinstance(getattr(tree.body[0], "value", None), ast.Constant)
    ):
        end = tree.body[0].end_lineno or 0
        code = "\n".join(src.splitlines()[end:]).strip("\n")
    title, _, rest = doc.strip().partition("\n")
    return title.strip().rstrip(".") or path.stem, rest.strip(), code


def _classify(path: Path, doc: str) -> tuple[str, str]:
    tokens = path.stem.lower().split("_")
    family = tokens[0]  # e.g. detection_cosmic_transits.py -> detection
    text = (path.stem + " " + doc).lower()
    scale = next((s for s in SCALES if s in tokens), "")
    if not scale:
        scale = next((s for s in SCALES if f"scale: {s}" in text or f"{s} scale" in text), "")
    return family, scale


def gallery_scripts(gallery_dir: Path = DOCS / "gallery") -> list[Path]:
    """The gallery scripts: ``*.py`` files not starting with ``_``, sorted."""
    return sorted(p for p in gallery_dir.glob("*.py") if not p.name.startswith("_"))


def run_gallery_script(
    path: Path, *, timeout: float | None = None, skip: bool = False
) -> GalleryResult:
    """Execute one gallery script in a fresh temporary directory and collect its output.

    The script runs with the interpreter of the docs build, ``MPLBACKEND=Agg``, the
    environment variable ``LEARNDOCK_GALLERY_OUT`` naming a directory for figures
    (``*.png``/``*.svg`` saved there are shown on the page) and ``LEARNDOCK_REGISTRY``
    pointing to a scratch registry.
    """
    src = path.read_text(encoding="utf-8")
    title, desc, code = _split_script(src, path)
    family, scale = _classify(path, desc)
    res = GalleryResult(path, title, desc, code, family, scale, ok=True, skipped=skip)
    if skip:
        return res
    timeout = (
        float(os.environ.get("LEARNDOCK_GALLERY_TIMEOUT", "600")) if timeout is None else timeout
    )
    with tempfile.TemporaryDirectory(prefix=f"gallery-{path.stem}-") as tmp:
        out = Path(tmp) / "figures"
        out.mkdir()
        env = {
            **os.environ,
            "MPLBACKEND": "Agg",
            "LEARNDOCK_GALLERY_OUT": str(out),
            "LEARNDOCK_REGISTRY": str(Path(tmp) / "registry"),
            "PYTHONHASHSEED": "0",
        }
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(path.resolve())],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            res.ok = False
            res.stderr = f"timed out after {timeout:.0f} s\n" + (
                exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            )
            res.seconds = time.perf_counter() - t0
            return res
        res.seconds = time.perf_counter() - t0
        res.stdout, res.stderr = proc.stdout, proc.stderr
        res.ok = proc.returncode == 0
        for img in sorted([*out.glob("*.png"), *out.glob("*.svg")]):
            res.images[img.name] = img.read_bytes()
    return res


def run_gallery(
    gallery_dir: Path = DOCS / "gallery", *, timeout: float | None = None, skip: bool = False
) -> list[GalleryResult]:
    """Run every gallery script; raise :class:`GalleryError` listing every failure."""
    results = [
        run_gallery_script(p, timeout=timeout, skip=skip) for p in gallery_scripts(gallery_dir)
    ]
    bad = [r for r in results if not r.ok]
    if bad:
        msgs = [
            f"{r.path.name} failed after {r.seconds:.1f} s:\n"
            + "\n".join(r.stderr.strip().splitlines()[-25:])
            for r in bad
        ]
        raise GalleryError("gallery: broken example(s):\n\n" + "\n\n".join(msgs))
    return results


def gallery_page(r: GalleryResult) -> str:
    """The Markdown page of one gallery example."""
    meta = " · ".join(
        x
        for x in (
            f"family: **{r.family}**",
            f"scale: **{r.scale}**" if r.scale else "",
            f"ran in {r.seconds:.1f} s" if not r.skipped else "not run (LEARNDOCK_GALLERY_SKIP)",
        )
        if x
    )
    lines = [
        f"# {r.title}",
        "",
        meta,
        "",
        r.description,
        "",
        f"Source: `docs/gallery/{r.path.name}` — run it with `python docs/gallery/{r.path.name}`.",
        "",
        "```python",
        r.code,
        "```",
        "",
    ]
    if r.stdout.strip():
        lines += ["## Output", "", "```text", r.stdout.rstrip()[-20000:], "```", ""]
    if r.images:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({r.stem}/{name})" for name in r.images]
        lines.append("")
    return "\n".join(lines)


def gallery_table(results: list[GalleryResult]) -> str:
    """The Markdown table of examples inserted into ``gallery/index.md``."""
    if not results:
        return "*No gallery example yet.*\n"
    lines = [
        "Coverage (examples per family and scale):",
        "",
        "| family | " + " | ".join(SCALES) + " |",
        "|---" * (len(SCALES) + 1) + "|",
    ]
    for fam in FAMILIES:
        cells = [
            str(sum(r.family == fam and r.scale == sc for r in results)) or "0" for sc in SCALES
        ]
        lines.append(f"| {fam} | " + " | ".join(c if c != "0" else "—" for c in cells) + " |")
    lines += ["", "| example | family | scale | run time |", "|---|---|---|---|"]
    for r in sorted(
        results, key=lambda r: (r.family, SCALES.index(r.scale) if r.scale in SCALES else 9, r.stem)
    ):
        t = "-" if r.skipped else f"{r.seconds:.1f} s"
        lines.append(f"| [{r.title}]({r.stem}.md) | {r.family} | {r.scale or '-'} | {t} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# mkdocs hooks
# --------------------------------------------------------------------------------------
_state: dict[str, Any] = {}


def _nav_has(nav: Any, target: str) -> bool:
    if isinstance(nav, str):
        return nav == target
    if isinstance(nav, dict):
        return any(_nav_has(v, target) for v in nav.values())
    if isinstance(nav, list):
        return any(_nav_has(v, target) for v in nav)
    return False


def _nav_section(nav: list[Any], title: str) -> list[Any]:
    for item in nav:
        if isinstance(item, dict) and title in item and isinstance(item[title], list):
            return item[title]
    section: list[Any] = []
    nav.append({title: section})
    return section


def on_config(config: Any, **kwargs: Any) -> Any:
    gen = _gen_reference()
    _state["gen"] = gen
    nav = config.get("nav")
    if not nav:
        return config
    reference = _nav_section(nav, "Reference")
    if not _nav_has(nav, "reference/semantic-spec.md"):
        reference.append({"Semantic specification": "reference/semantic-spec.md"})
    api = _nav_section(reference, "Python API")
    for package, _ in gen.API_PACKAGES:
        target = f"reference/api/{package}.md"
        if not _nav_has(nav, target):
            api.append({package: target})
    docs_dir = Path(config["docs_dir"])
    for md in sorted((docs_dir / "reference").glob("*.md")):
        rel = md.relative_to(docs_dir).as_posix()
        if not _nav_has(nav, rel):
            reference.append(rel)
    comps = sorted((docs_dir / "components").glob("*.md"))
    if comps:
        section = _nav_section(nav, "Components")
        for md in comps:
            rel = md.relative_to(docs_dir).as_posix()
            if not _nav_has(nav, rel):
                section.append(rel)
    skip = os.environ.get("LEARNDOCK_GALLERY_SKIP", "") not in ("", "0")
    scripts = gallery_scripts(docs_dir / "gallery")
    if scripts:
        gal = _nav_section(nav, "Gallery")
        for p in scripts:
            rel = f"gallery/{p.stem}.md"
            if not _nav_has(nav, rel):
                gal.append(rel)
    others = [md for md in sorted(docs_dir.glob("*.md")) if not _nav_has(nav, md.name)]
    if others:
        guide = _nav_section(nav, "User guide")
        guide += [md.name for md in others]
    _state["skip_gallery"] = skip
    return config


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    from mkdocs.structure.files import File

    gen = _state.get("gen") or _gen_reference()
    pages = {
        "reference/cli.md": gen.cli_markdown(),
        "reference/config.md": gen.config_markdown(ROOT / "conf"),
        **gen.api_pages(),
    }
    docs_dir = Path(config["docs_dir"])
    for rel, text in gen.semantic_spec_pages().items():
        if not (docs_dir / rel).exists():  # a hand-written page wins
            pages[rel] = text
    t0 = time.perf_counter()
    try:
        results = run_gallery(docs_dir / "gallery", skip=_state.get("skip_gallery", False))
    except GalleryError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(str(exc)) from exc
    if results:
        log.info("gallery: ran %d example(s) in %.1f s", len(results), time.perf_counter() - t0)
    _state["gallery"] = results
    for r in results:
        pages[f"gallery/{r.stem}.md"] = gallery_page(r)
    for rel, text in pages.items():
        existing = files.get_file_from_path(rel)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, rel, content=text))
    for r in results:
        for name, blob in r.images.items():
            files.append(File.generated(config, f"gallery/{r.stem}/{name}", content=blob))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    if page.file.src_uri == "gallery/index.md":
        table = gallery_table(_state.get("gallery", []))
        marker = "<!-- gallery-table -->"
        return markdown.replace(marker, table) if marker in markdown else markdown + "\n" + table
    return markdown
