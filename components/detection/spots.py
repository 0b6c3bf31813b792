"""Matched-filter spot detection in 2-D images, 3-D stacks and space-time movies.

A diffraction-limited spot (or a short flash in a time-lapse) is a small Gaussian blob on a
slowly varying background.  The detector correlates the image with a zero-mean template
matched to the blob (scale-normalised Laplacian of Gaussian, background-subtracted
Gaussian, or a user PSF), expresses the response in units of its own robust noise level
(median absolute deviation), and reports local maxima above a threshold in sigma, refined
to sub-pixel precision.  A dense score map (SNR) and a smooth detection probability map
(a sigmoid of the SNR with learnable threshold and temperature) are returned next to the
table so that a pipeline can tune the detector by gradient descent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components._validation import (
    as_float_tensor,
    check_in,
    check_ndim,
    check_nonempty,
    check_positive,
)
from components.base import Component, Declaration, single_intra_op_thread
from specs.semantic import SemanticSpec, TensorSchema

__all__ = ["SpotDetector", "SpotTable", "detect_spots", "spot_filter"]

_FFT_TAPS = 41  # separable convolution up to this kernel length, FFT above (per axis)
_FFT_NUMEL = 1 << 18  # ... and FFT for images of at least this many pixels


@dataclasses.dataclass
class SpotTable:
    """Detected spots (one row per spot) plus dense maps.

    Attributes
    ----------
    positions : Tensor, shape (n, ndim)
        Sub-pixel positions in pixel coordinates of the input axes (``y x`` or ``z y x``
        / ``t y x``).
    scale : Tensor, shape (n,)
        In-plane template sigma (pixels) that gave the strongest response.
    amplitude : Tensor, shape (n,)
        Least-squares peak amplitude of a Gaussian spot of that scale above the local
        background (image units).
    snr : Tensor, shape (n,)
        Filter response at the spot divided by the robust noise of the response.
    score : Tensor, same shape as the image
        Dense SNR map (maximum over scales).
    probability : Tensor, same shape as the image
        ``sigmoid((score - threshold) / temperature)``, a smooth detection map.
    """

    positions: Tensor
    scale: Tensor
    amplitude: Tensor
    snr: Tensor
    score: Tensor
    probability: Tensor

    def __len__(self) -> int:
        return int(self.positions.shape[0])


# --------------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------------
def _gauss_1d(sigma: float, radius: int, *, order: int, dtype: torch.dtype, device: Any) -> Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    if order == 2:
        # -sigma^2 d^2/dr^2 g, made exactly zero-mean so a flat background gives 0
        k = -((r / sigma) ** 2 - 1.0) * g
        k = k - g * (k.sum() / g.sum())
        g = k
    return g.to(dtype=dtype, device=device)


def _sigmas_per_axis(sigma: float, ndim: int, anisotropy: float) -> list[float]:
    return [sigma * anisotropy] + [sigma] * (ndim - 1) if ndim == 3 else [sigma] * ndim


def _separable_terms(
    sigma: float, ndim: int, anisotropy: float, template: str, dtype: torch.dtype, device: Any
) -> list[tuple[float, list[Tensor]]]:
    """The template as a sum of separable terms ``(weight, [1-D kernel per axis])``."""
    sig = _sigmas_per_axis(sigma, ndim, anisotropy)
    if template == "log":
        rad = [max(1, math.ceil(4.0 * s)) for s in sig]
        terms = []
        for i in range(ndim):
            ks = [
                _gauss_1d(s, r, order=2 if a == i else 0, dtype=dtype, device=device)
                for a, (s, r) in enumerate(zip(sig, rad))
            ]
            terms.append((1.0, ks))
        return terms
    # "gaussian": Gaussian of the spot scale minus a Gaussian 3x wider (local background)
    rad = [max(1, math.ceil(12.0 * s)) for s in sig]
    inner = [_gauss_1d(s, r, order=0, dtype=dtype, device=device) for s, r in zip(sig, rad)]
    outer = [_gauss_1d(3.0 * s, r, order=0, dtype=dtype, device=device) for s, r in zip(sig, rad)]
    return [(1.0, inner), (-1.0, outer)]


def _dense_kernel(terms: list[tuple[float, list[Tensor]]]) -> Tensor:
    out = None
    for w, ks in terms:
        k = ks[0]
        for kk in ks[1:]:
            k = k[..., None] * kk
        out = w * k if out is None else out + w * k
    assert out is not None
    return out


def _spot_gain(kernel: Tensor, sig: list[float]) -> float:
    """Response of ``kernel`` to a unit-amplitude Gaussian spot of sigmas ``sig``."""
    grids = torch.meshgrid(
        *[torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in kernel.shape], indexing="ij"
    )
    e2 = torch.zeros_like(grids[0])
    for g, s in zip(grids, sig):
        e2 = e2 + (g / s) ** 2
    spot = torch.exp(-0.5 * e2)
    return float((kernel.double().cpu() * spot).sum())


_BLOCK = 64


def _conv_axis(x: Tensor, k: Tensor, axis: int, grouped: bool) -> Tensor:
    """Valid correlation along spatial ``axis`` as block-banded Toeplitz matmuls.

    ``x`` is (C_in, *spatial); ``k`` is (C, L).  With ``grouped`` each of the C channels
    of ``x`` gets its own kernel; otherwise the single input channel is filtered by every
    kernel.  Each block of ``_BLOCK`` outputs is one small GEMM with its ``L - 1`` halo,
    which runs at BLAS speed (much faster than ``conv2d`` with 1-D kernels on CPU).
    """
    c, length = k.shape
    ax = axis + 1
    x = x.movedim(ax, -1)
    n_in = x.shape[-1]
    n_out = n_in - length + 1
    nb = -(-n_out // _BLOCK)
    extra = nb * _BLOCK + length - 1 - n_in
    if extra:
        x = F.pad(x, (0, extra))
    seg = x.unfold(-1, _BLOCK + length - 1, _BLOCK)  # (..., nb, B+L-1)
    j = torch.arange(_BLOCK + length - 1, device=k.device)[:, None]
    i = torch.arange(_BLOCK, device=k.device)[None, :]
    d = j - i
    inside = (d >= 0) & (d < length)
    toe = torch.where(inside, k[:, d.clamp(0, length - 1)], k.new_zeros(()))  # (C, B+L-1, B)
    if grouped:
        lead = seg.shape[1:-2]
        out = torch.matmul(seg.reshape(c, -1, seg.shape[-1]), toe)  # (C, M, B)
        out = out.reshape(c, *lead, nb * _BLOCK)
    else:
        lead = seg.shape[1:-2]
        flat = seg.reshape(-1, seg.shape[-1])
        out = flat @ toe.permute(1, 0, 2).reshape(seg.shape[-1], c * _BLOCK)  # (M, C*B)
        out = out.reshape(*lead, nb, c, _BLOCK).movedim(-2, 0).reshape(c, *lead, nb * _BLOCK)
    out = out[..., :n_out]
    return out.movedim(-1, ax)


def _filter_separable(
    img: Tensor, terms_per_scale: list[list[tuple[float, list[Tensor]]]]
) -> Tensor:
    ndim = img.ndim
    nterm = len(terms_per_scale[0])
    rad = [max(t[1][a].numel() // 2 for ts in terms_per_scale for t in ts) for a in range(ndim)]
    pad = []
    for r in reversed(rad):
        pad += [r, r]
    x = F.pad(img[None, None], pad, mode="reflect")[0]
    # one channel per (scale, term); kernels zero-padded to a common length per axis
    chans = [(s, j) for s in range(len(terms_per_scale)) for j in range(nterm)]
    for a in range(ndim):
        length = 2 * rad[a] + 1
        k = img.new_zeros(len(chans), length)
        for c, (s, j) in enumerate(chans):
            kk = terms_per_scale[s][j][1][a]
            off = rad[a] - kk.numel() // 2
            k[c, off : off + kk.numel()] = kk
        x = _conv_axis(x, k, a, grouped=a > 0)
    w = img.new_tensor([terms_per_scale[s][j][0] for s, j in chans])
    x = x * w.reshape(-1, *([1] * ndim))
    return x.reshape(len(terms_per_scale), nterm, *img.shape).sum(1)


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT length)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _filter_fft(img: Tensor, terms_per_scale: list[list[tuple[float, list[Tensor]]]]) -> Tensor:
    """Correlation by FFT: one forward transform of the (reflect-padded) image, then per
    scale a product with the template's transfer function, built from 1-D DFTs of its
    separable terms (no N-D transform of the template), and one inverse transform."""
    ndim = img.ndim
    rad = [max(t[1][a].numel() // 2 for ts in terms_per_scale for t in ts) for a in range(ndim)]
    pad = []
    for r in reversed(rad):
        pad += [r, r]
    x = F.pad(img[None, None], pad, mode="reflect")[0, 0]
    fast = [_fast_len(n) for n in x.shape]
    x = F.pad(x, [v for n, f in zip(reversed(x.shape), reversed(fast)) for v in (0, f - n)])
    shape = x.shape
    dims = tuple(range(-ndim, 0))
    fx = torch.fft.rfftn(x, dim=dims)
    out = []
    for terms in terms_per_scale:
        h = None
        for w, ks in terms:
            prod = None
            for a, k in enumerate(ks):
                n = shape[a]
                big = k.new_zeros(n)
                big[: k.numel()] = k.flip(0)  # correlation = convolution with the flipped kernel
                big = torch.roll(big, -(k.numel() // 2))
                f1 = torch.fft.rfft(big) if a == ndim - 1 else torch.fft.fft(big)
                view = [1] * ndim
                view[a] = f1.numel()
                f1 = f1.reshape(view)
                prod = f1 if prod is None else prod * f1
            assert prod is not None
            h = w * prod if h is None else h + w * prod
        y = torch.fft.irfftn(fx * h, s=shape, dim=dims)
        out.append(y[tuple(slice(r, r + n) for r, n in zip(rad, img.shape))])
    return torch.stack(out)


def _filter_fft_dense(img: Tensor, k: Tensor) -> Tensor:
    """Correlation with a dense (non-separable) template by FFT, reflect-padded."""
    ndim = img.ndim
    rad = [n // 2 for n in k.shape]
    pad = []
    for r in reversed(rad):
        pad += [r, r]
    x = F.pad(img[None, None], pad, mode="reflect")[0, 0]
    fast = [_fast_len(n) for n in x.shape]
    x = F.pad(x, [v for n, f in zip(reversed(x.shape), reversed(fast)) for v in (0, f - n)])
    dims = tuple(range(-ndim, 0))
    big = x.new_zeros(x.shape)
    big[tuple(slice(0, n) for n in k.shape)] = k.flip(dims)
    big = torch.roll(big, shifts=[-(n // 2) for n in k.shape], dims=dims)
    y = torch.fft.irfftn(
        torch.fft.rfftn(x, dim=dims) * torch.fft.rfftn(big, dim=dims), s=x.shape, dim=dims
    )
    return y[tuple(slice(r, r + n) for r, n in zip(rad, img.shape))][None]


def _robust_sigma(r: Tensor, valid: Tensor | None, max_samples: int = 1 << 16) -> Tensor:
    """1.4826 x MAD of each scale's response (strided subsample of at most ``max_samples``)."""
    flat = r.reshape(r.shape[0], -1)
    if valid is not None:
        v = valid.reshape(-1)
        flat = flat[:, v]
    step = max(1, flat.shape[1] // max_samples)
    return _mad_sigma(flat[:, ::step])


def _mad_sigma(sub: Tensor) -> Tensor:
    """1.4826 x median absolute deviation of each row of ``sub`` (floored at ``tiny``)."""
    med = sub.median(dim=1, keepdim=True).values
    mad = (sub - med).abs().median(dim=1).values
    tiny = torch.finfo(sub.dtype).tiny
    return (1.4826 * mad).clamp_min(tiny)


def _as_scales(sigma: Any) -> list[float]:
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().cpu().reshape(-1).tolist()
    scales = (
        [float(s) for s in sigma] if isinstance(sigma, Sequence | np.ndarray) else [float(sigma)]
    )
    if not scales:
        raise ValueError("sigma: expected at least one scale, got an empty sequence")
    for s in scales:
        check_positive(s, "sigma")
    return scales


def _separable_templates(
    image: Tensor, scales: list[float], template: str, anisotropy: float
) -> tuple[list[list[tuple[float, list[Tensor]]]], Tensor, int]:
    """Separable terms of every scale's template, their spot gains and the longest kernel
    (checked against the image size)."""
    ndim = image.ndim
    terms = [
        _separable_terms(s, ndim, anisotropy, template, image.dtype, image.device) for s in scales
    ]
    for ts in terms:
        for a in range(ndim):
            n = ts[0][1][a].numel()
            if n // 2 >= image.shape[a]:
                raise ValueError(
                    f"sigma: a template of {n} taps along axis {a} is larger than the image "
                    f"(shape {tuple(image.shape)}); use a smaller sigma or a larger image"
                )
    kernels = [_dense_kernel(ts) for ts in terms]
    gain = image.new_tensor(
        [_spot_gain(k, _sigmas_per_axis(s, ndim, anisotropy)) for k, s in zip(kernels, scales)]
    )
    longest = max(k.shape[a] for k in kernels for a in range(ndim))
    return terms, gain, longest


def spot_filter(
    image: Tensor,
    *,
    sigma: float | Sequence[float],
    template: str = "log",
    anisotropy: float = 1.0,
    psf: Any = None,
    method: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Matched-filter responses of ``image`` at every scale and their gains.

    Parameters
    ----------
    image : Tensor, shape (y, x) or (z, y, x) / (t, y, x)
        Finite floating image.
    sigma, template, anisotropy, psf, method
        See :func:`detect_spots`.

    Returns
    -------
    response : Tensor, shape (n_scales, *image.shape)
        Correlation of the image with each template.
    gain : Tensor, shape (n_scales,)
        Response of each template to a unit-amplitude Gaussian spot of its own scale
        (divide the response by it to read amplitudes).
    """
    ndim = image.ndim
    if template == "psf":
        k = as_float_tensor(psf, "psf", dtype=image.dtype, device=image.device)
        if k.ndim != ndim:
            raise ValueError(
                f"psf: expected a {ndim}-D kernel to match the image, got shape {tuple(k.shape)}"
            )
        check_nonempty(k, "psf")
        for a in range(ndim):
            if k.shape[a] // 2 >= image.shape[a]:
                raise ValueError(
                    f"psf: template of shape {tuple(k.shape)} is larger than the image {tuple(image.shape)}"
                )
        k = k - k.mean()
        norm = k.norm().clamp_min(torch.finfo(k.dtype).tiny)
        k = k / norm
        resp = _filter_fft_dense(image, k)
        # the gain: response of the template to the peak-normalised PSF itself
        raw = as_float_tensor(psf, "psf", dtype=image.dtype, device=image.device)
        gain = image.new_tensor([float((k * raw / raw.abs().max().clamp_min(1e-30)).sum())])
        return resp, gain
    scales = _as_scales(sigma)
    terms, gain, longest = _separable_templates(image, scales, template, anisotropy)
    if method in ("auto", "tiled"):
        method = "separable" if longest <= _FFT_TAPS and image.numel() < _FFT_NUMEL else "fft"
    if method == "separable":
        return _filter_separable(image, terms), gain
    return _filter_fft(image, terms), gain


# --------------------------------------------------------------------------------------
# default path: discrete LoG scale space, all scales in one pass over tiles
# --------------------------------------------------------------------------------------
_TILE_TARGET = 1 << 18  # output pixels per tile (the working set of a tile stays in cache)
_TILE_BLOCK = 16  # outputs per block-Toeplitz GEMM in the scale-space passes


def _reflect_index(idx: Tensor, n: int) -> Tensor:
    """Indices of ``reflect`` padding (mirror without repeating the edge), any distance."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.abs() % period
    return torch.where(idx >= n, period - idx, idx)


def _toeplitz(k: Tensor, block: int) -> Tensor:
    """(block + L - 1, block) matrix whose product with a window is a valid correlation."""
    length = k.numel()
    j = torch.arange(block + length - 1, device=k.device)[:, None]
    i = torch.arange(block, device=k.device)[None, :]
    d = j - i
    inside = (d >= 0) & (d < length)
    return torch.where(inside, k[d.clamp(0, length - 1)], k.new_zeros(()))


def _valid_conv(x: Tensor, toe: Tensor, length: int, axis: int) -> Tensor:
    """Valid correlation of ``x`` along ``axis`` with the kernel behind ``toe``.

    Blocks of ``B`` outputs are GEMMs with the (B + L - 1, B) Toeplitz matrix: along the
    last axis on the unfolded windows, along other axes as a batched product with the
    overlapping windows viewed in place (the contiguous trailing axes are the GEMM
    columns, so nothing is transposed).
    """
    block = toe.shape[1]
    win = block + length - 1
    n_in = x.shape[axis]
    n_out = n_in - length + 1
    nb = -(-n_out // block)
    extra = nb * block + length - 1 - n_in
    if extra:
        x = F.pad(x, [0, 0] * (x.ndim - 1 - axis) + [0, extra])
    if axis == x.ndim - 1:
        seg = x.unfold(-1, win, block)  # (..., nb, win)
        out = (seg.reshape(-1, win) @ toe).reshape(*seg.shape[:-2], nb * block)
        return out[..., :n_out]
    lead = x.shape[:axis]
    tail = x.shape[axis + 1 :]
    seg = x.unfold(axis, win, block).movedim(-1, axis + 1)  # (..., nb, win, *tail)
    seg = seg.reshape(*lead, nb, win, math.prod(tail))
    out = torch.matmul(toe.T, seg)  # (..., nb, B, prod(tail))
    return out.reshape(*lead, nb * block, *tail).narrow(axis, 0, n_out)


class _ScaleSpace:
    """The discrete LoG scale space of a list of scales (see :func:`detect_spots`).

    ``G_k = g(delta_k) * G_{k-1}`` with ``delta_k^2 = s_k^2 - s_{k-1}^2`` per axis (a
    sampled, normalised Gaussian of radius ``ceil(4 delta)``), and the scale-normalised
    response ``R_k = -sum_i s_{k,i}^2 (G_k[+1] - 2 G_k + G_k[-1])_i``.
    """

    def __init__(self, scales: list[float], ndim: int, anisotropy: float, like: Tensor) -> None:
        self.ndim = ndim
        self.sig = [_sigmas_per_axis(s, ndim, anisotropy) for s in scales]
        self.kernels: list[list[Tensor]] = []
        prev = [0.0] * ndim
        for sig in self.sig:
            ks = []
            for a in range(ndim):
                d = math.sqrt(max(sig[a] ** 2 - prev[a] ** 2, 0.0))
                if d < 1e-3:
                    ks.append(torch.ones(1, dtype=torch.float64))
                else:
                    ks.append(
                        _gauss_1d(
                            d,
                            max(1, math.ceil(4.0 * d)),
                            order=0,
                            dtype=torch.float64,
                            device="cpu",
                        )
                    )
            self.kernels.append(ks)
            prev = sig
        self.rad = [[k.numel() // 2 for k in ks] for ks in self.kernels]
        # total halo per axis: every smoothing radius plus 1 for the Laplacian
        self.halo = [sum(r[a] for r in self.rad) + 1 for a in range(ndim)]
        self.toe = [
            [_toeplitz(k.to(like), _TILE_BLOCK) if k.numel() > 1 else None for k in ks]
            for ks in self.kernels
        ]
        self.gain = like.new_tensor([self._gain(i) for i in range(len(scales))])

    def effective_kernel(self, i: int) -> Tensor:
        """Dense float64 kernel of scale ``i`` (for its gain and for tests)."""
        per_axis = []
        for a in range(self.ndim):
            k = torch.ones(1, dtype=torch.float64)
            for ks in self.kernels[: i + 1]:
                k = torch.from_numpy(np.convolve(k.numpy(), ks[a].numpy()))
            per_axis.append(F.pad(k, (1, 1)))
        g = per_axis[0]
        for k in per_axis[1:]:
            g = g[..., None] * k
        lap = torch.zeros_like(g)
        for a in range(self.ndim):
            lap = lap - self.sig[i][a] ** 2 * (g.roll(1, a) - 2 * g + g.roll(-1, a))
        return lap

    def axis_kernels(self, i: int) -> tuple[list[Tensor], list[Tensor]]:
        cache = self.__dict__.setdefault("_axis_cache", {})
        if i not in cache:
            cache[i] = self._axis_kernels(i)
        return cache[i]

    def _axis_kernels(self, i: int) -> tuple[list[Tensor], list[Tensor]]:
        """Per axis, the float64 smoothing kernel of scale ``i`` (padded by one zero on
        both sides) and its second difference: the response is
        ``sum_a -s_a^2 (D2_a along a, smoothing along the other axes)``."""
        gs, ds = [], []
        for a in range(self.ndim):
            k = torch.ones(1, dtype=torch.float64)
            for ks in self.kernels[: i + 1]:
                k = torch.from_numpy(np.convolve(k.numpy(), ks[a].numpy()))
            k = F.pad(k, (1, 1))
            gs.append(k)
            ds.append(k.roll(1) - 2 * k + k.roll(-1))
        return gs, ds

    def border_profiles(self, i: int, shape: list[int]) -> list[tuple[int, Tensor]]:
        """Per axis ``(R, M)``: the composed kernel radius ``R`` and the (3, n) float64
        inner products ``M = [gg, gd, dd]`` at every position of the reflect-padded
        axis (``sum_j c_p(pos, j) c_q(pos, j)`` with ``c_p`` the kernel folded back by
        the reflection); equal to the interior values farther than ``R`` from a border.
        """
        gs, ds = self.axis_kernels(i)
        out = []
        for a, n in enumerate(shape):
            g, d = gs[a], ds[a]
            r = g.numel() // 2
            prof = torch.stack([(g * g).sum(), (g * d).sum(), (d * d).sum()])[:, None]
            prof = prof.repeat(1, n)
            # symmetric kernels: the right border mirrors the left one when they are
            # apart (then only the first 2r + 1 samples can be reached from the left)
            mirror = n > 2 * r + 1
            edge = list(range(r)) if mirror else list(range(n))
            if edge:
                width = 2 * r + 1 if mirror else n
                pos = torch.tensor(edge)
                src = _reflect_index(pos[:, None] + torch.arange(-r, r + 1)[None], n)
                cg = torch.zeros(len(edge), width, dtype=torch.float64)
                cd = torch.zeros(len(edge), width, dtype=torch.float64)
                cg.scatter_add_(1, src, g.expand(len(edge), -1).contiguous())
                cd.scatter_add_(1, src, d.expand(len(edge), -1).contiguous())
                vals = torch.stack([(cg * cg).sum(1), (cg * cd).sum(1), (cd * cd).sum(1)])
                prof[:, pos] = vals
                if mirror:
                    prof[:, n - r :] = vals.flip(1)
            out.append((r, prof))
        return out

    def border_ratio(
        self, i: int, profiles: list[tuple[int, Tensor]], block: list[range]
    ) -> Tensor:
        """Noise std of scale ``i``'s response on ``block`` (one index range per axis)
        relative to the interior, for white noise and reflect padding.

        The response is a sum of ``ndim`` separable terms (term ``t``: second difference
        along axis ``t``, smoothing along the others, weight ``s_t^2``), so its variance
        is ``sum_{t,t'} w_t w_t' prod_a M_a^{(t,a),(t',a)}``, a sum of outer products of
        the per-axis profiles of :meth:`border_profiles`.
        """
        ndim = self.ndim
        w = [v**2 for v in self.sig[i]]

        def variance(vals: list[Tensor]) -> Tensor:
            tot: Tensor | None = None
            for t in range(ndim):
                for u in range(ndim):
                    term = None
                    for a in range(ndim):
                        kind = (a == t) + (a == u)  # 0: gg, 1: gd, 2: dd
                        v = vals[a][kind]
                        shp = [1] * ndim
                        shp[a] = v.numel()
                        v = v.reshape(shp)
                        term = v if term is None else term * v
                    assert term is not None
                    term = w[t] * w[u] * term
                    tot = term if tot is None else tot + term
            assert tot is not None
            return tot

        gs, ds = self.axis_kernels(i)
        inside = [
            torch.stack([(g * g).sum(), (g * d).sum(), (d * d).sum()])[:, None]
            for g, d in zip(gs, ds)
        ]
        ratio = variance([p[:, b.start : b.stop] for (_, p), b in zip(profiles, block)])
        ratio = ratio / variance(inside)
        return ratio.clamp_min(1e-12).sqrt()

    def _gain(self, i: int) -> float:
        return _spot_gain(self.effective_kernel(i), self.sig[i])

    def amplitudes(self, tile: Tensor, out_shape: list[int], grad: bool):
        """Yield the amplitude map ``R_k / gain_k`` of each scale on the centre
        ``out_shape`` of ``tile`` (which carries ``halo`` extra samples on both sides of
        every axis).  In-place arithmetic unless ``grad``."""
        cur = tile
        left = list(self.halo)
        centre = tuple(slice(1, 1 + n) for n in out_shape)
        for i, toes in enumerate(self.toe):
            for a in range(self.ndim - 1, -1, -1):
                toe = toes[a]
                if toe is not None:
                    cur = _valid_conv(cur, toe, self.kernels[i][a].numel(), a)
                    left[a] -= self.rad[i][a]
            # crop to the output region plus one sample for the Laplacian
            c = cur[tuple(slice(h - 1, h + 1 + n) for h, n in zip(left, out_shape))]
            w = [-(v**2) / float(self.gain[i]) for v in self.sig[i]]
            r: Tensor | None = None
            for a in range(self.ndim):
                lo = tuple(
                    slice(0, n) if b == a else q for b, (q, n) in enumerate(zip(centre, out_shape))
                )
                hi = tuple(
                    slice(2, 2 + n) if b == a else q
                    for b, (q, n) in enumerate(zip(centre, out_shape))
                )
                if r is None:
                    r = torch.add(c[lo], c[hi])
                    r = r.mul(w[a]) if grad else r.mul_(w[a])
                else:
                    r = (
                        r + w[a] * (c[lo] + c[hi])
                        if grad
                        else r.add_(c[lo], alpha=w[a]).add_(c[hi], alpha=w[a])
                    )
            cw = -2.0 * sum(w)
            assert r is not None
            yield r + cw * c[centre] if grad else r.add_(c[centre], alpha=cw)


def _sample_positions(n_before: int, n_here: int, step: int) -> slice:
    """Positions in a tile whose global (flat) index is a multiple of ``step``."""
    return slice((-n_before) % step, n_here, step)


class _BorderRatios:
    """The relative noise std of scale ``k``'s reflect-padded response near the image
    border (where the noise is correlated with its mirror image), precomputed on
    disjoint border blocks: block ``a`` covers the two border bands of axis ``a`` over
    the interior of the axes before it (where the ratio does not depend on them, so it
    is stored with size 1 there) and all of the axes after it."""

    def __init__(self, space: _ScaleSpace, k: int, shape: list[int], like: Tensor) -> None:
        profiles = space.border_profiles(k, shape)
        ndim = len(shape)
        rad = [r for r, _ in profiles]
        self.interior = []
        for a in range(ndim):
            lo = min(rad[a], shape[a])
            self.interior.append((lo, max(lo, shape[a] - rad[a])))
        self.shape = shape
        self.blocks: list[tuple[int, int, int, Tensor]] = []
        for a in range(ndim):
            if any(self.interior[b][1] <= self.interior[b][0] for b in range(a)):
                continue  # the bands of an earlier axis already cover everything
            for lo, hi in ((0, self.interior[a][0]), (self.interior[a][1], shape[a])):
                if hi <= lo:
                    continue
                block = [
                    range(self.interior[b][0], self.interior[b][0] + 1)
                    if b < a
                    else (range(lo, hi) if b == a else range(shape[b]))
                    for b in range(ndim)
                ]
                ratio = space.border_ratio(k, profiles, block).to(like)
                self.blocks.append((a, lo, hi, ratio))

    def apply(self, amp: Tensor, r0: int, grad: bool) -> Tensor:
        """Divide ``amp`` (tile rows ``r0 : r0 + amp.shape[0]``) by the ratio."""
        r1 = r0 + amp.shape[0]
        fac = torch.ones_like(amp) if grad else None
        for a, lo, hi, ratio in self.blocks:
            sl: list[slice] = []
            rsl: list[slice] = []
            for b in range(len(self.shape)):
                if b == 0:
                    low, high = (lo, hi) if a == 0 else self.interior[0]
                    low, high = max(low, r0), min(high, r1)
                    sl.append(slice(low - r0, high - r0))
                    rsl.append(slice(low - lo, high - lo) if a == 0 else slice(None))
                    if high <= low:
                        break
                elif b < a:
                    sl.append(slice(*self.interior[b]))
                    rsl.append(slice(None))
                elif b == a:
                    sl.append(slice(lo, hi))
                    rsl.append(slice(None))
                else:
                    sl.append(slice(None))
                    rsl.append(slice(None))
            else:
                r = ratio[tuple(rsl)]
                if fac is not None:
                    fac[tuple(sl)] = r
                else:
                    amp[tuple(sl)].div_(r)
        return amp / fac if fac is not None else amp


def _border_ratio_at(space: _ScaleSpace, idx: Tensor, s_idx: Tensor, shape: list[int]) -> Tensor:
    """The border noise ratio of :class:`_BorderRatios` at single pixels (1 inside)."""
    out = torch.ones(idx.shape[0], dtype=torch.float64)
    if idx.shape[0] == 0:
        return out
    at = idx.cpu()
    ks = s_idx.cpu()
    profiles: dict[int, list[tuple[int, Tensor]]] = {}
    for n in range(at.shape[0]):
        k = int(ks[n])
        if k not in profiles:
            profiles[k] = space.border_profiles(k, shape)
        rad = [r for r, _ in profiles[k]]
        p = at[n].tolist()
        if all(rad[a] <= p[a] < shape[a] - rad[a] for a in range(len(shape))):
            continue
        block = [range(v, v + 1) for v in p]
        out[n] = space.border_ratio(k, profiles[k], block).reshape(())
    return out


class _TileThreads:
    """Context for the tiled path: torch ops single-threaded (intra-op threads on
    cache-sized tile ops mostly wait at their barriers, and stall badly when the machine
    is oversubscribed), parallelism instead over tiles on as many threads as torch was
    given (``torch.get_num_threads()``, which :func:`components.base.set_threads` and
    ``LEARNDOCK_THREADS`` set deliberately).  The number of tile threads never changes
    the result, only the speed.  The torch thread count is restored on exit."""

    def __enter__(self) -> int:
        self.n = torch.get_num_threads()
        self._one = single_intra_op_thread()
        self._one.__enter__()
        return max(1, self.n)

    def __exit__(self, *exc: object) -> None:
        self._one.__exit__(None, None, None)


def _map_tiles(fn: Any, items: list[Any], workers: int) -> list[Any]:
    """``[fn(i) for i in items]``, on ``workers`` threads (each with single-threaded
    torch ops) when more than one."""
    if workers < 2 or len(items) < 2:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(
        max_workers=min(workers, len(items)), initializer=torch.set_num_threads, initargs=(1,)
    ) as ex:
        return list(ex.map(fn, items))


def _scale_space_score(
    img: Tensor,
    scales: list[float],
    anisotropy: float,
    valid: Tensor | None,
    thr: Tensor,
    temp: Tensor,
    max_samples: int = 1 << 16,
    workers: int = 1,
) -> tuple[Tensor, Tensor | None, Tensor, _ScaleSpace, Tensor, Tensor]:
    """Score map (SNR at the best scale), best-scale index, amplitude noise per scale,
    the scale space (kernels, gains), probability map and the pixels above threshold, tile by tile along the first axis.

    Pass 1: each tile (with a halo of the summed smoothing radii, reflect-padded at the
    image border) is smoothed incrementally from scale to scale by block-Toeplitz GEMMs;
    only the per-pixel maximum over scales of the amplitude ``R_k / gain_k`` and its
    index are kept (memory: a few image copies whatever the number of scales), plus a
    strided sample (every ``step``-th valid pixel) of each scale's amplitude for its MAD
    noise.  Pass 2, chunk by chunk: SNR = amplitude / noise of the best scale,
    probability and threshold.  Differentiable in ``img``, ``thr`` and ``temp`` (one tile
    when the image requires grad).
    """
    ndim = img.ndim
    n_s = len(scales)
    for s in scales:
        for a, sg in enumerate(_sigmas_per_axis(s, ndim, anisotropy)):
            n = 2 * max(1, math.ceil(4.0 * sg)) + 1
            if n // 2 >= img.shape[a]:
                raise ValueError(
                    f"sigma: a template of {n} taps along axis {a} is larger than the image "
                    f"(shape {tuple(img.shape)}); use a smaller sigma or a larger image"
                )
    space = _ScaleSpace(scales, ndim, anisotropy, img)
    grad = torch.is_grad_enabled() and img.requires_grad
    n0 = img.shape[0]
    rest = list(img.shape[1:])
    m = math.prod(rest)
    # tile rows: about _TILE_TARGET outputs, and at least 4 halos (halo overhead <= 1.5x)
    rows = n0 if grad else int(min(n0, max(8, _TILE_TARGET // max(1, m), 4 * space.halo[0])))
    n_tiles = max(1, round(n0 / rows))
    rows = -(-n0 // n_tiles)  # balanced tiles (no thin last tile with a full halo)
    amp_best = img.new_empty(img.shape) if not grad else None
    best = img.new_zeros(img.shape, dtype=torch.uint8) if n_s > 1 else None
    n_valid = int(valid.sum()) if valid is not None else img.numel()
    step = max(1, n_valid // max_samples)
    samples: list[list[Tensor]] = [[] for _ in range(n_s)]
    rest_idx = [
        _reflect_index(torch.arange(-h, n + h, device=img.device), n)
        for h, n in zip(space.halo[1:], rest)
    ]
    # one reflect pad of the trailing axes when the halos allow it (else index by axis)
    pad_rest = (
        [v for h in reversed(space.halo[1:]) for v in (h, h)]
        if all(h < n for h, n in zip(space.halo[1:], rest))
        else None
    )
    h0 = space.halo[0]

    borders = [_BorderRatios(space, k, list(img.shape), img) for k in range(n_s)]

    def run_tile(r0: int) -> tuple[list[Tensor], Tensor | None]:
        r1 = min(n0, r0 + rows)
        nr = r1 - r0
        ridx = _reflect_index(torch.arange(r0 - h0, r1 + h0, device=img.device), n0)
        tile = img.index_select(0, ridx)
        if pad_rest is not None:
            tile = F.pad(tile[None], pad_rest, mode="reflect")[0]
        else:
            for a in range(1, ndim):
                tile = tile.index_select(a, rest_idx[a - 1])
        if valid is not None:
            v = valid[r0:r1].reshape(-1)
            pick = _sample_positions(int(n_before[r0 // rows]), int(v.sum()), step)
        else:
            v = None
            pick = _sample_positions(r0 * m, nr * m, step)
        out: list[Tensor] = []
        tb = None
        ti = None
        for k, amp in enumerate(space.amplitudes(tile, [nr, *rest], grad)):
            amp = borders[k].apply(amp, r0, grad)
            flat = amp.reshape(-1)
            sub = (flat[v] if v is not None else flat)[pick]
            out.append(sub if grad or v is not None else sub.clone())
            if tb is None:
                tb = amp
                if best is not None:
                    ti = torch.zeros(amp.shape, dtype=amp.dtype, device=amp.device)
                continue
            # index of the best scale in float arithmetic (boolean masks are slow on
            # CPU): indices grow with k, so ti = max(ti, k [amp > tb])
            assert ti is not None
            up = torch.gt(amp.detach(), tb.detach(), out=torch.empty_like(ti))
            ti = torch.maximum(ti, up.mul_(float(k)), out=ti)
            tb = torch.maximum(tb, amp) if grad else torch.maximum(tb, amp, out=tb)
        assert tb is not None
        if best is not None and ti is not None:
            best[r0:r1] = ti
        if grad:
            return out, tb
        assert amp_best is not None
        amp_best[r0:r1] = tb
        return out, None

    starts = list(range(0, n0, rows))
    if valid is not None:
        per_tile = valid.reshape(n0, -1).sum(1).reshape(-1)
        counts = torch.stack([per_tile[r0 : r0 + rows].sum() for r0 in starts])
        n_before = torch.cumsum(counts, 0) - counts
    results = _map_tiles(run_tile, starts, 1 if grad else workers)
    for k in range(n_s):
        samples[k] = [r[0][k] for r in results]
    if grad:
        amp_best = results[0][1]
    assert amp_best is not None
    noise = _mad_sigma(torch.stack([torch.cat(q) for q in samples]))
    inv = 1.0 / noise
    # pass 2: SNR, probability and candidates, in cache-sized chunks
    if grad or thr.requires_grad or temp.requires_grad:
        score = amp_best * (inv[best.long()] if best is not None else inv[0])
        if valid is not None:
            score = torch.where(valid, score, torch.zeros_like(score))
        probability = torch.sigmoid((score - thr) / temp)
        above = (score.detach() > thr.detach()).nonzero()
        return score, best, noise, space, probability, above
    score = amp_best
    probability = torch.empty_like(score)
    flat_s = score.view(-1)
    flat_p = probability.view(-1)
    flat_b = best.view(-1) if best is not None else None
    flat_v = valid.reshape(-1) if valid is not None else None
    t = float(thr)
    tt = float(temp)
    chunk = 1 << 18

    def run_chunk(c0: int) -> Tensor:
        sc = flat_s[c0 : c0 + chunk]
        if flat_b is not None:
            sc.mul_(inv[flat_b[c0 : c0 + chunk].int()])
        else:
            sc.mul_(inv[0])
        if flat_v is not None:
            sc.mul_(flat_v[c0 : c0 + chunk])
        torch.sub(sc, t, out=flat_p[c0 : c0 + chunk]).div_(tt).sigmoid_()
        return (sc > t).nonzero()[:, 0] + c0

    hits = _map_tiles(run_chunk, list(range(0, flat_s.numel(), chunk)), workers)
    flat_idx = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.long, device=img.device)
    above = torch.stack(torch.unravel_index(flat_idx, img.shape), dim=1)
    return score, best, noise, space, probability, above


def _refine_at_scale(
    img: Tensor, idx: Tensor, s_idx: Tensor, space: _ScaleSpace, chunk: int = 1024
) -> Tensor:
    """Sub-pixel positions from each spot's own scale (not the patchwork best-scale map).

    For each peak the response of its scale's template (the scale-space kernel, a sum of
    ``ndim`` separable terms, truncated at 4 sigma + 1 per axis) is evaluated on the
    3^ndim pixels around it by contracting the image patch axis by axis (GEMMs); the
    peak moves to the best of them (once), then each axis is refined by the vertex of
    the log-parabola through the three responses along it.  Differentiable in ``img``.
    """
    ndim = img.ndim
    pos = idx.to(img.dtype)
    if idx.shape[0] == 0:
        return pos
    out = pos.clone()
    shape = list(img.shape)
    lim = torch.tensor(shape, device=idx.device) - 1
    strides = [math.prod(shape[a + 1 :]) for a in range(ndim)]
    flat_img = img.reshape(-1)
    tiny = torch.finfo(img.dtype).tiny
    for k in range(len(space.sig)):
        sel = (s_idx == k).nonzero()[:, 0]
        if sel.numel() == 0:
            continue
        g_axes, d_axes = space.axis_kernels(k)
        rad = [min(g.numel() // 2, math.ceil(4.0 * sg) + 1) for g, sg in zip(g_axes, space.sig[k])]
        mats = []  # per axis (2r + 3, 6): 3 shifted smoothing kernels, 3 shifted D2 kernels
        for a in range(ndim):
            c = g_axes[a].numel() // 2
            cols = []
            for kk in (g_axes[a], d_axes[a]):
                kt = kk[c - rad[a] : c + rad[a] + 1]
                for j in range(3):
                    col = torch.zeros(2 * rad[a] + 3, dtype=torch.float64)
                    col[j : j + kt.numel()] = kt
                    cols.append(col)
            mats.append(torch.stack(cols, 1).to(img))
        w = [-(v**2) for v in space.sig[k]]

        def responses(at: Tensor, rad: list = rad, mats: list = mats, w: list = w) -> Tensor:
            lin = None
            for a in range(ndim):
                co = at[:, a, None] + torch.arange(-rad[a] - 1, rad[a] + 2, device=at.device)
                co = _reflect_index(co, shape[a]) * strides[a]
                view = [at.shape[0]] + [1] * ndim
                view[a + 1] = co.shape[1]
                lin = co.reshape(view) if lin is None else lin + co.reshape(view)
            assert lin is not None
            t = flat_img[lin]  # (n, *patch)
            for a in range(ndim - 1, -1, -1):
                # contract the last patch axis, put the (kernel x offset) axis first
                t = torch.movedim(t @ mats[a], -1, 1)  # (n, 6, ..., patch axes left)
            # t: (n, 6 [axis 0], 6 [axis 1], ...); sum of the ndim separable terms
            t = t.reshape(t.shape[0], *([2, 3] * ndim))
            r = None
            for a in range(ndim):
                ix = []
                for b in range(ndim):
                    ix += [1 if b == a else 0, slice(None)]
                term = w[a] * t[(slice(None), *ix)]
                r = term if r is None else r + term
            assert r is not None
            return r  # (n, 3, ..., 3)

        for c0 in range(0, sel.numel(), chunk):
            rows = sel[c0 : c0 + chunk]
            at = idx[rows]
            r3 = responses(at)
            jbest = r3.detach().reshape(r3.shape[0], -1).argmax(1)
            step = torch.stack(torch.unravel_index(jbest, [3] * ndim), 1) - 1
            if bool(step.any()):
                at = torch.minimum((at + step).clamp_min(0), lim)
                r3 = responses(at)
            off = []
            for a in range(ndim):
                ix: list[Any] = [1] * ndim
                f0 = r3[(slice(None), *ix)]
                ix[a] = 0
                fl = r3[(slice(None), *ix)]
                ix[a] = 2
                fh = r3[(slice(None), *ix)]
                ok = (fl > 0) & (fh > 0) & (f0 > 0)
                lf0, lfl, lfh = (torch.log(v.clamp_min(tiny)) for v in (f0, fl, fh))
                num = torch.where(ok, lfl - lfh, fl - fh)
                den = torch.where(ok, lfl - 2 * lf0 + lfh, fl - 2 * f0 + fh)
                safe = den < 0
                o = torch.where(
                    safe, 0.5 * num / torch.where(safe, den, torch.ones_like(den)), 0 * den
                )
                edge = (at[:, a] == 0) | (at[:, a] == lim[a])
                off.append(torch.where(edge, 0 * o, o.clamp(-0.5, 0.5)))
            out = out.index_put((rows,), at.to(img.dtype) + torch.stack(off, 1))
    return out


def _candidate_maxima(score: Tensor, cand: Tensor, radius: int) -> Tensor:
    """The candidates (above threshold, usually few) that equal the maximum of their
    (2 radius + 1)^ndim neighbourhood; cheaper than a full-image max filter.  A 3^ndim
    test first removes most candidates (the flanks of each peak)."""
    if radius > 1:
        cand = _local_max_filter(score, cand, 1)
    return _local_max_filter(score, cand, radius)


def _local_max_filter(score: Tensor, cand: Tensor, radius: int) -> Tensor:
    if cand.shape[0] == 0:
        return cand
    ndim = score.ndim
    r = torch.arange(-radius, radius + 1, device=cand.device)
    offs = torch.stack(torch.meshgrid(*([r] * ndim), indexing="ij"), -1).reshape(-1, ndim)
    shape = torch.tensor(score.shape, device=cand.device)
    keep = torch.ones(cand.shape[0], dtype=torch.bool, device=cand.device)
    v0 = score[tuple(cand.T)]
    for c0 in range(0, cand.shape[0], 1 << 14):
        c = cand[c0 : c0 + (1 << 14)]
        nb = c[:, None, :] + offs[None]
        inside = ((nb >= 0) & (nb < shape)).all(-1)
        nb = torch.minimum(nb.clamp_min(0), shape - 1)
        vals = score[tuple(nb.reshape(-1, ndim).T)].reshape(nb.shape[:2])
        vals = torch.where(inside, vals, torch.full_like(vals, float("-inf")))
        keep[c0 : c0 + c.shape[0]] = (v0[c0 : c0 + c.shape[0], None] >= vals).all(1)
    return cand[keep]


def _subpixel(score: Tensor, idx: Tensor) -> Tensor:
    """Per-axis 3-point Gaussian (log-parabola) interpolation around integer peaks."""
    ndim = score.ndim
    pos = idx.to(score.dtype)
    offsets = []
    shape = torch.tensor(score.shape, device=idx.device)
    for a in range(ndim):
        lo = idx.clone()
        hi = idx.clone()
        lo[:, a] = (idx[:, a] - 1).clamp_min(0)
        hi[:, a] = torch.minimum(idx[:, a] + 1, shape[a] - 1)
        f0 = score[tuple(idx.T)]
        fl = score[tuple(lo.T)]
        fh = score[tuple(hi.T)]
        pos_ok = (fl > 0) & (fh > 0) & (f0 > 0)
        tiny = torch.finfo(score.dtype).tiny
        lf0, lfl, lfh = (torch.log(v.clamp_min(tiny)) for v in (f0, fl, fh))
        den_log = lfl - 2 * lf0 + lfh
        den_lin = fl - 2 * f0 + fh
        num = torch.where(pos_ok, lfl - lfh, fl - fh)
        den = torch.where(pos_ok, den_log, den_lin)
        safe = den < 0
        off = torch.where(
            safe, 0.5 * num / torch.where(safe, den, torch.ones_like(den)), torch.zeros_like(den)
        )
        edge = (idx[:, a] == 0) | (idx[:, a] == shape[a] - 1)
        off = torch.where(edge, torch.zeros_like(off), off.clamp(-0.5, 0.5))
        offsets.append(off)
    return pos + torch.stack(offsets, dim=1) if offsets else pos


def detect_spots(
    image: Tensor,
    *,
    sigma: float | Sequence[float],
    threshold: float | Tensor = 5.0,
    template: str = "log",
    anisotropy: float = 1.0,
    psf: Any = None,
    min_distance: int | None = None,
    exclude_border: int = 0,
    method: str = "auto",
    temperature: float | Tensor = 0.5,
    max_spots: int | None = None,
) -> SpotTable:
    r"""Detect spots by a multi-scale matched filter, in 2-D, 3-D or space-time.

    Parameters
    ----------
    image : Tensor, shape (y, x), (z, y, x) or (t, y, x)
        Image, stack or movie.  Integer images are converted to float32 by value
        (never rescaled).  NaN/inf pixels are masked: they are filled with the median of
        the finite pixels before filtering and never reported as spots.
    sigma : float or sequence of float
        Template scale(s) in pixels (in-plane Gaussian sigma of the spot).  Several
        values give a multi-scale search; each spot is reported at its best scale.
    threshold : float or Tensor
        Detection threshold on the SNR (filter response / robust noise of the response).
    template : {"log", "gaussian", "psf"}
        ``"log"``: scale-normalised negative Laplacian of Gaussian; ``"gaussian"``: Gaussian
        of the spot scale minus a 3x wider Gaussian (local background); ``"psf"``: the
        zero-mean, unit-norm ``psf`` array (single scale).
    anisotropy : float
        For 3-D inputs: sigma of the first axis divided by the in-plane sigma (z sampling
        for ``zyx`` stacks, temporal width in frames for ``tyx`` flashes).
    psf : array_like, optional
        Template for ``template="psf"`` (same dimensionality as ``image``).
    min_distance : int, optional
        Radius (pixels) of the non-maximum suppression window; default
        ``max(1, round(max(sigma)))``.
    exclude_border : int
        Spots closer than this to the border are dropped.
    method : {"auto", "tiled", "separable", "fft"}
        ``"auto"``/``"tiled"`` with the LoG template: the discrete LoG scale space, all
        scales in one tiled pass (see Notes); other templates under ``"auto"``, and
        ``"separable"``/``"fft"``: the exact sampled template by block-banded matmuls
        (up to 41 taps per axis on images below 2^18 pixels) or FFT, all scales dense.
    temperature : float or Tensor
        Width of the sigmoid of the probability map, in SNR units.
    max_spots : int, optional
        Keep only the strongest ``max_spots`` detections.

    Returns
    -------
    SpotTable
        ``positions`` (n, ndim), ``scale``, ``amplitude``, ``snr`` and the dense ``score``
        and ``probability`` maps.

    Raises
    ------
    ValueError
        If the image is empty, not 2-D/3-D, all NaN, or a template is larger than it;
        if a parameter is out of range.
    TypeError
        If the image is not numeric.

    Notes
    -----
    For white noise of standard deviation :math:`\sigma_n` the matched filter
    :math:`r = I \star K` maximises the SNR of a known blob shape.  With the
    scale-normalised LoG :math:`K_s = -\sum_i s_i^2 \partial_i^2 G_s` (made exactly
    zero-mean so a locally linear background gives no response) the response to a
    Gaussian spot of amplitude :math:`A` and the same scale is :math:`A\,g` with the gain
    :math:`g = \tfrac{D}{2}2^{-D/2}` (computed numerically for the sampled kernel), so
    ``amplitude = r / g``.  The noise of :math:`r` is estimated as
    :math:`1.4826\,\mathrm{MAD}(r)` over the image (robust to the spots themselves, and
    valid for correlated noise because it is measured after filtering), and
    :math:`\mathrm{SNR} = r / (1.4826\,\mathrm{MAD}(r))`.  Spots are local maxima of the
    SNR map at the selected scale within a window of radius ``min_distance`` with
    :math:`\mathrm{SNR} > \tau`; positions are refined per axis by the vertex of the
    parabola through the logarithm of the three responses around the peak (exact for a
    Gaussian profile).

    The default ``"tiled"`` method builds the discrete scale space incrementally,
    :math:`G_k = g_{\delta_k} * G_{k-1}` with :math:`\delta_k^2 = s_k^2 - s_{k-1}^2`
    (sampled Gaussians of radius :math:`\lceil 4\delta_k \rceil`), and
    :math:`R_k = -\sum_i s_{k,i}^2 \Delta_i^2 G_k` with the 3-point second difference
    :math:`\Delta_i^2` (zero-sum, so flat and linear backgrounds give no response);
    tiles along the first axis keep only :math:`\max_k R_k / g_k` and its argmax, and
    positions are refined with the responses of the spot's own scale (not the
    best-scale map, which mixes scales around a peak).  The probability map is
    :math:`\sigma((\mathrm{SNR}-\tau)/T)`, differentiable in the image, :math:`\tau` and
    :math:`T`.

    References
    ----------
    .. [1] T. Lindeberg, "Feature detection with automatic scale selection", IJCV 30 (1998).
    .. [2] A. Small, S. Stahlheber, "Fluorophore localization algorithms for
       super-resolution microscopy", Nat. Methods 11 (2014).

    Examples
    --------
    >>> import torch
    >>> img = torch.zeros(32, 32)
    >>> yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    >>> img += 10 * torch.exp(-((yy - 12.3) ** 2 + (xx - 20.0) ** 2) / (2 * 1.5**2))
    >>> img += 0.5 * torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    >>> t = detect_spots(img, sigma=1.5)
    >>> len(t), [round(v, 1) for v in t.positions[0].tolist()]
    (1, [12.3, 20.0])
    """
    img = as_float_tensor(image, "image")
    check_nonempty(img, "image")
    check_ndim(img, "image", (2, 3), axes="yx, zyx or tyx")
    check_in(template, "template", ("log", "gaussian", "psf"))
    check_in(method, "method", ("auto", "tiled", "separable", "fft"))
    check_positive(anisotropy, "anisotropy")
    check_positive(
        float(temperature.detach()) if isinstance(temperature, Tensor) else temperature,
        "temperature",
    )
    if exclude_border < 0:
        raise ValueError(f"exclude_border: expected a non-negative integer, got {exclude_border!r}")
    scales = [1.0] if template == "psf" else _as_scales(sigma)
    valid = None
    # one reduction instead of a full-size mask when everything is finite (the usual case)
    if not bool(torch.isfinite(img.detach().sum())) and not bool(torch.isfinite(img).all()):
        finite = torch.isfinite(img)
        if not bool(finite.any()):
            raise ValueError(f"image: expected some finite pixels, got all {img.numel()} NaN/inf")
        valid = finite
        fill = img[finite].median()
        img = torch.where(finite, img, fill)
    workers = 1
    stack = contextlib.ExitStack()
    if template == "log" and method in ("auto", "tiled"):
        if not (torch.is_grad_enabled() and img.requires_grad):
            workers = stack.enter_context(_TileThreads())
    with stack:
        thr = threshold if isinstance(threshold, Tensor) else torch.as_tensor(float(threshold))
        thr = thr.to(img)
        temp = (
            temperature if isinstance(temperature, Tensor) else torch.as_tensor(float(temperature))
        )
        temp = temp.to(img)
        above = None
        space = None
        if template == "log" and method in ("auto", "tiled"):
            # default path: discrete LoG scale space, every scale in one tiled pass
            score, scale_of, noise_amp, space, probability, above = _scale_space_score(
                img, scales, anisotropy, valid, thr, temp, workers=workers
            )
            amp_of = noise_amp
        else:
            resp, gain = spot_filter(
                img, sigma=scales, template=template, anisotropy=anisotropy, psf=psf, method=method
            )
            noise = _robust_sigma(resp, valid)
            snr_all = resp / noise.reshape(-1, *([1] * img.ndim))
            if snr_all.shape[0] == 1:
                score = snr_all[0]
                scale_of = None
            else:
                # scale selection on the amplitude estimate (scale-normalised response), not on
                # the SNR, which favours wider templates (they average more noise)
                amp_all = resp / gain.reshape(-1, *([1] * img.ndim))
                scale_of = amp_all.detach().argmax(dim=0)
                score = snr_all.gather(0, scale_of[None])[0]
            amp_of = noise / gain
            if valid is not None:
                score = torch.where(valid, score, torch.zeros_like(score))
            probability = torch.sigmoid((score - thr) / temp)

        radius = int(min_distance) if min_distance is not None else max(1, round(max(scales)))
        with torch.no_grad():
            sd = score.detach()
            if above is None:
                above = (sd > thr.detach()).nonzero()
            idx = _candidate_maxima(sd, above, radius)
            if exclude_border > 0 and idx.shape[0]:
                hi = torch.tensor(img.shape, device=idx.device) - exclude_border
                idx = idx[((idx >= exclude_border) & (idx < hi)).all(1)]
            if idx.shape[0] > 1:
                # plateaus: keep one index per flat maximum (the first in raster order)
                vals = score.detach()[tuple(idx.T)]
                order = torch.argsort(vals, descending=True, stable=True)
                idx = idx[order]
                if max_spots is not None:
                    idx = idx[: int(max_spots)]
                idx = _dedupe_plateaus(idx, radius)
            elif max_spots is not None:
                idx = idx[: int(max_spots)]
        if scale_of is None:
            s_idx = torch.zeros(idx.shape[0], dtype=torch.long, device=img.device)
        else:
            s_idx = scale_of[tuple(idx.T)].long()
        if space is not None:
            positions = _refine_at_scale(img, idx, s_idx, space)
        else:
            positions = _subpixel(score, idx)
        snr = score[tuple(idx.T)]
        # amplitude = SNR x (noise of the amplitude map of the spot's scale), times the
        # border noise ratio the tiled path divided the SNR by
        amplitude = snr * amp_of[s_idx]
        if space is not None:
            amplitude = amplitude * _border_ratio_at(space, idx, s_idx, list(img.shape)).to(
                amplitude
            )
        scale = img.new_tensor(scales)[s_idx]
        return SpotTable(
            positions=positions,
            scale=scale,
            amplitude=amplitude,
            snr=snr,
            score=score,
            probability=probability,
        )


def _dedupe_plateaus(idx: Tensor, radius: int) -> Tensor:
    """Drop peaks (sorted by decreasing score) that lie within ``radius`` (Chebyshev) of a
    stronger kept peak: equal-valued neighbours on a plateau all pass the max-pool test."""
    if idx.shape[0] < 2:
        return idx
    d = (idx[:, None, :] - idx[None, :, :]).abs().amax(-1) if idx.shape[0] <= 4096 else None
    if d is None:
        # large tables: plateaus are rare, check only exact-neighbour duplicates via a grid
        keep = torch.ones(idx.shape[0], dtype=torch.bool, device=idx.device)
        seen: set[tuple[int, ...]] = set()
        for i, row in enumerate(idx.tolist()):
            key = tuple(v // (radius + 1) for v in row)
            if key in seen:
                near = idx[:i][keep[:i]]
                if bool(((near - idx[i]).abs().amax(-1) <= radius).any()):
                    keep[i] = False
                    continue
            seen.add(key)
        return idx[keep]
    close = (d <= radius) & torch.ones_like(d, dtype=torch.bool).triu(1)
    keep = ~close.any(0)
    # a peak suppressed only by an already suppressed peak is kept (greedy, in order)
    if bool((~keep).any()):
        keep = torch.ones(idx.shape[0], dtype=torch.bool, device=idx.device)
        for j in range(idx.shape[0]):
            if keep[j] and bool((close[:j, j] & keep[:j]).any()):
                keep[j] = False
    return idx[keep]


class SpotDetector(Component):
    """Module twin of :func:`detect_spots` with a learnable threshold and temperature.

    Parameters
    ----------
    sigma, threshold, template, anisotropy, min_distance, exclude_border, method,
    temperature, max_spots
        As in :func:`detect_spots`.  ``threshold`` and ``temperature`` become
        ``nn.Parameter`` s (they move the soft probability map under ``Pipeline.refine``;
        the hard table uses their current values).
    """

    name = "detection.spots"
    function = staticmethod(detect_spots)
    differentiable = True
    footprint = 8

    def __init__(
        self,
        *,
        sigma: float | list[float] = 1.5,
        threshold: float = 5.0,
        template: str = "log",
        anisotropy: float = 1.0,
        min_distance: int | None = None,
        exclude_border: int = 0,
        method: str = "auto",
        temperature: float = 0.5,
        max_spots: int | None = None,
    ) -> None:
        check_in(template, "template", ("log", "gaussian"))
        _as_scales(sigma)
        super().__init__(
            sigma=sigma,
            threshold=float(threshold),
            template=template,
            anisotropy=float(anisotropy),
            min_distance=min_distance,
            exclude_border=int(exclude_border),
            method=method,
            temperature=float(temperature),
            max_spots=max_spots,
        )
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))

    def forward(self, image: Tensor) -> SpotTable:
        cfg = self.config()
        cfg["threshold"] = self.threshold
        cfg["temperature"] = self.temperature
        return detect_spots(image, **cfg)

    def self_supervised_loss(self, inputs: Any, output: Any) -> Tensor | None:
        """Entropy of the probability map: small when pixels are confidently spot or
        background (a label-free criterion for the threshold and temperature)."""
        p = output.probability.clamp(1e-6, 1 - 1e-6)
        return -(p * p.log() + (1 - p) * (1 - p).log()).mean()

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        return [
            ({"image": np.zeros(8, dtype=np.float32)}, ValueError, "image: expected 2-D or 3-D"),
            ({"image": np.zeros((4, 4), dtype=np.float32)}, ValueError, "larger than the image"),
            ({"image": np.full((32, 32), np.nan, dtype=np.float32)}, ValueError, "finite"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.detection import _reference as ref

        out_schema = {
            "positions": TensorSchema(
                axes="nc", units="pixel", description="sub-pixel spot positions"
            ),
            "snr": TensorSchema(axes="n", description="matched-filter SNR"),
            "score": TensorSchema(axes="yx", description="dense SNR map"),
        }
        common: dict[str, Any] = dict(
            family="detection",
            task="spot-detection",
            modality="microscopy",
            scale="micro",
            differentiable=True,
            authors=("learndock developers",),
        )
        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.spots.fluorescence",
                    inputs={"image": TensorSchema(axes="yx", description="fluorescence image")},
                    outputs=out_schema,
                    description="LoG matched filter for diffraction-limited fluorescent spots (sigma 1.5 px), SNR threshold 5 with MAD noise, sub-pixel table",
                    tags=("fluorescence", "smfish", "matched-filter", "log", "2d"),
                    **common,
                ),
                params={"sigma": 1.5, "threshold": 5.0},
                reference_data=lambda seed: ref.spots_image(seed, shape=(128, 128)),
                example=lambda: {"image": ref.spots_image(0, shape=(48, 48), n_spots=6)},
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.spots.fluorescence-3d",
                    inputs={"image": TensorSchema(axes="zyx", description="fluorescence z-stack")},
                    outputs={**out_schema, "score": TensorSchema(axes="zyx")},
                    description="3-D LoG matched filter for spots in z-stacks with anisotropic z sampling (sigma_z = 2 sigma_xy)",
                    tags=("fluorescence", "3d", "z-stack", "matched-filter"),
                    **common,
                ),
                params={"sigma": 1.5, "anisotropy": 0.5, "threshold": 5.0},
                reference_data=lambda seed: ref.spots_volume(seed, shape=(16, 48, 48)),
                example=lambda: {"image": ref.spots_volume(0, shape=(8, 24, 24), n_spots=3)},
            ),
            Declaration(
                spec=SemanticSpec(
                    name="detection.spots.flashes",
                    inputs={"image": TensorSchema(axes="tyx", description="time-lapse movie")},
                    outputs={**out_schema, "score": TensorSchema(axes="tyx")},
                    description="space-time matched filter for short transient flashes (e.g. calcium sparks, vesicle fusion) in a time-lapse",
                    tags=("time-lapse", "flashes", "transients", "sparks", "matched-filter"),
                    **common,
                ),
                params={"sigma": 1.5, "anisotropy": 1.0, "threshold": 5.0},
                reference_data=lambda seed: ref.flashes_movie(seed, shape=(24, 48, 48)),
                example=lambda: {"image": ref.flashes_movie(0, shape=(10, 24, 24), n_flashes=3)},
            ),
        ]
