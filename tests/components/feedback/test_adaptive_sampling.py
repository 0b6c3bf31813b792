"""Adaptive acquisition: planted gain over uniform sampling, pieces, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from components.feedback import _reference as ref
from components.feedback.adaptive_sampling import (
    AdaptiveSampling,
    adaptive_acquire,
    ensemble_uncertainty,
    initial_scan,
    reconstruct,
    select_batch,
    sparse_reconstruct,
)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10((b.max() - b.min()) ** 2 / np.mean((a - b) ** 2)))


def test_adaptive_beats_uniform_at_equal_budget() -> None:
    img = ref.fluorescence_field(5, shape=(48, 48), cells=6).astype(np.float64)
    truth = torch.from_numpy(img)
    n = int(0.15 * img.size)
    res = adaptive_acquire(lambda c: truth[c[:, 0], c[:, 1]], img.shape, budget=n, batch=50)
    assert int(res.mask.sum()) == n
    g = np.random.default_rng(0)
    uni = []
    for _ in range(3):
        m = np.zeros(img.shape, bool)
        m.flat[g.choice(img.size, n, replace=False)] = True
        uni.append(
            _psnr(reconstruct(truth * torch.from_numpy(m), torch.from_numpy(m)).numpy(), img)
        )
    assert _psnr(res.reconstruction.numpy(), img) > max(uni) + 1.0


def test_initial_scan_is_distinct_and_spread() -> None:
    c = initial_scan((40, 30), 300).numpy()
    assert len({tuple(x) for x in c}) == 300
    hist = np.histogram2d(c[:, 0], c[:, 1], bins=(4, 3), range=((0, 40), (0, 30)))[0]
    assert hist.min() >= 20  # low discrepancy: every 10x10 cell gets its share (25)


def test_reconstruct_interpolates_smooth_fields_in_3d() -> None:
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in (10, 20, 20)], indexing="ij")
    f = torch.from_numpy(np.sin(3 * x) + np.cos(2 * y) + z)
    m = torch.rand(f.shape, generator=torch.Generator().manual_seed(0)) < 0.2
    rec = reconstruct(f * m, m)
    assert float((rec - f).abs().mean()) < 0.05
    out = sparse_reconstruct(f * m, m)
    assert out.score.shape == f.shape and bool((out.score[m] == 0).all())


def test_select_batch_avoids_sampled_and_clusters() -> None:
    score = torch.zeros(32, 32, dtype=torch.float64)
    score[10:14, 10:14] = 1.0
    score[25, 25] = 0.5
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[10, 10] = True
    coords, _gain = select_batch(score, mask, 2, min_distance=4)
    pts = {tuple(c) for c in coords.tolist()}
    assert (10, 10) not in pts and (25, 25) in pts and len(pts) == 2


def test_ensemble_intervals_are_calibrated() -> None:
    img = torch.from_numpy(ref.fluorescence_field(1, shape=(64, 64)).astype(np.float64))
    g = torch.Generator().manual_seed(3)
    m = torch.rand(img.shape, generator=g) < 0.25
    held = (torch.rand(img.shape, generator=g) < 0.3) & m
    train = m & ~held
    mean, half, q = ensemble_uncertainty(img * train, train, members=10, alpha=0.2)
    cover = float(((img - mean).abs() <= half)[held].float().mean())
    assert q > 0 and cover > 0.7, cover


def test_tiled_acquisition_spends_budget_and_path_cost_shortens_path() -> None:
    img = torch.from_numpy(ref.fluorescence_field(2, shape=(48, 48)).astype(np.float64))
    meas = lambda c: img[c[:, 0], c[:, 1]]  # noqa: E731
    res = adaptive_acquire(meas, img.shape, budget=400, initial=150, batch=60, tile=24)
    assert int(res.mask.sum()) == 400
    a = adaptive_acquire(meas, img.shape, budget=300, initial=150, batch=50)
    b = adaptive_acquire(meas, img.shape, budget=300, initial=150, batch=50, path_cost=20.0)
    assert b.history[-1]["path_length"] < a.history[-1]["path_length"]


def test_gradcheck_reconstruction() -> None:
    m = torch.zeros(7, 8, dtype=torch.bool)
    m[::2, ::3] = True
    v = torch.rand(
        7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    ).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: sparse_reconstruct(v, m).reconstruction, (v,), fast_mode=True
    )
    assert torch.autograd.gradcheck(
        lambda v: sparse_reconstruct(v, m).uncertainty, (v,), fast_mode=True
    )


def test_module_self_supervised_loss() -> None:
    img = torch.from_numpy(ref.fluorescence_field(1, shape=(32, 32)).astype(np.float64))
    m = torch.rand(img.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    mod = AdaptiveSampling()
    loss = mod.self_supervised_loss({"samples": img * m, "mask": m}, mod(img * m, m))
    assert float(loss) > 0


def test_bad_budgets() -> None:
    meas = lambda c: torch.zeros(c.shape[0])  # noqa: E731
    with pytest.raises(
        ValueError, match=r"budget: expected at least the initial scan .100 samples., got 50"
    ):
        adaptive_acquire(meas, (32, 32), budget=50, initial=100)
    with pytest.raises(ValueError, match=r"budget: expected 1\.\.1024"):
        adaptive_acquire(meas, (32, 32), budget=5000)
    with pytest.raises(ValueError, match="shape"):
        adaptive_acquire(meas, (32,), budget=10)
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        sparse_reconstruct(torch.zeros(4, 4), torch.zeros(4, 4))


def test_delaunay_reconstruction_is_exact_on_linear_fields_and_differentiable() -> None:
    y, x = np.meshgrid(np.arange(20.0), np.arange(24.0), indexing="ij")
    f = torch.from_numpy(0.3 * y - 0.7 * x + 2.0)
    m = torch.rand(f.shape, generator=torch.Generator().manual_seed(1)) < 0.15
    m[0, 0] = m[0, -1] = m[-1, 0] = m[-1, -1] = True  # hull = the whole field
    assert float((reconstruct(f * m, m) - f).abs().max()) < 1e-9
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in (6, 8, 9)], indexing="ij")
    g = torch.from_numpy(z - 2 * y + 0.5 * x)
    m3 = torch.rand(g.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    for c in itertools.product((0, 5), (0, 7), (0, 8)):
        m3[c] = True
    assert float((reconstruct(g * m3, m3) - g).abs().max()) < 1e-9
    v = torch.rand(9, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mk = torch.rand(9, 10, generator=torch.Generator().manual_seed(3)) < 0.4
    v.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: reconstruct(v, mk), (v,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v: sparse_reconstruct(v, mk).score, (v,), fast_mode=True)
    # degenerate samples (collinear) fall back to the multiscale reconstruction
    line = torch.zeros(8, 8, dtype=torch.bool)
    line[3, :] = True
    out = reconstruct(torch.ones(8, 8) * line, line)
    assert torch.allclose(out, torch.ones(8, 8))


def test_refine_rule_scores_edges_and_gaps_not_flat_regions() -> None:
    img = torch.zeros(40, 40, dtype=torch.float64)
    img[:, 20:] = 1.0  # a vertical step
    m = torch.zeros(40, 40, dtype=torch.bool)
    m[::6, ::6] = True
    m[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    out = sparse_reconstruct(img * m, m, rule="refine")
    s = out.score
    assert bool((s[m] == 0).all()) and float(s.min()) >= 0
    cols = s.sum(0)
    assert float(cols[15:25].sum()) > 10 * float(cols[:10].sum() + cols[30:].sum())


def test_half_budget_goal_on_a_generated_field() -> None:
    """Adaptive at 10 % beats uniform random at 20 % (best of our two reconstructions)."""
    img = ref.fluorescence_field(5, shape=(64, 64), cells=8).astype(np.float64)
    truth = torch.from_numpy(img)
    res = adaptive_acquire(lambda c: truth[c[:, 0], c[:, 1]], img.shape, budget=int(0.1 * img.size))
    g = np.random.default_rng(0)
    uni = []
    for _ in range(3):
        m = np.zeros(img.shape, bool)
        m.flat[g.choice(img.size, int(0.2 * img.size), replace=False)] = True
        mt = torch.from_numpy(m)
        uni.append(
            max(
                _psnr(reconstruct(truth * mt, mt).numpy(), img),
                _psnr(reconstruct(truth * mt, mt, method="multiscale").numpy(), img),
            )
        )
    assert _psnr(res.reconstruction.numpy(), img) > max(uni) + 2.0


def test_bad_method() -> None:
    with pytest.raises(ValueError, match="method"):
        reconstruct(torch.zeros(4, 4), torch.ones(4, 4, dtype=torch.bool), method="kriging")
    with pytest.raises(ValueError, match="method"):
        AdaptiveSampling(method="nearest")
