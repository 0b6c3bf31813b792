"""The three flagship pipelines: building blocks on planted truth, and end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli_run import compose_config, execute
from pipelines.flagships import FLAGSHIPS, load_sample
from pipelines.flagships._common import available, f1, match_points
from pipelines.flagships.lightcurves import bls_search, segments
from pipelines.flagships.microscopy import link_tracks, msd_diffusion


def _need(*components: str) -> None:
    missing = [c for c in components if not available(c)]
    if missing:
        pytest.skip(f"components not registered yet: {missing}")


def test_match_points_and_f1() -> None:
    true = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 5.0]])
    pred = np.array([[10.5, 9.6], [20.0, 21.5], [50.0, 50.0]])
    tp, fp, fn, pairs = match_points(pred, true, 2.0)
    assert (tp, fp, fn) == (2, 1, 1) and sorted(pairs[:, 1].tolist()) == [0, 1]
    assert f1(tp, fp, fn) == pytest.approx(2 / 3)
    assert match_points(np.zeros((0, 2)), true, 2.0)[:3] == (0, 0, 3)


def test_tracking_and_msd_recover_planted_diffusion() -> None:
    rng = np.random.default_rng(0)
    D, T, n = 0.4, 60, 12  # px^2 / frame
    start = rng.uniform(20, 180, (n, 2))
    steps = rng.normal(0, np.sqrt(2 * D), (T - 1, n, 2))
    pos = np.concatenate([start[None], start[None] + np.cumsum(steps, 0)])
    frames = [pos[t] + rng.normal(0, 0.1, (n, 2)) for t in range(T)]
    tracks = link_tracks(frames, radius=4.0)
    long = [tr for tr in tracks if len(tr) >= 50]
    assert len(long) >= n - 1
    law = msd_diffusion(tracks, max_lag=4, min_length=10)
    assert law["D"] == pytest.approx(D, rel=0.15)
    assert abs(law["offset"]) < 0.5  # 4 sigma_loc^2 = 0.04, estimated from few tracks


def test_bls_recovers_planted_period_to_0_1_percent() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(0, 14, 15 / 60 / 24)  # 15-min cadence, 14 days
    period, epoch, dur, depth = 2.3456, 0.7, 0.12, 2e-3
    phase = ((t - epoch) / period + 0.5) % 1 - 0.5
    flux = 1 - depth * (np.abs(phase * period) < dur / 2) + rng.normal(0, 3e-4, t.size)
    res = bls_search(
        t, flux, min_period=0.5, max_period=8.0, durations=np.array([0.08, 0.12, 0.16])
    )
    assert abs(res["period"] - period) / period < 1e-3
    assert res["depth"] == pytest.approx(depth, rel=0.2) and res["snr"] > 15
    noise = 1 + rng.normal(0, 3e-4, t.size)
    quiet = bls_search(
        t, noise, min_period=0.5, max_period=8.0, durations=np.array([0.08, 0.12, 0.16])
    )
    assert quiet["snr"] < 15  # no false alarm at the flagship's threshold


def test_segments_split_at_gaps_and_dumps() -> None:
    t = np.concatenate([np.arange(0, 5, 0.01), np.arange(6, 10, 0.01)])
    q = np.zeros(t.size, np.int32)
    q[200] = 32
    segs = segments(t, q)
    assert [(s.start, s.stop) for s in segs] == [(0, 200), (200, 500), (500, t.size)]


def test_load_sample_errors() -> None:
    with pytest.raises(ValueError, match="flagship: expected one of"):
        load_sample("nope")
    with pytest.raises(ValueError, match=r"data\.size"):
        load_sample("gait-dynamics", size="huge")
    assert set(FLAGSHIPS) == {"microscopy-transients", "gait-dynamics", "lightcurve-transits"}


def test_gait_flagship_quick(tmp_path: Path) -> None:
    """End to end without refinement (the refinement runs in the slow test)."""
    _need("feedback.kalman", "rules.sindy")
    res = execute(compose_config(["experiment=gait-dynamics", "refine.enabled=false"]), tmp_path)
    m = res["metrics"]
    assert (
        m["marker_rmse_gaps_mm"] < 10.0 and m["marker_rmse_observed_mm"] < m["raw_rmse_observed_mm"]
    )
    assert m["law_sin_theta_rel_error"] < 0.05 and m["law_damping_abs_error"] < 0.1
    assert res["passed"] is True


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLAGSHIPS))
def test_flagship_meets_its_scores(name: str, tmp_path: Path) -> None:
    needs = {
        "microscopy-transients": ("detection.spots",),
        "gait-dynamics": ("feedback.kalman", "rules.sindy"),
        "lightcurve-transits": (),
    }[name]
    _need(*needs)
    res = execute(compose_config([f"experiment={name}"]), tmp_path)
    for f in ("result.json", "provenance.json", "report.html", "outputs.zarr"):
        assert (tmp_path / f).exists()
    m = res["metrics"]
    if name == "microscopy-transients":
        assert m["spot_f1"] >= 0.9 and m["D_rel_error"] < 0.2
    elif name == "gait-dynamics":
        assert m["marker_rmse_gaps_mm"] < 10.0 and m["law_sin_theta_rel_error"] < 0.05
        assert res["refine"]["steps"] >= 1
    else:
        assert m["period_recovered_0.1pct"] >= 0.85 and m["false_alarm_rate"] == 0.0
    assert res["passed"] is True
    assert json.loads((tmp_path / "result.json").read_text())["passed"] is True


@pytest.mark.slow
def test_microscopy_flagship_with_deconvolution(tmp_path: Path) -> None:
    """Deconvolution in front of RPCA: the batched ``*yx`` stage keeps the movie's t axis."""
    _need("detection.spots", "feedback.deconvolution", "detection.rpca")
    res = execute(
        compose_config(
            [
                "experiment=microscopy-transients",
                "pipeline.options.deconvolve=true",
                "refine.enabled=false",
            ]
        ),
        tmp_path,
    )
    m = res["metrics"]
    assert m["spot_f1"] >= 0.9 and m["D_rel_error"] < 0.2 and res["passed"] is True


def test_demo_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--only" in out and "--registry" in out


@pytest.mark.slow
def test_run_demo_quick(tmp_path: Path) -> None:
    from pipelines.demo import run_demo

    results = run_demo(tmp_path, quick=True)
    assert set(results) == set(FLAGSHIPS)
    for name, res in results.items():
        assert "error" not in res, res.get("error")
        assert res["passed"] is True, (name, res["metrics"])
        assert Path(res["report"]).exists()
    assert (tmp_path / "demo.json").exists()


def test_torch_bls_through_the_transits_component() -> None:
    _need("detection.transits")
    from pipelines.flagships.lightcurves import bls_search_torch

    rng = np.random.default_rng(2)
    t = np.arange(0, 12, 10 / 60 / 24)
    period, epoch, dur, depth = 1.8765, 0.4, 0.1, 3e-3
    phase = ((t - epoch) / period + 0.5) % 1 - 0.5
    planet = 1 - depth * (np.abs(phase * period) < dur / 2) + rng.normal(0, 4e-4, t.size)
    quiet = 1 + rng.normal(0, 4e-4, t.size)
    res = bls_search_torch(
        t,
        np.stack([planet, quiet]),
        min_period=0.5,
        max_period=5.0,
        durations=np.array([0.06, 0.1, 0.14]),
    )
    assert abs(res[0]["period"] - period) / period < 1e-3 and res[0]["snr"] > 15
    assert res[1]["snr"] < 15
