"""Bazin transient fit, c-optimal peak-time follow-up and the causal campaign loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.feedback import _reference as ref
from components.feedback.scheduling import fit_bazin, follow_transient, propose_peak_times


def _transient(seed: int) -> tuple[dict, float]:
    g = np.random.default_rng(1000 + seed)
    kw = {
        "amplitude": g.uniform(1, 3),
        "t0": g.uniform(20, 50),
        "rise": g.uniform(1.5, 4),
        "fall": g.uniform(10, 25),
    }
    return kw, kw["t0"] + kw["rise"] * np.log(kw["fall"] / kw["rise"] - 1)


def test_fit_bazin_recovers_planted_parameters_with_calibrated_peak_error() -> None:
    kw = {"amplitude": 2.0, "t0": 20.0, "rise": 2.5, "fall": 18.0}
    tp = 20.0 + 2.5 * np.log(18.0 / 2.5 - 1)
    pulls = []
    for seed in range(8):
        g = np.random.default_rng(seed)
        t = np.sort(g.uniform(0, 70, 25)) + np.arange(25) * 1e-6
        fit = fit_bazin(t, ref.bazin(t, **kw) + g.normal(0, 0.05, t.size), 0.05)
        pulls.append((fit.t_peak - tp) / fit.t_peak_std)
        assert abs(fit.rise / 2.5 - 1) < 0.5 and abs(fit.fall / 18.0 - 1) < 0.3
        assert abs(fit.amplitude / 2.0 - 1) < 0.2 and fit.t_peak_std < 1.5
        assert float((fit.predict(t) - torch.from_numpy(ref.bazin(t, **kw))).abs().max()) < 0.1
    # Laplace errors are honest: pulls of order one, not ten
    assert np.sqrt(np.mean(np.square(pulls))) < 2.5, pulls


def test_peak_proposals_are_future_inside_windows_separated_and_near_the_peak() -> None:
    kw = {"amplitude": 2.0, "t0": 30.0, "rise": 2.0, "fall": 15.0}
    tp = 30.0 + 2.0 * np.log(15.0 / 2.0 - 1)
    t = np.array([0.0, 6.0, 12.0, 18.0, 24.0, 30.0])
    f = ref.bazin(t, **kw) + np.random.default_rng(0).normal(0, 0.05, t.size)
    windows = [(31.0, 33.5), (34.5, 38.0), (40.0, 50.0)]
    p = propose_peak_times(t, f, 0.05, n=4, horizon=20.0, min_separation=1.0, windows=windows)
    times = p.coords.numpy()
    assert p.settings["phase"] == "follow-up" and len(times) == 4
    assert (times > 30.0).all() and (np.diff(times) >= 1.0 - 1e-9).all()
    assert all(any(a <= x <= b for a, b in windows) for x in times)
    assert (p.gain.numpy() > 0).all()
    assert abs(np.median(times) - tp) < 8.0  # concentrated around the peak, not the season


def test_survey_cadence_before_detection() -> None:
    t = np.array([0.0, 5.0, 10.0, 15.0])
    p = propose_peak_times(t, np.zeros(4), 0.05, n=3, horizon=20.0, survey_cadence=5.0)
    assert p.settings["phase"] == "survey"
    np.testing.assert_allclose(p.coords.numpy(), [20.0, 25.0, 30.0])


def test_follow_up_concentrates_observations_around_the_peak() -> None:
    kw, tp = _transient(1)
    g = np.random.default_rng(1)
    run = follow_transient(
        lambda tt: ref.bazin(np.asarray(tt), **kw) + g.normal(0, 0.05, np.size(tt)),
        budget=14,
        season=(0.0, 70.0),
        flux_err=0.05,
        draws=256,
    )
    near = int((np.abs(run.time - tp) < 6.0).sum())
    regular = int((np.abs(np.linspace(0.0, 70.0, 14) - tp) < 6.0).sum())
    assert near >= regular + 3, (run.time, tp)
    assert run.phase[0] == "survey" and "follow-up" in run.phase
    assert abs(run.t_peak - tp) < 3 * run.fit.t_peak_std + 0.2


@pytest.mark.slow
def test_follow_up_beats_regular_cadence_on_planted_transients() -> None:
    """Equal budget (16) and season, same estimator: the policy's median error is lower."""
    errs_policy, errs_regular = [], []
    for seed in range(5):
        kw, tp = _transient(seed)
        g = np.random.default_rng(seed)

        def obs(tt: np.ndarray, kw: dict = kw, g: np.random.Generator = g) -> np.ndarray:
            return ref.bazin(np.asarray(tt), **kw) + g.normal(0, 0.05, np.size(tt))

        tr = np.linspace(0.0, 80.0, 16)
        errs_regular.append(abs(fit_bazin(tr, obs(tr), 0.05).t_peak - tp))
        run = follow_transient(obs, budget=16, season=(0.0, 80.0), flux_err=0.05)
        assert len(run.time) == 16 and (np.diff(run.time) > 0).all()
        assert run.time[0] >= 0.0 and run.time[-1] <= 80.0 + 1e-6
        errs_policy.append(abs(run.t_peak - tp))
    assert np.median(errs_policy) < np.median(errs_regular), (errs_policy, errs_regular)


def test_follow_transient_never_detected_and_wall_time() -> None:
    run = follow_transient(lambda t: np.zeros(np.size(t)), budget=6, season=(0, 25), flux_err=0.1)
    assert run.fit is None and np.isnan(run.t_peak) and set(run.phase) == {"survey"}
    np.testing.assert_allclose(run.time, np.linspace(0, 25, 6))
    quick = follow_transient(
        lambda t: np.zeros(np.size(t)), budget=50, season=(0, 25), flux_err=0.1, wall_time=0.0
    )
    assert len(quick.time) == 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_bazin(np.arange(3.0), np.zeros(3), 0.1), "at least 4 observations"),
        (lambda: fit_bazin(np.arange(5.0), np.zeros(5), 0.0), "flux_err: expected positive"),
        (
            lambda: fit_bazin(np.arange(5.0), np.zeros(5), 0.1, prior={"width": (0, 1)}),
            "prior",
        ),
        (
            lambda: propose_peak_times(np.arange(5.0), np.zeros(5), 0.1, survey_cadence=0.0),
            "survey_cadence",
        ),
        (
            lambda: follow_transient(np.zeros_like, budget=3, season=(0, 10), flux_err=0.1),
            "budget: expected at least 5",
        ),
        (
            lambda: follow_transient(np.zeros_like, budget=8, season=(10, 0), flux_err=0.1),
            "season: expected",
        ),
        (
            lambda: follow_transient(np.zeros_like, budget=8, season=(0, 10), flux_err=-1.0),
            "flux_err",
        ),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
