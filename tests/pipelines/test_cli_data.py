"""`learndock sample-data` and `learndock batch`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pipelines.batch import read_table
from pipelines.cli_data import load_batch_config, register, resolve_target
from pipelines.io import open_dataset, write_lightcurve_zarr, write_zarr
from sample_data.lightcurves import light_curves


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


def test_sample_data_command(app, tmp_path):
    res = CliRunner().invoke(
        app, ["sample-data", "--out", str(tmp_path), "--only", "gait", "--seed", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "gait" in res.output
    doc = json.loads((tmp_path / "truth.json").read_text())
    assert doc["seed"] == 2 and list(doc["samples"]) == ["gait"]
    assert open_dataset(tmp_path / "biomechanics" / "gait.c3d").data["points"].shape == (
        1000,
        16,
        3,
    )
    bad = CliRunner().invoke(app, ["sample-data", "--out", str(tmp_path), "--size", "huge"])
    assert bad.exit_code != 0


def test_batch_command_component_and_resume(app, tmp_path):
    x = np.random.default_rng(0).poisson(20, size=(8, 40, 40)).astype(np.uint16)
    inp = write_zarr(x, tmp_path / "in.zarr", axes="tyx", chunks=(8, 20, 40))
    args = [
        "batch",
        "detection.spots",
        "--input",
        str(inp),
        "--output",
        str(tmp_path / "out"),
        "--output-key",
        "score",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 shards (0 already done, 2 computed)" in res.output
    out = open_dataset(tmp_path / "out")
    assert out.data.shape == x.shape and out.data.dtype == np.float32
    again = CliRunner().invoke(app, args)
    assert "2 already done, 0 computed" in again.output
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["config"]["cli"]["target"] == "detection.spots"


def test_batch_command_light_curve_archive(app, tmp_path):
    data, _ = light_curves(seed=2, size=(4, 3.0), kinds=("transit",))
    curves = [
        {"time": data["time"][: 3000 + 200 * i], "flux": data["flux"][i, : 3000 + 200 * i]}
        for i in range(4)
    ]
    inp = write_lightcurve_zarr(curves, tmp_path / "lc.zarr")
    args = ["batch", "detection.transits", "--input", str(inp), "--output", str(tmp_path / "bls")]
    args += ["--param", "min_period=0.7", "--param", "max_period=1.4", "--targets-per-task", "2"]
    args += ["--quality-bitmask", "default"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 shards (0 already done, 2 computed)" in res.output and "table: 4 rows" in res.output
    table = read_table(tmp_path / "bls")
    assert table["period"].shape == (4,) and np.isfinite(table["snr"]).all()
    res = CliRunner().invoke(app, [*args[:6], "--halo", "3"])
    assert res.exit_code == 2 and "halo" in res.output


def test_batch_command_errors(app, tmp_path):
    res = CliRunner().invoke(
        app,
        ["batch", "no.such.component", "--input", str(tmp_path), "--output", str(tmp_path / "o")],
    )
    assert res.exit_code != 0
    assert "no.such.component" in res.output
    inp = write_zarr(np.zeros((4, 4), np.float32), tmp_path / "in.zarr")
    res = CliRunner().invoke(
        app,
        [
            "batch",
            "detection.spots",
            "--input",
            str(inp),
            "--output",
            str(tmp_path / "o"),
            "--scheduler",
            "pbs",
        ],
    )
    assert res.exit_code == 2 and "scheduler" in res.output


def test_batch_configs_and_target_resolution():
    assert load_batch_config("distributed")["scheduler"] == "distributed"
    assert load_batch_config("slurm")["cluster_options"]["walltime"]
    with pytest.raises(typer.BadParameter, match="no batch config"):
        load_batch_config("nope")
    with pytest.raises(LookupError, match="neither a registered component"):
        resolve_target("nope")
    comp = resolve_target("detection.spots")
    assert getattr(comp, "footprint", None) is not None
