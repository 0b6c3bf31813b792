"""Tests of `learndock run` (pipelines.cli_run): compose, typos, outputs, multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli_run import ConfigKeyError, compose_config, execute

REPO = Path(__file__).resolve().parents[2]


def _need(component: str) -> None:
    from components.base import discover_components

    if component not in discover_components():
        pytest.skip(f"component {component!r} is not registered yet")


def _tiff(tmp_path: Path) -> Path:
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    img = rng.normal(100, 3, (64, 64))
    for y, x in ((16, 20), (40, 45), (50, 12)):
        img += 60 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, img.astype(np.float32))
    return path


def _c3d(tmp_path: Path) -> Path:
    from pipelines.io import write_c3d

    rng = np.random.default_rng(0)
    t = np.arange(120) / 100.0
    pts = np.stack(
        [
            np.stack(
                [
                    100 * np.sin(2 * np.pi * 0.8 * t + m),
                    50 * np.cos(2 * np.pi * 0.8 * t + m),
                    900 + 5 * t,
                ],
                1,
            )
            for m in range(3)
        ],
        1,
    )
    noisy = pts + rng.normal(0, 1.0, pts.shape)
    noisy[60:75, 1] = np.nan  # an occlusion gap
    return write_c3d(tmp_path / "walk.c3d", noisy, rate=100.0, labels=["A", "B", "C"])


def test_typo_lists_valid_keys() -> None:
    with pytest.raises(ConfigKeyError) as err:
        compose_config(["data.pth=x.c3d"])
    assert (
        "data.pth" in str(err.value)
        and "'path'" in str(err.value)
        and "'modality'" in str(err.value)
    )
    with pytest.raises(ConfigKeyError, match=r"valid keys of 'refine' are \[.*'steps'"):
        compose_config(["refine.setps=3"])


def test_cli_typo_exits_with_valid_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "pipeline=gait-smoothing", "devcie=cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'devcie'" in err and "'device'" in err


def test_unknown_group_option_lists_options() -> None:
    with pytest.raises(Exception, match="gait-dynamics"):
        compose_config(["pipeline=gait-dynamic"])


def test_execute_generic_pipeline_writes_everything(tmp_path: Path) -> None:
    _need("feedback.kalman")
    path = _c3d(tmp_path)
    cfg = compose_config(
        [
            "pipeline=gait-smoothing",
            "data=file",
            f"data.path={path}",
            "refine.enabled=true",
            "refine.steps=2",
        ]
    )
    out = tmp_path / "run"
    result = execute(cfg, out)
    for name in ("result.json", "provenance.json", "report.html", "outputs.zarr"):
        assert (out / name).exists(), name
    assert json.loads((out / "result.json").read_text())["pipeline"] == "gait-smoothing"
    import zarr

    g = zarr.open_group(str(out / "outputs.zarr"), mode="r")
    filled = np.asarray(g["smooth.positions"])
    assert filled.shape == (120, 3, 3) and np.isfinite(filled).all()
    assert result["refine"]["steps"] >= 1
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["pipeline"]["name"] == "gait-smoothing" and prov["versions"]["torch"]


def test_learndock_run_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("detection.spots")
    from pipelines import cli

    path = _tiff(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "hydra-run"
    cli.main(
        ["run", "detection=spots", "data=file", f"data.path={path}", f"hydra.run.dir={run_dir}"]
    )
    assert (run_dir / "result.json").exists() and (run_dir / "report.html").exists()
    assert (run_dir / "outputs.zarr").is_dir() and (run_dir / "provenance.json").exists()
    assert Path.cwd() == tmp_path  # no chdir
    import zarr

    pos = np.asarray(
        zarr.open_group(str(run_dir / "outputs.zarr"), mode="r")["detection.positions"]
    )
    assert sorted(map(tuple, np.round(pos).astype(int).tolist())) == [(16, 20), (40, 45), (50, 12)]


@pytest.mark.slow
def test_multirun_submitit_local_two_jobs(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _need("detection.spots")
    path = _tiff(tmp_path)
    sweep = tmp_path / "sweep"
    env = dict(os.environ, OMP_NUM_THREADS="1", LEARNDOCK_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipelines.cli import main; main()",
            "run",
            "-m",
            "hydra/launcher=submitit_local",
            "detection=spots",
            "data=file",
            f"data.path={path}",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        d = sweep / job
        for name in ("result.json", "provenance.json", "report.html", "outputs.zarr"):
            assert (d / name).exists(), f"{job}/{name}: {proc.stderr[-2000:]}"
        prov = json.loads((d / "provenance.json").read_text())
        assert prov["seed"] == int(job)


def test_large_input_delegates_to_batch_runner(tmp_path: Path) -> None:
    """Above batch_threshold_mb the run goes chunk by chunk through pipelines.batch."""
    _need("feedback.deconvolution")
    pytest.importorskip("pipelines.batch")
    import zarr

    from pipelines.io import write_zarr

    rng = np.random.default_rng(0)
    movie = rng.normal(100, 3, (16, 64, 64)).astype(np.float32)
    store = write_zarr(movie, tmp_path / "movie.zarr", axes="tyx")
    cfg = compose_config(
        [
            "feedback=deconvolution",
            "data=file",
            f"data.path={store}",
            "batch_threshold_mb=0.01",
            "batch=local",
        ]
    )
    out = tmp_path / "run"
    result = execute(cfg, out)
    assert "batch" in result["outputs"]["arrays"]
    assert (out / "report.html").exists() and (out / "outputs.zarr").is_dir()
    assert len(list(zarr.open_group(str(out / "outputs.zarr"), mode="r").array_keys())) >= 1


def test_typo_in_component_param_lists_its_parameters() -> None:
    _need("detection.spots")
    with pytest.raises(
        ConfigKeyError, match=r"'detection.treshold'.*'detection.spots'.*'threshold'"
    ):
        compose_config(["detection=spots", "detection.treshold=3"])
