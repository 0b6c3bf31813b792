"""Time-lapse and volume generators: determinism, exact truth, forward-model invariants."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from sample_data.microscopy import (
    blurred_volume,
    fluorescence_timelapse,
    gaussian_psf,
    timelapse_model,
    write_timelapse_zarr,
)


def test_timelapse_deterministic_and_seeded():
    a, ta = fluorescence_timelapse(seed=3, size=(6, 48, 48))
    b, _ = fluorescence_timelapse(seed=3, size=(6, 48, 48))
    c, _ = fluorescence_timelapse(seed=4, size=(6, 48, 48))
    assert a.dtype == np.uint16 and a.shape == (6, 48, 48)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert ta["spot_positions"].shape == (6, ta["n_spots"], 2)


def test_timelapse_matches_its_forward_model():
    m = timelapse_model(seed=1, size=(30, 64, 64), n_spots=6, diffusion=0.8)
    data = m.render(0, 30).astype(np.float64)
    truth = m.truth()
    expected = np.stack([m.expected(t) for t in range(30)])
    resid = data - m.offset - expected
    # Poisson + read noise: zero mean, variance = mu + read_noise^2
    assert abs(resid.mean()) < 0.05
    z = resid / np.sqrt(expected + m.read_noise**2)
    assert z.std() == pytest.approx(1.0, abs=0.03)
    # spots sit at their true positions: local maxima of the expected image
    pos = truth["spot_positions"]
    for t in (0, 29):
        for y, x in pos[t]:
            iy, ix = round(y), round(x)
            assert expected[t, iy, ix] > np.median(expected[t]) + 50
    # Brownian steps: mean squared displacement per frame = 4 D (2-D), within sampling error
    steps = np.diff(pos, axis=0)
    msd = (steps**2).sum(-1).mean()
    assert msd == pytest.approx(4 * 0.8, rel=0.25)


def test_timelapse_background_is_low_rank_and_flashes_are_transient():
    _, truth = fluorescence_timelapse(seed=2, size=(20, 40, 40), background_rank=2, n_flashes=3)
    bg = np.einsum("tk,kyx->tyx", truth["background_temporal"], truth["background_spatial"])
    s = np.linalg.svd(bg.reshape(20, -1), compute_uv=False)
    assert s[2] < 1e-6 * s[0]
    mask = truth["flash_mask"]
    assert mask.shape == (20, 3)
    for j, f in enumerate(truth["flashes"]):
        assert mask[:, j].sum() == min(f["duration"], 20 - f["t0"])


def test_streamed_zarr_equals_in_memory(tmp_path):
    data, _ = fluorescence_timelapse(seed=5, size=(7, 32, 48))
    p, _ = write_timelapse_zarr(
        tmp_path / "tl.zarr",
        seed=5,
        size=(7, 32, 48),
        chunks=(1, 16, 48),
        shards=(3, 32, 48),
        n_workers=2,
    )
    np.testing.assert_array_equal(zarr.open_array(str(p / "data"), mode="r")[:], data)


def test_gaussian_noise_matches_the_camera_moments_and_is_chunk_independent(tmp_path):
    m = timelapse_model(seed=6, size=(12, 64, 64), n_spots=8)
    data = m.render(0, 12, noise="gaussian")
    assert data.dtype == np.uint16
    expected = np.stack([m.expected(t) for t in range(12)])
    resid = data.astype(np.float64) - m.offset - expected
    # moment-matched: zero mean (rounding included; within 4 standard errors), variance
    # mu + read_noise^2
    assert abs(resid.mean()) < 4 * resid.std() / np.sqrt(resid.size)
    z = resid / np.sqrt(expected + m.read_noise**2)
    assert z.std() == pytest.approx(1.0, abs=0.03)
    # frame t depends only on (seed, t), not on where a chunk starts
    np.testing.assert_array_equal(m.render(5, 7, noise="gaussian"), data[5:7])
    assert not np.array_equal(data, m.render(0, 12))  # not the exact Poisson draws
    p, _ = write_timelapse_zarr(
        tmp_path / "g.zarr", seed=6, size=(12, 64, 64), n_spots=8, noise="gaussian", n_workers=2
    )
    np.testing.assert_array_equal(zarr.open_array(str(p / "data"), mode="r")[:], data)
    with pytest.raises(ValueError, match="noise"):
        m.render(0, 1, noise="poison")
    with pytest.raises(ValueError, match="noise"):
        write_timelapse_zarr(tmp_path / "x.zarr", size=(2, 8, 8), noise="uniform")


def test_vectorised_gaussians_equal_one_at_a_time():
    """The scatter-add of all spots equals adding each spot's window in turn."""
    import math

    from sample_data.microscopy import TimelapseModel

    rng = np.random.default_rng(0)
    Y, X = 40, 52
    pos = np.concatenate([rng.uniform(0, [Y - 1, X - 1], (30, 2)), [[0.2, 51.7], [39.9, 0.0]]])
    amp = rng.uniform(50, 300, len(pos))
    sig = rng.uniform(0.8, 4.0, len(pos))
    got = np.zeros((Y, X))
    TimelapseModel._add_gaussians(got, pos, amp, sig)
    ref = np.zeros((Y, X))
    for (py, px), a, s in zip(pos, amp, sig):
        r = math.ceil(4 * s)
        y0, y1 = max(0, int(py) - r), min(Y, int(py) + r + 2)
        x0, x1 = max(0, int(px) - r), min(X, int(px) + r + 2)
        gy = np.exp(-((np.arange(y0, y1) - py) ** 2) / (2 * s * s))
        gx = np.exp(-((np.arange(x0, x1) - px) ** 2) / (2 * s * s))
        ref[y0:y1, x0:x1] += a * gy[:, None] * gx[None, :]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


def test_volume_truth():
    vol, truth = blurred_volume(seed=0, size=(16, 48, 48), psf_sigma=(2.0, 1.0, 1.0), photons=1e4)
    assert vol.dtype == np.float32 and vol.shape == (16, 48, 48)
    psf = truth["psf"]
    assert psf.sum() == pytest.approx(1.0) and psf.shape == (15, 9, 9)
    assert np.unravel_index(psf.argmax(), psf.shape) == (7, 4, 4)
    # the data is the blurred object plus background and shot noise
    resid = vol - truth["blurred"] - truth["background"]
    assert abs(resid.mean()) < 1e-3
    assert truth["object"].max() <= 1.0 and (truth["object"] > 0).any()
    # the blur conserves flux (interior beads): total intensity close to the object's
    assert truth["blurred"].sum() == pytest.approx(truth["object"].sum(), rel=0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        fluorescence_timelapse(size="huge")
    with pytest.raises(ValueError, match="size"):
        fluorescence_timelapse(size=(4, 32))
    with pytest.raises(ValueError, match="seed"):
        fluorescence_timelapse(seed=-1)
    with pytest.raises(ValueError, match="diffusion"):
        fluorescence_timelapse(size=(2, 8, 8), diffusion=-1.0)
    with pytest.raises(ValueError, match="psf_sigma"):
        blurred_volume(size=(8, 8, 8), psf_sigma=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="odd"):
        gaussian_psf((4, 5, 5), (1.0, 1.0, 1.0))
