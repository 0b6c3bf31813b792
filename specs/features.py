"""Deterministic, named and versioned featurizers: raw data -> (n, d) float32 features.

The statistical specification of a learnware (its RKME, :mod:`specs.rkme`) lives in a
*feature space*, not in the raw data space: a featurizer maps what a lab has (an image,
a volume, a time-lapse, a light curve, a motion-capture trial, a table) to rows of
summary features that describe the *kind* of data.  Raw data never leaves the user:
only the reduced set of a kernel mean embedding of these features is shared.

Each featurizer is registered under ``"<name>/<version>"`` (e.g. ``"microscopy-tiles/1"``)
with :func:`register_featurizer`.  A version is frozen: the same input always gives the
same features, and RKMEs are compared only within one featurizer version.  Every
featurizer also fixes its kernel *bandwidth policy* (``Featurizer.bandwidth``): a
constant for the built-in modality featurizers (their features are scaled by fixed
constants to order one), or ``None`` (tabular) meaning "median heuristic of the data",
in which case comparisons use the query's bandwidth.

Built-in featurizers (the default one per modality is marked *):

========================  ============  =====  ================================================
name                      modality      d      rows
========================  ============  =====  ================================================
microscopy-tiles/1 *      microscopy    16     32x32 tiles of every plane of yx/zyx/tyx/tzyx
light-curve-windows/1 *   light-curve   14     windows of 256 samples of each star's flux
trajectory-windows/1 *    biomechanics  12     (1 s window, marker) pairs of a (t, marker, 3) trial
tabular/1 *               tabular       d      the rows themselves (float32, NaN rows dropped)
========================  ============  =====  ================================================

See ``docs/registry.md`` for the definition of every feature.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Featurizer",
    "default_featurizer",
    "featurize",
    "get_featurizer",
    "known_featurizers",
    "register_featurizer",
]

MAX_ROWS = 4096
"""Featurizers return at most this many rows (evenly spaced, deterministic subsample)."""


@dataclasses.dataclass(frozen=True)
class Featurizer:
    """A registered featurizer.

    Parameters
    ----------
    name : str
        Name without version, e.g. ``"microscopy-tiles"``.
    version : int
        Frozen version; a change in the features means a new version.
    modality : str
        The modality it reads.
    fn : callable
        ``fn(data) -> Tensor (n, d) float32``.
    dim : int or None
        Feature dimension, or None when it follows the data (tabular).
    bandwidth : float or None
        Fixed Gaussian-kernel bandwidth for RKMEs in this space, or None for the median
        heuristic of the data.
    description : str
        One line for the docs.
    """

    name: str
    version: int
    modality: str
    fn: Callable[[Any], torch.Tensor]
    dim: int | None
    bandwidth: float | None
    description: str = ""

    @property
    def id(self) -> str:
        """``"name/version"``."""
        return f"{self.name}/{self.version}"

    def __call__(self, data: Any) -> torch.Tensor:
        return self.fn(data)


_featurizers: dict[str, Featurizer] = {}
_defaults: dict[str, str] = {}


def register_featurizer(
    name: str,
    fn: Callable[[Any], torch.Tensor],
    *,
    version: int,
    modality: str,
    dim: int | None = None,
    bandwidth: float | None = None,
    description: str = "",
    default: bool = False,
) -> Featurizer:
    """Register a featurizer under ``"name/version"``.

    Parameters
    ----------
    name : str
        Lowercase hyphenated name without the version.
    fn : callable
        Deterministic ``fn(data) -> Tensor`` of shape ``(n, d)``, float32, finite.
    version : int
        Positive integer; registering an existing ``name/version`` with a different
        function raises.
    modality : str
        The modality (see :func:`specs.semantic.known_modalities`).
    dim, bandwidth, description
        See :class:`Featurizer`.
    default : bool
        Make it the default featurizer of ``modality``.

    Returns
    -------
    Featurizer

    Raises
    ------
    ValueError
        If the name is malformed, the version not positive, or ``name/version`` is
        already registered with another function.
    """
    if not isinstance(name, str) or not name or "/" in name or name != name.lower():
        raise ValueError(f"name: expected a lowercase featurizer name without '/', got {name!r}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected a positive integer, got {version!r}")
    if bandwidth is not None and not (bandwidth > 0 and math.isfinite(bandwidth)):
        raise ValueError(f"bandwidth: expected a positive finite float or None, got {bandwidth!r}")
    feat = Featurizer(name, version, modality, fn, dim, bandwidth, description)
    old = _featurizers.get(feat.id)
    if old is not None and old.fn is not fn:
        raise ValueError(
            f"featurizer {feat.id!r} is already registered; a changed featurizer needs a new version"
        )
    _featurizers[feat.id] = feat
    if default or modality not in _defaults:
        _defaults[modality] = feat.id
    return feat


def known_featurizers() -> dict[str, Featurizer]:
    """All registered featurizers by id (``"name/version"``)."""
    return dict(sorted(_featurizers.items()))


def default_featurizer(modality: str) -> Featurizer:
    """The default featurizer of ``modality``.

    Raises
    ------
    ValueError
        If no featurizer reads that modality.
    """
    if modality not in _defaults:
        raise ValueError(
            f"modality: no featurizer is registered for {modality!r}; modalities with a featurizer: "
            f"{sorted(_defaults)} (register one with specs.features.register_featurizer)"
        )
    return _featurizers[_defaults[modality]]


def get_featurizer(featurizer: str | None = None, *, modality: str | None = None) -> Featurizer:
    """Resolve a featurizer by id (``"name/version"``), by bare name (latest version), or
    the default one of ``modality``.

    Raises
    ------
    ValueError
        If it is unknown; the message lists the known ones.
    """
    if featurizer is None:
        if modality is None:
            raise ValueError("featurizer: give a featurizer id or a modality")
        return default_featurizer(modality)
    if featurizer in _featurizers:
        return _featurizers[featurizer]
    versions = [f for f in _featurizers.values() if f.name == featurizer]
    if versions:
        return max(versions, key=lambda f: f.version)
    raise ValueError(
        f"featurizer: unknown featurizer {featurizer!r}; known: {sorted(_featurizers)}"
    )


def featurize(
    data: Any, *, modality: str | None = None, featurizer: str | None = None
) -> torch.Tensor:
    """Map raw data to rows of features with the modality's (or the named) featurizer.

    Parameters
    ----------
    data : ndarray, Tensor, dict or dataset object
        Raw data in the modality's format: microscopy ``yx``/``zyx``/``tyx``/``tzyx``
        arrays; light curves as 1-D flux, 2-D ``(star, time)`` flux, or a dict with
        ``time``, ``flux`` (and optional ``flux_err``), NaNs allowed (masked);
        biomechanics ``(t, marker, 3)`` positions with NaN gaps or a dict with
        ``positions`` and ``rate``; tabular ``(n, d)`` rows.  An object with ``.data``
        (and ``.modality``) attributes is unwrapped (duck-typed datasets).
    modality : str, optional
        The modality; taken from ``data.modality`` when absent.
    featurizer : str, optional
        Featurizer id or name; default: the modality's default featurizer.

    Returns
    -------
    Tensor
        ``(n, d)`` float32 on the CPU, finite, deterministic in ``data``.

    Raises
    ------
    ValueError
        If the modality has no featurizer, the data is empty or has the wrong shape, or
        the featurizer belongs to another modality.

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(100, 3))
    >>> featurize(x, modality="tabular").shape
    torch.Size([100, 3])
    """
    if hasattr(data, "data") and not isinstance(data, np.ndarray | torch.Tensor | Mapping):
        modality = modality or getattr(data, "modality", None)
        data = _unwrap_dataset(data)
    if modality is None and featurizer is None:
        raise ValueError("modality: required to choose a featurizer (e.g. modality='microscopy')")
    feat = get_featurizer(featurizer, modality=modality)
    if modality is not None and feat.modality != modality:
        raise ValueError(
            f"featurizer: {feat.id!r} reads modality {feat.modality!r}, not {modality!r}"
        )
    with torch.no_grad():
        out = feat.fn(data)
    out = out.detach().to("cpu", torch.float32)
    if out.ndim != 2 or out.shape[0] < 1:
        raise ValueError(
            f"featurizer {feat.id!r} produced no feature rows (shape {tuple(out.shape)})"
        )
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).contiguous()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
_MAX_PLANES = 16


def _unwrap_dataset(ds: Any) -> Any:
    """Raw data of a duck-typed dataset (``.data``, ``.modality``, ``.attrs``), reading at
    most a few evenly spaced planes of a large (lazy) image."""
    data, attrs = ds.data, dict(getattr(ds, "attrs", {}) or {})
    if isinstance(data, Mapping):
        if "points" in data and "positions" not in data:
            out: dict[str, Any] = {"positions": np.asarray(data["points"])}
            if attrs.get("rate"):
                out["rate"] = float(attrs["rate"])
            return out
        return {
            k: np.asarray(v)
            for k, v in data.items()
            if k in ("time", "flux", "flux_err", "positions", "rate")
        }
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) > 2:
        lead = int(np.prod(shape[:-2]))
        flat = data.reshape((lead, *shape[-2:])) if lead > _MAX_PLANES else data
        if lead > _MAX_PLANES:
            idx = np.linspace(0, lead - 1, _MAX_PLANES).round().astype(int)
            flat = flat[idx]
        return np.asarray(flat)
    return np.asarray(data)


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    return arr


def _subsample_rows(x: torch.Tensor, max_rows: int = MAX_ROWS) -> torch.Tensor:
    if x.shape[0] <= max_rows:
        return x
    idx = torch.linspace(0, x.shape[0] - 1, max_rows).round().long()
    return x[idx]


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) with reflect padding."""
    k = _gauss_kernel(sigma)
    r = (k.numel() - 1) // 2
    h, w = img.shape[-2:]
    mode = "reflect" if min(h, w) > r else "replicate"
    x = F.pad(img, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode=mode)
    return F.conv2d(x, k.view(1, 1, -1, 1))


def _tile_mean(x: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, 1, H, W) -> (B, nty, ntx) mean over non-overlapping tiles."""
    return F.avg_pool2d(x, tile, stride=tile).squeeze(1)


# --------------------------------------------------------------------------------------
# microscopy
# --------------------------------------------------------------------------------------
_TILE = 32


def _microscopy_tiles(data: Any) -> torch.Tensor:
    arr = _as_array(data, "data")
    if arr.ndim not in (2, 3, 4):
        raise ValueError(
            f"data: expected a microscopy array with axes yx, zyx, tyx or tzyx, got shape {arr.shape}"
        )
    x = torch.as_tensor(arr.astype(np.float32, copy=False))
    h, w = x.shape[-2:]
    stack_axis = x.ndim >= 3  # z or t: the axis just before yx
    planes = x.reshape(-1, 1, h, w)
    finite = torch.isfinite(planes)
    vals = planes[finite]
    if vals.numel() == 0:
        raise ValueError("data: every pixel is NaN or infinite")
    # robust global normalisation: gain/offset invariant features
    sub = vals[:: max(1, vals.numel() // 200_000)]
    med = sub.median()
    q = torch.quantile(sub, torch.tensor([0.05, 0.95]))
    scale = torch.clamp(q[1] - q[0], min=1e-6 * max(1.0, float(med.abs())) + 1e-12)
    z = torch.where(finite, (planes - med) / scale, torch.zeros((), dtype=planes.dtype))
    tile = min(_TILE, h, w)
    if min(h, w) < 4:
        raise ValueError(f"data: image planes must be at least 4x4 pixels, got {h}x{w}")
    hh, ww = (h // tile) * tile, (w // tile) * tile
    z = z[..., :hh, :ww]
    b1, b2, b4 = _blur(z, 1.0), _blur(z, 2.0), _blur(z, 4.0)
    dog1, dog2 = b1 - b2, b2 - b4
    gy = b1[..., 1:, :] - b1[..., :-1, :]
    gx = b1[..., :, 1:] - b1[..., :, :-1]
    gy = F.pad(gy, (0, 0, 0, 1))
    gx = F.pad(gx, (0, 1, 0, 0))
    m1 = _tile_mean(z, tile)
    m2 = _tile_mean(z * z, tile)
    m3 = _tile_mean(z**3, tile)
    var = torch.clamp(m2 - m1**2, min=0.0)
    sd = var.sqrt()
    skew = (m3 - 3 * m1 * var - m1**3) / (sd**3 + 1e-3)
    bright = _tile_mean((z > 1.0).float(), tile)
    jyy, jxx, jxy = _tile_mean(gy * gy, tile), _tile_mean(gx * gx, tile), _tile_mean(gx * gy, tile)
    tr = jyy + jxx
    coherence = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (tr + 1e-6)
    # tile maxima of the scale-normalised blob response (spot-likeness)
    spot1 = F.max_pool2d(dog1.clamp(min=0), tile).squeeze(1)
    spot2 = F.max_pool2d(dog2.clamp(min=0), tile).squeeze(1)
    planes_n = z.shape[0]
    if stack_axis and planes_n > 1:
        dz = (z[1:] - z[:-1]).abs()
        dz = torch.cat([dz, dz[-1:]], 0)
        third = _tile_mean(dz, tile)
    else:
        third = torch.zeros_like(m1)
    nan_frac = _tile_mean((~finite[..., :hh, :ww]).float(), tile)
    feats = torch.stack(
        [
            m1,
            torch.log1p(sd),
            skew.clamp(-10, 10) / 3,
            bright,
            torch.log1p(tr.sqrt()),
            coherence,
            torch.log1p(_tile_mean(dog1.abs(), tile) * 10),
            torch.log1p(_tile_mean(dog2.abs(), tile) * 10),
            torch.log1p(spot1 * 10),
            torch.log1p(spot2 * 10),
            torch.log1p(third),
            nan_frac,
            torch.full_like(m1, math.log(tile)) / math.log(_TILE),
            torch.full_like(m1, math.log1p(planes_n) / 5.0),
            torch.full_like(m1, float(stack_axis)),
            torch.log1p(torch.full_like(m1, float(scale)) / (float(med.abs()) + float(scale))),
        ],
        -1,
    )
    return _subsample_rows(feats.reshape(-1, feats.shape[-1]))


# --------------------------------------------------------------------------------------
# light curves
# --------------------------------------------------------------------------------------
_WINDOW = 256


def _light_curve_windows(data: Any) -> torch.Tensor:
    time = None
    if isinstance(data, Mapping):
        if "flux" not in data:
            raise ValueError(
                f"data: a light-curve dict needs a 'flux' key, got keys {sorted(data)}"
            )
        flux = _as_array(data["flux"], "flux").astype(np.float64)
        if data.get("time") is not None:
            time = _as_array(data["time"], "time").astype(np.float64)
            if time.shape[-1] != flux.shape[-1]:
                raise ValueError(
                    f"time: expected {flux.shape[-1]} samples like flux, got {time.shape[-1]}"
                )
    else:
        flux = _as_array(data, "data").astype(np.float64)
    if flux.ndim == 1:
        flux = flux[None]
    if flux.ndim != 2:
        raise ValueError(f"flux: expected shape (time,) or (star, time), got {flux.shape}")
    f = torch.as_tensor(flux)
    n_star, n_t = f.shape
    if n_t < 16:
        raise ValueError(f"flux: expected at least 16 samples per light curve, got {n_t}")
    # relative flux around each star's median
    med = torch.nanmedian(f, dim=1, keepdim=True).values
    if torch.isnan(med).any():
        bad = torch.isnan(med[:, 0]).nonzero()[:, 0].tolist()
        raise ValueError(f"flux: light curves {bad[:5]} are entirely NaN")
    denom = torch.where(med.abs() > 0, med.abs(), torch.ones_like(med))
    rel = f / denom - torch.sign(med) * (med != 0)
    cadence = 0.0
    if time is not None:
        t = torch.as_tensor(time.reshape(-1, time.shape[-1])[0])
        dt = torch.diff(t[torch.isfinite(t)])
        if dt.numel():
            cadence = float(torch.median(dt))
    win = min(_WINDOW, n_t)
    nw = n_t // win
    w = rel[:, : nw * win].reshape(n_star * nw, win)
    ok = torch.isfinite(w)
    valid = ok.float().mean(1)
    w = w[valid >= 0.25]
    ok = ok[valid >= 0.25]
    valid = valid[valid >= 0.25]
    if w.shape[0] == 0:
        raise ValueError("flux: every window of 256 samples is more than 75% NaN")
    wm = torch.nanmedian(w, dim=1, keepdim=True).values
    c = w - wm
    mad = torch.nanmedian(c.abs(), dim=1).values * 1.4826 + 1e-9
    d = c[:, 1:] - c[:, :-1]
    p2p = torch.nanmedian(d.abs(), dim=1).values * 1.4826 / math.sqrt(2) + 1e-9
    qs = torch.nanquantile(c, torch.tensor([0.01, 0.16, 0.84, 0.99], dtype=c.dtype), dim=1)
    z = c / mad[:, None]
    lo = torch.nan_to_num(z < -3, nan=0.0).float().sum(1) / ok.sum(1)
    hi = torch.nan_to_num(z > 3, nan=0.0).float().sum(1) / ok.sum(1)
    zf = torch.where(ok, c, torch.zeros_like(c))
    var = (zf * zf).sum(1) / ok.sum(1) + 1e-18

    def acf(lag: int) -> torch.Tensor:
        if lag >= win:
            return torch.zeros_like(var)
        a, b = zf[:, lag:], zf[:, :-lag]
        m = (ok[:, lag:] & ok[:, :-lag]).float()
        return ((a * b * m).sum(1) / m.sum(1).clamp(min=1)) / var

    tt = torch.linspace(-1, 1, win, dtype=c.dtype)
    slope = (zf * tt).sum(1) / ((tt * tt) * ok).sum(1).clamp(min=1e-9)
    feats = torch.stack(
        [
            torch.log10(mad) / 3 + 1,
            torch.log10(p2p) / 3 + 1,
            torch.log10(p2p / mad),
            qs[0] / mad / 5,
            qs[3] / mad / 5,
            (qs[2] - qs[1]) / (2 * mad) - 1,
            lo * 10,
            hi * 10,
            acf(1),
            acf(8),
            acf(64),
            (slope / mad).clamp(-50, 50) / 10,
            1 - valid,
            torch.full_like(mad, math.log10(cadence * 86400) / 3 if cadence > 0 else 0.0),
        ],
        -1,
    )
    return _subsample_rows(feats.float())


# --------------------------------------------------------------------------------------
# biomechanics
# --------------------------------------------------------------------------------------
def _trajectory_windows(data: Any) -> torch.Tensor:
    rate = 100.0
    if isinstance(data, Mapping):
        if "positions" not in data:
            raise ValueError(
                f"data: a motion dict needs a 'positions' key, got keys {sorted(data)}"
            )
        pos = _as_array(data["positions"], "positions").astype(np.float64)
        if data.get("rate") is not None:
            rate = float(np.asarray(data["rate"]))
            if not rate > 0:
                raise ValueError(f"rate: expected a positive sampling rate in Hz, got {rate}")
    else:
        pos = _as_array(data, "data").astype(np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions: expected shape (t, marker, 3), got {pos.shape}")
    p = torch.as_tensor(pos)
    n_t, n_m, _ = p.shape
    if n_t < 8:
        raise ValueError(f"positions: expected at least 8 frames, got {n_t}")
    ok = torch.isfinite(p).all(-1)  # (t, m)
    if not ok.any():
        raise ValueError("positions: every marker sample is NaN")
    pz = torch.where(ok[..., None], p, torch.zeros_like(p))
    cnt = ok.sum(1).clamp(min=1)
    centroid = pz.sum(1) / cnt[:, None]
    rad = ((pz - centroid[:, None]) ** 2).sum(-1).sqrt()
    radv = rad[ok]
    size = (
        float(radv.median())
        if n_m > 1 and float(radv.median()) > 0
        else float(torch.nan_to_num(p).abs().max()) + 1e-9
    )
    q = pz / size
    vel = (q[1:] - q[:-1]) * rate
    okv = ok[1:] & ok[:-1]
    acc = (vel[1:] - vel[:-1]) * rate
    oka = okv[1:] & okv[:-1]
    speed = torch.where(okv, vel.norm(dim=-1), torch.zeros(()).double())
    accm = torch.where(oka, acc.norm(dim=-1), torch.zeros(()).double())
    win = max(8, min(n_t - 2, round(rate)))
    nw = max(1, (n_t - 2) // win)
    T = nw * win

    def wmean(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        v = v[:T].reshape(nw, win, n_m)
        m = m[:T].reshape(nw, win, n_m).double()
        return (v * m).sum(1) / m.sum(1).clamp(min=1)

    sp_mean = wmean(speed, okv)
    sp_sq = wmean(speed**2, okv)
    sp_std = (sp_sq - sp_mean**2).clamp(min=0).sqrt()
    ac_mean = wmean(accm, oka)
    gap = 1 - okv[:T].reshape(nw, win, n_m).double().mean(1)
    # net displacement / path length over the window (straightness)
    qw = q[: T + 1]
    okw = ok[: T + 1]
    start_idx = torch.arange(nw) * win
    end_idx = start_idx + win
    net = (qw[end_idx] - qw[start_idx]).norm(dim=-1)
    net = torch.where(okw[end_idx] & okw[start_idx], net, torch.zeros_like(net))
    path = sp_mean * win / rate
    straight = net / (path + 1e-9)
    relr = wmean(rad[1:] / size, okv)
    zpos = wmean(q[1:, :, 2] - centroid[1:, None, 2] / size, okv)
    ext = qw[:T].reshape(nw, win, n_m, 3)
    okx = okw[:T].reshape(nw, win, n_m, 1)
    big = torch.tensor(1e9, dtype=ext.dtype)
    ext_hi = torch.where(okx, ext, -big).amax(1)
    ext_lo = torch.where(okx, ext, big).amin(1)
    extent = torch.where(okx.any(1), ext_hi - ext_lo, torch.zeros_like(ext_hi)).clamp(0, 100)
    feats = torch.stack(
        [
            torch.log1p(sp_mean),
            torch.log1p(sp_std),
            torch.log1p(ac_mean / 10),
            straight.clamp(0, 1),
            gap,
            relr.clamp(0, 10),
            zpos.clamp(-10, 10) / 3,
            torch.log1p(extent[..., 0]),
            torch.log1p(extent[..., 1]),
            torch.log1p(extent[..., 2]),
            torch.full_like(sp_mean, math.log10(rate) / 3),
            torch.full_like(sp_mean, math.log1p(n_m) / 4),
        ],
        -1,
    )
    feats = feats.reshape(-1, feats.shape[-1])
    return _subsample_rows(feats.float())


# --------------------------------------------------------------------------------------
# tabular
# --------------------------------------------------------------------------------------
def _tabular(data: Any) -> torch.Tensor:
    arr = _as_array(data, "data")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"data: expected tabular rows of shape (n, d), got {arr.shape}")
    x = torch.as_tensor(arr.astype(np.float32, copy=False))
    keep = torch.isfinite(x).all(1)
    x = x[keep]
    if x.shape[0] == 0:
        raise ValueError("data: every row has a NaN or infinite value")
    return x.contiguous()


register_featurizer(
    "microscopy-tiles",
    _microscopy_tiles,
    version=1,
    modality="microscopy",
    dim=16,
    bandwidth=1.5,
    description="32x32 tiles of every yx plane: robust-normalised intensity moments, blob (DoG) and edge energy, coherence, z/t change",
    default=True,
)
register_featurizer(
    "light-curve-windows",
    _light_curve_windows,
    version=1,
    modality="light-curve",
    dim=14,
    bandwidth=1.0,
    description="256-sample windows of relative flux: robust scatter, point-to-point noise, dip/flare tails, autocorrelation, trend, gaps, cadence",
    default=True,
)
register_featurizer(
    "trajectory-windows",
    _trajectory_windows,
    version=1,
    modality="biomechanics",
    dim=12,
    bandwidth=1.0,
    description="1 s windows per marker, body-size normalised: speed, acceleration, straightness, gaps, position and extent",
    default=True,
)
register_featurizer(
    "tabular",
    _tabular,
    version=1,
    modality="tabular",
    dim=None,
    bandwidth=None,
    description="the rows themselves as float32 (rows with NaN dropped); median-heuristic bandwidth",
    default=True,
)
