"""Light-curve generator: injected transits, variables and flares are recoverable."""

from __future__ import annotations

import numpy as np
import pytest

from sample_data.lightcurves import light_curves, transit_model


def test_transit_model_shape():
    t = np.linspace(-0.2, 0.2, 4001)
    f = transit_model(t, period=10.0, epoch=0.0, depth=0.01, duration=0.1, ingress=0.02)
    assert f.min() == pytest.approx(0.99)
    inside = t[f < 1]
    assert inside.min() == pytest.approx(-0.05, abs=1e-3) and inside.max() == pytest.approx(
        0.05, abs=1e-3
    )
    with pytest.raises(ValueError, match="ingress"):
        transit_model(t, period=1.0, epoch=0.0, depth=0.01, duration=0.1, ingress=0.2)


def test_light_curves_truth_is_recoverable():
    data, truth = light_curves(seed=0, size=(6, 13.7), noise_ppm=300)
    time, flux = data["time"], data["flux"]
    assert (
        flux.shape == (6, len(time))
        and np.isnan(flux[:, (time >= truth["gap"][0]) & (time < truth["gap"][1])]).all()
    )
    assert np.all(np.diff(time) > 0) and np.diff(time)[0] * 1440 == pytest.approx(2.0)
    kinds = [s["kind"] for s in truth["stars"]]
    assert kinds == ["transit", "sinusoidal", "transit", "sawtooth", "transit", "flare"]
    for s in truth["stars"]:
        f = flux[s["index"]]
        if s["kind"] == "transit":
            phase = np.mod(time - s["epoch"] + s["period"] / 2, s["period"]) - s["period"] / 2
            full = np.abs(phase) < (s["duration"] / 2 - s["ingress"])
            out = np.abs(phase) > s["duration"]
            depth = np.nanmedian(f[out]) - np.nanmedian(f[full])
            assert depth == pytest.approx(s["depth"], abs=0.0006)
        elif s["kind"] == "sinusoidal":
            from astropy.timeseries import LombScargle

            ok = np.isfinite(f) & (np.arange(f.size) % 4 == 0)
            freq, power = LombScargle(time[ok], f[ok]).autopower(
                minimum_frequency=0.1, maximum_frequency=5, samples_per_peak=10
            )
            assert 1 / freq[np.argmax(power)] == pytest.approx(s["period"], rel=0.03)
        elif s["kind"] == "flare":
            for fl in s["flares"]:
                i = np.searchsorted(time, fl["t_peak"])
                if np.isfinite(f[i]):
                    assert f[i] - np.nanmedian(f) > 0.5 * fl["amplitude"]
    # momentum dumps carry the Desat bit
    assert (data["quality"][:, np.searchsorted(time, truth["momentum_dumps"])] & 32).all()


def test_light_curves_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        light_curves(size=(2, 1.0), kinds=("eclipse",))
    with pytest.raises(ValueError, match="size"):
        light_curves(size=(0, 1.0))
