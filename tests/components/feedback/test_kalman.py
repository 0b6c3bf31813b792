"""Kalman/RTS smoother: planted truths, peers (filterpy, simdkalman), bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.feedback import _reference as ref
from components.feedback.kalman import KalmanSmoother, fit_noise, rts_smooth, state_space

RATE = 100.0


def _simulate(q: float, r: float, t: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    F, Q = state_space(torch.full((1,), 1 / RATE, dtype=torch.float64))
    L = torch.linalg.cholesky(q * Q[0])
    st = torch.zeros(n, 2, dtype=torch.float64)
    xs = []
    for _ in range(t):
        st = st @ F[0].T + (L @ torch.randn(n, 2, 1, generator=g, dtype=torch.float64))[..., 0]
        xs.append(st[:, 0])
    return torch.stack(xs) + r**0.5 * torch.randn(t, n, generator=g, dtype=torch.float64)


def _filterpy_rts(z: np.ndarray, q: float, r: float, v0: float) -> tuple[np.ndarray, np.ndarray]:
    from filterpy.common import Q_continuous_white_noise
    from filterpy.kalman import KalmanFilter

    dt = 1 / RATE
    kf = KalmanFilter(dim_x=2, dim_z=1)
    kf.F = np.array([[1.0, dt], [0.0, 1.0]])
    kf.H = np.array([[1.0, 0.0]])
    kf.Q = Q_continuous_white_noise(2, dt, q)
    kf.R = np.array([[r]])
    kf.x = np.array([[z[np.isfinite(z)][0]], [0.0]])
    kf.P = np.diag([r, v0**2])
    xs, ps = [], []
    for k, zk in enumerate(z):
        if k:
            kf.predict()
        kf.update(None if np.isnan(zk) else zk)
        xs.append(kf.x.copy())
        ps.append(kf.P.copy())
    X, P, _, _ = kf.rts_smoother(np.array(xs), np.array(ps))
    return X[:, 0, 0], np.sqrt(P[:, 0, 0])


def test_rts_equals_filterpy_and_simdkalman() -> None:
    pytest.importorskip("filterpy")
    simdkalman = pytest.importorskip("simdkalman")
    pos = ref.gait_markers(3, frames=150, markers=2, gap_fraction=0.05)
    q, r, v0 = 2e4, 0.25, 1000.0
    est = rts_smooth(torch.from_numpy(pos), rate=RATE, q=q, r=r, initial_velocity_std=v0)
    for m, c in [(0, 0), (1, 2)]:
        mean, sd = _filterpy_rts(pos[:, m, c], q, r, v0)
        np.testing.assert_allclose(
            est.positions[:, m, c].numpy(), mean, rtol=1e-6, atol=1e-6 * np.abs(mean).max()
        )
        np.testing.assert_allclose(est.std[:, m, c].numpy(), sd, rtol=1e-6)
    F, Q = state_space(torch.tensor([1 / RATE], dtype=torch.float64))
    kf = simdkalman.KalmanFilter(F[0].numpy(), q * Q[0].numpy(), np.array([[1.0, 0.0]]), r)
    data = pos.transpose(1, 2, 0).reshape(-1, pos.shape[0])
    first = np.array([d[np.isfinite(d)][0] for d in data])
    res = kf.smooth(
        data,
        initial_value=np.stack([first, 0 * first], 1)[:, :, None],
        initial_covariance=np.diag([r, v0**2]),
    )
    sm = res.states.mean[:, :, 0].reshape(2, 3, -1).transpose(2, 0, 1)
    np.testing.assert_allclose(est.positions.numpy(), sm, rtol=1e-6, atol=1e-6 * np.abs(sm).max())


def test_gaps_filled_and_uncertainty_grows_in_gaps() -> None:
    pos = ref.gait_markers(0, frames=120, markers=3)
    truth_gap = ref.gait_markers(0, frames=120, markers=3, gap_fraction=0.0, noise=0.0)
    pos[40:60, 0, :] = np.nan  # a 0.2 s occlusion
    est = rts_smooth(torch.from_numpy(pos), rate=RATE, q=2e4, r=0.25)
    assert est.positions.shape == pos.shape and bool(torch.isfinite(est.positions).all())
    sd = est.std.numpy()
    observed = sd[:, 0, 0][np.isfinite(pos[:, 0, 0])]
    assert sd[50, 0, 0] > 3 * np.median(observed)
    assert sd[50, 0, 0] > sd[42, 0, 0] and sd[50, 0, 0] > sd[58, 0, 0]  # largest mid-gap
    err = np.abs(est.positions.numpy()[40:60, 0] - truth_gap[40:60, 0])
    assert (err < 4 * sd[40:60, 0] + 1.0).all()  # the fill is consistent with its error bar


def test_batched_trials_equal_separate_runs() -> None:
    a = ref.gait_markers(1, frames=60, markers=2)
    b = ref.gait_markers(2, frames=60, markers=2)
    both = rts_smooth(torch.from_numpy(np.stack([a, b])), rate=RATE, q=1e4, r=0.5)
    one = rts_smooth(torch.from_numpy(b), rate=RATE, q=1e4, r=0.5)
    torch.testing.assert_close(both.positions[1], one.positions)


def test_float32_preserved_and_constant_acceleration_runs() -> None:
    pos = torch.from_numpy(ref.gait_markers(0, frames=50, markers=2)).float()
    est = rts_smooth(pos, rate=RATE, q=1e6, r=0.25, model="constant_acceleration")
    assert est.positions.dtype == torch.float32 and bool(torch.isfinite(est.positions).all())


def test_fit_noise_recovers_planted_q_and_r() -> None:
    q, r = 5e3, 0.09
    z = _simulate(q, r, 300, 60, seed=1).reshape(300, 20, 3)
    qh, rh = fit_noise(z, rate=RATE)
    assert abs(qh / q - 1) < 0.2 and abs(rh / r - 1) < 0.2, (qh, rh)


def test_low_rank_coupling_improves_long_gaps() -> None:
    g = np.random.default_rng(0)
    t = np.arange(300) / RATE
    # 8 markers on a rigid segment: every coordinate is a mix of 3 latent motions
    latent = (
        np.stack(
            [
                np.sin(2 * np.pi * 1.0 * t),
                np.cos(2 * np.pi * 1.3 * t),
                np.sin(2 * np.pi * 0.7 * t + 1),
            ],
            1,
        )
        * 100
    )
    mix = g.normal(size=(3, 24))
    truth = (latent @ mix).reshape(300, 8, 3)
    obs = truth + g.normal(0, 0.3, truth.shape)
    obs[100:160, 2, :] = np.nan  # a 0.6 s occlusion
    kw = {"rate": RATE, "q": 1e5, "r": 0.09}
    plain = rts_smooth(torch.from_numpy(obs), **kw).positions.numpy()
    coupled = rts_smooth(
        torch.from_numpy(obs), coupling_rank=3, long_gap=20, **kw
    ).positions.numpy()
    err_plain = np.abs(plain[100:160, 2] - truth[100:160, 2]).mean()
    err_coupled = np.abs(coupled[100:160, 2] - truth[100:160, 2]).mean()
    assert err_coupled < 0.4 * err_plain, (err_plain, err_coupled)


def test_gradcheck_through_noise_parameters() -> None:
    z = _simulate(1e3, 0.1, 12, 2, seed=0).reshape(12, 1, 2)
    z[4:6] = float("nan")
    q = torch.tensor(1e3, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)

    def f(q: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, ...]:
        e = rts_smooth(z, rate=RATE, q=q, r=r)
        return e.positions, e.std, e.log_likelihood

    assert torch.autograd.gradcheck(f, (q, r), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_module_self_supervised_loss_moves_r() -> None:
    z = _simulate(5e3, 0.25, 100, 6, seed=2).reshape(100, 2, 3)
    m = KalmanSmoother(rate=RATE, q=5e3, r=4.0).double()
    loss = m.self_supervised_loss({"positions": z}, m(z))
    loss.backward()
    assert m.log_r.grad is not None and float(m.log_r.grad) > 0  # r too large: gradient says shrink


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"q": -1.0}, "q: expected a non-negative"),
        ({"r": float("nan")}, "r: expected a non-negative"),
        (
            {"time": np.array([0.0, 0.02, 0.01] + [0.03 + 0.01 * i for i in range(7)])},
            "strictly increasing",
        ),
        ({"rate": -5.0}, "rate"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str) -> None:
    pos = torch.zeros(10, 1, 3)
    base = {"rate": RATE}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rts_smooth(pos, **base)


def test_all_nan_series_named() -> None:
    pos = np.zeros((10, 3, 3))
    pos[:, 2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"all-NaN series, e.g. at \(\*batch, marker, coord\) = \(2, 1\)"
    ):
        rts_smooth(torch.from_numpy(pos), rate=RATE)


def test_float32_gait_has_no_nan_and_matches_float64() -> None:
    # regression: float32 gait data (300 frames, seed 10000) gave NaN: with the diffuse
    # velocity prior (~1e10 mm^2/s^2) the second update's p11 - p01^2/S cancelled to a
    # singular covariance in float32 and the smoother divided by its zero determinant
    from sample_data import gait_markers

    pts, _ = gait_markers(seed=10000, size=300, gap_fraction=0.03)
    m32 = KalmanSmoother(rate=RATE, q=2e4, r=0.25)
    out32 = m32(torch.from_numpy(pts.astype(np.float32)))
    assert out32.positions.dtype == torch.float32 and out32.std.dtype == torch.float32
    assert bool(torch.isfinite(out32.positions).all()) and bool(torch.isfinite(out32.std).all())
    out64 = KalmanSmoother(rate=RATE, q=2e4, r=0.25).double()(torch.from_numpy(pts))
    scale = float(np.nanmax(np.abs(pts)))
    d_pos = (out32.positions.detach().double() - out64.positions.detach()).abs().max()
    d_std = (out32.std.detach().double() - out64.std.detach()).abs().max()
    assert float(d_pos) < 1e-6 * scale and float(d_std) < 1e-3
    # the gradient path (module parameters) is finite too
    out32.log_likelihood.backward()
    assert bool(torch.isfinite(m32.log_q.grad)) and bool(torch.isfinite(m32.log_r.grad))


def test_float32_gait_constant_acceleration_has_no_nan() -> None:
    from sample_data import gait_markers

    pts, _ = gait_markers(seed=10000, size=120, gap_fraction=0.03)
    kw = {"rate": RATE, "q": 1e8, "r": 0.25, "model": "constant_acceleration"}
    e32 = rts_smooth(torch.from_numpy(pts[:, :4].astype(np.float32)), **kw)
    e64 = rts_smooth(torch.from_numpy(pts[:, :4]), **kw)
    assert bool(torch.isfinite(e32.positions).all()) and bool(torch.isfinite(e32.std).all())
    assert float((e32.positions.double() - e64.positions).abs().max()) < 1e-6 * 5000


def test_zero_process_noise_stays_finite() -> None:
    # q = 0: the predicted covariance is as singular as the filtered one; the smoother's
    # determinant floor keeps the gain finite
    z = torch.linspace(0, 1, 50, dtype=torch.float64)[:, None, None].expand(50, 1, 3).clone()
    z[20:25] = float("nan")
    est = rts_smooth(z, rate=RATE, q=0.0, r=1e-4, initial_velocity_std=10.0)
    assert bool(torch.isfinite(est.positions).all()) and bool(torch.isfinite(est.std).all())
    assert float((est.positions[22, 0, 0] - 22 / 49).abs()) < 1e-3
