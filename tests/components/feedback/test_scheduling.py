"""GP light curves and scheduling: causality, constraints, fitted periods, peak time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.feedback import _reference as ref
from components.feedback.scheduling import (
    GPParams,
    LightCurveScheduler,
    fit_gp,
    gp_posterior,
    peak_time,
    propose_times,
)


def _lc() -> tuple[np.ndarray, np.ndarray]:
    lc = ref.transient_light_curve(4, n=20, span=40.0)
    return lc["time"], lc["flux"]


@pytest.mark.parametrize("target", ["peak_time", "light_curve"])
def test_proposals_are_future_inside_windows_and_separated(target: str) -> None:
    t, f = _lc()
    params = fit_gp(t, f, 0.05)
    now = float(t[-1]) + 0.3
    windows = [(now + 0.5, now + 1.5), (now + 3.0, now + 4.0), (now + 6.0, now + 6.2)]
    prop = propose_times(
        t,
        f,
        0.05,
        params,
        n=4,
        now=now,
        horizon=8.0,
        min_separation=0.4,
        windows=windows,
        target=target,
    )
    times = prop.coords.numpy()
    assert len(times) >= 1
    assert (times > now).all()
    assert all(any(a <= x <= b for a, b in windows) for x in times)
    assert (np.diff(np.sort(times)) >= 0.4 - 1e-9).all()
    assert (prop.gain.numpy() >= 0).all()


def test_no_candidate_gives_empty_proposal() -> None:
    t, f = _lc()
    prop = propose_times(
        t, f, 0.05, GPParams(lengthscale=5.0), now=float(t[-1]), horizon=1.0, windows=[(0.0, 1.0)]
    )
    assert len(prop) == 0


def test_quasi_periodic_fit_recovers_period_and_period_target_runs() -> None:
    lc = ref.variable_light_curve(0, n=90)
    p = fit_gp(lc["time"], lc["flux"], 0.02, kernel="quasi_periodic")
    g = np.random.default_rng(0)
    g.uniform(0, 30.0, 90)
    true_p = g.uniform(1, 5)  # same draw order as the generator
    assert abs(p.period / true_p - 1) < 0.05, (p.period, true_p)
    prop = propose_times(
        lc["time"], lc["flux"], 0.02, p, n=2, horizon=5.0, target="period", n_candidates=60
    )
    assert len(prop) == 2 and (prop.coords.numpy() > lc["time"][-1]).all()


def test_posterior_interpolates_and_peak_time_found() -> None:
    t = np.linspace(0, 40, 40)
    f = ref.bazin(t, amplitude=2.0, t0=15.0, rise=2.0, fall=15.0)
    tp_true = 15.0 + 2.0 * np.log(15.0 / 2.0 - 1)
    p = fit_gp(t, f + np.random.default_rng(0).normal(0, 0.02, t.size), 0.02)
    tp, sd = peak_time(t, f, 0.02, p)
    assert abs(tp - tp_true) < 1.0 and sd < 2.0
    m, _v = gp_posterior(
        torch.from_numpy(t), torch.from_numpy(f), 0.02, torch.from_numpy(t), p, full_cov=False
    )
    assert float((m - torch.from_numpy(f)).abs().max()) < 0.1


def test_peak_time_policy_beats_regular_cadence() -> None:
    """Planted transients: 6 scheduled follow-ups vs 6 at a regular cadence."""
    errs_adapt, errs_reg = [], []
    for seed in range(4):
        g = np.random.default_rng(seed)
        kw = {"amplitude": 2.0, "t0": 20 + g.uniform(-3, 3), "rise": 2.0, "fall": 15.0}
        tp_true = kw["t0"] + kw["rise"] * np.log(kw["fall"] / kw["rise"] - 1)
        t0 = np.linspace(0, 18, 5)
        f0 = ref.bazin(t0, **kw) + g.normal(0, 0.05, t0.size)
        params = GPParams(kernel="transient", amplitude=2.0, lengthscale=8.0, jitter=0.05, mean=0.0)
        t, f = t0, f0
        for _ in range(3):
            prop = propose_times(
                t,
                f,
                0.05,
                params,
                n=2,
                horizon=14.0,
                min_separation=1.0,
                target="peak_time",
                n_candidates=120,
            )
            nt = prop.coords.numpy()
            t = np.concatenate([t, nt])
            f = np.concatenate([f, ref.bazin(nt, **kw) + g.normal(0, 0.05, nt.size)])
        grid = torch.linspace(0, 60, 1200, dtype=torch.float64)
        errs_adapt.append(abs(peak_time(t, f, 0.05, params, grid=grid)[0] - tp_true))
        tr = np.concatenate([t0, np.linspace(18 + 42 / 6, 60, 6)])
        fr = np.concatenate([f0, ref.bazin(tr[5:], **kw) + g.normal(0, 0.05, 6)])
        errs_reg.append(abs(peak_time(tr, fr, 0.05, params, grid=grid)[0] - tp_true))
    assert np.mean(errs_adapt) < np.mean(errs_reg), (errs_adapt, errs_reg)


def test_module_self_supervised_loss_has_gradients() -> None:
    t, f = _lc()
    m = LightCurveScheduler(lengthscale=5.0, amplitude=1.0)
    out = m(torch.from_numpy(t), torch.from_numpy(f))
    loss = m.self_supervised_loss({"time": t, "flux": f}, out)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"time": np.array([0.0, 1.0, 1.0, 2.0])},
            r"time: expected strictly increasing time stamps, got time\[1\]=1.0 >= time\[2\]=1.0",
        ),
        ({"flux_err": -np.ones(4)}, "flux_err: expected non-negative"),
        ({"now": -5.0}, "now: expected a time at or after"),
        ({"min_separation": -1.0}, "min_separation"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    base = {"time": np.arange(4.0), "flux": np.zeros(4), "flux_err": 0.1 * np.ones(4)}
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in base}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        propose_times(base["time"], base["flux"], base["flux_err"], GPParams(), **extra)
