"""Tensor-decomposition residuals: what a low-rank CP or Tucker model cannot explain.

Coherent structure in a multi-way array -- a gait cycle shared by all markers, a
background shared by all frames, the common systematics of many stars -- is captured by a
low-rank CP or Tucker model; an anomalous marker, region or star stands out in the
residual.  The decomposition runs through tensorly with its PyTorch backend (so on the
GPU when the input is there), the rank is chosen by a documented criterion, and the
residual energy per entry, normalised by the robust noise level, is the anomaly score.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from components._validation import (
    as_float_tensor,
    check_in,
    check_ndim,
    check_nonempty,
    check_range,
)
from components.base import Component, Declaration
from specs.semantic import SemanticSpec, TensorSchema

__all__ = ["TensorResidualOutput", "TensorResiduals", "mode_scores", "tensor_residuals"]


@dataclasses.dataclass
class TensorResidualOutput:
    """Low-rank reconstruction and residual scores.

    Attributes
    ----------
    reconstruction : Tensor
        Low-rank model (plus the removed mean), shape of the input.
    residual : Tensor
        ``data - reconstruction``.
    score : Tensor
        Residual energy per entry in units of the robust noise variance
        (``residual**2 / sigma**2``, about chi-square with 1 degree of freedom for
        normal entries).
    rank : Tensor
        The CP rank (shape (1,)) or the Tucker ranks per mode.
    """

    reconstruction: Tensor
    residual: Tensor
    score: Tensor
    rank: Tensor


def mode_scores(score: Tensor, axis: int) -> Tensor:
    """Mean score per index along ``axis`` (e.g. per marker of a (t, marker, xyz) tensor).

    Examples
    --------
    >>> mode_scores(torch.ones(4, 3, 2), 1)
    tensor([1., 1., 1.])
    """
    dims = [d for d in range(score.ndim) if d != axis % score.ndim]
    return score.mean(dim=dims) if dims else score


def _tucker_ranks(X: Tensor, energy: float, max_rank: int) -> list[int]:
    ranks = []
    for mode in range(X.ndim):
        unf = X.movedim(mode, 0).reshape(X.shape[mode], -1)
        G = unf @ unf.T if unf.shape[0] <= unf.shape[1] else unf.T @ unf
        ev = torch.linalg.eigvalsh(G.to(torch.float64)).flip(0).clamp_min(0)
        cum = torch.cumsum(ev, 0) / ev.sum().clamp_min(1e-300)
        r = int((cum < energy).sum()) + 1
        ranks.append(max(1, min(r, max_rank, X.shape[mode])))
    return ranks


def tensor_residuals(
    data: Tensor,
    *,
    method: str = "tucker",
    rank: int | list[int] | None = None,
    max_rank: int = 8,
    energy: float = 0.999,
    min_gain: float = 0.01,
    center: bool = True,
    n_iter_max: int = 100,
    tol: float = 1e-7,
) -> TensorResidualOutput:
    r"""Residuals of a low-rank CP or Tucker model as an anomaly score.

    Parameters
    ----------
    data : Tensor, shape (t, y, x), (t, marker, xyz), (star, time) or any 2-4-D array
        Finite data (NaN/inf are rejected: fill or interpolate first).
    method : {"tucker", "cp"}
        Decomposition.
    rank : int or list of int, optional
        Fixed rank (CP) or ranks per mode (Tucker).  Default: chosen as in Notes.
    max_rank : int
        Upper bound of the automatic rank.
    energy : float
        Tucker: per mode, the smallest rank whose leading singular values of the mode
        unfolding hold this fraction of the energy.
    min_gain : float
        CP: increase the rank while the relative reconstruction error drops by more than
        this (absolute) amount.
    center : bool
        Subtract the mean over the first axis (time/star) before the decomposition (the
        mean is added back to ``reconstruction``).
    n_iter_max, tol
        ALS / HOOI iterations and tolerance (tensorly).

    Returns
    -------
    TensorResidualOutput

    Raises
    ------
    ValueError
        Empty, 1-D, non-finite input; bad method or rank.

    Notes
    -----
    Tucker: :math:`X \approx G\times_1U_1\cdots\times_NU_N` (HOOI), rank per mode
    :math:`r_n=\min\{r: \sum_{i\le r}\sigma_{n,i}^2\ge\epsilon\sum_i\sigma_{n,i}^2\}`
    from the singular values of the mode-:math:`n` unfolding.  CP:
    :math:`X\approx\sum_{k=1}^r a_k\circ b_k\circ c_k` (ALS, SVD initialisation),
    :math:`r` the smallest rank with :math:`e_r-e_{r+1}<` ``min_gain`` where
    :math:`e_r=\|X-\hat X_r\|_F/\|X\|_F`.  Score:
    :math:`s = (X-\hat X)^2/\hat\sigma^2` with
    :math:`\hat\sigma = 1.4826\,\mathrm{MAD}(X-\hat X)`.

    References
    ----------
    .. [1] T. Kolda, B. Bader, "Tensor decompositions and applications", SIAM Review 51
       (2009).
    .. [2] J. Kossaifi et al., "TensorLy: tensor learning in Python", JMLR 20 (2019).

    Examples
    --------
    >>> from components.detection._reference import gait
    >>> x = torch.as_tensor(gait(0, anomalous=5))
    >>> out = tensor_residuals(x)
    >>> int(mode_scores(out.score, 1).argmax())
    5
    """
    import tensorly as tl
    from tensorly.decomposition import parafac, tucker

    X = as_float_tensor(data, "data")
    check_nonempty(X, "data")
    check_ndim(X, "data", (2, 3, 4), axes="tyx, tmc or (star, t)")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(
            "data: expected finite values, got NaN/inf (fill or interpolate them first)"
        )
    check_in(method, "method", ("tucker", "cp"))
    check_range(energy, "energy", 0.0, 1.0)
    if int(max_rank) < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    mean = X.mean(dim=0, keepdim=True) if center else torch.zeros_like(X[:1])
    Y = X - mean
    with tl.backend_context("pytorch"):
        if method == "tucker":
            if rank is None:
                ranks = _tucker_ranks(Y, energy, int(max_rank))
            else:
                ranks = [int(rank)] * Y.ndim if isinstance(rank, int) else [int(r) for r in rank]
                if len(ranks) != Y.ndim or any(r < 1 or r > n for r, n in zip(ranks, Y.shape)):
                    raise ValueError(
                        f"rank: expected {Y.ndim} ranks within the shape {tuple(Y.shape)}, got {rank!r}"
                    )
            core, factors = tucker(Y, rank=ranks, init="svd", n_iter_max=int(n_iter_max), tol=tol)
            rec = tl.tucker_to_tensor((core, factors))
            rank_t = torch.tensor(ranks)
        else:
            norm = torch.linalg.norm(Y).clamp_min(torch.finfo(Y.dtype).tiny)
            if rank is None:
                best = None
                prev_err = None
                for r in range(1, int(max_rank) + 1):
                    cp = parafac(Y, rank=r, init="svd", n_iter_max=int(n_iter_max), tol=tol)
                    rec_r = tl.cp_to_tensor(cp)
                    err = float(torch.linalg.norm(Y - rec_r) / norm)
                    if prev_err is not None and prev_err - err < min_gain:
                        break
                    best, prev_err = (r, rec_r), err
                assert best is not None
                r_sel, rec = best
            else:
                if not isinstance(rank, int) or rank < 1:
                    raise ValueError(f"rank: expected a positive integer CP rank, got {rank!r}")
                r_sel = int(rank)
                rec = tl.cp_to_tensor(
                    parafac(Y, rank=r_sel, init="svd", n_iter_max=int(n_iter_max), tol=tol)
                )
            rank_t = torch.tensor([r_sel])
    rec = rec.to(X.dtype) + mean
    res = X - rec
    flat = res.reshape(-1)
    step = max(1, flat.numel() // (1 << 20))
    sub = flat[::step]
    sig = (1.4826 * (sub - sub.median()).abs().median()).clamp_min(
        torch.finfo(X.dtype).eps * X.abs().max().clamp_min(1.0)
    )
    return TensorResidualOutput(
        reconstruction=rec, residual=res, score=(res / sig) ** 2, rank=rank_t
    )


class TensorResiduals(Component):
    """Module twin of :func:`tensor_residuals`."""

    name = "detection.tensor"
    function = staticmethod(tensor_residuals)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        method: str = "tucker",
        rank: int | list[int] | None = None,
        max_rank: int = 8,
        energy: float = 0.999,
        min_gain: float = 0.01,
        center: bool = True,
        n_iter_max: int = 100,
        tol: float = 1e-7,
    ) -> None:
        check_in(method, "method", ("tucker", "cp"))
        check_range(energy, "energy", 0.0, 1.0)
        super().__init__(
            method=method,
            rank=rank,
            max_rank=int(max_rank),
            energy=float(energy),
            min_gain=float(min_gain),
            center=bool(center),
            n_iter_max=int(n_iter_max),
            tol=float(tol),
        )

    def forward(self, data: Tensor) -> TensorResidualOutput:
        return tensor_residuals(data, **self.config())

    def self_supervised_loss(self, inputs: Any, output: Any) -> Tensor | None:
        """Mean squared residual (the fit criterion of the low-rank model)."""
        return (output.residual**2).mean()

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        bad = np.ones((6, 4, 3))
        bad[1, 1, 1] = np.inf
        return [
            ({"data": np.ones(5)}, ValueError, "data: expected 2-D"),
            ({"data": bad}, ValueError, "finite"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.detection import _reference as ref

        out = {
            "score": TensorSchema(
                axes="tmc", description="residual energy per entry (noise variances)"
            ),
            "residual": TensorSchema(axes="tmc", units="m"),
        }
        common: dict[str, Any] = dict(
            family="detection",
            task="anomaly-detection",
            differentiable=False,
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.tensor.gait",
                    modality="biomechanics",
                    scale="macro",
                    inputs={
                        "data": TensorSchema(
                            axes="tmc",
                            units="m",
                            description="marker trajectories (t, marker, xyz)",
                        )
                    },
                    outputs=out,
                    description="Tucker residuals of motion-capture marker trajectories: flags markers or frames that do not follow the coherent gait pattern (tremor, marker swaps, dropouts)",
                    tags=("gait", "motion-capture", "tucker", "tensor", "marker"),
                    **common,
                ),
                params={"method": "tucker", "energy": 0.999},
                reference_data=lambda seed: ref.gait(seed),
                example=lambda: {"data": ref.gait(0, n_frames=60, n_markers=6, anomalous=2)},
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.tensor.lightcurves",
                    modality="light-curve",
                    scale="cosmic",
                    inputs={
                        "data": TensorSchema(
                            axes="st", description="relative flux of many stars on one time grid"
                        )
                    },
                    outputs={"score": TensorSchema(axes="st"), "residual": TensorSchema(axes="st")},
                    description="low-rank (common systematics) model of many stars' light curves; residual energy flags stars and epochs with astrophysical variability or transits",
                    tags=("systematics", "ensemble-photometry", "tensor", "light-curves"),
                    **common,
                ),
                params={"method": "tucker", "energy": 0.9, "center": False},
                reference_data=lambda seed: ref.light_curves(seed),
                example=lambda: {"data": ref.light_curves(0, n_stars=5, baseline=4.0)},
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.tensor.timelapse",
                    modality="microscopy",
                    scale="micro",
                    inputs={"data": TensorSchema(axes="tyx", description="time-lapse")},
                    outputs={
                        "score": TensorSchema(axes="tyx"),
                        "residual": TensorSchema(axes="tyx"),
                    },
                    description="CP residuals of a time-lapse: events that break the separable (pattern x gain) background",
                    tags=("time-lapse", "cp", "parafac", "tensor", "events"),
                    **common,
                ),
                params={"method": "cp", "max_rank": 4},
                reference_data=lambda seed: ref.calcium_movie(seed, shape=(30, 24, 24)),
                example=lambda: {"data": ref.calcium_movie(0, shape=(12, 10, 10))},
            ),
        ]
