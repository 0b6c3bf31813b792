"""Batch runs over ragged light-curve archives: one task = a run of whole targets.

The archive holds a few dozen stars of different lengths (generated with known transits);
the runner must give per-target outputs equal to calling the component on each target,
with per-task markers, resume, and a SIGKILL-then-resume output identical byte for byte
to an uninterrupted run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from batch_kill import kill_mid_run, load_job

from components.detection.transits import Detrend, TransitSearch
from pipelines.batch import read_table, read_targets, run_batch
from pipelines.io import get_lightcurve, open_dataset, write_lightcurve_zarr
from sample_data.lightcurves import light_curves


def _ragged_archive(path: Path, n_stars: int, days: float, seed: int) -> tuple[Path, dict]:
    """``n_stars`` TESS-like light curves, each cut to its own start and end (ragged)."""
    data, truth = light_curves(seed=seed, size=(n_stars, days))
    rng = np.random.default_rng(seed + 100)
    curves = []
    for i in range(n_stars):
        a = int(rng.integers(0, 400))
        b = data["time"].size - int(rng.integers(0, 400))
        curves.append(
            {
                "time": data["time"][a:b],
                "flux": data["flux"][i, a:b],
                "flux_err": data["flux_err"][i, a:b],
                "quality": data["quality"][i, a:b],
            }
        )
    names = [f"TIC {1000 + i}" for i in range(n_stars)]
    return write_lightcurve_zarr(curves, path, targets=names), truth


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _ragged_archive(tmp_path_factory.mktemp("lc") / "field.zarr", 24, 8.0, seed=3)


def test_transit_search_per_target_equals_direct_calls(archive, tmp_path):
    path, truth = archive
    ds = open_dataset(path)
    lengths = np.diff(ds.attrs["offsets"])
    assert len(set(lengths.tolist())) > 10, "the archive must be ragged"
    search = TransitSearch(min_period=0.7, max_period=3.5)
    res = run_batch(search, path, tmp_path / "bls", targets_per_task=3, n_workers=2, progress=False)
    assert (res.n_shards, res.n_computed, res.n_skipped) == (8, 8, 0)
    assert res.shape == (24,) and res.dtype == "record"
    table = res.table()
    assert table["target"].tolist() == ds.attrs["targets"]
    assert table["target_index"].tolist() == list(range(24))
    # every transiting star: the injected period and depth (planted truth)
    for star in truth["stars"]:
        if star["kind"] != "transit":
            continue
        i = star["index"]
        assert table["period"][i] == pytest.approx(star["period"], rel=2e-3)
        assert table["depth"][i] == pytest.approx(star["depth"], rel=0.1)
        assert abs(table["duration"][i] - star["duration"]) < 0.5 * star["duration"]
    # ragged per-target outputs (the periodogram), equal to calling the component directly
    outs = res.targets()
    assert len(outs) == 24 and {"periods", "power", "period", "snr"} <= set(outs.fields)
    for i in (0, 7, 23):
        lc = get_lightcurve(ds, i)
        direct = search(torch.from_numpy(lc["time"]), torch.from_numpy(lc["flux"]))
        got = outs[ds.attrs["targets"][i]]
        np.testing.assert_allclose(got["power"], direct.power.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got["periods"], direct.periods.numpy())
        assert got["period"].shape == () and float(got["period"]) == pytest.approx(
            float(direct.period), rel=1e-12
        )
    values, offsets = outs.ragged("periods")
    assert offsets.shape == (25,) and values.shape == (offsets[-1],)
    np.testing.assert_array_equal(values[offsets[7] : offsets[8]], outs[7]["periods"])
    # the run is complete: re-running skips every task; provenance names the input
    again = run_batch(search, path, tmp_path / "bls", targets_per_task=3, progress=False)
    assert (again.n_skipped, again.n_computed) == (8, 0)
    assert again.provenance["inputs"][0]["format"] == "lightcurve-zarr"
    assert (tmp_path / "bls" / "provenance.json").is_file()


def test_detrended_light_curves_are_ragged_outputs(tmp_path):
    path, _ = _ragged_archive(tmp_path / "field.zarr", 12, 3.0, seed=4)
    ds = open_dataset(path)
    res = run_batch(Detrend(window=0.5), path, tmp_path / "det", n_workers=2, progress=False)
    outs = read_targets(res.output)
    assert outs.fields == ["data"]
    _, offsets = outs.ragged("data")
    np.testing.assert_array_equal(offsets, ds.attrs["offsets"])  # one value per cadence
    lc = get_lightcurve(ds, 5)
    direct = Detrend(window=0.5)(torch.from_numpy(lc["time"]), torch.from_numpy(lc["flux"]))
    np.testing.assert_allclose(outs[5]["data"], direct.numpy(), rtol=1e-12, equal_nan=True)
    assert list(read_table(res.output)) == ["target", "target_index"]  # no scalar fields
    with pytest.raises(ValueError, match="per-target"):
        res.open()


def test_unmarked_task_is_recomputed_and_flux_err_column(archive, tmp_path):
    path, _ = archive

    def stats(time, flux, flux_err):
        ok = np.isfinite(flux)
        return {"n": np.int64(ok.sum()), "chi2": np.nansum(((flux - 1) / flux_err) ** 2)}

    kw = dict(columns=("time", "flux", "flux_err"), targets_per_task=5, progress=False)
    out = tmp_path / "stats"
    first = run_batch(stats, path, out, **kw)
    assert first.n_shards == 5
    ref = read_table(out)
    part = out / "parts" / "2.npz"
    before = part.read_bytes()
    (out / ".batch" / "done" / "2").unlink()  # an interrupted task: marker missing,
    part.write_bytes(before[:100])  # part torn
    again = run_batch(stats, path, out, **kw)
    assert (again.n_skipped, again.n_computed) == (4, 1)
    assert part.read_bytes() == before
    for k, v in read_table(out).items():
        np.testing.assert_array_equal(v, ref[k])
    assert ref["n"].dtype == np.int64 and ref["n"].sum() > 0


def test_ragged_errors(archive, tmp_path):
    path, _ = archive
    with pytest.raises(ValueError, match="halo"):
        run_batch(Detrend(), path, tmp_path / "a", halo=3)
    with pytest.raises(ValueError, match="columns"):
        run_batch(Detrend(), path, tmp_path / "b", columns=("time", "brightness"))
    with pytest.raises(ValueError, match="targets_per_task"):
        run_batch(Detrend(), path, tmp_path / "c", targets_per_task=0)
    with pytest.raises(ValueError, match="memory_limit"):
        run_batch(Detrend(), path, tmp_path / "d", memory_limit="1kB")
    with pytest.raises(TypeError, match="dtype"):
        run_batch(
            lambda t, f: {"label": np.array("x")},
            path,
            tmp_path / "e",
            scheduler="synchronous",
            progress=False,
        )
    run_batch(  # a zero halo (e.g. a pipeline's footprint 0) is fine
        lambda t, f: f[:3], path, tmp_path / "f", halo=(0,), targets_per_task=12, progress=False
    )
    with pytest.raises(ValueError, match="different job"):
        run_batch(lambda t, f: f[:4], path, tmp_path / "f", targets_per_task=8, progress=False)


_JOB = """
import time as _time
import numpy as np
import torch
from components.detection.transits import detrend

def slow_detrend(time, flux):
    _time.sleep(0.06)
    d = detrend(torch.from_numpy(time), torch.from_numpy(flux), window=0.5)
    return {"flux": d, "rms": torch.nanmean((d - 1) ** 2).sqrt(), "n": np.int64(flux.size)}

def main(inp, out):
    from pipelines.batch import run_batch
    torch.set_num_threads(1)
    run_batch(slow_detrend, inp, out, targets_per_task=1, n_workers=2, progress=False)
"""


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    inp, _ = _ragged_archive(tmp_path / "field.zarr", 36, 2.0, seed=5)
    out = tmp_path / "killed"
    n_done = kill_mid_run(tmp_path, "lcjob", _JOB, inp, out, after=8)
    assert 8 <= n_done < 36, "the kill must land mid-run"
    job = load_job(tmp_path, "lcjob")
    try:
        resumed = run_batch(job.slow_detrend, inp, out, targets_per_task=1, progress=False)
        assert (resumed.n_skipped, resumed.n_computed) == (n_done, 36 - n_done)
        clean = run_batch(
            job.slow_detrend, inp, tmp_path / "clean", targets_per_task=1, progress=False
        )
    finally:
        sys.modules.pop("lcjob", None)
    for k in range(36):  # every part byte for byte
        assert (out / "parts" / f"{k}.npz").read_bytes() == (
            clean.output / "parts" / f"{k}.npz"
        ).read_bytes()
    a, b = read_table(out), read_table(clean.output)
    assert list(a) == ["target", "target_index", "n", "rms"]
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
    va, oa = read_targets(out).ragged("flux")
    vb, ob = read_targets(clean.output).ragged("flux")
    assert va.tobytes() == vb.tobytes() and oa.tobytes() == ob.tobytes()
    np.testing.assert_array_equal(oa, open_dataset(inp).attrs["offsets"])


def test_distributed_two_workers_match_local(tmp_path):
    inp, _ = _ragged_archive(tmp_path / "field.zarr", 8, 2.0, seed=6)

    def stats(time, flux):
        return {"mean": np.nanmean(flux), "diff": np.diff(time)}

    local = run_batch(stats, inp, tmp_path / "local", targets_per_task=2, progress=False)
    dist = run_batch(
        stats,
        inp,
        tmp_path / "dist",
        targets_per_task=2,
        scheduler="distributed",
        n_workers=2,
        cluster_options={"processes": False},
        progress=False,
    )
    assert dist.n_computed == local.n_computed == 4
    for k in range(4):
        assert (local.output / "parts" / f"{k}.npz").read_bytes() == (
            dist.output / "parts" / f"{k}.npz"
        ).read_bytes()
    assert read_table(dist.output)["mean"].tobytes() == read_table(local.output)["mean"].tobytes()


def test_quality_bitmask_masks_flagged_cadences(archive, tmp_path):
    path, _ = archive
    ds = open_dataset(path)
    quality = ds.data["quality"].compute()
    offsets = ds.attrs["offsets"]
    assert (quality & 32).any(), "momentum dumps (TESS bit 32, in the default mask) expected"

    def finite(time, flux):
        return {"n": np.int64(np.isfinite(flux).sum()), "nt": np.int64(np.isfinite(time).sum())}

    raw = run_batch(finite, path, tmp_path / "raw", targets_per_task=6, progress=False)
    masked = run_batch(
        finite,
        path,
        tmp_path / "masked",
        targets_per_task=6,
        quality_bitmask="default",
        progress=False,
    )
    n_raw, n_masked = read_table(raw.output)["n"], read_table(masked.output)["n"]
    flux = ds.data["flux"].compute()
    flagged = np.add.reduceat(((quality & 32) != 0) & np.isfinite(flux), offsets[:-1])
    np.testing.assert_array_equal(n_raw - n_masked, flagged)
    np.testing.assert_array_equal(read_table(masked.output)["nt"], np.diff(offsets))
    assert masked.provenance["config"]["quality_bits"] & 32
    with pytest.raises(ValueError, match="quality_bitmask"):
        run_batch(finite, path, tmp_path / "x", quality_bitmask="strict")
    with pytest.raises(ValueError, match="quality_bitmask"):
        run_batch(lambda b: b, np.ones((4, 4)), tmp_path / "y", quality_bitmask="default")
