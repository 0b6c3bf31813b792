"""Uncertainty-guided adaptive acquisition for point-scanning microscopy.

Large-field multiphoton and confocal microscopes spend most of their time on pixels that
tell little: flat background between cells.  Adaptive acquisition measures a sparse
low-discrepancy scan first, reconstructs the field from the samples taken so far, maps
where the reconstruction is uncertain, and spends the rest of the budget there, in
batches (so that the scanner moves efficiently), until the budget is spent.

Pieces (each usable alone):

* :func:`halton` / :func:`initial_scan` - low-discrepancy first pass;
* :func:`reconstruct` - differentiable Delaunay piecewise-linear (or multiscale
  normalised-convolution) inpainting;
* :func:`local_uncertainty` (known mechanism) and :func:`ensemble_uncertainty`
  (black box, conformally calibrated) - per-pixel uncertainty;
* :func:`acquisition_score` + :func:`select_batch` - the acquisition rules (default:
  mesh refinement of the Delaunay interpolant, coarse to fine);
* :func:`adaptive_acquire` - the whole loop on any ``measure(coords)`` callable;
* :class:`SparseEstimator` / :class:`UncertaintyPolicy` - the same pieces behind the
  :mod:`components.feedback.loop` protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from components._validation import as_float_tensor, check_in, check_nonempty, check_positive
from components.base import Component, Declaration
from components.feedback.loop import Proposal
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "AcquisitionResult",
    "AdaptiveSampling",
    "AdaptiveSamplingConfig",
    "SparseEstimator",
    "SparseReconstruction",
    "UncertaintyPolicy",
    "acquisition_score",
    "adaptive_acquire",
    "ensemble_uncertainty",
    "halton",
    "initial_scan",
    "local_uncertainty",
    "reconstruct",
    "select_batch",
    "sparse_reconstruct",
]

_RULES = ("refine", "erd", "variance", "variance_signal")
_METHODS = ("delaunay", "multiscale")
_TRI_CACHE: dict[str, Any] = {}  # "last": (key, triangulation) of the last mask seen
_PRIMES = (2, 3, 5, 7, 11, 13)


def _idx(*slices: slice) -> tuple[Any, ...]:
    """``(..., *slices)``: an index on the trailing axes."""
    return (..., *slices)


# --------------------------------------------------------------------------------------
# initial scan
# --------------------------------------------------------------------------------------
def halton(n: int, ndim: int, *, skip: int = 20) -> torch.Tensor:
    """The first ``n`` points of the Halton sequence in ``[0, 1)^ndim`` (float64).

    Examples
    --------
    >>> halton(3, 2, skip=0).tolist()
    [[0.0, 0.0], [0.5, 0.3333333333333333], [0.25, 0.6666666666666666]]
    """
    if ndim < 1 or ndim > len(_PRIMES):
        raise ValueError(f"ndim: expected 1..{len(_PRIMES)}, got {ndim}")
    idx = np.arange(skip, skip + n, dtype=np.int64)
    out = np.zeros((n, ndim))
    for d in range(ndim):
        b = _PRIMES[d]
        f, i, r = 1.0, idx.copy(), np.zeros(n)
        while (i > 0).any():
            f /= b
            r += f * (i % b)
            i //= b
        out[:, d] = r
    return torch.from_numpy(out)


def initial_scan(shape: Sequence[int], n: int, *, skip: int = 20) -> torch.Tensor:
    """``n`` distinct pixel coordinates ``(n, ndim)`` of a Halton pattern over ``shape``.

    Examples
    --------
    >>> c = initial_scan((32, 32), 50)
    >>> c.shape, int(torch.unique(c, dim=0).shape[0])
    (torch.Size([50, 2]), 50)
    """
    shape = tuple(int(s) for s in shape)
    total = math.prod(shape)
    if not 0 < n <= total:
        raise ValueError(f"n: expected 1..{total} initial samples for shape {shape}, got {n}")
    got: list[np.ndarray] = []
    seen = np.zeros(total, dtype=bool)
    start, need = skip, n
    while need > 0:
        pts = halton(2 * need + 8, len(shape), skip=start).numpy()
        start += 2 * need + 8
        ij = np.minimum((pts * np.array(shape)).astype(np.int64), np.array(shape) - 1)
        flat = np.ravel_multi_index(tuple(ij.T), shape)
        _, first = np.unique(flat, return_index=True)
        for k in np.sort(first):
            if not seen[flat[k]]:
                seen[flat[k]] = True
                got.append(ij[k])
                need -= 1
                if need == 0:
                    break
    return torch.from_numpy(np.stack(got))


# --------------------------------------------------------------------------------------
# reconstruction
# --------------------------------------------------------------------------------------
def _gauss_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = max(1, math.ceil(3.5 * sigma))
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _smooth(x: torch.Tensor, sigma: float, nd: int) -> torch.Tensor:
    """Gaussian filter (zero outside) over the last ``nd`` axes.

    Widths above 3 px are computed on a grid decimated by a power of two ``f`` (block
    means, Gaussian of width ``sqrt(sigma^2 - (f^2 - 1)/12) / f``, linear upsampling):
    the cost stays ``O(N)`` per scale instead of ``O(N sigma)``."""
    if sigma <= 3.0:
        return _smooth_direct(x, sigma, nd)
    f = 2 ** math.floor(math.log2(sigma / 1.5))
    sp = x.shape[-nd:]
    pads: list[int] = []
    for n in reversed(sp):
        pads += [0, (-n) % f]
    lead = x.shape[:-nd]
    y = F.pad(x.reshape(-1, 1, *sp), pads)
    pool = F.avg_pool2d if nd == 2 else F.avg_pool3d
    y = pool(y, kernel_size=f, stride=f)
    s_c = math.sqrt(max(sigma * sigma - (f * f - 1) / 12.0, 0.25)) / f
    y = _smooth_direct(y, s_c, nd)
    y = F.interpolate(
        y, scale_factor=f, mode="bilinear" if nd == 2 else "trilinear", align_corners=False
    )
    y = y[_idx(*[slice(0, n) for n in sp])]
    return y.reshape(*lead, *sp)


def _smooth_direct(x: torch.Tensor, sigma: float, nd: int) -> torch.Tensor:
    """Separable Gaussian filter (zero outside) over the last ``nd`` axes."""
    k = _gauss_kernel(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    shape = x.shape
    for ax in range(x.ndim - nd, x.ndim):
        n = x.shape[ax]
        if r >= n:  # kernel longer than the axis: crop it (zero padding stays exact)
            kk = k[r - (n - 1) : r + n]
            rr = n - 1
        else:
            kk, rr = k, r
        y = x.movedim(ax, -1)
        s = y.shape
        y = F.conv1d(y.reshape(-1, 1, n), kk.reshape(1, 1, -1), padding=rr)
        x = y.reshape(s).movedim(-1, ax)
    return x.reshape(shape)


def _scales(shape: Sequence[int], density: float) -> list[float]:
    """Pyramid widths from sub-pixel up to a quarter of the field."""
    top = max(shape) / 4
    out = [0.6]
    while out[-1] < top:
        out.append(out[-1] * 2)
    return out


def _blas_single() -> Any:
    """One BLAS thread while Qhull's per-simplex transforms are computed: thousands of
    tiny LAPACK solves are 100x slower when every one of them wakes a thread pool."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _triangulate(mask: torch.Tensor) -> Any:
    """Delaunay triangulation (tetrahedralisation in 3-D) of the sampled pixels.

    Returns the :class:`scipy.spatial.Delaunay` object (its points are
    ``torch.nonzero(mask)`` in the same order), or None when the samples are too few or
    degenerate (collinear, coplanar) to span a simplex."""
    from scipy.spatial import Delaunay, QhullError

    m = mask.detach().cpu().numpy()
    key = (m.shape, np.packbits(m).tobytes())
    last = _TRI_CACHE.get("last")  # one read: safe against a concurrent writer
    if last is not None and last[0] == key:  # reconstruction and score share it
        return last[1]
    pts = np.argwhere(m).astype(np.float64)
    nd = pts.shape[1]
    tri = None
    if pts.shape[0] >= nd + 1:
        try:
            with _blas_single():
                tri = Delaunay(pts)
                tri.transform  # noqa: B018 - computed (and cached) under the BLAS limit
        except (QhullError, ValueError):
            tri = None
    _TRI_CACHE["last"] = (key, tri)
    return tri


def _barycentric(tri: Any, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel of ``shape``: containing simplex (-1 outside the hull), its vertex
    indices ``(N, d+1)`` and barycentric weights ``(N, d+1)`` (chunked: O(chunk) memory)."""
    nd = len(shape)
    total = math.prod(shape)
    simplex = np.empty(total, dtype=np.int64)
    verts = np.zeros((total, nd + 1), dtype=np.int64)
    weights = np.zeros((total, nd + 1), dtype=np.float64)
    chunk = 1 << 18
    for a in range(0, total, chunk):
        b = min(total, a + chunk)
        grid = np.stack(np.unravel_index(np.arange(a, b), tuple(shape)), -1).astype(np.float64)
        s = tri.find_simplex(grid)
        inside = s >= 0
        si = s[inside]
        T = tri.transform[si]
        bary = np.einsum("nij,nj->ni", T[:, :nd], grid[inside] - T[:, nd])
        w = np.zeros((b - a, nd + 1))
        w[inside] = np.concatenate([bary, 1 - bary.sum(1, keepdims=True)], 1)
        v = np.zeros((b - a, nd + 1), dtype=np.int64)
        v[inside] = tri.simplices[si]
        simplex[a:b], verts[a:b], weights[a:b] = s, v, w
    return simplex, verts, weights


def _multiscale(samples: torch.Tensor, mask: torch.Tensor, confidence: float) -> torch.Tensor:
    nd = samples.ndim
    mf = mask.to(samples.dtype)
    mv = torch.where(mask, samples, torch.zeros_like(samples))
    density = float(mf.mean())
    scales = _scales(samples.shape, density)
    rec = None
    tiny = torch.finfo(samples.dtype).tiny ** 0.5
    for s in reversed(scales):
        num = _smooth(mv, s, nd)
        den = _smooth(mf, s, nd)
        est = num / (den + tiny)
        if rec is None:
            rec = torch.where(den > 0, est, torch.zeros_like(est)) if density > 0 else est
            continue
        n_eff = den * (2 * math.pi * s * s) ** (nd / 2)
        w = 1 - torch.exp(-n_eff / confidence)
        rec = w * est + (1 - w) * rec
    assert rec is not None
    return rec


def reconstruct(
    samples: torch.Tensor,
    mask: torch.Tensor,
    *,
    keep_samples: bool = True,
    confidence: float = 1.0,
    method: str = "delaunay",
) -> torch.Tensor:
    """Differentiable inpainting of sparse samples (Delaunay-linear or multiscale).

    Parameters
    ----------
    samples : Tensor
        ``(y, x)`` or ``(z, y, x)`` values (anything where ``mask`` is False is ignored).
    mask : Tensor
        Boolean, same shape, True where sampled.
    keep_samples : bool
        Return the measured values unchanged at sampled pixels.
    confidence : float
        Multiscale method (and outside the samples' convex hull for ``delaunay``):
        effective number of samples under a kernel at which a scale is trusted (larger:
        smoother reconstructions).
    method : {"delaunay", "multiscale"}
        ``delaunay``: piecewise-linear interpolation on the Delaunay triangulation
        (tetrahedralisation in 3-D) of the samples, multiscale outside their convex hull;
        ``multiscale``: multiscale normalised convolution everywhere.

    Returns
    -------
    Tensor
        The reconstruction, same shape and dtype.

    Notes
    -----
    ``delaunay``: each pixel ``x`` inside a simplex with vertices ``p_0..p_d`` gets
    ``sum_k lambda_k(x) v(p_k)`` with ``lambda`` its barycentric coordinates; the
    triangulation (scipy/Qhull) adapts to any sample density, so dense samples along an
    edge keep it sharp while flat regions are spanned by large facets.  The weights are
    computed once from the geometry and the values enter linearly (a gather in torch):
    exactly differentiable in ``samples``, on any device.

    ``multiscale``: at each scale ``s_j = 0.6 * 2^j`` px the normalised convolution
    ``e_j = G_j * (m v) / G_j * m`` (Knutsson and Westin 1993) is blended into the
    coarser estimate with weight ``w_j = 1 - exp(-n_j / c)``, where
    ``n_j = (G_j * m) (2 pi s_j^2)^{d/2}`` is the effective number of samples under the
    kernel: dense regions keep fine detail, sparse ones borrow from coarser scales.

    References
    ----------
    Knutsson and Westin, "Normalized and differential convolution", CVPR 1993.
    Barber, Dobkin and Huhdanpaa, "The Quickhull algorithm for convex hulls", ACM TOMS 1996.

    Examples
    --------
    >>> v = torch.arange(64.0).reshape(8, 8)
    >>> m = torch.zeros(8, 8, dtype=torch.bool); m[::3, ::3] = m[-1, :] = m[:, -1] = True
    >>> r = reconstruct(v * m, m)  # a linear ramp is reproduced exactly
    >>> bool((r[m] == v[m]).all()), float((r - v).abs().max()) < 1e-9
    (True, True)
    """
    check_in(method, "method", _METHODS)
    rec = None
    tri = _triangulate(mask) if method == "delaunay" else None
    if tri is not None:
        simplex, verts, weights = _barycentric(tri, samples.shape)
        vals = samples[mask]
        dev = samples.device
        vi = torch.from_numpy(verts).to(dev)
        wt = torch.from_numpy(weights).to(device=dev, dtype=samples.dtype)
        lin = (vals[vi] * wt).sum(-1).reshape(samples.shape)
        inside = torch.from_numpy(simplex >= 0).to(dev).reshape(samples.shape)
        rec = (
            lin
            if bool(inside.all())
            else torch.where(inside, lin, _multiscale(samples, mask, confidence))
        )
    if rec is None:
        rec = _multiscale(samples, mask, confidence)
    if keep_samples:
        rec = torch.where(mask, samples, rec)
    return rec


def _spacing(mask: torch.Tensor) -> float:
    nd = mask.ndim
    rho = max(float(mask.float().mean()), 1e-12)
    return rho ** (-1.0 / nd)


def _distance(mask: torch.Tensor) -> torch.Tensor:
    from scipy.ndimage import distance_transform_edt

    m = mask.detach().cpu().numpy()
    if not m.any():
        return torch.full(
            mask.shape, float(max(mask.shape)), dtype=torch.float64, device=mask.device
        )
    return torch.from_numpy(distance_transform_edt(~m)).to(mask.device)


def local_uncertainty(
    samples: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor, *, noise: float = 0.0
) -> torch.Tensor:
    """Known-mechanism uncertainty: local sample variance and gradient, grown with distance.

    Parameters
    ----------
    samples, mask : Tensor
        As in :func:`reconstruct`.
    reconstruction : Tensor
        The current reconstruction.
    noise : float
        Measurement noise standard deviation (the floor at sampled pixels).

    Returns
    -------
    Tensor
        Per-pixel standard deviation proxy, same shape.

    Notes
    -----
    With ``d`` the typical sample spacing (density^{-1/ndim}) and ``r`` the distance to
    the nearest sample, ``u^2 = (var_d + |grad rec|^2 r^2) (1 - exp(-r^2 / d^2)) + noise^2``
    where ``var_d`` is the Gaussian-weighted variance of the samples within ``d``: a
    linear interpolant's error grows with the local roughness and the squared distance
    to the data.
    """
    nd = samples.ndim
    d = _spacing(mask)
    mf = mask.to(samples.dtype)
    mv = torch.where(mask, samples, torch.zeros_like(samples))
    tiny = torch.finfo(samples.dtype).tiny ** 0.5
    den = _smooth(mf, d, nd) + tiny
    mean = _smooth(mv, d, nd) / den
    var = (_smooth(mv * mv, d, nd) / den - mean * mean).clamp_min(0)
    g2 = torch.zeros_like(reconstruction)
    for ax in range(nd):
        g2 = g2 + torch.gradient(reconstruction, dim=ax)[0] ** 2
    r = _distance(mask).to(samples.dtype)
    grow = 1 - torch.exp(-(r * r) / (d * d))
    span = float((mv.detach().max() - mv.detach().min()).abs()) + 1e-12
    u2 = (var + g2 * r * r) * grow + noise**2 + (1e-6 * span) ** 2
    return torch.sqrt(u2)


def ensemble_uncertainty(
    samples: torch.Tensor,
    mask: torch.Tensor,
    *,
    members: int = 8,
    drop: float = 0.25,
    alpha: float = 0.1,
    calibration: float = 0.2,
    seed: int = 0,
    method: str = "delaunay",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Black-box uncertainty: a subsample ensemble whose intervals are conformally calibrated.

    Parameters
    ----------
    samples, mask : Tensor
        As in :func:`reconstruct`.
    members : int
        Ensemble size; each member reconstructs from a random ``1 - drop`` of the samples.
    drop : float
        Fraction of samples each member leaves out.
    alpha : float
        Miscoverage level: intervals ``mean +- halfwidth`` cover a new sample with
        probability about ``1 - alpha``.
    calibration : float
        Fraction of the samples held out to calibrate.
    seed : int
        Seed of the subsampling.
    method : {"delaunay", "multiscale"}
        Reconstruction of each member (:func:`reconstruct`).

    Returns
    -------
    mean : Tensor
        Ensemble-mean reconstruction.
    halfwidth : Tensor
        Calibrated interval half-width ``q * sigma`` per pixel.
    q : float
        Conformal scale factor.

    Notes
    -----
    Split-conformal calibration (Vovk et al. 2005; Angelopoulos and Bates 2021): an
    ensemble fitted without a random ``calibration`` share of the samples scores each
    held-out sample by ``|v_i - mean(x_i)| / sigma(x_i)``; ``q`` is the
    ``ceil((n+1)(1-alpha))/n`` quantile of these scores.  The returned ensemble uses
    every sample (its intervals are then slightly conservative).
    """
    if members < 2:
        raise ValueError(f"members: expected at least 2 ensemble members, got {members}")
    if not 0 < drop < 1:
        raise ValueError(f"drop: expected a fraction in (0, 1), got {drop!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a miscoverage level in (0, 1), got {alpha!r}")
    gen = torch.Generator().manual_seed(seed)

    def ensemble(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recs = []
        for _ in range(members):
            keep = m & (torch.rand(m.shape, generator=gen) >= drop).to(m.device)
            recs.append(reconstruct(samples, keep, keep_samples=False, method=method))
        R = torch.stack(recs)
        return R.mean(0), R.std(0) + 1e-12

    # split conformal: calibrate on samples the calibration ensemble never saw
    cal = mask & (torch.rand(mask.shape, generator=gen) < calibration).to(mask.device)
    q = 1.0
    if bool(cal.any()) and bool((mask & ~cal).any()):
        mu_c, sd_c = ensemble(mask & ~cal)
        scores = ((samples - mu_c).abs() / sd_c)[cal].detach().to(torch.float64)
        n = scores.numel()
        level = min(1.0, math.ceil((n + 1) * (1 - alpha)) / n)
        q = float(torch.quantile(scores, level))
    mean, sigma = ensemble(mask)
    return mean, q * sigma, q


# --------------------------------------------------------------------------------------
# acquisition
# --------------------------------------------------------------------------------------
def _refine_score(
    reconstruction: torch.Tensor, uncertainty: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor | None:
    """Mesh-refinement score painted at simplex centroids (None if no triangulation)."""
    tri = _triangulate(mask)
    if tri is None:
        return None
    nd = reconstruction.ndim
    dev, dt = reconstruction.device, reconstruction.dtype
    S = tri.simplices
    P = tri.points[S]  # (T, d+1, d)
    E = P[:, 1:] - P[:, :1]  # (T, d, d) edge vectors
    det = np.linalg.det(E)
    vol = np.abs(det) / math.factorial(nd)
    ok = vol > 1e-9
    Einv = np.zeros_like(E)
    Einv[ok] = np.linalg.inv(E[ok])
    vals = reconstruction[mask]
    V = vals[torch.from_numpy(S).to(dev)]  # (T, d+1)
    grad = torch.einsum("tij,tj->ti", torch.from_numpy(Einv).to(dev, dt), V[:, 1:] - V[:, :1])
    nb = torch.from_numpy(tri.neighbors).to(dev)  # (T, d+1), -1 on the hull
    valid = (nb >= 0).to(dt)
    diff = ((grad[:, None, :] - grad[nb.clamp_min(0)]) ** 2).sum(-1) * valid
    jump = diff.sum(1) / valid.sum(1).clamp_min(1)
    volt = torch.from_numpy(vol).to(dev, dt)
    facet = volt * (V.var(1, unbiased=False) + volt ** (2.0 / nd) * jump)
    cen = np.minimum(np.rint(P.mean(1)).astype(np.int64), np.array(mask.shape) - 1)
    flat = torch.from_numpy(np.ravel_multi_index(tuple(cen.T), mask.shape)).to(dev)
    out = reconstruction.new_zeros(mask.numel()).scatter_reduce(
        0, flat, facet, reduce="amax", include_self=True
    )
    out = out.reshape(mask.shape)
    corners = itertools.product(*[(0, n - 1) for n in mask.shape])
    if not all(bool(mask[c]) for c in corners):  # outside the hull: ERD x pixel share
        grid = np.stack(np.unravel_index(np.arange(mask.numel()), tuple(mask.shape)), -1)
        outside = torch.from_numpy(tri.find_simplex(grid.astype(np.float64)) < 0).to(dev)
        erd = _smooth(uncertainty**2, max(0.5, 0.5 * _spacing(mask)), nd) * _spacing(mask) ** nd
        out = torch.where(outside.reshape(mask.shape), erd, out)
    return out


def acquisition_score(
    reconstruction: torch.Tensor,
    uncertainty: torch.Tensor,
    mask: torch.Tensor,
    *,
    rule: str = "refine",
) -> torch.Tensor:
    """Expected gain of measuring each pixel next (0 at sampled pixels).

    Parameters
    ----------
    reconstruction, uncertainty : Tensor
        Current reconstruction and its per-pixel uncertainty.
    mask : Tensor
        True where already sampled.
    rule : {"refine", "erd", "variance", "variance_signal"}
        ``refine``: mesh refinement of the Delaunay interpolant, the expected reduction
        in squared error of sampling each simplex at its centroid (see Notes), painted
        at the centroid pixels; ``erd``: expected reduction in distortion, ``G_d * u^2``,
        the squared error a sample is expected to remove in its neighbourhood of radius
        ``d`` (the sample spacing), after SLADS (Godaliyadda et al. 2018); ``variance``:
        ``u^2``; ``variance_signal``: ``u^2 * max(rec, 0)`` (favours bright structure,
        for photon-limited fluorescence).

    Returns
    -------
    Tensor
        Same shape as ``reconstruction``, differentiable in it.

    Notes
    -----
    ``refine`` estimates the interpolation residual from the samples themselves.  For a
    simplex ``T`` of volume ``|T|`` with vertex values ``v_k`` and facet gradient
    ``g_T`` (the linear interpolant's), the integrated squared error of the
    piecewise-linear reconstruction is estimated by

    ``e_T = |T| (Var_k v_k + |T|^{2/d} mean_N |g_T - g_N|^2)``

    where ``N`` runs over the face neighbours: the first term is the variation a single
    facet has to carry (edges, spots), the second the jump of the recovered gradient
    across the faces, the classic a-posteriori error indicator of adaptive finite
    elements (Zienkiewicz and Zhu 1987) for curved, smooth regions.  Large
    empty facets score by their volume (exploration), facets across an edge by their
    variation (exploitation): batches of centroids of the highest ``e_T`` give a
    coarse-to-fine scan.  Pixels outside the samples' convex hull score by ``erd`` times
    the area a sample represents.

    References
    ----------
    Godaliyadda et al., "A framework for dynamic image sampling based on supervised
    learning", IEEE TCI 4(1), 2018.
    Zienkiewicz and Zhu, "A simple error estimator and adaptive procedure for practical
    engineering analysis", IJNME 24, 1987.
    """
    check_in(rule, "rule", _RULES)
    u2 = uncertainty * uncertainty
    s: torch.Tensor | None = None
    if rule == "refine":
        s = _refine_score(reconstruction, uncertainty, mask)
    if rule == "variance":
        s = u2
    elif rule == "variance_signal":
        s = u2 * reconstruction.clamp_min(0)
    elif s is None:
        s = _smooth(u2, max(0.5, 0.5 * _spacing(mask)), u2.ndim)
    return torch.where(mask, torch.zeros_like(s), s)


def select_batch(
    score: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    *,
    min_distance: float | None = None,
    path_cost: float = 0.0,
    position: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``n`` unsampled pixels of highest score, spread out, optionally near the scanner.

    Parameters
    ----------
    score : Tensor
        Acquisition score (see :func:`acquisition_score`).
    mask : Tensor
        True where already sampled (never chosen again).
    n : int
        Batch size.
    min_distance : float, optional
        Non-maximum-suppression radius in pixels (default: half the current sample spacing
        of the batch, at least 1) so that one batch does not cluster on one edge.
    path_cost : float
        Scan-path cost weight: scores are divided by ``1 + path_cost * dist / diag`` with
        ``dist`` the distance from ``position`` (the scanner's last position).
    position : Tensor, optional
        ``(ndim,)`` last scanner position.

    Returns
    -------
    coords : Tensor
        ``(k, ndim)`` int64 coordinates, ``k <= n``, ordered as a greedy nearest-neighbour
        tour from ``position``.
    gain : Tensor
        ``(k,)`` their scores.
    """
    nd = score.ndim
    s = score.detach().to(torch.float64)
    s = torch.where(mask, torch.full_like(s, -1.0), s)
    if path_cost > 0 and position is not None:
        grids = torch.meshgrid(
            *[torch.arange(k, dtype=torch.float64, device=s.device) for k in s.shape], indexing="ij"
        )
        dist = torch.sqrt(
            torch.stack([(g - float(p)) ** 2 for g, p in zip(grids, position)]).sum(0)
        )
        diag = math.sqrt(sum(k * k for k in s.shape))
        s = torch.where(s >= 0, s / (1 + path_cost * dist / diag), s)
    free = int((~mask).sum())
    n = min(n, free)
    if n <= 0:
        return torch.zeros((0, nd), dtype=torch.int64), torch.zeros(0, dtype=torch.float64)
    if min_distance is None:
        unsampled = max(free, 1)
        min_distance = max(1.0, 0.5 * (unsampled / n) ** (1.0 / nd) * 0.5)
    r = float(min_distance)
    flat_s = s.reshape(-1)
    k_pool = max(1, round(r))
    pool = {2: F.max_pool2d, 3: F.max_pool3d}.get(nd)
    if pool is not None and k_pool > 0:
        pooled = pool(s[None, None], kernel_size=2 * k_pool + 1, stride=1, padding=k_pool)[0, 0]
        peaks = torch.where(s >= pooled, s, torch.full_like(s, -1.0)).reshape(-1)
    else:
        peaks = flat_s
    # greedy non-maximum suppression over the strongest candidates (local maxima first,
    # then every pixel), relaxing the radius when the batch cannot be filled
    chosen_l: list[int] = []
    shape_np = np.array(s.shape)
    for cand_src in (peaks, flat_s):
        if len(chosen_l) >= n:
            break
        k = min(int((cand_src >= 0).sum()), 30 * n + 100)
        if k == 0:
            continue
        top = torch.topk(cand_src, k).indices.cpu().numpy()
        pts = np.stack(np.unravel_index(top, shape_np), -1).astype(np.float64)
        radius = r
        while len(chosen_l) < n and radius >= 0:
            taken = set(chosen_l)
            cp = (
                [
                    np.stack(
                        np.unravel_index(np.array(chosen_l, dtype=np.int64), shape_np), -1
                    ).astype(np.float64)
                ]
                if chosen_l
                else []
            )
            sel = cp[0] if cp else np.zeros((0, nd))
            for j, idx in enumerate(top):
                if len(chosen_l) >= n:
                    break
                if int(idx) in taken:
                    continue
                if (
                    sel.shape[0]
                    and radius > 0
                    and float(((sel - pts[j]) ** 2).sum(1).min()) < radius * radius
                ):
                    continue
                chosen_l.append(int(idx))
                taken.add(int(idx))
                sel = np.vstack([sel, pts[j : j + 1]])
            radius = radius / 2 if radius > 0.5 else -1
    chosen = torch.as_tensor(chosen_l[:n], dtype=torch.int64, device=s.device)
    coords = torch.stack(torch.unravel_index(chosen, s.shape), -1)
    gain = flat_s[chosen]
    # greedy nearest-neighbour tour from the scanner position
    if coords.shape[0] > 1:
        pts = coords.to(torch.float64).cpu().numpy()
        cur = position.detach().cpu().numpy().astype(np.float64) if position is not None else pts[0]
        left = list(range(len(pts)))
        order = []
        while left:
            d = ((pts[left] - cur) ** 2).sum(1)
            j = left.pop(int(np.argmin(d)))
            order.append(j)
            cur = pts[j]
        idx = torch.as_tensor(order, device=coords.device)
        coords, gain = coords[idx], gain[idx]
    return coords, gain


# --------------------------------------------------------------------------------------
# the loop protocol pieces
# --------------------------------------------------------------------------------------
@dataclasses.dataclass
class SparseReconstruction:
    """Belief of the adaptive sampler.

    Attributes
    ----------
    reconstruction : Tensor
        Current estimate of the field.
    uncertainty : Tensor
        Per-pixel standard deviation proxy (or calibrated half-width).
    score : Tensor
        Acquisition score (expected gain per pixel; 0 at sampled pixels).
    """

    reconstruction: torch.Tensor
    uncertainty: torch.Tensor
    score: torch.Tensor

    def mean(self) -> torch.Tensor:
        return self.reconstruction

    def uncertainty_map(self) -> torch.Tensor:
        return self.uncertainty


class _BeliefView:
    def __init__(self, rec: SparseReconstruction, mask: torch.Tensor) -> None:
        self.rec = rec
        self.mask = mask

    def mean(self) -> torch.Tensor:
        return self.rec.reconstruction

    def uncertainty(self) -> torch.Tensor:
        return self.rec.uncertainty


def sparse_reconstruct(
    samples: torch.Tensor,
    mask: torch.Tensor,
    *,
    rule: str = "refine",
    uncertainty: str = "local",
    noise: float = 0.0,
    confidence: float = 1.0,
    members: int = 8,
    alpha: float = 0.1,
    method: str = "delaunay",
) -> SparseReconstruction:
    """Reconstruction, uncertainty and acquisition score from the samples taken so far.

    Parameters
    ----------
    samples : Tensor
        ``(y, x)`` or ``(z, y, x)`` measured values (ignored where ``mask`` is False; NaN
        allowed there).
    mask : Tensor
        Boolean, same shape, True where measured.
    rule : {"refine", "erd", "variance", "variance_signal"}
        Acquisition rule (:func:`acquisition_score`).
    uncertainty : {"local", "ensemble"}
        Known-mechanism (:func:`local_uncertainty`) or black-box conformal ensemble
        (:func:`ensemble_uncertainty`).
    noise : float
        Measurement noise standard deviation.
    confidence : float
        See :func:`reconstruct`.
    members, alpha : int, float
        Ensemble size and miscoverage for ``uncertainty="ensemble"``.
    method : {"delaunay", "multiscale"}
        Reconstruction (:func:`reconstruct`).

    Returns
    -------
    SparseReconstruction

    Raises
    ------
    ValueError
        On empty input, shape mismatch, no sample at all, or NaN at sampled pixels.

    Examples
    --------
    >>> v = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    >>> m = torch.zeros(16, 16, dtype=torch.bool); m[::3, ::3] = True
    >>> out = sparse_reconstruct(v, m)
    >>> out.reconstruction.shape, bool((out.score[m] == 0).all())
    (torch.Size([16, 16]), True)
    """
    check_in(rule, "rule", _RULES)
    check_in(uncertainty, "uncertainty", ("local", "ensemble"))
    check_in(method, "method", _METHODS)
    check_positive(noise, "noise", strict=False)
    check_positive(confidence, "confidence")
    v = as_float_tensor(samples, "samples")
    check_nonempty(v, "samples")
    if v.ndim not in (2, 3):
        raise ValueError(
            f"samples: expected a 2-D (y, x) image or 3-D (z, y, x) volume, got shape {tuple(v.shape)}"
        )
    m = torch.as_tensor(mask, device=v.device)
    if m.dtype != torch.bool:
        raise TypeError(f"mask: expected a boolean array (True = sampled), got dtype {m.dtype}")
    if tuple(m.shape) != tuple(v.shape):
        raise ValueError(
            f"mask: expected the shape of samples {tuple(v.shape)}, got {tuple(m.shape)}"
        )
    if not bool(m.any()):
        raise ValueError("mask: expected at least one sampled pixel, got none")
    if not bool(torch.isfinite(v[m]).all()):
        raise ValueError(
            f"samples: expected finite values at sampled pixels, got {int((~torch.isfinite(v[m])).sum())} NaN/inf"
        )
    v = torch.where(m, v, torch.zeros_like(v))
    if uncertainty == "local":
        rec = reconstruct(v, m, confidence=confidence, method=method)
        u = local_uncertainty(v, m, rec, noise=noise)
    else:
        rec, u, _ = ensemble_uncertainty(v, m, members=members, alpha=alpha, method=method)
        rec = torch.where(m, v, rec)
        u = torch.sqrt(u * u * (~m) + noise**2)
    score = acquisition_score(rec, u, m, rule=rule)
    return SparseReconstruction(reconstruction=rec, uncertainty=u, score=score)


class SparseEstimator:
    """:class:`~components.feedback.loop.Estimator` that accumulates sparse samples.

    ``update(values, mask)`` merges the new samples (full-field tensors, as returned by
    :class:`~components.feedback.loop.SimulatedImager`) and returns the belief.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        rule: str = "refine",
        uncertainty: str = "local",
        noise: float = 0.0,
        method: str = "delaunay",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.values = torch.zeros(tuple(shape), dtype=dtype)
        self.mask = torch.zeros(tuple(shape), dtype=torch.bool)
        self.kw: dict[str, Any] = {
            "rule": rule,
            "uncertainty": uncertainty,
            "noise": noise,
            "method": method,
        }

    def update(self, measurement: torch.Tensor, mask: torch.Tensor) -> _BeliefView:
        m = torch.as_tensor(mask, dtype=torch.bool)
        self.values = torch.where(m, measurement.to(self.values.dtype), self.values)
        self.mask = self.mask | m
        rec = sparse_reconstruct(self.values, self.mask, **self.kw)
        return _BeliefView(rec, self.mask.clone())


class UncertaintyPolicy:
    """:class:`~components.feedback.loop.Policy` that picks the highest-score pixels.

    ``constraints`` may hold ``"position"`` (scanner position) and ``"region"`` (boolean
    mask of allowed pixels, e.g. inside the sample).
    """

    def __init__(self, *, path_cost: float = 0.0, min_distance: float | None = None) -> None:
        self.path_cost = path_cost
        self.min_distance = min_distance
        self.position: torch.Tensor | None = None

    def propose(
        self, belief: Any, budget: int, constraints: Mapping[str, Any] | None = None
    ) -> Proposal:
        c = dict(constraints or {})
        mask = belief.mask
        if "region" in c:
            mask = mask | ~torch.as_tensor(c["region"], dtype=torch.bool)
        pos = c.get("position", self.position)
        coords, gain = select_batch(
            belief.rec.score,
            mask,
            budget,
            min_distance=self.min_distance,
            path_cost=self.path_cost,
            position=pos,
        )
        if coords.shape[0]:
            self.position = coords[-1]
        return Proposal(coords=coords, gain=gain)


@dataclasses.dataclass
class AcquisitionResult:
    """Result of :func:`adaptive_acquire`.

    Attributes
    ----------
    reconstruction : Tensor
        Final reconstruction of the field.
    mask : Tensor
        Boolean, True at the pixels that were measured.
    uncertainty : Tensor
        Final per-pixel uncertainty.
    samples : Tensor
        The measured values (0 elsewhere).
    history : list of dict
        Per round: ``spent``, ``mean_uncertainty``, ``elapsed``, ``path_length``.
    """

    reconstruction: torch.Tensor
    mask: torch.Tensor
    uncertainty: torch.Tensor
    samples: torch.Tensor
    history: list[dict[str, float]]


def _acquire_region(
    measure: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    values: torch.Tensor,
    mask: torch.Tensor,
    budget: int,
    batch: int,
    kw: dict[str, Any],
    path_cost: float,
    t0: float,
    wall_time: float | None,
    history: list[dict[str, float]],
    offset: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    spent = 0
    position: torch.Tensor | None = None
    path = 0.0
    while spent < budget:
        if wall_time is not None and _time.perf_counter() - t0 > wall_time:
            break
        belief = sparse_reconstruct(values, mask, **kw)
        n = min(batch, budget - spent)
        coords, _ = select_batch(
            belief.score,
            mask,
            n,
            path_cost=path_cost,
            position=position,
            min_distance=0.0 if kw["rule"] == "refine" else None,
        )
        if coords.shape[0] == 0:
            break
        glob = coords + torch.as_tensor(offset, dtype=torch.int64)
        vals = torch.as_tensor(measure(glob)).to(values.dtype).reshape(-1)
        if vals.shape[0] != coords.shape[0]:
            raise ValueError(
                f"measure: expected {coords.shape[0]} values for {coords.shape[0]} coordinates, got {vals.shape[0]}"
            )
        idx = tuple(coords[:, i] for i in range(coords.shape[1]))
        values = values.index_put(idx, vals)
        mask = mask.index_put(idx, torch.ones(coords.shape[0], dtype=torch.bool))
        pts = coords.to(torch.float64)
        if position is not None:
            path += float((pts[0] - position.to(torch.float64)).norm())
        path += float((pts[1:] - pts[:-1]).norm(dim=1).sum()) if pts.shape[0] > 1 else 0.0
        position = coords[-1]
        spent += coords.shape[0]
        history.append(
            {
                "spent": float(spent),
                "mean_uncertainty": float(belief.uncertainty.mean()),
                "elapsed": _time.perf_counter() - t0,
                "path_length": path,
            }
        )
    return values, mask


def _first_scan(shape: tuple[int, ...], n: int) -> torch.Tensor:
    """Halton scan whose last points are replaced by the field's corners (when ``n``
    allows), so that the samples' convex hull is the whole field from the start."""
    coords = initial_scan(shape, n)
    corners = [c for c in itertools.product(*[(0, k - 1) for k in shape])]
    if n < 4 * len(corners):
        return coords
    have = {tuple(int(v) for v in c) for c in coords.tolist()}
    missing = [c for c in dict.fromkeys(corners) if c not in have]
    if not missing:
        return coords
    keep = coords[: n - len(missing)]
    return torch.cat([keep, torch.as_tensor(missing, dtype=coords.dtype)])


def adaptive_acquire(
    measure: Callable[[torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    *,
    budget: int | float,
    initial: int | float = 0.4,
    batch: int | None = None,
    rule: str = "refine",
    uncertainty: str = "local",
    method: str = "delaunay",
    noise: float = 0.0,
    path_cost: float = 0.0,
    tile: int | None = None,
    wall_time: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> AcquisitionResult:
    """Acquire a field adaptively: sparse scan, reconstruct, measure where uncertain.

    Parameters
    ----------
    measure : callable
        ``measure(coords) -> values``: ``coords`` is an ``(n, ndim)`` int64 tensor of pixel
        (or voxel) coordinates; returns ``n`` values.  This is the adapter point to the
        microscope (see ``docs/components/feedback.md``).
    shape : sequence of int
        Field shape ``(y, x)`` or ``(z, y, x)``.
    budget : int or float
        Total number of measurements, or a fraction of the field if < 1.
    initial : int or float
        Size of the low-discrepancy initial scan: a count, or a fraction of ``budget``.
    batch : int, optional
        Measurements per round (default: ``budget / 20``, at least 1).
    rule : {"refine", "erd", "variance", "variance_signal"}
        Acquisition rule (:func:`acquisition_score`).
    uncertainty : {"local", "ensemble"}
        Uncertainty model (see :func:`sparse_reconstruct`).
    method : {"delaunay", "multiscale"}
        Reconstruction (:func:`reconstruct`).
    noise : float
        Measurement noise standard deviation.
    path_cost : float
        Scan-path cost weight (0: ignore the scanner's travel).
    tile : int, optional
        For large fields: process tiles of this size independently after the initial
        scan, giving each tile a share of the budget proportional to its initial
        uncertainty.  Memory then scales with the tile, not the field.
    wall_time : float, optional
        Seconds after which the acquisition stops (the budget may be unspent).
    dtype : torch.dtype
        Working precision.

    Returns
    -------
    AcquisitionResult

    Raises
    ------
    ValueError
        If the budget is smaller than the initial scan or larger than the field, or
        ``shape`` is not 2-D/3-D.

    Examples
    --------
    >>> truth = torch.zeros(32, 32); truth[8:20, 10:24] = 1.0
    >>> measure = lambda c: truth[c[:, 0], c[:, 1]]
    >>> res = adaptive_acquire(measure, (32, 32), budget=200, initial=80, batch=40)
    >>> int(res.mask.sum()), res.reconstruction.shape
    (200, torch.Size([32, 32]))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"shape: expected a 2-D or 3-D positive field shape, got {shape}")
    total = math.prod(shape)
    n_budget = round(budget * total) if isinstance(budget, float) and budget < 1 else int(budget)
    if not 0 < n_budget <= total:
        raise ValueError(
            f"budget: expected 1..{total} measurements (or a fraction in (0, 1)), got {budget!r}"
        )
    n_init = (
        round(initial * n_budget) if isinstance(initial, float) and initial < 1 else int(initial)
    )
    if n_init < 1:
        raise ValueError(f"initial: expected at least one initial sample, got {initial!r}")
    if n_budget < n_init:
        raise ValueError(
            f"budget: expected at least the initial scan ({n_init} samples), got {n_budget}"
        )
    if batch is None:
        batch = max(1, (n_budget - n_init) // 20)
    if batch < 1:
        raise ValueError(f"batch: expected a positive batch size, got {batch!r}")
    check_in(rule, "rule", _RULES)
    check_in(uncertainty, "uncertainty", ("local", "ensemble"))
    check_in(method, "method", _METHODS)
    t0 = _time.perf_counter()
    kw: dict[str, Any] = {
        "rule": rule,
        "uncertainty": uncertainty,
        "noise": noise,
        "method": method,
    }
    coords = _first_scan(shape, n_init)
    vals = torch.as_tensor(measure(coords)).to(dtype).reshape(-1)
    if vals.shape[0] != n_init:
        raise ValueError(
            f"measure: expected {n_init} values for {n_init} coordinates, got {vals.shape[0]}"
        )
    values = torch.zeros(shape, dtype=dtype)
    mask = torch.zeros(shape, dtype=torch.bool)
    idx = tuple(coords[:, i] for i in range(len(shape)))
    values[idx] = vals
    mask[idx] = True
    history: list[dict[str, float]] = [
        {
            "spent": float(n_init),
            "mean_uncertainty": math.nan,
            "elapsed": _time.perf_counter() - t0,
            "path_length": 0.0,
        }
    ]
    rest = n_budget - n_init
    if tile is None or all(s <= tile for s in shape):
        values, mask = _acquire_region(
            measure,
            shape,
            values,
            mask,
            rest,
            batch,
            kw,
            path_cost,
            t0,
            wall_time,
            history,
            (0,) * len(shape),
        )
    else:
        first = sparse_reconstruct(values, mask, **kw)
        starts = [list(range(0, s, tile)) for s in shape]
        corners = list(itertools.product(*starts))
        weights = []
        for c in corners:
            sl = tuple(slice(a, min(a + tile, s)) for a, s in zip(c, shape))
            weights.append(float(first.score[sl].sum()))
        w = np.asarray(weights) + 1e-12
        shares = np.floor(rest * w / w.sum()).astype(int)
        shares[np.argsort(-w)[: rest - shares.sum()]] += 1
        for c, share in zip(corners, shares):
            sl = tuple(slice(a, min(a + tile, s)) for a, s in zip(c, shape))
            sub_v, sub_m = values[sl].clone(), mask[sl].clone()
            free = int((~sub_m).sum())
            if share <= 0 or free == 0 or not bool(sub_m.any()):
                continue
            sub_v, sub_m = _acquire_region(
                measure,
                tuple(sub_v.shape),
                sub_v,
                sub_m,
                min(int(share), free),
                batch,
                kw,
                path_cost,
                t0,
                wall_time,
                history,
                c,
            )
            values[sl], mask[sl] = sub_v, sub_m
    final = sparse_reconstruct(values, mask, **kw)
    return AcquisitionResult(
        reconstruction=final.reconstruction,
        mask=mask,
        uncertainty=final.uncertainty,
        samples=values,
        history=history,
    )


class AdaptiveSampling(Component):
    """Reconstruction + uncertainty + acquisition score from sparse samples.

    ``forward(samples, mask)`` is one call to :func:`sparse_reconstruct`; the
    reconstruction is differentiable in the samples.  The self-supervised loss is the
    leave-one-out style consistency: the reconstruction error at the sampled pixels when
    they are predicted from their neighbours.

    Examples
    --------
    >>> m = AdaptiveSampling(rule="variance")
    >>> v = torch.rand(8, 8); mk = torch.zeros(8, 8, dtype=torch.bool); mk[::2, ::2] = True
    >>> m(v, mk).reconstruction.shape
    torch.Size([8, 8])
    """

    name = "feedback.adaptive_sampling"
    function = staticmethod(sparse_reconstruct)
    differentiable = True
    footprint = 16

    def __init__(
        self,
        *,
        rule: str = "refine",
        uncertainty: str = "local",
        noise: float = 0.0,
        confidence: float = 1.0,
        members: int = 8,
        alpha: float = 0.1,
        method: str = "delaunay",
    ) -> None:
        check_in(rule, "rule", _RULES)
        check_in(uncertainty, "uncertainty", ("local", "ensemble"))
        check_in(method, "method", _METHODS)
        super().__init__(
            rule=rule,
            uncertainty=uncertainty,
            noise=noise,
            confidence=confidence,
            members=members,
            alpha=alpha,
            method=method,
        )

    def forward(self, samples: torch.Tensor, mask: torch.Tensor) -> SparseReconstruction:
        return sparse_reconstruct(samples, mask, **self._config)

    def self_supervised_loss(self, inputs: Mapping[str, Any], output: Any) -> torch.Tensor:
        """Mean squared error of predicting each sample from the others (held-out half)."""
        v = torch.as_tensor(inputs["samples"]).to(output.reconstruction)
        m = torch.as_tensor(inputs["mask"], dtype=torch.bool)
        gen = torch.Generator().manual_seed(0)
        half = m & (torch.rand(m.shape, generator=gen) < 0.5)
        rec = reconstruct(
            v,
            m & ~half,
            keep_samples=False,
            confidence=self._config["confidence"],
            method=self._config["method"],
        )
        return ((rec - v)[half] ** 2).mean()

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            (
                {"samples": np.zeros((8, 8)), "mask": np.zeros((8, 8), dtype=bool)},
                ValueError,
                "at least one sampled",
            ),
            (
                {"samples": np.zeros((8, 8)), "mask": np.ones((8, 9), dtype=bool)},
                ValueError,
                "mask",
            ),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.feedback import _reference as ref

        def example() -> dict[str, np.ndarray]:
            img = ref.fluorescence_field(3, shape=(24, 24), cells=4).astype(np.float64)
            m = np.zeros(img.shape, dtype=bool)
            c = initial_scan(img.shape, 120).numpy()
            m[tuple(c.T)] = True
            return {"samples": np.where(m, img, 0.0), "mask": m}

        spec = SemanticSpec(
            name="feedback.adaptive_sampling.multiphoton",
            family="feedback",
            task="adaptive-sampling",
            modality="microscopy",
            scale="micro",
            inputs={
                "samples": TensorSchema(
                    axes="yx", dtype="any", description="values measured so far (0 elsewhere)"
                ),
                "mask": TensorSchema(axes="yx", dtype="bool", description="True where measured"),
            },
            outputs={
                "reconstruction": TensorSchema(
                    axes="yx", dtype="any", description="inpainted field"
                ),
                "uncertainty": TensorSchema(
                    axes="yx", dtype="any", description="per-pixel uncertainty"
                ),
                "score": TensorSchema(
                    axes="yx", dtype="any", description="expected gain of measuring each pixel next"
                ),
            },
            differentiable=True,
            description="Uncertainty-guided scanning for large-field multiphoton microscopy: Delaunay piecewise-linear reconstruction from sparse samples, local-variance uncertainty and a mesh-refinement acquisition (facet variation and gradient-jump error indicator) that spends the budget coarse to fine.",
            tags=(
                "adaptive-sampling",
                "multiphoton",
                "sparse-scanning",
                "inpainting",
                "uncertainty",
            ),
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=spec,
                params={"rule": "refine", "uncertainty": "local", "method": "delaunay"},
                reference_data=lambda seed: ref.fluorescence_field(seed, shape=(128, 128)),
                example=example,
            )
        ]


@dataclasses.dataclass
class AdaptiveSamplingConfig:
    """Hydra structured config of :class:`AdaptiveSampling`."""

    _target_: str = "feedback.adaptive_sampling"
    rule: str = "refine"
    uncertainty: str = "local"
    noise: float = 0.0
    confidence: float = 1.0
    members: int = 8
    alpha: float = 0.1
    method: str = "delaunay"
