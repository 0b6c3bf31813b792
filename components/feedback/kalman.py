"""Kalman filtering, Rauch-Tung-Striebel smoothing and gap filling of marker trajectories.

Motion-capture markers drop out when they are occluded.  This module bridges those gaps
with a kinematic state-space model (constant velocity or constant acceleration, driven
by continuous white noise), batched over every (trial, marker, coordinate) series at
once, and reports the standard deviation of every smoothed or filled sample.  The noise
levels ``q`` (process spectral density) and ``r`` (measurement variance) can be fitted
by maximising the marginal likelihood through autograd; long gaps can borrow strength
from the other markers through a low-rank (PCA) model of the whole body.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from components._validation import as_float_tensor, check_in, check_nonempty, check_positive
from components.base import Component, Declaration
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "KalmanSmoother",
    "KalmanSmootherConfig",
    "TrajectoryEstimate",
    "fit_noise",
    "kalman_filter",
    "low_rank_fill",
    "rts_smooth",
    "state_space",
]

_MODELS = ("constant_velocity", "constant_acceleration")


@dataclasses.dataclass
class TrajectoryEstimate:
    """Smoothed trajectories.

    Attributes
    ----------
    positions : Tensor
        ``(*batch, t, marker, c)`` smoothed positions, every gap filled.
    std : Tensor
        Same shape: posterior standard deviation of each position.
    log_likelihood : Tensor
        Scalar marginal log-likelihood of the observed samples under the model.
    """

    positions: torch.Tensor
    std: torch.Tensor
    log_likelihood: torch.Tensor

    def mean(self) -> torch.Tensor:
        return self.positions

    def uncertainty(self) -> torch.Tensor:
        return self.std


def state_space(
    dt: torch.Tensor, *, model: str = "constant_velocity"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transition matrices ``F`` and unit-spectral-density process covariances ``Q``.

    Parameters
    ----------
    dt : Tensor
        ``(k,)`` time steps (s).
    model : {"constant_velocity", "constant_acceleration"}
        Kinematic model; the state is (position, velocity[, acceleration]).

    Returns
    -------
    F, Q : Tensor
        ``(k, d, d)`` each, ``d = 2`` or ``3``.  Multiply ``Q`` by the spectral density
        ``q`` (units position^2 / s^(2d-1)).

    Notes
    -----
    Continuous white noise on the highest derivative, integrated exactly over ``dt``
    (Bar-Shalom et al. 2001, sec. 6.2): for constant velocity
    ``Q = [[dt^3/3, dt^2/2], [dt^2/2, dt]]``.

    Examples
    --------
    >>> F, Q = state_space(torch.tensor([0.5]))
    >>> F[0].tolist()
    [[1.0, 0.5], [0.0, 1.0]]
    """
    check_in(model, "model", _MODELS)
    dt = dt.reshape(-1, 1, 1)
    one = torch.ones_like(dt)
    zero = torch.zeros_like(dt)
    if model == "constant_velocity":
        F = torch.cat([torch.cat([one, dt], -1), torch.cat([zero, one], -1)], -2)
        Q = torch.cat([torch.cat([dt**3 / 3, dt**2 / 2], -1), torch.cat([dt**2 / 2, dt], -1)], -2)
    else:
        F = torch.cat(
            [
                torch.cat([one, dt, dt**2 / 2], -1),
                torch.cat([zero, one, dt], -1),
                torch.cat([zero, zero, one], -1),
            ],
            -2,
        )
        Q = torch.cat(
            [
                torch.cat([dt**5 / 20, dt**4 / 8, dt**3 / 6], -1),
                torch.cat([dt**4 / 8, dt**3 / 3, dt**2 / 2], -1),
                torch.cat([dt**3 / 6, dt**2 / 2, dt], -1),
            ],
            -2,
        )
    return F, Q


def _as_series(positions: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(*batch, t, marker, c) -> (t, B) with B = batch * marker * c."""
    shape = tuple(positions.shape)
    t = shape[-3]
    x = positions.movedim(-3, 0).reshape(t, -1)
    return x, shape


def _from_series(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    t = shape[-3]
    rest = shape[:-3] + shape[-2:]
    return x.reshape((t, *rest)).movedim(0, -3)


def _validate(
    positions: Any, rate: float | None, time: Any, mask: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pos = as_float_tensor(positions, "positions")
    check_nonempty(pos, "positions")
    if pos.ndim < 3:
        raise ValueError(
            f"positions: expected (*batch, t, marker, c) with at least 3 axes, got shape {tuple(pos.shape)}"
        )
    t = pos.shape[-3]
    if time is None:
        if rate is None:
            raise ValueError("rate: expected a sampling rate in Hz (or time=...), got None")
        check_positive(rate, "rate")
        dt = pos.new_full((max(t - 1, 0),), 1.0 / float(rate))
    else:
        tt = as_float_tensor(time, "time", dtype=pos.dtype, device=pos.device, allow_nan=False)
        if tt.ndim != 1 or tt.shape[0] != t:
            raise ValueError(
                f"time: expected a 1-D array of length {t} (the t axis of positions), got shape {tuple(tt.shape)}"
            )
        dt = tt.diff()
        if (dt <= 0).any():
            i = int(torch.nonzero(dt <= 0)[0])
            raise ValueError(
                f"time: expected strictly increasing time stamps, got time[{i}]={float(tt[i])!r} >= time[{i + 1}]={float(tt[i + 1])!r}"
            )
    obs = torch.isfinite(pos)
    if mask is not None:
        m = torch.as_tensor(mask, device=pos.device)
        if m.dtype != torch.bool:
            raise TypeError(
                f"mask: expected a boolean array (True = observed), got dtype {m.dtype}"
            )
        if tuple(m.shape) != tuple(pos.shape):
            raise ValueError(
                f"mask: expected the shape of positions {tuple(pos.shape)}, got {tuple(m.shape)}"
            )
        obs = obs & m
    return pos, dt, obs


def _check_series_observed(obs_s: torch.Tensor, shape: tuple[int, ...]) -> None:
    empty = ~obs_s.any(0)
    if bool(empty.any()):
        grid = empty.reshape(shape[:-3] + shape[-2:]).cpu()
        idx = torch.nonzero(grid)[:5].tolist()
        where = ", ".join(str(tuple(i)) for i in idx)
        raise ValueError(
            f"positions: expected at least one finite sample per (marker, coordinate) series, got "
            f"{int(empty.sum())} all-NaN series, e.g. at (*batch, marker, coord) = {where}"
        )


def kalman_filter(
    z: torch.Tensor,
    obs: torch.Tensor,
    F: torch.Tensor,
    Q: torch.Tensor,
    q: torch.Tensor | float,
    r: torch.Tensor | float,
    x0: torch.Tensor,
    P0: torch.Tensor,
    *,
    smooth: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched Kalman filter (+ RTS smoother) for scalar position measurements.

    Parameters
    ----------
    z : Tensor
        ``(t, B)`` measurements (values where ``obs`` is False are ignored).
    obs : Tensor
        ``(t, B)`` bool, True where observed.
    F, Q : Tensor
        ``(t-1, d, d)`` transitions and unit process covariances from :func:`state_space`.
    q : float or Tensor
        Process spectral density, scalar or ``(B,)``.
    r : float or Tensor
        Measurement variance: scalar, ``(B,)`` or ``(t, B)``.
    x0, P0 : Tensor
        ``(B, d)`` prior mean and ``(B, d, d)`` prior covariance of the state at ``t = 0``.
    smooth : bool
        Run the RTS backward pass.

    Returns
    -------
    mean : Tensor
        ``(t, B, d)`` filtered or smoothed state means.
    cov : Tensor
        ``(t, B, d, d)`` their covariances.
    loglik : Tensor
        Scalar marginal log-likelihood of the observed samples.

    Notes
    -----
    Prediction ``x- = F x``, ``P- = F P F^T + q Q``; update with ``H = e_0``:
    ``S = P-_00 + r``, ``K = P-_{:,0} / S``, ``x = x- + K (z - x-_0)``,
    ``P = P- - K P-_{0,:}`` (masked where not observed).  Smoother (Rauch, Tung and
    Striebel 1965): ``G_k = P_k F^T (P-_{k+1})^{-1}``,
    ``x^s_k = x_k + G_k (x^s_{k+1} - x-_{k+1})``,
    ``P^s_k = P_k + G_k (P^s_{k+1} - P-_{k+1}) G_k^T``.
    The log-likelihood is the prediction-error decomposition
    ``sum_k -1/2 (log 2 pi S_k + e_k^2 / S_k)`` over observed samples.

    The recursions always run in float64 and the results are cast back to the dtype
    of ``z``.  With the diffuse default prior (initial velocity variance ~1e10 mm^2/s^2
    for gait data in mm at 100 Hz) the second update computes
    ``p11 - p01^2 / S`` with both terms ~1e10 and a true difference ~1e3: in float32
    that cancels to a singular (or indefinite) covariance and the smoother's
    ``(P-_{k+1})^{-1}`` becomes ``inf``/NaN.  The filtered covariance is further kept
    symmetric positive semi-definite (the update written as
    ``P00 <- P00 (r + (1 - m) P00) / S``, no subtraction; a determinant floor of
    ``1e-12 P00 P11`` in the smoother's 2x2 inverse; symmetrisation in the general
    form).
    """
    out_dtype = z.dtype
    if z.dtype != torch.float64:
        z, F, Q, x0, P0 = (v.to(torch.float64) for v in (z, F, Q, x0, P0))
        if isinstance(q, torch.Tensor):
            q = q.to(torch.float64)
        if isinstance(r, torch.Tensor):
            r = r.to(torch.float64)
        mean, cov, ll = kalman_filter(z, obs, F, Q, q, r, x0, P0, smooth=smooth)
        return mean.to(out_dtype), cov.to(out_dtype), ll.to(out_dtype)
    t, _B = z.shape
    m = obs.to(z.dtype)
    zz = torch.where(obs, z, torch.zeros_like(z))
    r_t = torch.as_tensor(r, dtype=z.dtype, device=z.device)
    q_t = torch.as_tensor(q, dtype=z.dtype, device=z.device)
    if F.shape[-1] == 2 and _is_cv(F):
        tensors = (zz, q_t, r_t, x0, P0)
        needs_grad = torch.is_grad_enabled() and any(v.requires_grad for v in tensors)
        if z.device.type == "cpu" and not needs_grad:
            # Same element-wise recursions on NumPy views: ~10x less per-op overhead
            # than torch dispatch for the (B,)-sized operations of a long time loop.
            a_z, a_m, a_q, a_r, a_x0, a_P0 = (v.detach().numpy() for v in (zz, m, q_t, r_t, x0, P0))
            mean, cov, ll = _kf_cv(
                a_z, a_m, F[:, 0, 1].tolist(), a_q, a_r, a_x0, a_P0, smooth, xp=np
            )
            return torch.from_numpy(mean), torch.from_numpy(cov), torch.as_tensor(ll, dtype=z.dtype)
        return _kf_cv(zz, m, F[:, 0, 1].tolist(), q_t, r_t, x0, P0, smooth)
    if q_t.ndim == 1:
        q_t = q_t[:, None, None]
    Qs = q_t * Q[:, None] if Q.shape[0] else Q  # (t-1, B or 1, d, d)
    x, P = x0, P0
    xf, Pf, xp, Pp = [], [], [x0], [P0]
    Ss: list[torch.Tensor] = []
    es: list[torch.Tensor] = []
    log2pi = math.log(2 * math.pi)
    for k in range(t):
        if k > 0:
            Fk = F[k - 1]
            x = x @ Fk.T
            P = Fk @ P @ Fk.T + Qs[k - 1]
            xp.append(x)
            Pp.append(P)
        rk = r_t[k] if r_t.ndim == 2 else r_t
        S = P[:, 0, 0] + rk
        PH = P[:, :, 0]
        e = zz[k] - x[:, 0]
        mk = m[k]
        K = PH * (mk / S)[:, None]
        x = x + K * e[:, None]
        P = P - K[:, :, None] * PH[:, None, :]
        P = 0.5 * (P + P.transpose(-1, -2))
        Ss.append(S)
        es.append(e * e / S)
        xf.append(x)
        Pf.append(P)
    ll = -0.5 * (m * (log2pi + torch.log(torch.stack(Ss)) + torch.stack(es))).sum()
    if not smooth or t == 1:
        return torch.stack(xf), torch.stack(Pf), ll
    xs, Ps = [xf[-1]], [Pf[-1]]
    xs_next, Ps_next = xf[-1], Pf[-1]
    for k in range(t - 2, -1, -1):
        # G^T = Pp^{-1} F P  (Pp symmetric)
        Gt = torch.linalg.solve(Pp[k + 1], F[k] @ Pf[k])
        G = Gt.transpose(-1, -2)
        xs_next = xf[k] + (G @ (xs_next - xp[k + 1])[..., None])[..., 0]
        Ps_next = Pf[k] + G @ (Ps_next - Pp[k + 1]) @ Gt
        xs.append(xs_next)
        Ps.append(Ps_next)
    return torch.stack(xs[::-1]), torch.stack(Ps[::-1]), ll


def _is_cv(F: torch.Tensor) -> bool:
    return bool((F[:, 0, 0] == 1).all() and (F[:, 1, 0] == 0).all() and (F[:, 1, 1] == 1).all())


def _kf_cv(
    zz: Any,
    m: Any,
    dts: list[float],
    q: Any,
    r: Any,
    x0: Any,
    P0: Any,
    smooth: bool,
    xp: Any = torch,
) -> tuple[Any, Any, Any]:
    """Constant-velocity filter/smoother written element-wise on (B,) vectors.

    Same recursions as the matrix form in :func:`kalman_filter`, about 6x fewer kernel
    launches: the 2x2 covariance is carried as its three distinct entries.  ``xp`` is
    the array namespace (torch, or NumPy for the gradient-free CPU path); only
    arithmetic operators, ``stack`` and ``log`` are used."""
    t = zz.shape[0]
    log2pi = math.log(2 * math.pi)
    a, v = x0[:, 0], x0[:, 1]
    p00, p01, p11 = P0[:, 0, 0], P0[:, 0, 1], P0[:, 1, 1]
    Ss: list[torch.Tensor] = []
    es: list[torch.Tensor] = []
    fa, fv, f00, f01, f11 = [], [], [], [], []
    pa, pv, q00, q01, q11 = [a], [v], [p00], [p01], [p11]
    r2 = r.ndim == 2
    for k in range(t):
        if k > 0:
            h = dts[k - 1]
            a = a + h * v
            p00 = p00 + h * (2 * p01 + h * p11) + q * (h**3 / 3)
            p01 = p01 + h * p11 + q * (h**2 / 2)
            p11 = p11 + q * h
            pa.append(a)
            pv.append(v)
            q00.append(p00)
            q01.append(p01)
            q11.append(p11)
        rk = r[k] if r2 else r
        S = p00 + rk
        e = zz[k] - a
        w = m[k] / S
        k0, k1 = p00 * w, p01 * w
        a = a + k0 * e
        v = v + k1 * e
        # 1 - m p00 / S = (r + (1 - m) p00) / S: no cancellation when p00 >> r
        shrink = (rk + (1 - m[k]) * p00) / S
        p11 = p11 - k1 * p01
        p01 = p01 * shrink
        p00 = p00 * shrink
        Ss.append(S)
        es.append(e * e / S)
        fa.append(a)
        fv.append(v)
        f00.append(p00)
        f01.append(p01)
        f11.append(p11)
    ll = -0.5 * (m * (log2pi + xp.log(xp.stack(Ss)) + xp.stack(es))).sum()
    if smooth and t > 1:
        sa, sv, s00, s01, s11 = a, v, p00, p01, p11
        oa, ov, o00, o01, o11 = [sa], [sv], [s00], [s01], [s11]
        for k in range(t - 2, -1, -1):
            h = dts[k]
            # C = P_k F^T ; G = C Pp^{-1}
            c00 = f00[k] + h * f01[k]
            c01 = f01[k]
            c10 = f01[k] + h * f11[k]
            c11 = f11[k]
            b00, b01, b11 = q00[k + 1], q01[k + 1], q11[k + 1]
            # floor: a (numerically) singular prediction (q = 0 after exact updates)
            det = xp.maximum(b00 * b11 - b01 * b01, 1e-12 * b00 * b11)
            i00, i01, i11 = b11 / det, -b01 / det, b00 / det
            g00 = c00 * i00 + c01 * i01
            g01 = c00 * i01 + c01 * i11
            g10 = c10 * i00 + c11 * i01
            g11 = c10 * i01 + c11 * i11
            da, dv = sa - pa[k + 1], sv - pv[k + 1]
            d00, d01, d11 = s00 - b00, s01 - b01, s11 - b11
            sa = fa[k] + g00 * da + g01 * dv
            sv = fv[k] + g10 * da + g11 * dv
            # G D G^T
            e00 = g00 * d00 + g01 * d01
            e01 = g00 * d01 + g01 * d11
            e10 = g10 * d00 + g11 * d01
            e11 = g10 * d01 + g11 * d11
            s00 = f00[k] + e00 * g00 + e01 * g01
            s01 = f01[k] + e00 * g10 + e01 * g11
            s11 = f11[k] + e10 * g10 + e11 * g11
            oa.append(sa)
            ov.append(sv)
            o00.append(s00)
            o01.append(s01)
            o11.append(s11)
        fa, fv, f00, f01, f11 = oa[::-1], ov[::-1], o00[::-1], o01[::-1], o11[::-1]
    mean = xp.stack([xp.stack(fa), xp.stack(fv)], -1)
    P00, P01, P11 = xp.stack(f00), xp.stack(f01), xp.stack(f11)
    cov = xp.stack([xp.stack([P00, P01], -1), xp.stack([P01, P11], -1)], -2)
    return mean, cov, ll


def _prior(
    z: torch.Tensor,
    obs: torch.Tensor,
    dt: torch.Tensor,
    r: torch.Tensor,
    d: int,
    initial_velocity_std: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    _t, B = z.shape
    first = obs.to(torch.int64).argmax(0)
    zz = torch.where(obs, z, torch.zeros_like(z))
    x0 = z.new_zeros(B, d)
    x0 = x0 + torch.nn.functional.pad(zz.gather(0, first[None])[0][:, None], (0, d - 1))
    if initial_velocity_std is None:
        n = obs.sum(0).clamp_min(1).to(z.dtype)
        mu = zz.sum(0) / n
        var = (torch.where(obs, z - mu, torch.zeros_like(z)) ** 2).sum(0) / n
        step = float(dt.mean()) if dt.numel() else 1.0
        v0 = torch.sqrt(var + 1e-12) / step
    else:
        v0 = z.new_full((B,), float(initial_velocity_std))
        step = float(dt.mean()) if dt.numel() else 1.0
    rr = r if r.ndim <= 1 else r[0]
    diag = [rr.expand(B), v0**2]
    if d == 3:
        diag.append((v0 / step) ** 2)
    P0 = torch.diag_embed(torch.stack(diag, -1))
    return x0, P0


def low_rank_fill(
    positions: torch.Tensor, observed: torch.Tensor, *, rank: int = 6, iterations: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill missing samples from a low-rank (PCA) model across markers.

    Parameters
    ----------
    positions : Tensor
        ``(t, S)``: one column per (marker, coordinate) of one trial; missing values are
        used as the initial guess (e.g. an RTS fill).
    observed : Tensor
        ``(t, S)`` bool.
    rank : int
        Number of principal components.
    iterations : int
        Iterations of the SVD imputation.

    Returns
    -------
    filled : Tensor
        ``(t, S)`` with missing entries replaced by the low-rank reconstruction.
    residual_var : Tensor
        ``(S,)`` variance of the low-rank model on the observed entries of each column.

    Notes
    -----
    Iterative SVD imputation (Troyanskaya et al. 2001; for markers, Gløersen and Federolf
    2016): alternate a rank-``k`` truncated SVD of the column-centred matrix with the
    replacement of the missing entries by its reconstruction.
    """
    X = positions
    mu = torch.where(observed, X, torch.zeros_like(X)).sum(0) / observed.sum(0).clamp_min(1)
    sd = (
        torch.sqrt(
            (torch.where(observed, X - mu, torch.zeros_like(X)) ** 2).sum(0)
            / observed.sum(0).clamp_min(1)
        )
        + 1e-9
    )
    Y = (X - mu) / sd
    k = max(1, min(rank, min(Y.shape) - 1))
    low = Y
    for _ in range(iterations):
        U, s, Vh = torch.linalg.svd(Y, full_matrices=False)
        low = (U[:, :k] * s[:k]) @ Vh[:k]
        Y = torch.where(observed, Y, low)
    resid = torch.where(observed, (Y - low) ** 2, torch.zeros_like(Y)).sum(0) / observed.sum(
        0
    ).clamp_min(1)
    return Y * sd + mu, resid * sd**2


def _gap_lengths(obs: torch.Tensor) -> torch.Tensor:
    """(t, B) bool -> (t, B) length of the run of missing samples each missing sample is in."""
    miss = (~obs).cpu().numpy()
    out = np.zeros(miss.shape, dtype=np.int64)
    for b in np.nonzero(miss.any(0))[0]:
        col = miss[:, b]
        edges = np.diff(np.concatenate([[0], col.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        for s, e in zip(starts, ends):
            out[s:e, b] = e - s
    return torch.from_numpy(out).to(obs.device)


def rts_smooth(
    positions: torch.Tensor,
    *,
    rate: float | None = None,
    q: float | torch.Tensor = 1e4,
    r: float | torch.Tensor = 1.0,
    model: str = "constant_velocity",
    mask: torch.Tensor | None = None,
    time: torch.Tensor | None = None,
    coupling_rank: int = 0,
    long_gap: int = 10,
    initial_velocity_std: float | None = None,
) -> TrajectoryEstimate:
    """Smooth marker trajectories and fill every gap, with uncertainties.

    Parameters
    ----------
    positions : Tensor
        ``(*batch, t, marker, c)`` positions (e.g. mm); NaN where the marker was not seen.
        Leading axes are trials.
    rate : float
        Sampling rate (Hz).  Ignored when ``time`` is given.
    q : float or Tensor
        Process-noise spectral density of the white-noise acceleration (CV model, units
        mm^2/s^3) or jerk (CA model, mm^2/s^5); a scalar or one value per series.
    r : float or Tensor
        Measurement-noise variance (mm^2).
    model : {"constant_velocity", "constant_acceleration"}
        Kinematic model.
    mask : Tensor, optional
        Boolean, shape of ``positions``: False marks samples to ignore in addition to NaNs
        (e.g. marker swaps flagged upstream).
    time : Tensor, optional
        ``(t,)`` strictly increasing time stamps (s) for irregular sampling.
    coupling_rank : int
        If > 0, gaps of at least ``long_gap`` frames are first filled from a rank
        ``coupling_rank`` PCA model of all markers of the trial; these fills enter the
        smoother as measurements whose variance is the PCA residual variance plus ``r``.
    long_gap : int
        Minimum gap length (frames) for the low-rank coupling.
    initial_velocity_std : float, optional
        Prior standard deviation of the initial velocity (default: the series' standard
        deviation per second, a diffuse prior).

    Returns
    -------
    TrajectoryEstimate
        ``positions`` and ``std`` of the input shape, and the marginal ``log_likelihood``.

    Raises
    ------
    ValueError
        If a series is all NaN, ``q`` or ``r`` is negative, time stamps do not increase,
        or shapes disagree.

    Notes
    -----
    Each (trial, marker, coordinate) series is an independent linear-Gaussian state-space
    model ``x_k = F x_{k-1} + w``, ``w ~ N(0, q Q(dt))``, ``z_k = x_k[0] + v``,
    ``v ~ N(0, r)``; see :func:`kalman_filter`.  The standard deviation of a sample inside
    a gap grows like ``sqrt(q) * gap^(3/2)`` (CV) from its ends.

    References
    ----------
    H. E. Rauch, F. Tung, C. T. Striebel, "Maximum likelihood estimates of linear dynamic
    systems", AIAA J. 3 (1965).  Ø. Gløersen, P. Federolf, "Predicting missing marker
    trajectories in human motion data using marker intercorrelations", PLoS ONE (2016).

    Examples
    --------
    >>> t = torch.linspace(0, 1, 101)
    >>> pos = torch.stack([torch.sin(6 * t), torch.cos(6 * t), t], -1)[:, None, :]  # (t, 1, 3)
    >>> pos[40:50] = float("nan")
    >>> est = rts_smooth(pos, rate=100.0, q=50.0, r=1e-6)
    >>> bool(torch.isfinite(est.positions).all()), bool((est.std[45] > est.std[20]).all())
    (True, True)
    >>> float((est.positions[45, 0, 0] - torch.sin(6 * t[45])).abs()) < 1e-2
    True
    """
    pos, dt, obs = _validate(positions, rate, time, mask)
    check_in(model, "model", _MODELS)
    for name, v in (("q", q), ("r", r)):
        vt = torch.as_tensor(v)
        if vt.numel() == 0 or bool((vt < 0).any()) or not bool(torch.isfinite(vt).all()):
            raise ValueError(f"{name}: expected a non-negative finite noise level, got {v!r}"[:300])
    if not isinstance(coupling_rank, int) or coupling_rank < 0:
        raise ValueError(f"coupling_rank: expected a non-negative integer, got {coupling_rank!r}")
    z, shape = _as_series(pos)
    obs_s, _ = _as_series(obs)
    _check_series_observed(obs_s, shape)
    d = 2 if model == "constant_velocity" else 3
    F, Q = state_space(dt, model=model)
    q_t = (
        q if isinstance(q, torch.Tensor) else torch.tensor(float(q), dtype=z.dtype, device=z.device)
    )
    r_t = (
        r if isinstance(r, torch.Tensor) else torch.tensor(float(r), dtype=z.dtype, device=z.device)
    )
    q_t, r_t = q_t.to(z), r_t.to(z)
    x0, P0 = _prior(z, obs_s, dt, r_t, d, initial_velocity_std)
    mean, cov, ll = kalman_filter(z, obs_s, F, Q, q_t, r_t, x0, P0)
    if coupling_rank > 0:
        gaps = _gap_lengths(obs_s) >= long_gap
        if bool(gaps.any()):
            t = shape[-3]
            n_trials = int(np.prod(shape[:-3])) if len(shape) > 3 else 1
            S = shape[-2] * shape[-1]
            # series order is (batch..., marker, c): one trial = S consecutive columns
            init = torch.where(obs_s, z, mean[..., 0])
            fills, rvars = [], []
            for b in range(n_trials):
                cols = slice(b * S, (b + 1) * S)
                f, rv = low_rank_fill(init[:, cols], obs_s[:, cols], rank=coupling_rank)
                fills.append(f)
                rvars.append(rv)
            fill = torch.cat(fills, 1)
            rvar = torch.cat(rvars, 0)
            z2 = torch.where(gaps, fill, z)
            obs2 = obs_s | gaps
            r2 = torch.where(
                gaps,
                r_t + rvar[None, :].expand(t, -1),
                r_t.expand(t, z.shape[1]) if r_t.ndim <= 1 else r_t,
            )
            x0, P0 = _prior(z2, obs2, dt, r_t, d, initial_velocity_std)
            mean, cov, _ = kalman_filter(z2, obs2, F, Q, q_t, r2, x0, P0)
    sm = _from_series(mean[..., 0], shape)
    sd = _from_series(cov[..., 0, 0].clamp_min(0).sqrt(), shape)
    return TrajectoryEstimate(positions=sm, std=sd, log_likelihood=ll)


def fit_noise(
    positions: torch.Tensor,
    *,
    rate: float | None = None,
    model: str = "constant_velocity",
    mask: torch.Tensor | None = None,
    time: torch.Tensor | None = None,
    q0: float | None = None,
    r0: float | None = None,
    iterations: int = 50,
) -> tuple[float, float]:
    """Fit ``q`` and ``r`` by maximising the marginal likelihood (autograd + L-BFGS).

    Parameters
    ----------
    positions, rate, model, mask, time
        As in :func:`rts_smooth`.
    q0, r0 : float, optional
        Starting values (default: from the variance of second differences).
    iterations : int
        Maximum L-BFGS iterations.

    Returns
    -------
    q, r : float

    Notes
    -----
    Maximises ``log p(z | q, r)`` (prediction-error decomposition of the Kalman filter,
    see :func:`kalman_filter`) over ``log q`` and ``log r``; the parameters are shared by
    every series.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> v = torch.cumsum(torch.randn(400, 4, 3, generator=g, dtype=torch.float64) * 0.1, 0)
    >>> pos = torch.cumsum(v, 0) * 0.01 + 0.05 * torch.randn(400, 4, 3, generator=g, dtype=torch.float64)
    >>> q, r = fit_noise(pos, rate=100.0)
    >>> 0.8 < r / 0.05**2 < 1.25
    True
    """
    pos, dt, obs = _validate(positions, rate, time, mask)
    z, shape = _as_series(pos)
    obs_s, _ = _as_series(obs)
    _check_series_observed(obs_s, shape)
    d = 2 if model == "constant_velocity" else 3
    zd = z.detach().to(torch.float64)
    dt64 = dt.to(torch.float64)
    F, Q = state_space(dt64, model=model)
    h = float(dt64.mean()) if dt64.numel() else 1.0
    if q0 is None or r0 is None:
        d2 = torch.where(
            obs_s[2:] & obs_s[1:-1] & obs_s[:-2], zd[2:] - 2 * zd[1:-1] + zd[:-2], torch.nan
        )
        v2 = float(torch.nanmean(d2**2)) if bool(torch.isfinite(d2).any()) else 1.0
        r0 = v2 / 12 if r0 is None else r0
        q0 = v2 / (2 * h ** (2 * d - 1)) if q0 is None else q0
    check_positive(q0, "q0")
    check_positive(r0, "r0")
    lq = torch.tensor(math.log(q0), dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(math.log(r0), dtype=torch.float64, requires_grad=True)
    n = max(int(obs_s.sum()), 1)
    opt = torch.optim.LBFGS(
        [lq, lr],
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        q, r = lq.exp(), lr.exp()
        x0, P0 = _prior(zd, obs_s, dt64, r, d, None)
        _, _, ll = kalman_filter(zd, obs_s, F, Q, q, r, x0, P0, smooth=False)
        loss = -ll / n
        loss.backward()
        return loss

    opt.step(closure)
    return float(lq.detach().exp()), float(lr.detach().exp())


class KalmanSmoother(Component):
    """RTS smoother and gap filler for ``(*batch, t, marker, c)`` marker trajectories.

    ``q`` and ``r`` are stored as learnable log-parameters so that a pipeline can refine
    them by the negative marginal log-likelihood (:meth:`self_supervised_loss`).

    Examples
    --------
    >>> m = KalmanSmoother(rate=100.0, q=1e3, r=1.0)
    >>> out = m(torch.zeros(20, 2, 3))
    >>> tuple(out.positions.shape)
    (20, 2, 3)
    """

    name = "feedback.kalman"
    function = staticmethod(rts_smooth)
    differentiable = True
    footprint = 0

    def __init__(
        self,
        *,
        rate: float = 100.0,
        q: float = 1e4,
        r: float = 1.0,
        model: str = "constant_velocity",
        coupling_rank: int = 0,
        long_gap: int = 10,
        initial_velocity_std: float | None = None,
    ) -> None:
        check_positive(rate, "rate")
        check_positive(q, "q")
        check_positive(r, "r")
        check_in(model, "model", _MODELS)
        super().__init__(
            rate=rate,
            q=q,
            r=r,
            model=model,
            coupling_rank=coupling_rank,
            long_gap=long_gap,
            initial_velocity_std=initial_velocity_std,
        )
        self.log_q = nn.Parameter(torch.tensor(math.log(q), dtype=torch.float64))
        self.log_r = nn.Parameter(torch.tensor(math.log(r), dtype=torch.float64))

    def forward(self, positions: torch.Tensor) -> TrajectoryEstimate:
        c = self._config
        return rts_smooth(
            positions,
            rate=c["rate"],
            q=self.log_q.exp(),
            r=self.log_r.exp(),
            model=c["model"],
            coupling_rank=c["coupling_rank"],
            long_gap=c["long_gap"],
            initial_velocity_std=c["initial_velocity_std"],
        )

    def self_supervised_loss(self, inputs: Mapping[str, Any], output: Any) -> torch.Tensor:
        """Negative marginal log-likelihood per observed sample."""
        pos = torch.as_tensor(inputs["positions"])
        n = max(int(torch.isfinite(pos).sum()), 1)
        return -output.log_likelihood / n

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        allnan = np.zeros((10, 2, 3))
        allnan[:, 1, 0] = np.nan
        return [
            (
                {"positions": allnan},
                ValueError,
                "all-NaN",
            ),
            ({"positions": np.zeros((10, 3))}, ValueError, "positions"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.feedback import _reference as ref

        spec = SemanticSpec(
            name="feedback.kalman.gait",
            family="feedback",
            task="trajectory-smoothing",
            modality="biomechanics",
            scale="macro",
            inputs={
                "positions": TensorSchema(
                    axes="*tmc",
                    dtype="any",
                    units="mm",
                    description="marker positions, NaN in gaps",
                )
            },
            outputs={
                "positions": TensorSchema(
                    axes="*tmc",
                    dtype="any",
                    units="mm",
                    description="smoothed, gap-filled positions",
                ),
                "std": TensorSchema(
                    axes="*tmc", dtype="any", units="mm", description="posterior standard deviation"
                ),
                "log_likelihood": TensorSchema(
                    axes="", dtype="any", description="marginal log-likelihood"
                ),
            },
            differentiable=True,
            description="Constant-velocity Kalman/RTS smoother that fills marker occlusion gaps of 100 Hz gait capture with per-sample uncertainty; q, r refinable by marginal likelihood.",
            tags=("kalman", "rts", "gap-filling", "motion-capture", "gait", "uncertainty"),
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=spec,
                params={"rate": 100.0, "q": 2e4, "r": 0.25, "model": "constant_velocity"},
                reference_data=ref.gait_markers,
                example=lambda: {"positions": ref.gait_markers(0, frames=24, markers=2)},
            )
        ]


@dataclasses.dataclass
class KalmanSmootherConfig:
    """Hydra structured config of :class:`KalmanSmoother`."""

    _target_: str = "feedback.kalman"
    rate: float = 100.0
    q: float = 1e4
    r: float = 1.0
    model: str = "constant_velocity"
    coupling_rank: int = 0
    long_gap: int = 10
    initial_velocity_std: float | None = None
