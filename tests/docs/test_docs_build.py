"""The documentation: generated reference pages, the gallery runner, the strict build."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"learndock_docs_{name}", DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def hooks():
    return _load("hooks")


@pytest.fixture(scope="module")
def gen():
    return _load("gen_reference")


_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")  # header only


def _write_gallery(d: Path, broken: bool) -> None:
    d.mkdir()
    (d / "detection_cosmic_demo.py").write_text(
        '"""A working example.\n\nIt prints a number and saves a figure.\n"""\n'
        "import os, pathlib\n"
        f"pathlib.Path(os.environ['LEARNDOCK_GALLERY_OUT'], 'fig.png').write_bytes({_PNG!r})\n"
        "print('period 3.2888 d')\n"
    )
    (d / "_helper.py").write_text("raise SystemExit('helpers are not examples')\n")
    if broken:
        (d / "rules_macro_broken.py").write_text(
            '"""A broken example."""\nraise RuntimeError("the model diverged")\n'
        )


def test_gallery_runs_scripts_and_builds_pages(hooks, tmp_path: Path) -> None:
    _write_gallery(tmp_path / "gallery", broken=False)
    results = hooks.run_gallery(tmp_path / "gallery", timeout=120)
    assert [r.stem for r in results] == ["detection_cosmic_demo"]
    r = results[0]
    assert (
        r.ok and r.family == "detection" and r.scale == "cosmic" and r.title == "A working example"
    )
    assert r.images == {"fig.png": _PNG}
    page = hooks.gallery_page(r)
    assert (
        "period 3.2888 d" in page
        and "![fig.png](detection_cosmic_demo/fig.png)" in page
        and "print(" in page
    )
    assert "[A working example](detection_cosmic_demo.md)" in hooks.gallery_table(results)


def test_gallery_fails_on_a_broken_example(hooks, tmp_path: Path) -> None:
    _write_gallery(tmp_path / "gallery", broken=True)
    with pytest.raises(hooks.GalleryError, match=r"rules_macro_broken.py failed") as err:
        hooks.run_gallery(tmp_path / "gallery", timeout=120)
    assert "RuntimeError: the model diverged" in str(err.value)
    assert "detection_cosmic_demo" not in str(err.value)


def test_gallery_script_time_limit(hooks, tmp_path: Path) -> None:
    d = tmp_path / "gallery"
    d.mkdir()
    (d / "feedback_micro_slow.py").write_text('"""Slow."""\nimport time\ntime.sleep(30)\n')
    with pytest.raises(hooks.GalleryError, match="timed out after 1 s"):
        hooks.run_gallery(d, timeout=1)


def test_numpydoc_rendering(gen) -> None:
    doc = """Smooth a signal.

    Parameters
    ----------
    x : Tensor, shape (t,)
        The signal.
    sigma : float
        Width in samples.

    Returns
    -------
    Tensor

    Notes
    -----
    The kernel is

    .. math:: k(t) = e^{-t^2 / 2\\\\sigma^2}

    References
    ----------
    .. [1] A. Author, "A paper", J. 1 (2000) 1.

    Examples
    --------
    >>> smooth(x)
    tensor([1.])
    """
    md = gen.numpydoc_to_markdown(doc)
    assert "- **x** (*Tensor, shape (t,)*): The signal." in md
    assert "#### Returns" in md and "- **Tensor**" in md
    assert "```text\nk(t) = e^{-t^2 / 2\\\\sigma^2}\n```" in md
    assert '1. A. Author, "A paper", J. 1 (2000) 1.' in md
    assert "```python\n>>> smooth(x)\ntensor([1.])\n```" in md


def test_reference_pages_cover_the_cli_config_and_api(gen) -> None:
    cli = gen.cli_markdown()
    for cmd in ("learndock new-plugin", "learndock package", "learndock run"):
        assert f"`{cmd}`" in cli
    assert "| `--data` | Path | required |" in cli
    spec_pages = gen.semantic_spec_pages()
    assert (
        "| `family` | `Literal['feedback', 'detection', 'rules']` | required |"
        in spec_pages["reference/semantic-spec.md"]
    )
    import json

    assert json.loads(spec_pages["reference/semantic-spec.schema.json"])["title"] == "SemanticSpec"
    conf = gen.config_markdown()
    assert "## group `detection`" in conf
    warnings: list[str] = []
    pages = gen.api_pages(warnings.append)
    assert not warnings, "\n".join(warnings)
    assert set(pages) == {f"reference/api/{p}.md" for p, _ in gen.API_PACKAGES}
    kit = pages["reference/api/learndock.md"]
    for name in ("check_contract", "run_contract", "create_plugin", "as_float_tensor"):
        assert f"`{name}`" in kit


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
    reason="mkdocs not installed",
)
def test_mkdocs_strict_build_runs_the_gallery(tmp_path: Path) -> None:
    """`make docs` in miniature: the strict build, gallery included, succeeds."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    site = tmp_path / "site"
    for page in (
        "index.html",
        "authoring/index.html",
        "reference/cli/index.html",
        "reference/api/learndock/index.html",
        "gallery/index.html",
    ):
        assert (site / page).is_file(), page
    assert "learndock new-plugin" in (site / "reference/cli/index.html").read_text()
    for script in sorted((DOCS / "gallery").glob("*.py")):
        if not script.name.startswith("_"):
            assert (site / "gallery" / script.stem / "index.html").is_file(), script.name
