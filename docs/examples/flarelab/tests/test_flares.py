"""Planted flares are recovered; invariants of the detector."""

import numpy as np
import pytest
import torch

from flarelab import FlareDetector, detect_flares, equivalent_durations, flare_events
from flarelab.synthetic import flare_light_curves


def _recovery(peaks, events, before=3, after=60):
    """Planted flares found, and events that match no planted flare (rise + decay)."""
    hit = [any(p - before <= peak < p + after for p in peaks) for _, peak, _ in events]
    found = [any(p - before <= peak < p + after for _, peak, _ in events) for p in peaks]
    return sum(found), hit.count(False)


def test_recovers_planted_flares_without_false_alarms():
    d = flare_light_curves(11, n_stars=4, n_samples=4096, n_flares=4)
    res = detect_flares(torch.as_tensor(d["flux"]))
    total_found = total_false = 0
    for s in range(4):
        found, false = _recovery(d["peaks"][s], flare_events(res.score[s]))
        total_found += found
        total_false += false
    assert total_found >= 15  # of 16 planted flares (amplitudes 10-50 sigma)
    assert total_false == 0


def test_handles_data_gaps():
    d = flare_light_curves(5, n_stars=2, n_samples=3000, n_flares=2, gap_fraction=0.1)
    flux = torch.as_tensor(d["flux"], dtype=torch.float64)
    res = detect_flares(flux)
    gap = torch.isnan(flux)
    assert gap.any()
    assert torch.isfinite(res.score).all() and (res.score[gap] == 0).all()
    for s in range(2):
        _, false = _recovery(
            [p for p in d["peaks"][s] if not gap[s, p]], flare_events(res.score[s])
        )
        assert false == 0


def test_scale_invariant_and_dtype_preserving():
    d = flare_light_curves(2, n_stars=1, n_samples=1024)
    f = torch.as_tensor(d["flux"], dtype=torch.float64)
    a = detect_flares(f)
    b = detect_flares(1234.5 * f)
    torch.testing.assert_close(a.score, b.score)
    assert a.score.dtype == torch.float64
    assert detect_flares(f.float()).score.dtype == torch.float32


def test_single_outliers_are_not_flares():
    gen = torch.Generator().manual_seed(0)
    f = 1 + 1e-3 * torch.randn(1000, generator=gen, dtype=torch.float64)
    f[[100, 400, 700]] += 0.05  # cosmic-ray hits: one sample each
    res = detect_flares(f)
    assert res.score.max() < 0.05
    assert detect_flares(f, min_points=1).score[[100, 400, 700]].min() > 0.99


def test_module_equals_function():
    d = flare_light_curves(1, n_stars=2, n_samples=600)
    m = FlareDetector(window=101, min_points=2)
    out = m(torch.as_tensor(d["flux"]))
    ref = detect_flares(
        torch.as_tensor(d["flux"]), window=101, threshold=3.0, min_points=2, sharpness=4.0
    )
    torch.testing.assert_close(out.score, ref.score)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 4}, "window: expected an odd integer"),
        ({"min_points": 0}, "min_points"),
        ({"threshold": -1.0}, "threshold"),
    ],
)
def test_bad_hyperparameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_flares(torch.ones(400), **kwargs)
    with pytest.raises(ValueError, match=match):
        FlareDetector(**kwargs)


def test_rejects_inf_and_all_nan():
    with pytest.raises(ValueError, match="inf"):
        detect_flares(np.array([1.0, np.inf] * 200))
    with pytest.raises(ValueError, match="only NaN"):
        detect_flares(np.full(400, np.nan))


def test_equivalent_duration_of_a_planted_flare():
    """ED of a Davenport flare = amplitude x FWHM x (integral of the template ~ 1.827)."""
    from flarelab.synthetic import davenport_flare

    cadence_s = 20.0
    t = np.arange(6000) * cadence_s
    amp, fwhm = 0.05, 600.0
    flux = (
        1
        + davenport_flare(t, 30000.0, fwhm, amp)
        + 1e-4 * np.random.default_rng(0).standard_normal(t.size)
    )
    res = detect_flares(torch.as_tensor(flux), window=2001, min_points=3)  # window >> flare
    events = flare_events(res.score, merge_gap=5)
    assert len(events) == 1
    ed = equivalent_durations(res.residual, events, cadence=cadence_s)[0]
    rise = 1 - 1.941 / 2 - 0.175 / 3 + 2.246 / 4 - 1.125 / 5  # integral of the rise over [-1, 0]
    decay = 0.6890 / 1.600 + 0.3030 / 0.2783
    truth = amp * fwhm * (rise + decay)
    assert abs(ed - truth) / truth < 0.1, (ed, truth)  # the faint end of the tail is below 3 sigma


def test_merge_gap_joins_a_split_decay():
    score = np.array([0, 0.9, 1.0, 0.7, 0.2, 0.6, 0.6, 0, 0, 0, 0, 0.9, 0])
    assert flare_events(score) == [(1, 2, 4), (5, 5, 7), (11, 11, 12)]
    assert flare_events(score, merge_gap=1) == [(1, 2, 7), (11, 11, 12)]
    with pytest.raises(ValueError, match="merge_gap"):
        flare_events(score, merge_gap=-1)
