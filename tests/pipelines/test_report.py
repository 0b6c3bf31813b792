"""Tests of pipelines.report: content, self-containedness and a headless Chromium render."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.report import Section, equation_png, figure_png, new_figure, render_report


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report is rendered once for the module (matplotlib figures take a while)."""
    return _report(tmp_path_factory.mktemp("report"))


def _report(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    fig, ax = new_figure(2, 1)
    ax[0, 0].imshow(rng.random((32, 32)), cmap="gray")
    ax[0, 0].scatter([5, 20], [8, 25], s=60, facecolors="none", edgecolors="r")
    ax[0, 1].plot(np.sin(np.linspace(0, 6, 100)))
    return render_report(
        tmp_path / "report.html",
        title="test report",
        subtitle="planted data",
        sections=[
            Section(
                "Input overview",
                text="one <b>image</b>\n\nsecond paragraph",
                table={"shape": (32, 32)},
                figures=[figure_png(fig, "detections")],
            ),
            Section(
                "Law",
                equations=[("dx/dt", r"\dot{x} = -0.5 x + \sin(t)"), ("bad", r"\frac{")],
                table=[{"a": 1, "b": 2.5}, {"a": 3}],
            ),
        ],
        metrics={"f1": 0.93, "period_error": 1.2e-5},
        provenance={"git": "abc", "config": {"x": 1}},
        refine={
            "history": [3.0, 2.0, 1.0],
            "initial_loss": 3.0,
            "best_loss": 1.0,
            "improvement": 0.66,
            "steps": 3,
            "stopped": "steps",
        },
        attribution={"a": 0.5, "b": 0.01},
        pipeline="pipeline demo\n  a\n  b",
    )


def test_report_is_self_contained(report_path: Path) -> None:
    html = report_path.read_text()
    assert "&lt;b&gt;image" in html  # escaped text
    assert html.count("data:image/png;base64,") >= 3  # figure, equation, refinement curve
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "f1" in html and "0.93" in html
    assert "Refinement and gradient attribution" in html and "Provenance" in html
    assert r"\frac{" in html  # unparsable LaTeX is still shown as source


def test_equation_png() -> None:
    assert equation_png(r"\dot{x} = -k x") is not None
    assert equation_png("") is None


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian chromium is not installed (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(report_path: Path, tmp_path: Path) -> None:
    path = report_path
    png = tmp_path / "shot.png"
    common = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    m = re.search(r'data-broken-images="(\d+)"', dom)
    n = re.search(r'data-images="(\d+)"', dom)
    assert m and n, "the page's load handler did not run"
    assert int(n.group(1)) >= 3 and int(m.group(1)) == 0
    subprocess.run(
        [*common, "--window-size=1280,1800", f"--screenshot={png}", path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] >= 1000 and img.shape[1] == 1280
    assert img.std() > 10  # not a blank page
