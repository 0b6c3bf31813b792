"""Light curves: Kepler/TESS FITS on the real files, round trips, ragged archive, CSV."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.io import (
    get_lightcurve,
    open_dataset,
    quality_mask,
    read_fits,
    write_csv,
    write_fits,
    write_lightcurve_zarr,
)
from pipelines.io.core import CorruptFileError
from pipelines.io.lightcurves import KEPLER_BITMASKS, TESS_BITMASKS

KEPLER = "kepler-hatp7-sc/kplr010666592-2009131110544_slc.fits"
TESS = "tess-wasp126-s01/hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits"


@pytest.mark.real_data
def test_kepler_short_cadence_hatp7(shared_data):
    ds = open_dataset(shared_data / KEPLER)
    assert ds.format == "fits" and ds.modality == "light-curve"
    assert ds.attrs["mission"] == "Kepler"
    assert ds.data["time"].shape == (14280,)
    # short cadence: 58.85 s; time system TDB, BJD = BKJD + 2454833
    assert ds.attrs["cadence"] * 86400 == pytest.approx(58.85, abs=0.05)
    assert ds.attrs["time_system"] == "TDB" and ds.attrs["bjd_reference"] == 2454833.0
    t = ds.attrs["time"]
    assert 2454953 < np.nanmin(t) < np.nanmax(t) < 2454964
    assert (np.nanmax(t) - np.nanmin(t)) == pytest.approx(9.73, abs=0.05)
    assert ds.units["flux"] == "e-/s"
    # Q0 stores quality as SAP_QUALITY; flagged cadences are NaN, not dropped
    flux = ds.data["flux"].compute()
    good = ds.data["good"].compute()
    assert np.all(np.isfinite(flux[good]))
    assert ds.attrs["quality_bitmask"] == KEPLER_BITMASKS["default"]
    # HAT-P-7 b transits (~0.6-0.7 %) are visible: the deepest points sit ~0.7 % low
    f = flux[good] / np.nanmedian(flux[good])
    assert 0.004 < 1 - np.nanpercentile(f, 0.5) < 0.012


@pytest.mark.real_data
def test_tess_wasp126(shared_data):
    ds = read_fits(shared_data / TESS)
    assert ds.attrs["mission"] == "TESS"
    assert ds.data["time"].shape == (20076,)
    assert ds.attrs["cadence"] * 86400 == pytest.approx(120.0, abs=0.01)
    assert ds.attrs["bjd_reference"] == 2457000.0
    t = ds.attrs["time"]
    assert 2458325 < np.nanmin(t) and (np.nanmax(t) - np.nanmin(t)) == pytest.approx(27.9, abs=0.2)
    # the mid-sector downlink gap (~1 day) is reported
    widths = [b - a for a, b in ds.attrs["gaps"]]
    assert max(widths) > 0.9
    q = ds.data["quality"].compute()
    good_default = quality_mask(q, "default", mission="TESS")
    good_hard = quality_mask(q, "hard", mission="TESS")
    assert good_hard.sum() <= good_default.sum() < q.size
    sap = read_fits(shared_data / TESS, flux_column="sap_flux")
    assert not np.allclose(
        np.nan_to_num(sap.data["flux"].compute()), np.nan_to_num(ds.data["flux"].compute())
    )


def test_quality_mask_bits():
    q = np.array([0, 1, 16, 32, 128, 1024, 4096])
    assert quality_mask(q, "default", mission="TESS").tolist() == [
        True,
        False,
        False,
        False,
        False,
        True,
        True,
    ]
    assert quality_mask(q, "none", mission="TESS").all()
    assert quality_mask(q, 4096).tolist()[-1] is False
    assert TESS_BITMASKS["hardest"] == 65535
    with pytest.raises(ValueError, match="quality_bitmask"):
        quality_mask(q, "soft")


def test_fits_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    time = 2458325.3 + np.arange(500) * 2 / 1440
    flux = 1 + rng.normal(0, 1e-3, 500)
    err = np.full(500, 1e-3)
    q = np.zeros(500, np.int32)
    q[10] = 32  # momentum dump (Desat): masked by default
    p = write_fits(tmp_path / "lc.fits", time, flux, err, quality=q, mission="TESS", target="SIM 1")
    ds = open_dataset(p)
    np.testing.assert_allclose(ds.attrs["time"], time, rtol=0, atol=1e-9)
    f = ds.data["flux"].compute()
    assert np.isnan(f[10])
    np.testing.assert_allclose(np.delete(f, 10), np.delete(flux, 10).astype(np.float32))
    assert ds.attrs["target"] == "SIM 1"


@pytest.mark.real_data
def test_truncated_fits(tmp_path, shared_data):
    src = (shared_data / TESS).read_bytes()
    bad = tmp_path / "truncated.fits"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(CorruptFileError, match=r"truncated\.fits.*truncated"):
        open_dataset(bad)


def test_truncated_fits_synthetic(tmp_path):
    p = write_fits(tmp_path / "full.fits", np.arange(2000.0) + 2458325, np.ones(2000))
    raw = p.read_bytes()
    bad = tmp_path / "cut.fits"
    bad.write_bytes(raw[:-5000])
    with pytest.raises(CorruptFileError, match=r"cut\.fits: truncated FITS"):
        open_dataset(bad)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 10)
    with pytest.raises(CorruptFileError, match=r"junk\.fits"):
        open_dataset(junk)


def test_csv_round_trip(tmp_path):
    time = 2458325.3 + np.arange(50) * 0.02
    flux = np.linspace(0.99, 1.01, 50)
    flux[7] = np.nan
    p = write_csv(tmp_path / "lc.csv", time, flux, np.full(50, 1e-3))
    ds = open_dataset(p)
    assert ds.format == "csv"
    np.testing.assert_array_equal(ds.data["time"].compute(), time)
    np.testing.assert_array_equal(ds.data["flux"].compute(), flux)
    assert not ds.data["good"].compute()[7]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CorruptFileError, match=r"bad\.csv.*time and a flux"):
        open_dataset(tmp_path / "bad.csv")


def test_ragged_archive_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    curves = []
    for n in (5, 300, 1, 42):
        curves.append(
            {
                "time": np.sort(rng.uniform(0, 10, n)),
                "flux": rng.normal(1, 0.01, n),
                "flux_err": np.full(n, 0.01),
                "quality": rng.integers(0, 2, n),
            }
        )
    p = write_lightcurve_zarr(
        curves, tmp_path / "arch.zarr", targets=["a", "b", "c", "d"], chunk=64
    )
    ds = open_dataset(p)
    assert ds.format == "lightcurve-zarr" and ds.modality == "light-curve"
    assert ds.attrs["targets"] == ["a", "b", "c", "d"]
    assert ds.attrs["offsets"].tolist() == [0, 5, 305, 306, 348]
    for i, name in enumerate("abcd"):
        got = get_lightcurve(ds, name)
        np.testing.assert_array_equal(got["time"], curves[i]["time"])
        np.testing.assert_array_equal(got["flux"], curves[i]["flux"])
        np.testing.assert_array_equal(got["quality"], curves[i]["quality"])
    with pytest.raises(ValueError, match="targets"):
        write_lightcurve_zarr(curves, tmp_path / "x.zarr", targets=["a"])
