"""The loop protocol: run_loop budgets, wall time, adjointness of forward models."""

from __future__ import annotations

import pytest
import torch

from components.feedback.adaptive_sampling import SparseEstimator, UncertaintyPolicy, initial_scan
from components.feedback.deconvolution import _Blur, gaussian_psf
from components.feedback.loop import Proposal, SimulatedImager, adjoint_mismatch, run_loop


@pytest.mark.parametrize("padding", ["zero", "periodic"])
@pytest.mark.parametrize("shape", [(20, 23), (7, 12, 11)])
def test_blur_forward_adjoint_pair(padding: str, shape: tuple[int, ...]) -> None:
    psf = gaussian_psf(1.2, ndim=len(shape), dtype=torch.float64)
    op = _Blur(psf, shape, padding)
    assert adjoint_mismatch(op, shape) < 1e-12


def _initial(shape: tuple[int, int], n: int) -> Proposal:
    c = initial_scan(shape, n)
    return Proposal(c, torch.zeros(n))


def test_run_loop_spends_exact_budget() -> None:
    truth = torch.rand(24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = run_loop(
        SimulatedImager(truth),
        SparseEstimator(truth.shape),
        UncertaintyPolicy(),
        150,
        batch=25,
        initial=_initial((24, 24), 50),
    )
    assert res.spent == 150 and res.stopped == "budget" and res.rounds == 4
    assert int(res.belief.mask.sum()) == 150


def test_run_loop_honours_wall_time() -> None:
    truth = torch.rand(24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = run_loop(
        SimulatedImager(truth),
        SparseEstimator(truth.shape),
        UncertaintyPolicy(),
        500,
        batch=5,
        initial=_initial((24, 24), 50),
        wall_time=0.0,
    )
    assert res.stopped == "wall_time" and res.spent == 50


def test_run_loop_rejects_budget_below_initial_scan() -> None:
    truth = torch.rand(8, 8, dtype=torch.float64)
    with pytest.raises(
        ValueError, match="budget: expected at least the initial scan size 30, got 20"
    ):
        run_loop(
            SimulatedImager(truth),
            SparseEstimator(truth.shape),
            UncertaintyPolicy(),
            20,
            initial=_initial((8, 8), 30),
        )
