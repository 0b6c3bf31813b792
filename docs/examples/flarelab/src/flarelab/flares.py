"""Stellar flare detection in light curves: running-median detrending + a soft,
differentiable version of the Chang et al. (2015) consecutive-outlier criterion.

A flare is a fast rise and exponential decay of a star's brightness lasting minutes to
hours.  The detector removes the slow (rotational, instrumental) variability with a
running median much longer than a flare, measures the residual in units of its robust
noise level, and calls a sample flaring when it belongs to a run of at least
``min_points`` consecutive samples above ``threshold`` sigma.  Every hard step has a
smooth surrogate so that a pipeline can tune the detector by gradient descent.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from components.base import Component, Declaration
from learndock.validation import as_float_tensor, check_nonempty, check_positive
from specs.semantic import SemanticSpec, TensorSchema

from flarelab.synthetic import flare_light_curves

__all__ = ["FlareDetector", "FlareResult", "detect_flares"]

_MAD_TO_SIGMA = 1.482602218505602


class FlareResult(NamedTuple):
    """Output of :func:`detect_flares` (all shaped like the input flux)."""

    score: torch.Tensor
    """Probability-like flare score in [0, 1] per sample (0 in data gaps)."""
    residual: torch.Tensor
    """Detrended relative flux ``flux / trend - 1`` (0 in data gaps)."""
    significance: torch.Tensor
    """Residual in units of the robust noise level (0 in data gaps)."""


def _running_nanmedian(x: torch.Tensor, window: int) -> torch.Tensor:
    half = window // 2
    n = x.shape[-1]
    lead = x.shape[:-1]
    flat = x.reshape(-1, 1, n)
    # replicate-pad by edge medians of half a window: no boundary artefact for flat stars
    left = torch.nanmedian(flat[..., : half + 1], dim=-1, keepdim=True).values.expand(-1, -1, half)
    right = torch.nanmedian(flat[..., n - half - 1 :], dim=-1, keepdim=True).values.expand(
        -1, -1, half
    )
    padded = torch.cat([left, flat, right], dim=-1)
    windows = padded.unfold(-1, window, 1)  # (b, 1, n, window)
    return torch.nanmedian(windows, dim=-1).values.reshape(*lead, n)


def detect_flares(
    flux: torch.Tensor,
    *,
    window: int = 181,
    threshold: float = 3.0,
    min_points: int = 3,
    sharpness: float = 4.0,
) -> FlareResult:
    """Score every sample of light curves for stellar flares.

    Parameters
    ----------
    flux : Tensor, shape (..., t)
        Flux along the last axis at a uniform cadence; NaN marks missing samples
        (gaps, flagged cadences).  Positive, finite elsewhere.
    window : int
        Length (samples, odd, >= 3) of the running median that models the quiescent
        star; should be several times the longest flare (181 samples = 6 h at TESS's
        2-min cadence).
    threshold : float
        Significance (robust sigma) above which a sample counts as elevated.
    min_points : int
        Minimum run of consecutive elevated samples (N3 of Chang et al. 2015).
    sharpness : float
        Slope of the logistic step replacing ``significance > threshold``.

    Returns
    -------
    FlareResult
        ``score``, ``residual`` and ``significance``, same shape, dtype and device as
        ``flux``.

    Raises
    ------
    TypeError
        If ``flux`` is not a real-valued array or tensor.
    ValueError
        If ``flux`` is empty, holds inf or only NaN, is shorter than ``window``, or a
        hyperparameter is out of range.

    Notes
    -----
    With the running median trend :math:`m_i` over ``window`` samples, the residual
    :math:`r_i = f_i / m_i - 1`, the robust noise :math:`\\hat\\sigma = 1.4826\\,
    \\operatorname{median}_i |r_i - \\operatorname{median}_j r_j|` and
    :math:`z_i = r_i / \\hat\\sigma`, a sample is elevated with probability
    :math:`p_i = \\sigma(k (z_i - \\tau))`.  A run of :math:`N` consecutive elevated
    samples starting at :math:`j` has probability :math:`q_j = \\prod_{i=j}^{j+N-1} p_i`,
    and the flare score of sample :math:`i` is :math:`\\max_{j \\le i < j+N} q_j` -- the
    soft version of "sample :math:`i` lies in a run of at least :math:`N` samples above
    :math:`\\tau\\hat\\sigma`" (Chang et al. 2015 use :math:`\\tau = 3`, :math:`N = 3`).

    References
    ----------
    .. [1] S.-W. Chang, Y.-I. Byun and J. D. Hartman, "Photometric study on stellar
       magnetic activity I. Flare variability of red dwarf stars in the open cluster
       M37", ApJ 814 (2015) 35.
    .. [2] J. R. A. Davenport, "The Kepler catalog of stellar flares", ApJ 829 (2016) 23.

    Examples
    --------
    >>> import torch
    >>> flux = 1 + 1e-3 * torch.randn(400, generator=torch.Generator().manual_seed(0))
    >>> flux[200:206] += torch.tensor([0.02, 0.015, 0.01, 0.007, 0.005, 0.003])
    >>> res = detect_flares(flux, window=61)
    >>> bool(res.score[200:203].min() > 0.9), bool(res.score[:150].max() < 0.1)
    (True, True)
    """
    x = as_float_tensor(flux, "flux")
    check_nonempty(x, "flux")
    if x.ndim < 1:
        raise ValueError("flux: expected at least one axis (t), got a 0-d tensor")
    if torch.isinf(x).any():
        raise ValueError(
            f"flux: expected finite values or NaN for gaps, got {int(torch.isinf(x).sum())} inf"
        )
    if not isinstance(window, int | np.integer) or window < 3 or window % 2 == 0:
        raise ValueError(f"window: expected an odd integer >= 3, got {window!r}")
    if not isinstance(min_points, int | np.integer) or min_points < 1:
        raise ValueError(f"min_points: expected an integer >= 1, got {min_points!r}")
    check_positive(threshold, "threshold")
    check_positive(sharpness, "sharpness")
    n = x.shape[-1]
    if n < window:
        raise ValueError(f"flux: expected at least window={window} samples along t, got {n}")
    valid = ~torch.isnan(x)
    if not valid.reshape(-1, n).any(dim=-1).all():
        raise ValueError("flux: a light curve holds only NaN")
    trend = _running_nanmedian(x, int(window))
    level = torch.nanmedian(x, dim=-1, keepdim=True).values.expand_as(trend)
    trend = torch.where(torch.isnan(trend), level, trend)  # gaps longer than a window
    filled = torch.where(valid, x, trend)  # NaN-free and gradient-safe
    resid = filled / trend - 1
    stats = torch.where(valid, resid, torch.full_like(resid, float("nan")))
    centre = torch.nanmedian(stats, dim=-1, keepdim=True).values
    sigma = _MAD_TO_SIGMA * torch.nanmedian((stats - centre).abs(), dim=-1, keepdim=True).values
    sigma = torch.clamp(sigma, min=torch.finfo(x.dtype).eps)
    z = torch.where(valid, resid / sigma, torch.zeros_like(resid))
    p = torch.where(valid, torch.sigmoid(sharpness * (z - threshold)), torch.zeros_like(z))
    k = int(min_points)
    if k > 1:
        flat = p.reshape(-1, 1, n)
        logp = torch.log(torch.clamp(flat, min=torch.finfo(x.dtype).tiny))
        runs = torch.exp(F.avg_pool1d(logp, k, stride=1) * k)  # (b, 1, n-k+1): prod over each run
        runs = F.pad(runs, (k - 1, k - 1))
        score = F.max_pool1d(runs, k, stride=1).reshape(p.shape)
    else:
        score = p
    zero = torch.zeros_like(resid)
    return FlareResult(
        score=torch.where(valid, score, zero),
        residual=torch.where(valid, resid, zero),
        significance=z,
    )


class FlareDetector(Component):
    """Module twin of :func:`detect_flares`.

    Parameters
    ----------
    window, threshold, min_points, sharpness
        See :func:`detect_flares`.

    Raises
    ------
    ValueError
        For out-of-range hyperparameters (checked at construction).
    """

    name = "flarelab.flares"
    function = staticmethod(detect_flares)
    differentiable = True
    footprint = 90  # half the default running-median window

    def __init__(
        self,
        *,
        window: int = 181,
        threshold: float = 3.0,
        min_points: int = 3,
        sharpness: float = 4.0,
    ) -> None:
        if not isinstance(window, int) or window < 3 or window % 2 == 0:
            raise ValueError(f"window: expected an odd integer >= 3, got {window!r}")
        if not isinstance(min_points, int) or min_points < 1:
            raise ValueError(f"min_points: expected an integer >= 1, got {min_points!r}")
        check_positive(threshold, "threshold")
        check_positive(sharpness, "sharpness")
        super().__init__(
            window=window,
            threshold=float(threshold),
            min_points=min_points,
            sharpness=float(sharpness),
        )

    def forward(self, flux: torch.Tensor) -> FlareResult:
        return detect_flares(flux, **self.config())

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            (
                {"flux": np.full((2, 300), np.nan, dtype=np.float32)},
                ValueError,
                "flux: a light curve holds only NaN",
            ),
            ({"flux": np.ones(50, dtype=np.float32)}, ValueError, "flux: expected at least window"),
            ({"flux": np.array([1.0, np.inf] * 200)}, ValueError, "inf"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        spec = SemanticSpec(
            name="flarelab.flares.tess-2min",
            version="1.0.0",
            family="detection",
            task="flare-detection",
            modality="light-curve",
            scale="cosmic",
            inputs={"flux": TensorSchema(axes="*t", dtype="any", description="flux, NaN in gaps")},
            outputs={
                "score": TensorSchema(axes="*t", dtype="any", description="flare score in [0, 1]"),
                "residual": TensorSchema(axes="*t", dtype="any", description="flux / trend - 1"),
                "significance": TensorSchema(
                    axes="*t", dtype="any", description="residual / sigma"
                ),
            },
            differentiable=True,
            description=(
                "Stellar flare detector for TESS 2-min light curves of M dwarfs: 6-h running "
                "median, 3 sigma, 3 consecutive points (Chang et al. 2015), soft surrogate"
            ),
            tags=("flares", "m-dwarfs", "tess", "stellar-activity"),
            authors=("Flare Lab",),
        )
        return [
            Declaration(
                spec=spec,
                params={"window": 181, "threshold": 3.0, "min_points": 3, "sharpness": 4.0},
                reference_data=_reference_data,
                example=_example,
            )
        ]


def _reference_data(seed: int) -> Any:
    d = flare_light_curves(seed, n_stars=6, n_samples=2048)
    return {"time": d["time"], "flux": d["flux"]}


def _example() -> dict[str, np.ndarray]:
    d = flare_light_curves(3, n_stars=2, n_samples=400, n_flares=1)
    return {"flux": d["flux"]}
