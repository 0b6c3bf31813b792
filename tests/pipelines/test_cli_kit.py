"""``learndock new-plugin`` and ``learndock package`` through the typer app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pipelines import cli_kit


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    cli_kit.register(a)
    return a


runner = CliRunner()


def test_new_plugin_creates_package_and_prints_next_steps(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["new-plugin", "lab-flares", "--dir", str(tmp_path), "--task", "flare-detection"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lab-flares" / "src" / "lab_flares" / "outliers.py").is_file()
    assert "lab_flares.outliers" in res.output and "pip install -e ." in res.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["new-plugin", "9lives"], "NAME: expected letters and digits"),
        (["new-plugin", "lab-x", "--family", "segmentation"], "family: expected one of"),
    ],
)
def test_new_plugin_errors_are_actionable(
    app: typer.Typer, tmp_path: Path, args: list[str], fragment: str
) -> None:
    res = runner.invoke(app, [*args, "--dir", str(tmp_path)])
    assert res.exit_code == 2
    assert fragment in res.output


def test_new_plugin_refuses_existing_directory(app: typer.Typer, tmp_path: Path) -> None:
    assert runner.invoke(app, ["new-plugin", "lab-x", "--dir", str(tmp_path)]).exit_code == 0
    res = runner.invoke(app, ["new-plugin", "lab-x", "--dir", str(tmp_path)])
    assert res.exit_code == 2 and "--force" in res.output


def test_package_unknown_component_says_how_to_fix(app: typer.Typer, tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.ones((4, 300), np.float32))
    res = runner.invoke(
        app,
        [
            "package",
            "no_such.component",
            "--data",
            str(tmp_path / "s.npy"),
            "--out",
            str(tmp_path / "p.zip"),
        ],
    )
    assert res.exit_code == 2
    assert (
        "unknown component 'no_such.component'" in res.output and "pip install -e ." in res.output
    )


def test_package_missing_data_file(app: typer.Typer, tmp_path: Path) -> None:
    from components.base import discover_learnwares

    lws = discover_learnwares()
    if not lws:
        pytest.skip("no learnware declared yet")
    name = next(iter(lws))
    res = runner.invoke(
        app,
        [
            "package",
            name,
            "--data",
            str(tmp_path / "missing.npy"),
            "--out",
            str(tmp_path / "p.zip"),
        ],
    )
    assert res.exit_code == 2 and "--data:" in res.output and "does not exist" in res.output


def test_parse_params_file_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("_target_: x.y\nwindow: 181\nthreshold: 3.0\n")
    assert cli_kit.parse_params(p, ["threshold=4.5", "tags=[a, b]", "flag=true"]) == {
        "window": 181,
        "threshold": 4.5,
        "tags": ["a", "b"],
        "flag": True,
    }
    with pytest.raises(ValueError, match="--set: expected KEY=VALUE"):
        cli_kit.parse_params(None, ["threshold"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="--params: expected a YAML/JSON mapping"):
        cli_kit.parse_params(bad, None)


def test_load_sample_npz_light_curve(tmp_path: Path) -> None:
    np.savez(tmp_path / "lc.npz", time=np.arange(300.0), flux=np.ones(300), quality=np.zeros(300))
    d = cli_kit.load_sample(tmp_path / "lc.npz", "light-curve")
    assert sorted(d) == ["flux", "time"]
    np.save(tmp_path / "a.npy", np.zeros((2, 3)))
    assert cli_kit.load_sample(tmp_path / "a.npy", "tabular").shape == (2, 3)


@pytest.mark.real_data
def test_load_sample_fits_light_curve_masks_flagged_cadences(shared_data: Path) -> None:
    path = (
        shared_data
        / "tess-wasp126-s01"
        / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
    )
    if not path.is_file():
        pytest.skip(f"{path} not found")
    d = cli_kit.load_sample(path, "light-curve")
    assert sorted(d) == ["flux", "time"]
    assert d["flux"].shape == (20076,) and d["time"].shape == (20076,)
    frac = float(np.isnan(d["flux"]).mean())
    assert 0.01 < frac < 0.2  # quality-flagged cadences and gaps
