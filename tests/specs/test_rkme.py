"""RKME: fit quality, MMD properties, batched search, mixtures, RFF, storage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from specs.rkme import (
    RKME,
    RFFEmbedding,
    RKMEStack,
    _gauss,
    batched_mmd,
    greedy_mixture,
    median_bandwidth,
    mixture_weights,
    project_simplex,
    rank_rkmes,
)


def _blobs(seed: int, n: int = 300, d: int = 4, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(3, d, generator=g) * 2 + shift
    idx = torch.randint(0, 3, (n,), generator=g)
    return c[idx] + 0.5 * torch.randn(n, d, generator=g)


def _exact_mmd2(x: torch.Tensor, r: RKME, bw: float) -> float:
    x = x.double()
    z, b = r.z.double(), r.beta.double()
    return float(
        _gauss(x, x, bw).mean() - 2 * (_gauss(x, z, bw).mean(0) @ b) + b @ _gauss(z, z, bw) @ b
    )


def test_fit_approximates_the_data_embedding() -> None:
    x = _blobs(0)
    r = RKME.fit(x, m=16, seed=0)
    assert r.z.shape == (16, 4) and r.beta.shape == (16,)
    assert abs(float(r.beta.sum()) - 1) < 1e-5 and (r.beta >= 0).all()
    bw = r.bandwidth
    err = _exact_mmd2(x, r, bw)
    # a random subset of 16 points is much worse than the fitted reduced set
    g = torch.Generator().manual_seed(1)
    rand = RKME(x[torch.randperm(300, generator=g)[:16]], torch.full((16,), 1 / 16), bw)
    assert err < 0.25 * _exact_mmd2(x, rand, bw)
    assert math.sqrt(max(err, 0)) < 0.05


def test_fit_is_deterministic_and_float64_accepted() -> None:
    x = _blobs(2)
    a, b = RKME.fit(x, m=8, seed=3), RKME.fit(x.double(), m=8, seed=3)
    assert torch.allclose(a.z, b.z, atol=1e-3) and a.z.dtype == torch.float32
    c = RKME.fit(x, m=8, seed=3)
    assert torch.equal(a.z, c.z) and torch.equal(a.beta, c.beta)


def test_mmd_properties() -> None:
    a = RKME.fit(_blobs(0), m=12)
    b = RKME.fit(_blobs(0, shift=0.3), m=12)
    c = RKME.fit(_blobs(0, shift=3.0), m=12)
    assert a.mmd(a) < 1e-6
    assert abs(a.mmd(b) - b.mmd(a, bandwidth=a.bandwidth)) < 1e-6
    assert a.mmd(b) < a.mmd(c)
    assert a.mmd(c) <= a.mmd(b) + b.mmd(c, bandwidth=a.bandwidth) + 1e-6  # triangle inequality


def test_batched_mmd_matches_pairwise_and_ranks() -> None:
    g = torch.Generator().manual_seed(0)
    rs = [
        RKME(torch.randn(4 + i, 4, generator=g) + i, torch.full((4 + i,), 1 / (4 + i)), 1.5)
        for i in range(6)
    ]  # different m: padding
    q = RKME(rs[3].z + 0.1 * torch.randn(rs[3].z.shape, generator=g), rs[3].beta, 1.5)
    stack = RKMEStack(rs)
    d = batched_mmd(q, stack)
    ref = torch.tensor([q.mmd(r) for r in rs], dtype=torch.float64)
    torch.testing.assert_close(d, ref, atol=1e-4, rtol=1e-4)
    idx, vals = rank_rkmes(q, rs, top=3)
    assert idx[0] == 3 and vals[0] == d.min()
    assert len(stack._self) == 1  # self-terms cached for the query bandwidth
    batched_mmd(q, stack)
    assert len(stack._self) == 1


def test_project_simplex() -> None:
    v = torch.randn(50, 7, generator=torch.Generator().manual_seed(0)) * 3
    p = project_simplex(v)
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(50), atol=1e-5)
    # optimality against random simplex points
    q = torch.distributions.Dirichlet(torch.ones(7)).sample((200,))
    assert ((v[0] - p[0]) ** 2).sum() <= ((v[0] - q) ** 2).sum(1).min() + 1e-6


def test_mixture_weights_recover_planted_proportions() -> None:
    parts = [_blobs(10 + i, n=400, shift=4.0 * i) for i in range(4)]
    cands = [RKME.fit(p, m=12, bandwidth=2.0) for p in parts]
    q = RKME.fit(torch.cat([parts[0][:300], parts[2][:100]]), m=24, bandwidth=2.0)
    w, _ = mixture_weights(q, cands)
    assert abs(float(w[0]) - 0.75) < 0.06 and abs(float(w[2]) - 0.25) < 0.06
    assert float(w[1] + w[3]) < 0.05
    chosen, _, mix = greedy_mixture(q, cands, k=3)
    assert chosen[:2] == [0, 2] and len(chosen) == 2  # the third adds nothing: rejected
    assert mix <= min(q.mmd(c) for c in cands)
    with pytest.raises(ValueError, match="min_gain"):
        greedy_mixture(q, cands, min_gain=1.5)


def test_rff_distance_approximates_mmd() -> None:
    rs = [
        RKME.fit(_blobs(0, n=200, shift=s), m=8, bandwidth=2.0) for s in (0.0, 0.5, 1.0, 2.0, 4.0)
    ]
    emb = RFFEmbedding(4, 2.0, dim=2048)
    e = torch.stack([emb.embed(r) for r in rs])
    approx = (e - e[0]).norm(dim=1)
    exact = torch.tensor([rs[0].mmd(r) for r in rs])
    assert (approx[1:] - exact[1:]).abs().max() < 0.06
    assert torch.equal(torch.argsort(approx), torch.argsort(exact))
    # same frequencies in every process: seeded by feature space, dimension, bandwidth
    assert torch.equal(RFFEmbedding(4, 2.0, dim=16).W, RFFEmbedding(4, 2.0, dim=16).W)


def test_safetensors_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = RKME.fit(_blobs(0), m=8, featurizer="tabular/1")
    p = r.to_safetensors(tmp_path / "r.safetensors")
    r2 = RKME.from_safetensors(p)
    assert (
        torch.equal(r.z, r2.z)
        and r2.bandwidth == r.bandwidth
        and r2.featurizer == "tabular/1"
        and r2.n == 300
    )
    r3 = RKME.from_bytes(r.to_bytes())
    assert torch.equal(r3.beta, r.beta)


def test_errors() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        RKME.fit(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="NaN"):
        RKME.fit(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="m: expected"):
        RKME.fit(torch.zeros(5, 2), m=0)
    with pytest.raises(ValueError, match="simplex"):
        RKME(torch.zeros(2, 2), torch.tensor([0.9, 0.9]), 1.0)
    a = RKME.fit(torch.randn(20, 2), m=4, featurizer="tabular/1")
    b = RKME.fit(torch.randn(20, 2), m=4, featurizer="microscopy-tiles/1")
    with pytest.raises(ValueError, match="different feature spaces"):
        a.mmd(b)


def test_median_bandwidth_scales() -> None:
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(0))
    assert abs(median_bandwidth(x * 10) / median_bandwidth(x) - 10) < 1e-3


def test_from_data_uses_featurizer_policy() -> None:
    img = np.random.default_rng(0).normal(size=(64, 64))
    r = RKME.from_data(img, modality="microscopy", m=4)
    assert r.featurizer == "microscopy-tiles/1" and r.bandwidth == 1.5


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = _blobs(0)
    a = RKME.fit(x, m=8, seed=0)
    b = RKME.fit(x.cuda(), m=8, seed=0)
    assert abs(a.mmd(b)) < 1e-2
    st = RKMEStack([a, b], device="cuda")
    assert batched_mmd(a, st).shape == (2,)


def test_refinement_improves_on_the_kmeanspp_seeding() -> None:
    from specs.rkme import _kmeanspp, _simplex_weights

    x = _blobs(4, n=600, d=5)
    r = RKME.fit(x, m=20, seed=0)
    z0 = _kmeanspp(x, 20, torch.Generator().manual_seed(0))
    bw = r.bandwidth
    w0 = _simplex_weights(_gauss(z0, z0, bw), _gauss(z0, x, bw).mean(1), 200)
    seeded = _exact_mmd2(x, RKME(z0, w0.float() / w0.float().sum(), bw), bw)
    assert _exact_mmd2(x, r, bw) < 0.7 * seeded
    # the weights are near-optimal for the fitted points: a long solve barely improves them
    w = _simplex_weights(_gauss(r.z, r.z, bw), _gauss(r.z, x, bw).mean(1), 500)
    best = _exact_mmd2(x, RKME(r.z, w.float() / w.float().sum(), bw), bw)
    assert _exact_mmd2(x, r, bw) < 1.1 * best
