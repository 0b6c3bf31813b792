"""Batch runs of components that return row tables (``detection.spots``).

Each shard writes its rows in global coordinates, keeping only the rows whose nearest
pixel lies in the shard's core, so that spots on shard borders are found exactly once;
the table after a SIGKILL and a resume equals the uninterrupted one byte for byte.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from batch_kill import kill_mid_run, load_job

from components.detection.spots import SpotDetector
from pipelines.batch import read_table, run_batch
from pipelines.io import write_zarr

SIGMA = 1.5


def _spots_image(shape: tuple[int, int], points: list[tuple[float, float]], seed: int):
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 2.0, shape)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for py, px in points:
        img += 60.0 * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * SIGMA**2))
    return img.astype(np.float32)


def _match(found: np.ndarray, planted: np.ndarray, tol: float = 0.5) -> np.ndarray:
    """For each planted spot, how many found positions lie within ``tol`` pixels."""
    d = np.linalg.norm(found[None, :, :] - planted[:, None, :], axis=-1)
    return (d < tol).sum(axis=1)


def test_spots_on_shard_borders_found_once(tmp_path):
    # shards of 64 x 64: rows/columns 63 | 64 are the borders; corner (64, 64)
    planted = np.array(
        [
            (63, 20),
            (64, 44),
            (20, 63),
            (44, 64),
            (64, 64),
            (100, 63),
            (64, 100),
            (127, 64),
            (30, 30),
            (100, 100),
            (10, 110),
            (63.5, 84.0),
        ],
        dtype=np.float64,
    )
    img = _spots_image((128, 128), [tuple(p) for p in planted], seed=1)
    det = SpotDetector(sigma=SIGMA, threshold=8.0)
    res = run_batch(det, img, tmp_path / "spots", chunks=64, progress=False)
    assert res.n_shards == 4
    table = res.table()
    assert list(table) == ["positions", "scale", "amplitude", "snr"]
    pos = table["positions"]
    assert pos.dtype == np.float64 and pos.shape == (len(planted), 2)
    assert _match(pos, planted).tolist() == [1] * len(planted)  # none lost, none twice
    for col in ("scale", "amplitude", "snr"):
        assert table[col].shape == (len(planted),)
    # the rows equal the whole-image detection (in some order)
    whole = det(torch.from_numpy(img))
    wpos = whole.positions.double().numpy()
    order_a, order_b = np.lexsort(pos.T[::-1]), np.lexsort(wpos.T[::-1])
    np.testing.assert_allclose(pos[order_a], wpos[order_b], atol=2e-3)
    np.testing.assert_allclose(
        table["amplitude"][order_a], whole.amplitude.double().numpy()[order_b], rtol=1e-3
    )
    # the stored map is the first block-shaped output (the score map); metadata names the table
    attrs = res.provenance["output"]["table"]
    assert attrs == {"path": "table", "key": "positions", "rows": len(planted)}
    score = res.open().data.compute()
    assert score.shape == img.shape and float(score.max()) > 8.0


def test_table_of_a_plain_function_and_opt_out(tmp_path):
    img = _spots_image((96, 96), [(47, 10), (48, 60), (20, 47.6)], seed=2)

    def peaks(block):
        ys, xs = np.nonzero(block > 150)
        return {
            "mask": (block > 150).astype(np.uint8),
            "positions": np.stack([ys, xs], 1).astype(np.float32),
            "value": block[ys, xs],
        }

    res = run_batch(peaks, img, tmp_path / "p", chunks=48, progress=False)
    t = read_table(res.output)
    ys, xs = np.nonzero(img > 150)
    np.testing.assert_array_equal(
        np.sort(t["positions"][:, 0] * 1000 + t["positions"][:, 1]), np.sort(ys * 1000.0 + xs)
    )
    np.testing.assert_array_equal(np.sort(t["value"]), np.sort(img[ys, xs]))
    dist = run_batch(
        peaks,
        img,
        tmp_path / "d",
        chunks=48,
        scheduler="distributed",
        n_workers=2,
        cluster_options={"processes": False},
        progress=False,
    )
    for k, v in read_table(dist.output).items():
        assert v.tobytes() == t[k].tobytes()
    off = run_batch(peaks, img, tmp_path / "q", chunks=48, table=False, progress=False)
    with pytest.raises(FileNotFoundError, match="no table"):
        off.table()
    with pytest.raises(ValueError, match="table"):
        run_batch(lambda b: b * 2, img, tmp_path / "r", chunks=48, table=True, progress=False)
    with pytest.raises(ValueError, match="table"):
        run_batch(peaks, img, tmp_path / "s", table="yes")


_JOB = """
import time
import torch
from components.detection.spots import detect_spots

def slow_spots(block):
    time.sleep(0.04)
    return detect_spots(torch.from_numpy(block), sigma=1.5, threshold=8.0)

def main(inp, out):
    from pipelines.batch import run_batch
    torch.set_num_threads(1)
    run_batch(slow_spots, inp, out, halo=8, n_workers=2, progress=False)
"""


def test_table_after_sigkill_and_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(7)
    points = [tuple(p) for p in rng.uniform(3, 157, size=(50, 2))]
    points += [(32.0 * k, 32.0 * k + 5) for k in range(1, 5)]  # on shard borders
    img = _spots_image((160, 160), points, seed=3)
    inp = write_zarr(img, tmp_path / "in.zarr", axes="yx", chunks=(32, 32), shards=(32, 32))
    out = tmp_path / "killed"
    n_done = kill_mid_run(tmp_path, "spotjob", _JOB, inp, out, after=8)
    assert 8 <= n_done < 25, "the kill must land mid-run"
    job = load_job(tmp_path, "spotjob")
    try:
        resumed = run_batch(job.slow_spots, inp, out, halo=8, progress=False)
        assert (resumed.n_skipped, resumed.n_computed) == (n_done, 25 - n_done)
        clean = run_batch(job.slow_spots, inp, tmp_path / "clean", halo=8, progress=False)
    finally:
        sys.modules.pop("spotjob", None)
    a, b = read_table(out), read_table(clean.output)
    assert list(a) == list(b) and a["positions"].shape[0] >= 45
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    found = _match(a["positions"], np.array(points), tol=0.5)
    assert (found <= 1).all()  # never twice
    assert (found[-4:] == 1).all()  # the border spots once each
