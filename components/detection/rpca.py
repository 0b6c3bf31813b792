"""Robust PCA (principal component pursuit) for background/foreground separation.

A time-lapse whose background is low rank (a few spatial patterns with slowly varying
gains) and whose events are sparse (a few pixels at a few times) is split into
``low_rank + sparse`` by principal component pursuit, solved with the inexact augmented
Lagrange multiplier method.  Singular-value thresholding goes through the small Gram
matrix of the (pixels x time) matrix, so each iteration costs O(pixels x time^2) and no
full SVD of the big matrix is ever taken.  A streaming variant processes long movies
chunk by chunk with a carried low-rank basis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from components._validation import (
    as_float_tensor,
    check_in,
    check_ndim,
    check_nonempty,
    check_positive,
)
from components.base import Component, Declaration
from specs.semantic import SemanticSpec, TensorSchema

__all__ = [
    "RPCAResult",
    "RobustPCA",
    "RobustPCAOutput",
    "robust_pca",
    "robust_pca_online",
    "rpca_scores",
    "svt",
]


class RPCAResult(NamedTuple):
    """``(low_rank, sparse)``, each the shape of the input."""

    low_rank: Tensor
    sparse: Tensor


def svt(X: Tensor, tau: float | Tensor, *, method: str = "gram") -> tuple[Tensor, int]:
    r"""Singular-value thresholding :math:`U\,\max(\Sigma-\tau, 0)\,V^T` of a 2-D matrix.

    ``method="gram"`` works on the Gram matrix of the short side: for
    :math:`X\in\mathbb{R}^{m\times n}` with :math:`n\le m`, :math:`X^TX = V\Sigma^2V^T`
    (an n x n eigenproblem, in float64) and
    :math:`\mathrm{SVT}_\tau(X) = X\,V\,\mathrm{diag}(\max(\sigma-\tau,0)/\sigma)\,V^T`,
    which costs two m x n x n products.  ``method="full"`` uses ``torch.linalg.svd``.

    Returns
    -------
    (Tensor, int)
        The thresholded matrix and its rank.
    """
    transpose = X.shape[0] < X.shape[1]
    A = X.T if transpose else X
    if method == "full":
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        s = torch.clamp(S - tau, min=0)
        r = int((s > 0).sum())
        out = (U[:, :r] * s[:r]) @ Vh[:r]
    else:
        G = (A.T @ A).to(torch.float64)
        evals, V = torch.linalg.eigh(G)
        sig = evals.clamp_min(0).sqrt()
        tau64 = (
            tau.to(torch.float64)
            if isinstance(tau, Tensor)
            else torch.as_tensor(float(tau), dtype=torch.float64)
        )
        keep = sig > tau64
        r = int(keep.sum())
        if r == 0:
            out = torch.zeros_like(A)
        else:
            Vk = V[:, keep]
            scale = (sig[keep] - tau64) / sig[keep]
            Vk_t = Vk.to(A.dtype)
            out = (A @ Vk_t) @ (Vk * scale).to(A.dtype).T
    return (out.T if transpose else out), r


def _svt_subspace(
    A: Tensor, tau: float, V0: Tensor | None, k: int, *, n_power: int = 1
) -> tuple[Tensor, Tensor, int]:
    """SVT through a warm-started randomised range finder of width ``k``.

    ``A`` is (m, n) with n <= m.  ``V0`` (n, k0) is the previous iteration's right
    singular basis (the subspace moves little between ALM iterations), completed with
    Gaussian columns to width ``k``.  The width grows until the smallest computed
    singular value falls below ``tau`` (so no kept singular value is missed) or reaches
    n, in which case the exact Gram route is used.  Returns (thresholded A, new basis, rank).
    """
    _m, n = A.shape
    while True:
        if k >= n // 2:
            out, r = svt(A, tau, method="gram")
            return out, torch.zeros(n, 0, dtype=A.dtype, device=A.device), r
        gen = torch.Generator(device="cpu").manual_seed(k)
        omega = torch.randn(n, k, generator=gen, dtype=A.dtype).to(A.device)
        if V0 is not None and V0.shape[1] > 0:
            c = min(k, V0.shape[1])
            omega[:, :c] = V0[:, :c]
        Y = A @ omega
        for _ in range(n_power):
            Q, _ = torch.linalg.qr(Y)
            Y = A @ (A.T @ Q)
        Q, _ = torch.linalg.qr(Y)
        B = Q.T @ A  # (k, n)
        Ub, S, Vh = torch.linalg.svd(B, full_matrices=False)
        if float(S[-1]) < tau:
            keep = S > tau
            r = int(keep.sum())
            out = (Q @ (Ub[:, :r] * (S[:r] - tau))) @ Vh[:r]
            return out, Vh[: max(r, 1)].T, r
        k = 2 * k


def _shrink(X: Tensor, tau: float | Tensor) -> Tensor:
    return torch.sign(X) * torch.clamp(X.abs() - tau, min=0)


def robust_pca(
    M: Tensor,
    *,
    lam: float | None = None,
    tol: float = 1e-7,
    max_iter: int = 500,
    mu: float | None = None,
    rho: float = 1.5,
    svd: str = "gram",
) -> RPCAResult:
    r"""Principal component pursuit by the inexact augmented Lagrange multiplier method.

    Parameters
    ----------
    M : Tensor, shape (m, n) or (t, y, x)
        Data matrix, or a movie (reshaped to the (pixels x time) matrix internally).
        NaN/inf entries are not allowed (fill or mask them first).
    lam : float, optional
        Weight of the sparse term; default :math:`1/\sqrt{\max(m, n)}` (Candes et al.).
    tol : float
        Stop when :math:`\|M-L-S\|_F/\|M\|_F<` ``tol``.  It is floored at 10x the machine
        epsilon of the dtype (about 1.2e-6 in float32), below which the residual is
        rounding noise.
    max_iter : int
        Iteration cap.
    mu : float, optional
        Initial penalty; default :math:`1.25/\|M\|_2`.
    rho : float
        Penalty growth factor per iteration.
    svd : {"gram", "subspace", "full"}
        Singular-value thresholding: ``"gram"`` (default) through the small Gram matrix
        of the short side (cost O(m n^2) per iteration); ``"subspace"`` a warm-started
        randomised subspace of width rank + 5 (cost O(m n k)), widened until every
        singular value above the threshold is captured -- fast while the thresholded rank
        stays small (low noise), no faster than ``"gram"`` once the late iterations let
        noise into ``L``; ``"full"`` a thin SVD (reference).

    Returns
    -------
    RPCAResult
        ``(low_rank, sparse)`` with the shape of ``M``.

    Raises
    ------
    ValueError
        Empty input, wrong dimensionality, NaN/inf, non-positive parameters.

    Notes
    -----
    Solves :math:`\min_{L,S}\|L\|_* + \lambda\|S\|_1` s.t. :math:`L+S=M` with the
    iterations :math:`L\leftarrow\mathrm{SVT}_{1/\mu}(M-S+Y/\mu)`,
    :math:`S\leftarrow\mathrm{shrink}_{\lambda/\mu}(M-L+Y/\mu)`, :math:`Y\leftarrow
    Y+\mu(M-L-S)`, :math:`\mu\leftarrow\min(\rho\mu, 10^7\mu_0)`, starting from
    :math:`Y = M/\max(\|M\|_2, \|M\|_\infty/\lambda)`.

    References
    ----------
    .. [1] E. Candes, X. Li, Y. Ma, J. Wright, "Robust principal component analysis?",
       J. ACM 58 (2011).
    .. [2] Z. Lin, M. Chen, Y. Ma, "The augmented Lagrange multiplier method for exact
       recovery of corrupted low-rank matrices", arXiv:1009.5055 (2010).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> L0 = torch.randn(60, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 40, generator=g, dtype=torch.float64)
    >>> S0 = torch.zeros(60, 40, dtype=torch.float64); S0[5, 7] = 10.0; S0[30, 2] = -8.0
    >>> L, S = robust_pca(L0 + S0)
    >>> bool(torch.allclose(L, L0, atol=1e-4)), bool(torch.allclose(S, S0, atol=1e-4))
    (True, True)
    """
    X = as_float_tensor(M, "M")
    check_nonempty(X, "M")
    check_ndim(X, "M", (2, 3), axes="(m, n) or tyx")
    if not bool(torch.isfinite(X).all()):
        raise ValueError(
            "M: expected finite values, got NaN/inf (robust_pca needs a complete matrix; fill missing entries first)"
        )
    check_positive(tol, "tol")
    check_positive(rho, "rho")
    check_in(svd, "svd", ("gram", "subspace", "full"))
    shape = X.shape
    A = X.reshape(shape[0], -1).T if X.ndim == 3 else X  # (pixels, time) for movies
    m, n = A.shape
    lam_v = 1.0 / math.sqrt(max(m, n)) if lam is None else float(lam)
    check_positive(lam_v, "lam")
    tol_eff = max(float(tol), 10 * torch.finfo(A.dtype).eps)
    normF = torch.linalg.norm(A)
    if float(normF) == 0.0:
        z = torch.zeros_like(X)
        return RPCAResult(z, z.clone())
    norm2 = _spectral_norm(A)
    norm_inf = A.abs().max() / lam_v
    Y = A / torch.maximum(norm2, norm_inf)
    mu_v = 1.25 / float(norm2) if mu is None else float(mu)
    check_positive(mu_v, "mu")
    mu_max = mu_v * 1e7
    S = torch.zeros_like(A)
    L = torch.zeros_like(A)
    transpose = m < n
    V: Tensor | None = None
    r = 0
    use_sub = svd == "subspace" and min(m, n) > 64
    for _ in range(int(max_iter)):
        if use_sub:
            B = A - S + Y / mu_v
            Bt = B.T if transpose else B
            Lt, V, r = _svt_subspace(Bt, 1.0 / mu_v, V, max(8, r + 5))
            L = Lt.T if transpose else Lt
        else:
            L, r = svt(A - S + Y / mu_v, 1.0 / mu_v, method="full" if svd == "full" else "gram")
        S = _shrink(A - L + Y / mu_v, lam_v / mu_v)
        Z = A - L - S
        Y = Y + mu_v * Z
        mu_v = min(mu_v * rho, mu_max)
        if float(torch.linalg.norm(Z) / normF) < tol_eff:
            break
    if X.ndim == 3:
        return RPCAResult(L.T.reshape(shape), S.T.reshape(shape))
    return RPCAResult(L, S)


def _spectral_norm(A: Tensor) -> Tensor:
    """Largest singular value through the Gram matrix of the short side."""
    G = (A.T @ A) if A.shape[0] >= A.shape[1] else (A @ A.T)
    return torch.linalg.eigvalsh(G.to(torch.float64)).max().clamp_min(0).sqrt().to(A.dtype)


def robust_pca_online(
    M: Tensor,
    *,
    chunk: int = 100,
    rank: int = 5,
    lam: float | None = None,
    tol: float = 1e-6,
    max_iter: int = 500,
) -> RPCAResult:
    """Streaming robust PCA of a long (t, y, x) movie, chunk by chunk along t.

    Each chunk of frames is decomposed together with ``rank`` pseudo-frames that carry
    the background learned so far (the top singular vectors of the previous low-rank
    part, scaled by their singular values per frame); the low-rank basis is then updated
    from the new chunk's low-rank part.  Memory is O(pixels x (chunk + rank)).

    Parameters
    ----------
    M : Tensor, shape (t, y, x) or (t, n)
        Movie, time first.
    chunk : int
        Frames per chunk.
    rank : int
        Size of the carried background basis.
    lam, tol, max_iter
        As in :func:`robust_pca` (``lam`` default from the chunk size).

    Returns
    -------
    RPCAResult
        ``(low_rank, sparse)`` with the shape of ``M``.

    Examples
    --------
    >>> from components.detection._reference import make_movie
    >>> movie, bg, ev = make_movie(shape=(120, 16, 16), seed=0)
    >>> L, S = robust_pca_online(torch.as_tensor(movie), chunk=40, rank=3)
    >>> L.shape == movie.shape
    True
    """
    X = as_float_tensor(M, "M")
    check_nonempty(X, "M")
    check_ndim(X, "M", (2, 3), axes="tyx or (t, n)")
    if int(chunk) < 2:
        raise ValueError(f"chunk: expected at least 2 frames, got {chunk!r}")
    if int(rank) < 1:
        raise ValueError(f"rank: expected a positive integer, got {rank!r}")
    t = X.shape[0]
    flat = X.reshape(t, -1)
    L_all = torch.empty_like(flat)
    S_all = torch.empty_like(flat)
    basis: Tensor | None = None  # (rank, pixels): carried background pseudo-frames
    for s in range(0, t, int(chunk)):
        e = min(t, s + int(chunk))
        block = flat[s:e]
        k = 0
        if basis is not None:
            block = torch.cat([basis, block], dim=0)
            k = basis.shape[0]
        L, S = robust_pca(block, lam=lam, tol=tol, max_iter=max_iter)
        L_all[s:e] = L[k:]
        S_all[s:e] = S[k:]
        # update the carried basis from the low-rank part of this block (pseudo-frames
        # included, so the background memory decays slowly rather than being replaced)
        _U, Sv, Vh = torch.linalg.svd(L, full_matrices=False)
        r = min(int(rank), int((Sv > Sv[0] * 1e-6).sum()) if Sv.numel() else 0)
        if r > 0:
            basis = (Sv[:r, None] * Vh[:r]) / math.sqrt(max(1, L.shape[0]) / max(1, r))
    return RPCAResult(L_all.reshape(X.shape), S_all.reshape(X.shape))


@dataclasses.dataclass
class RobustPCAOutput:
    """Low-rank background, sparse foreground and calibrated event scores.

    Attributes
    ----------
    low_rank, sparse : Tensor
        The decomposition, shape of the input.
    score : Tensor
        ``sparse / noise``: the sparse component in units of the robust noise level of
        the residual ``M - low_rank`` (1.4826 MAD), shape of the input.
    probability : Tensor
        ``sigmoid((|score| - threshold) / temperature)``.
    """

    low_rank: Tensor
    sparse: Tensor
    score: Tensor
    probability: Tensor
    background: Tensor | None = None
    rank: int | None = None


def _top_subspace_fit(F: Tensor, r: int) -> Tensor:
    """Best rank-``r`` approximation of a 2-D ``F`` through the Gram matrix of its short side."""
    transpose = F.shape[0] < F.shape[1]
    A = F.T if transpose else F
    _evals, V = torch.linalg.eigh((A.T @ A).to(torch.float64))
    Vr = V[:, -r:].to(A.dtype) if r > 0 else V[:, :0].to(A.dtype)
    out = (A @ Vr) @ Vr.T
    return out.T if transpose else out


def _debiased_background(
    A: Tensor, L: Tensor, S: Tensor, *, support_sigma: float = 3.0, n_iter: int = 3
) -> tuple[Tensor, Tensor, int]:
    """Rank-``r`` background refit of ``A`` (2-D) with the PCP support left out.

    ``r`` counts the singular values of ``L`` above the Marchenko-Pastur noise edge
    ``1.2 sigma0 (sqrt(m) + sqrt(n))`` (``sigma0``: the robust scale of ``A - L``); the
    background is refitted at that rank on the entries outside the support
    ``|S| > support_sigma * sigma0`` (missing-data iterations: support entries filled
    with the current fit).  Returns ``(background, noise sigma, r)`` where sigma is
    1.4826 MAD of the refitted residual outside the support.
    """
    m, n = A.shape
    tiny = torch.finfo(A.dtype).tiny
    sig0 = _robust_sigma(A - L).clamp_min(tiny)
    support = S.abs() > support_sigma * sig0
    G = (L.T @ L) if m >= n else (L @ L.T)
    sv = torch.linalg.eigvalsh(G.to(torch.float64)).clamp_min(0).sqrt()
    edge = 1.2 * float(sig0) * (math.sqrt(m) + math.sqrt(n))
    r = int((sv > edge).sum())
    B = torch.zeros_like(A)
    if r > 0:
        B = L
        for _ in range(int(n_iter)):
            B = _top_subspace_fit(torch.where(support, B, A), r)
    R = A - B
    off = R[~support] if bool((~support).any()) else R.reshape(-1)
    return B, _robust_sigma(off).clamp_min(tiny), r


def _robust_sigma(R: Tensor) -> Tensor:
    """1.4826 MAD of the entries of ``R`` (subsampled to about 1e6 entries)."""
    R = R.reshape(-1)
    step = max(1, R.numel() // (1 << 20))
    sub = R[::step]
    return 1.4826 * (sub - sub.median()).abs().median()


def rpca_scores(
    movie: Tensor,
    *,
    lam: float | None = None,
    tol: float = 1e-7,
    max_iter: int = 500,
    threshold: float | Tensor = 5.0,
    temperature: float | Tensor = 1.0,
    online_chunk: int | None = None,
    rank: int = 5,
    debias: bool = True,
) -> RobustPCAOutput:
    r"""Robust PCA plus a calibrated anomaly score per entry.

    Parameters
    ----------
    movie : Tensor, shape (t, y, x) or (m, n)
        Data.
    lam, tol, max_iter
        As in :func:`robust_pca`.
    threshold, temperature : float or Tensor
        Soft event threshold on :math:`|z|` and its width.
    online_chunk : int, optional
        Use :func:`robust_pca_online` with chunks of this many frames.
    rank : int
        Carried basis size of the online variant.
    debias : bool
        Score the residual of a debiased background (see Notes; default) instead of the
        PCP sparse part.  Ignored by the online variant.

    Returns
    -------
    RobustPCAOutput
        ``low_rank`` and ``sparse`` from principal component pursuit; ``score`` and
        ``probability`` per entry; with ``debias``, also ``background`` (the refitted
        low-rank background) and its rank (``rank``).

    Raises
    ------
    ValueError
        If ``movie`` is empty, not 2-D/3-D, or holds NaN/inf.

    Notes
    -----
    Without debiasing the score is :math:`z = S/\hat\sigma` with
    :math:`\hat\sigma = 1.4826\,\mathrm{median}|R-\mathrm{median}(R)|`,
    :math:`R = M - L`.  At convergence of the ALM the thresholding level :math:`1/\mu`
    has fallen below the noise singular values, so :math:`L` also fits part of the noise
    (its rank grows far beyond the background's): :math:`\hat\sigma` is then biased low
    (about 7 % at 64 x 64 x 150) and the nominal 5-sigma threshold is really ~4.6 sigma.

    **Debiasing** (default).  The background rank :math:`r` is the number of singular
    values of :math:`L` above :math:`1.2\,\sigma_0(\sqrt m+\sqrt n)` (the
    Marchenko-Pastur edge of an m x n noise matrix of scale :math:`\sigma_0`, the robust
    scale of :math:`M-L`).  The background :math:`B` is refitted as the best rank-r
    approximation of :math:`M` on the entries outside the PCP support
    :math:`\Omega = \{|S| > 3\sigma_0\}` (three missing-data iterations:
    :math:`B\leftarrow P_r(P_{\Omega}(B)+P_{\Omega^c}(M))`), and the score is
    :math:`z = (M - B)/\hat\sigma` with :math:`\hat\sigma` = 1.4826 MAD of
    :math:`M-B` outside :math:`\Omega` (the 3-sigma truncation lowers it by 0.5 %).  The
    rank-r fit absorbs only :math:`r/n` of the noise variance, so under Gaussian noise
    the non-event entries of :math:`|z|` follow a half-normal law and a threshold of 5
    gives a false alarm rate of 6e-7 per entry.
    """
    check_nonempty(as_float_tensor(movie, "movie"), "movie")
    if online_chunk is not None:
        L, S = robust_pca_online(
            movie, chunk=online_chunk, rank=rank, lam=lam, tol=max(tol, 1e-6), max_iter=max_iter
        )
        X = as_float_tensor(movie, "movie")
    else:
        X = as_float_tensor(movie, "movie")
        L, S = robust_pca(X, lam=lam, tol=tol, max_iter=max_iter)
    background: Tensor | None = None
    r_bg: int | None = None
    if debias and online_chunk is None:
        n0 = X.shape[0]
        B, sig, r_bg = _debiased_background(X.reshape(n0, -1), L.reshape(n0, -1), S.reshape(n0, -1))
        background = B.reshape(X.shape)
        z = (X - background) / sig
    else:
        sig = _robust_sigma(X - L).clamp_min(torch.finfo(X.dtype).tiny)
        z = S / sig
    thr = threshold if isinstance(threshold, Tensor) else torch.as_tensor(float(threshold))
    temp = temperature if isinstance(temperature, Tensor) else torch.as_tensor(float(temperature))
    prob = torch.sigmoid((z.abs() - thr.to(z)) / temp.to(z))
    return RobustPCAOutput(
        low_rank=L, sparse=S, score=z, probability=prob, background=background, rank=r_bg
    )


class RobustPCA(Component):
    """Module twin of :func:`rpca_scores`; ``threshold`` and ``temperature`` are
    learnable (they shape the soft event probability)."""

    name = "detection.rpca"
    function = staticmethod(rpca_scores)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        lam: float | None = None,
        tol: float = 1e-7,
        max_iter: int = 500,
        threshold: float = 5.0,
        temperature: float = 1.0,
        online_chunk: int | None = None,
        rank: int = 5,
        debias: bool = True,
    ) -> None:
        check_positive(tol, "tol")
        check_positive(temperature, "temperature")
        super().__init__(
            lam=lam,
            tol=float(tol),
            max_iter=int(max_iter),
            threshold=float(threshold),
            temperature=float(temperature),
            online_chunk=online_chunk,
            rank=int(rank),
            debias=bool(debias),
        )
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))

    def forward(self, movie: Tensor) -> RobustPCAOutput:
        cfg = self.config()
        cfg["threshold"] = self.threshold
        cfg["temperature"] = self.temperature
        return rpca_scores(movie, **cfg)

    def self_supervised_loss(self, inputs: Any, output: Any) -> Tensor | None:
        """The PCP objective :math:`\\|L\\|_* + \\lambda\\|S\\|_1` of the output plus the
        squared constraint violation (per entry)."""
        M = as_float_tensor(inputs["movie"], "movie")
        L, S = output.low_rank, output.sparse
        A = L.reshape(L.shape[0], -1)
        lam = self._config["lam"] or 1.0 / math.sqrt(max(A.shape))
        return (
            torch.linalg.matrix_norm(A, ord="nuc") + lam * S.abs().sum() + ((M - L - S) ** 2).sum()
        ) / M.numel()

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        bad = np.ones((4, 5, 5), dtype=np.float32)
        bad[0, 0, 0] = np.nan
        return [
            ({"movie": bad}, ValueError, "finite"),
            ({"movie": np.ones(7, dtype=np.float32)}, ValueError, "2-D or 3-D"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.detection import _reference as ref

        return [
            Declaration(
                spec=SemanticSpec(
                    name="detection.rpca.calcium",
                    family="detection",
                    task="background-separation",
                    modality="microscopy",
                    scale="micro",
                    inputs={
                        "movie": TensorSchema(
                            axes="tyx", description="time-lapse (e.g. calcium imaging)"
                        )
                    },
                    outputs={
                        "low_rank": TensorSchema(axes="tyx", description="background"),
                        "sparse": TensorSchema(axes="tyx", description="transient events"),
                        "score": TensorSchema(axes="tyx", description="events in noise sigmas"),
                    },
                    differentiable=False,
                    description="robust PCA (principal component pursuit, inexact ALM) separating a low-rank background from sparse calcium transients, with calibrated sigma scores",
                    tags=("calcium", "rpca", "background-subtraction", "transients", "time-lapse"),
                    authors=("learndock developers",),
                ),
                params={"tol": 1e-6},
                reference_data=lambda seed: ref.calcium_movie(seed),
                example=lambda: {"movie": ref.calcium_movie(0, shape=(20, 12, 12))},
                rtol=1e-3,
                atol=1e-3,
            )
        ]
