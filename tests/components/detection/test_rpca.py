"""Tests of robust PCA: planted low-rank + sparse separation, SVT, streaming, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.detection._reference import make_movie
from components.detection.rpca import RobustPCA, robust_pca, robust_pca_online, rpca_scores, svt


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    return 2 * tp / max(1.0, float(pred.sum() + truth.sum()))


def test_exact_recovery_noiseless_float64() -> None:
    g = torch.Generator().manual_seed(1)
    L0 = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(
        3, 60, generator=g, dtype=torch.float64
    )
    mask = torch.rand(200, 60, generator=g) < 0.05
    S0 = torch.where(
        mask,
        10 * torch.randn(200, 60, generator=g, dtype=torch.float64),
        torch.zeros((), dtype=torch.float64),
    )
    for method in ("gram", "full", "subspace"):
        L, S = robust_pca(L0 + S0, svd=method)
        assert L.dtype == torch.float64
        assert float(torch.linalg.norm(L - L0) / torch.linalg.norm(L0)) < 1e-5, method
        assert f1((S.abs() > 1e-3).numpy(), mask.numpy()) > 0.99


def test_movie_events_separated_with_calibrated_score() -> None:
    movie, bg, ev = make_movie(
        shape=(60, 24, 24), rank=3, event_fraction=0.01, event_amplitude=3.0, noise=0.05, seed=2
    )
    out = rpca_scores(torch.as_tensor(movie), tol=1e-6)
    assert out.low_rank.shape == movie.shape
    assert f1((out.score.abs() > 5).numpy(), ev) > 0.97
    # calibration: off-event scores look like noise (few false alarms at 5 sigma)
    assert float((out.score.abs()[~torch.as_tensor(ev)] > 5).float().mean()) < 1e-3
    assert float((out.low_rank - torch.as_tensor(bg)).abs().mean()) < 0.05


def test_debiased_score_is_calibrated_and_background_rank_found() -> None:
    movie, bg, ev = make_movie(
        shape=(80, 24, 24), rank=3, event_fraction=0.01, event_amplitude=3.0, noise=0.05, seed=9
    )
    x = torch.as_tensor(movie, dtype=torch.float64)
    deb = rpca_scores(x, tol=1e-7)
    raw = rpca_scores(x, tol=1e-7, debias=False)
    assert deb.rank == 3 and raw.rank is None and raw.background is None
    z_off, z_raw = deb.score.numpy()[~ev], raw.score.numpy()[~ev]
    # unit variance off the events (the PCP low-rank part also fits noise: the raw score's
    # noise scale is biased low, its off-event spread too wide)
    assert abs(float(z_off.std()) - 1.0) < 0.06 and float(z_raw.std()) > 1.1
    assert float(np.abs(deb.score.numpy()[ev]).min()) > 10
    # the refitted background is closer to the truth than the PCP low-rank part
    err_deb = float(np.abs(deb.background.numpy() - bg).mean())
    err_pcp = float(np.abs(deb.low_rank.numpy() - bg).mean())
    assert err_deb < 0.7 * err_pcp, (err_deb, err_pcp)


def test_rpca_beats_truncated_svd_on_large_events_and_drift() -> None:
    movie, _, ev = make_movie(
        shape=(80, 20, 20),
        rank=2,
        event_fraction=0.05,
        event_amplitude=20.0,
        noise=0.05,
        drift=0.5,
        seed=3,
    )
    A = torch.as_tensor(movie, dtype=torch.float64).reshape(80, -1).T
    U, Sv, Vh = torch.linalg.svd(A, full_matrices=False)
    base = (U[:, :3] * Sv[:3]) @ Vh[:3]
    resid = (A - base).T.reshape(movie.shape)
    sig = 1.4826 * (resid - resid.median()).abs().median()
    f_svd = f1((resid.abs() > 5 * sig).numpy(), ev)
    out = rpca_scores(torch.as_tensor(movie, dtype=torch.float64), tol=1e-7)
    f_rpca = f1((out.score.abs() > 5).numpy(), ev)
    assert f_rpca > 0.95 and f_rpca > f_svd + 0.05, (f_rpca, f_svd)


def test_online_matches_batch_events() -> None:
    movie, _, ev = make_movie(
        shape=(90, 16, 16), rank=2, event_fraction=0.01, event_amplitude=3.0, noise=0.05, seed=4
    )
    L, _S = robust_pca_online(torch.as_tensor(movie), chunk=30, rank=3, tol=1e-6)
    assert L.shape == movie.shape
    out = rpca_scores(torch.as_tensor(movie), online_chunk=30, rank=3)
    assert f1((out.score.abs() > 5).numpy(), ev) > 0.95


def test_svt_gram_equals_full() -> None:
    X = torch.randn(80, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a, ra = svt(X, 5.0, method="gram")
    b, rb = svt(X, 5.0, method="full")
    c, rc = svt(X.T, 5.0, method="gram")
    assert ra == rb == rc
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, b.T)


def test_soft_probability_gradient_and_loss() -> None:
    movie, _, _ = make_movie(shape=(20, 10, 10), seed=6)
    m = RobustPCA(tol=1e-6)
    out = m(torch.as_tensor(movie))
    out.probability.sum().backward()
    assert m.threshold.grad is not None and m.temperature.grad is not None
    loss = m.self_supervised_loss({"movie": movie}, out)
    assert torch.isfinite(loss)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        robust_pca(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="non-empty"):
        robust_pca(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="svd"):
        robust_pca(torch.ones(4, 4), svd="lanczos")
    with pytest.raises(ValueError, match="chunk"):
        robust_pca_online(torch.ones(10, 4), chunk=1)
    z = robust_pca(torch.zeros(5, 4))
    assert float(z.low_rank.abs().sum()) == 0.0


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    movie, _, _ = make_movie(shape=(30, 12, 12), seed=7)
    a = robust_pca(torch.as_tensor(movie, dtype=torch.float64))
    b = robust_pca(torch.as_tensor(movie, dtype=torch.float64).cuda())
    torch.testing.assert_close(a.sparse, b.sparse.cpu(), atol=1e-6, rtol=1e-5)
