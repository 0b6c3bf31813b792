"""Tests of CP/Tucker tensor residuals as anomaly scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.detection._reference import gait, light_curves, make_movie
from components.detection.tensor import TensorResiduals, mode_scores, tensor_residuals


@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_gait_anomalous_marker_ranked_first(method: str) -> None:
    x = torch.as_tensor(gait(3, n_frames=150, n_markers=10, anomalous=7))
    out = tensor_residuals(x, method=method)
    per_marker = mode_scores(out.score, 1)
    assert int(per_marker.argmax()) == 7
    others = torch.cat([per_marker[:7], per_marker[8:]])
    assert float(per_marker[7]) > 1.5 * float(others.max())
    torch.testing.assert_close(out.reconstruction + out.residual, x)


def test_star_time_tensor_flags_transiting_star() -> None:
    f = torch.as_tensor(light_curves(1, n_stars=10, baseline=10.0))
    out = tensor_residuals(f, energy=0.9, center=False)
    assert int(mode_scores(out.score, 0).argmax()) == 0


def test_movie_events_stand_out() -> None:
    movie, _, ev = make_movie(
        shape=(30, 16, 16), rank=2, event_fraction=0.01, event_amplitude=3.0, seed=2
    )
    out = tensor_residuals(torch.as_tensor(movie), method="cp", max_rank=4)
    s = out.score.numpy()
    assert np.median(s[ev]) > 20 * np.median(s[~ev])


def test_fixed_rank_and_dtype() -> None:
    x = torch.as_tensor(gait(1, n_frames=40, n_markers=5), dtype=torch.float64)
    out = tensor_residuals(x, rank=[3, 3, 2])
    assert out.score.dtype == torch.float64 and out.rank.tolist() == [3, 3, 2]
    out = tensor_residuals(x, method="cp", rank=2)
    assert out.rank.tolist() == [2]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        tensor_residuals(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="rank"):
        tensor_residuals(torch.ones(5, 4, 3), rank=[1, 2])
    with pytest.raises(ValueError, match="method"):
        TensorResiduals(method="pca")
    with pytest.raises(ValueError, match="2-D"):
        tensor_residuals(torch.ones(5))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    x = torch.as_tensor(gait(0, n_frames=60, n_markers=6, anomalous=2))
    a = tensor_residuals(x)
    b = tensor_residuals(x.cuda())
    torch.testing.assert_close(a.score, b.score.cpu(), rtol=1e-4, atol=1e-6)
