"""Tests of the BLS transit search and the biweight detrender."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.detection._reference import make_light_curve, transit_model
from components.detection.transits import (
    Detrend,
    TransitSearch,
    bls_power,
    detrend,
    find_transits,
    period_grid,
    transit_search,
)

GRID = {"min_period": 1.0, "max_period": 8.0, "durations": [0.06, 0.1, 0.14, 0.2]}


def test_planted_transit_recovered_with_trend_gaps_and_nans() -> None:
    t, f = make_light_curve(
        baseline=40.0,
        planets=((3.37, 1.21, 0.14, 2e-3),),
        noise=5e-4,
        trend=3e-3,
        gaps=True,
        seed=11,
    )
    f = f * 1500.0  # raw flux units: detrending normalises
    f[::97] = np.nan
    c = transit_search(t, f, **GRID)
    assert abs(float(c.period) - 3.37) / 3.37 < 1e-3
    phase = (float(c.epoch) - 1.21 + 0.5 * 3.37) % 3.37 - 0.5 * 3.37
    assert abs(phase) < 0.02
    assert abs(float(c.depth) - 2e-3) < 5e-4  # the biweight absorbs a little of the depth
    assert abs(float(c.duration) - 0.14) <= 0.03
    assert float(c.snr) > 10 and float(c.sde) > 6
    assert float(c.odd_even_sigma) < 3 and abs(float(c.secondary_snr)) < 3
    assert c.power.shape == c.periods.shape


def test_two_planets_found_by_iterative_search() -> None:
    t, f = make_light_curve(
        baseline=40.0,
        planets=((2.71, 0.5, 0.1, 3e-3), (6.13, 2.2, 0.14, 2e-3)),
        noise=5e-4,
        seed=12,
    )
    cands = find_transits(t, f, max_planets=3, **GRID)
    periods = sorted(float(c.period) for c in cands)
    assert len(periods) == 2, periods
    assert abs(periods[0] - 2.71) / 2.71 < 2e-3 and abs(periods[1] - 6.13) / 6.13 < 2e-3


def test_eclipsing_binary_flagged_by_odd_even_and_secondary() -> None:
    t = np.arange(0.0, 40.0, 1.0 / 48.0)
    rng = np.random.default_rng(3)
    noise = 3e-4 * rng.standard_normal(t.size)

    def eb(d1: float, d2: float) -> np.ndarray:
        f = transit_model(t, period=4.4, epoch=1.0, duration=0.12, depth=d1)
        return f * transit_model(t, period=4.4, epoch=3.2, duration=0.12, depth=d2) + noise

    # similar eclipses: BLS locks on P/2 and the odd/even depths disagree
    c = transit_search(t, eb(6e-3, 4e-3), detrend=None, **GRID)
    assert abs(float(c.period) - 2.2) < 0.01 and float(c.odd_even_sigma) > 5
    # unequal eclipses: BLS finds the true P and a significant secondary at phase 0.5
    c = transit_search(t, eb(6e-3, 1.5e-3), detrend=None, **GRID)
    assert abs(float(c.period) - 4.4) < 0.01 and float(c.secondary_snr) > 5


def test_many_stars_batched_equals_one_by_one() -> None:
    t, f1 = make_light_curve(baseline=20.0, planets=((2.3, 0.4, 0.1, 4e-3),), seed=1)
    _, f2 = make_light_curve(baseline=20.0, planets=((3.1, 1.0, 0.14, 3e-3),), seed=2)
    flux = np.stack([f1, f2])
    kw = {"min_period": 1.0, "max_period": 5.0, "durations": [0.1, 0.14], "detrend": None}
    both = transit_search(t, flux, **kw)
    one = transit_search(t, f2, **kw)
    assert both.period.shape == (2,)
    torch.testing.assert_close(both.power[1], one.power)
    assert abs(float(both.period[0]) - 2.3) < 0.01 and abs(float(both.period[1]) - 3.1) < 0.01


def test_bls_matches_astropy_on_the_same_grid() -> None:
    from astropy.timeseries import BoxLeastSquares

    t, f = make_light_curve(baseline=20.0, planets=((2.9, 0.7, 0.12, 3e-3),), noise=4e-4, seed=5)
    periods = np.linspace(2.0, 4.0, 300)
    durs = np.array([0.08, 0.12])
    ref = BoxLeastSquares(t, f, dy=np.full_like(f, 4e-4)).power(
        periods, durs, oversample=6, objective="snr"
    )
    y = torch.as_tensor(f - f.mean())[None]
    ours = bls_power(
        torch.as_tensor(t),
        y,
        torch.as_tensor(periods),
        torch.as_tensor(durs),
        weights=torch.full_like(y, 1 / 4e-4**2),
        bin_oversample=6,
    )
    assert periods[int(np.argmax(ref.power))] == periods[int(ours.power[0].argmax())]
    # same statistic (up to the bin phase offsets): correlated periodograms
    assert np.corrcoef(ref.power, ours.power[0].numpy())[0, 1] > 0.95


def test_period_grid_spacing_and_bounds() -> None:
    t = np.linspace(0, 100, 1000)
    g = period_grid(t, durations=[0.1], min_period=1.0, max_period=10.0, oversample=3)
    ratio = (g[1:] / g[:-1]).numpy()
    np.testing.assert_allclose(ratio[:-1], 1 + 0.1 / 300, rtol=1e-9)
    assert float(g[0]) == 1.0 and float(g[-1]) <= 10.0
    with pytest.raises(ValueError, match="max_period"):
        period_grid(t, durations=[0.1], min_period=1.0, max_period=150.0)
    with pytest.raises(ValueError, match="periods: expected values in"):
        transit_search(t, np.ones_like(t), periods=[1.0, 200.0], durations=[0.1])


def test_detrend_preserves_transit_and_removes_trend() -> None:
    t, f = make_light_curve(
        baseline=20.0, planets=((3.0, 1.0, 0.12, 5e-3),), noise=1e-4, trend=1e-3, seed=6
    )
    d = detrend(t, f, window=0.5)
    truth = transit_model(t, period=3.0, epoch=1.0, duration=0.12, depth=5e-3)
    resid = d.numpy() - truth
    assert np.std(resid) < 1.5e-4 and np.std(f - truth) > 5e-4  # trend removed
    intr = truth < 1
    assert abs(float(np.median(d.numpy()[intr])) - (1 - 5e-3)) < 7e-4  # transit kept


def test_detrend_module_gradient_and_nan() -> None:
    t, f = make_light_curve(baseline=5.0, noise=1e-4, trend=5e-3, seed=7)
    x = torch.as_tensor(f).requires_grad_(True)
    out = Detrend(window=0.5)(torch.as_tensor(t), x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    f2 = f.copy()
    f2[10:20] = np.nan
    d = detrend(t, f2, window=0.5)
    assert torch.isnan(d[10:20]).all() and torch.isfinite(d[20:]).all()


def test_bad_inputs() -> None:
    t = np.linspace(0, 10, 200)
    with pytest.raises(ValueError, match="same number of samples"):
        transit_search(t, np.ones(199))
    with pytest.raises(ValueError, match="finite time"):
        transit_search(np.r_[t[:-1], np.nan], np.ones(200))
    with pytest.raises(ValueError, match="flux: expected finite"):
        transit_search(t, np.full(200, np.nan), **GRID | {"max_period": 4.0})
    with pytest.raises(ValueError, match="durations"):
        transit_search(t, np.ones(200), durations=[-0.1])
    with pytest.raises(ValueError, match="detrend"):
        TransitSearch(detrend="spline")
    with pytest.raises(ValueError, match="max_planets"):
        find_transits(t, np.ones(200), max_planets=0)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    t, f = make_light_curve(baseline=20.0, seed=8)
    a = transit_search(t, f, min_period=1.0, max_period=6.0)
    b = transit_search(
        torch.as_tensor(t).cuda(), torch.as_tensor(f).cuda(), min_period=1.0, max_period=6.0
    )
    assert abs(float(a.period) - float(b.period)) < 1e-6


def _read_lc(path):
    from astropy.io import fits

    with fits.open(path) as h:
        d = h[1].data
        names = d.columns.names
        t = np.asarray(d["TIME"], dtype=np.float64)
        f = np.asarray(d["PDCSAP_FLUX"], dtype=np.float64)
        q = np.asarray(d["SAP_QUALITY"] if "SAP_QUALITY" in names else d["QUALITY"])
    ok = np.isfinite(t)
    t, f, q = t[ok], f[ok], q[ok]
    f[q != 0] = np.nan
    return t, f


@pytest.mark.real_data
def test_kepler_hatp7(shared_data) -> None:
    t, f = _read_lc(shared_data / "kepler-hatp7-sc" / "kplr010666592-2009131110544_slc.fits")
    c = transit_search(t, f, min_period=1.0)
    assert abs(float(c.period) - 2.2047299) / 2.2047299 < 1e-3
    assert 0.004 < float(c.depth) < 0.008 and float(c.snr) > 50
    # epoch consistent with Pal et al. (2008): Tc = 2453790.2593 BJD; BKJD = BJD - 2454833
    tc = 2453790.2593 - 2454833.0
    n = round((float(c.epoch) - tc) / 2.2047299)
    assert abs(float(c.epoch) - (tc + n * 2.2047299)) < 0.03


@pytest.mark.real_data
def test_tess_wasp126(shared_data) -> None:
    t, f = _read_lc(
        shared_data
        / "tess-wasp126-s01"
        / "hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"
    )
    c = transit_search(t, f, min_period=1.0, max_period=8.0, durations=[0.06, 0.1, 0.14, 0.2])
    assert abs(float(c.period) - 3.2888) / 3.2888 < 1e-3
    assert 0.004 < float(c.depth) < 0.009


def test_coarse_to_fine_same_best_period_as_exact() -> None:
    # the benchmark's setting at a smaller size: 500 ppm transit, 300 ppm noise, 30 min
    t, f = make_light_curve(
        baseline=200.0, cadence=1 / 48, planets=((3.1234, 1.7, 0.12, 5e-4),), noise=3e-4, seed=4
    )
    durs = torch.tensor([0.08, 0.12, 0.16], dtype=torch.float64)
    tt = torch.as_tensor(t)
    periods = period_grid(tt, durations=durs.tolist(), min_period=2.9, max_period=3.4)
    y = torch.as_tensor(f - f.mean())[None]
    kw = {"weights": torch.full_like(y, 1 / 3e-4**2), "bin_oversample": 3}
    ex = bls_power(tt, y, periods, durs, method="exact", **kw)
    fast = bls_power(tt, y, periods, durs, **kw)
    assert bool(ex.exact.all()) and bool(ex.sample.all())
    assert 0 < int(fast.sample.sum()) < periods.numel() // 3  # a coarse grid was used
    k_ex = int(ex.power[0].argmax())
    assert int(fast.power[0].argmax()) == k_ex and bool(fast.exact[0, k_ex])
    assert abs(float(periods[k_ex]) - 3.1234) < 2e-3
    # where evaluated, the values are the exact path's; elsewhere interpolated (bounded)
    m = fast.exact[0]
    for name in ("power", "depth", "depth_err", "epoch", "duration"):
        torch.testing.assert_close(getattr(fast, name)[0, m], getattr(ex, name)[0, m])
    assert float(fast.power[0, ~m].max()) <= float(ex.power[0].max())
    # transit_search: same candidate either way
    kws = {"periods": periods, "durations": durs.tolist(), "detrend": None}
    a = transit_search(t, f, **kws)
    b = transit_search(t, f, method="exact", **kws)
    assert float(a.period) == float(b.period) and float(a.epoch) == float(b.epoch)
    assert abs(float(a.sde) - float(b.sde)) < 0.15 * float(b.sde)


def test_bls_method_and_parameters_validated() -> None:
    t = torch.linspace(0, 10, 200, dtype=torch.float64)
    y = torch.zeros(1, 200, dtype=torch.float64)
    p, d = torch.tensor([2.0, 3.0]), torch.tensor([0.1])
    with pytest.raises(ValueError, match="method"):
        bls_power(t, y, p, d, method="fast")
    with pytest.raises(ValueError, match="top_k"):
        bls_power(t, y, p, d, top_k=0)
    with pytest.raises(ValueError, match="coarse_drift"):
        bls_power(t, y, p, d, coarse_drift=0.0)
    with pytest.raises(ValueError, match="method"):
        transit_search(t, y[0] + 1, periods=[2.0, 3.0], method="fast")


def test_segmented_fold_close_to_exact_and_same_peak() -> None:
    from components.detection.transits import _bls_exact, _bls_segmented

    t, f = make_light_curve(
        baseline=200.0, cadence=1 / 48, planets=((3.1234, 1.7, 0.12, 5e-4),), noise=3e-4, seed=4
    )
    durs = torch.tensor([0.08, 0.12, 0.16], dtype=torch.float64)
    tt = torch.as_tensor(t)
    periods = period_grid(tt, durations=durs.tolist(), min_period=2.5, max_period=4.0)
    y = torch.as_tensor(f - f.mean())[None]
    w = torch.full_like(y, 1 / 3e-4**2)
    ex = _bls_exact(tt, y, w, durs, 3, "snr", 0.25, periods, 1 << 20, 1 << 20)
    seg, done = _bls_segmented(tt, y, w, durs, 3, "snr", 0.25, periods, 1 << 20)
    assert bool(done.all())  # short periods: segmenting pays everywhere
    a, b = seg.power[0].numpy(), ex.power[0].numpy()
    assert int(a.argmax()) == int(b.argmax())
    # points at most half a bin off their exact phase bin: the peak loses little
    assert 0.95 * b.max() < a.max() <= b.max() * 1.02
    assert np.corrcoef(a, b)[0, 1] > 0.97
    # three stars take the star-minor (embedding_bag) path: same values as one by one
    y3 = torch.cat([y, 0.5 * y, -y])
    seg3, _ = _bls_segmented(tt, y3, w.expand(3, -1), durs, 3, "snr", 0.25, periods, 1 << 20)
    torch.testing.assert_close(seg3.power[0], seg.power[0], rtol=1e-6, atol=1e-6)


def test_batched_auto_search_equals_one_by_one_for_many_stars() -> None:
    t, f = make_light_curve(baseline=60.0, planets=((2.3, 0.4, 0.1, 2e-3),), noise=4e-4, seed=1)
    rng = np.random.default_rng(3)
    flux = np.stack([f, 1 + 4e-4 * rng.standard_normal(t.size), f[::-1].copy()])
    kw = {"min_period": 1.0, "max_period": 6.0, "durations": [0.08, 0.12], "detrend": None}
    both = transit_search(t, flux, **kw)
    for i in (0, 2):
        one = transit_search(t, flux[i], **kw)
        assert abs(float(both.period[i]) - float(one.period)) < 1e-9
    assert abs(float(both.period[0]) - 2.3) < 0.01


def test_period_cap_limits_the_default_grid() -> None:
    t = torch.linspace(0, 90, 4320, dtype=torch.float64)
    g = period_grid(t, durations=[0.05, 0.1], min_period=0.5, period_cap=13.0)
    assert abs(float(g[-1]) - 13.0) < 1e-9 and float(g[0]) == 0.5
    g = period_grid(t, durations=[0.05, 0.1], min_period=0.5, period_cap=100.0)
    assert abs(float(g[-1]) - 45.0) < 1e-9  # half the baseline when shorter
    with pytest.raises(ValueError, match="period_cap"):
        period_grid(t, durations=[0.05], period_cap=-1.0)


def test_survey_learnwares_configure_survey_grids() -> None:
    from components.detection.transits import survey_light_curves

    decl = {d.name: d for d in TransitSearch.learnwares()}
    kep, tess = decl["detection.transits.kepler"], decl["detection.transits.tess"]
    assert kep.params["min_period"] == 0.5 and kep.params["period_cap"] == 100.0
    assert tess.params["min_period"] == 0.5 and tess.params["period_cap"] == 13.0
    hours = 24 * np.array(kep.params["durations"])
    assert hours.min() == pytest.approx(1.0) and hours.max() == pytest.approx(10.0)
    hours = 24 * np.array(tess.params["durations"])
    assert hours.min() == pytest.approx(1.0) and hours.max() == pytest.approx(8.0)
    assert "0.5 d to min(100 d, baseline/2)" in kep.spec.description
    assert "0.5 d to min(13 d, baseline/2)" in tess.spec.description
    # the reference data spans the configured range; the learnware finds its planets
    periods = np.concatenate(
        [survey_light_curves(s, survey="kepler", return_truth=True)["period"] for s in range(8)]
    )
    assert periods.min() < 1.0 and periods.max() > 20.0
    ref = survey_light_curves(1, survey="tess", return_truth=True)
    c = TransitSearch(**tess.params)(ref["time"], ref["flux"])
    np.testing.assert_allclose(c.period.numpy(), ref["period"], rtol=2e-3)


@pytest.mark.slow
def test_kepler_learnware_recovers_its_reference_planets() -> None:
    from components.detection.transits import survey_light_curves

    kep = {d.name: d for d in TransitSearch.learnwares()}["detection.transits.kepler"]
    for seed in (0, 1):
        ref = survey_light_curves(seed, survey="kepler", return_truth=True)
        c = TransitSearch(**kep.params)(ref["time"], ref["flux"])
        np.testing.assert_allclose(c.period.numpy(), ref["period"], rtol=2e-3)
