"""Tests of the residual autoencoder: planted anomalies, calibration, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.detection.autoencoder import ResidualAutoencoder


def _signals(n: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    ph = rng.uniform(0, 2 * np.pi, (n, 1))
    amp = rng.uniform(0.8, 1.2, (n, 1))
    x = amp * np.sin(2 * np.pi * 3 * t + ph) + 0.05 * rng.standard_normal((n, length))
    return x[:, None, :].astype(np.float32)


def test_flags_planted_anomalies_1d() -> None:
    train = _signals(128, 64, 0)
    ae = ResidualAutoencoder(ndim=1, in_channels=1, channels=[8, 16], seed=1)
    info = ae.fit(train, epochs=40, batch_size=32, seed=2)
    assert info["threshold"] > 0
    normal = _signals(40, 64, 3)
    anom = _signals(40, 64, 4)
    anom[:, 0, 20:26] += 1.5  # a glitch/flare the normal data never shows
    with torch.no_grad():
        s_n = ae(torch.as_tensor(normal)).score
        s_a = ae(torch.as_tensor(anom)).score
    # ranking and calibrated decision
    auc = (s_a[:, None] > s_n[None, :]).float().mean()
    assert float(auc) > 0.98
    flagged_a = float((s_a > ae.threshold).float().mean())
    flagged_n = float((s_n > ae.threshold).float().mean())
    assert flagged_a > 0.9 and flagged_n < 0.1


def test_2d_images_and_shapes() -> None:
    rng = np.random.default_rng(5)
    yy, xx = np.meshgrid(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20), indexing="ij")
    base = np.exp(-(yy**2 + xx**2) / 0.3)
    train = (
        base[None, None] * rng.uniform(0.8, 1.2, (60, 1, 1, 1))
        + 0.02 * rng.standard_normal((60, 1, 20, 20))
    ).astype(np.float32)
    ae = ResidualAutoencoder(ndim=2, in_channels=1, channels=[8, 8])
    ae.fit(train, epochs=40, batch_size=20)
    test = train[:4].copy()
    test[0, 0, 3:6, 14:17] += 1.0
    with torch.no_grad():
        out = ae(torch.as_tensor(test))
    assert out.reconstruction.shape == test.shape
    assert int(out.score.argmax()) == 0
    # the element score localises the anomaly
    e = out.element_score[0, 0]
    assert e[3:6, 14:17].mean() > 10 * e.median()


def test_safetensors_roundtrip(tmp_path) -> None:
    ae = ResidualAutoencoder(ndim=1, in_channels=2, channels=[4])
    ae.fit(np.random.default_rng(0).standard_normal((20, 2, 16)).astype(np.float32), epochs=3)
    path = tmp_path / "weights.safetensors"
    ae.save_weights(path)
    other = ResidualAutoencoder(ndim=1, in_channels=2, channels=[4], seed=9).load_weights(path)
    x = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ae(x).score, other(x).score)


def test_gradients_reach_threshold_and_input() -> None:
    ae = ResidualAutoencoder(ndim=1, in_channels=1, channels=[4]).double()
    x = torch.randn(
        2,
        1,
        12,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
        requires_grad=True,
    )
    out = ae(x)
    (out.probability.sum() + out.score.sum()).backward()
    assert x.grad is not None and ae.threshold.grad is not None and ae.temperature.grad is not None


def test_deterministic_init_and_bad_input() -> None:
    a = ResidualAutoencoder(ndim=1, in_channels=1, seed=3)
    b = ResidualAutoencoder(ndim=1, in_channels=1, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="x: expected shape"):
        a(torch.zeros(2, 16))
    with pytest.raises(ValueError, match="ndim"):
        ResidualAutoencoder(ndim=4)
    with pytest.raises(ValueError, match="at least 4"):
        a.fit(np.zeros((2, 1, 8), dtype=np.float32))
