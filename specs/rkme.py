"""Reduced kernel mean embeddings (RKME): the statistical specification of a learnware.

An RKME summarises a data set ``X = {x_1..x_n}`` (rows of features, see
:mod:`specs.features`) by a weighted reduced set ``{(beta_j, z_j)}_{j=1..m}`` whose kernel
mean embedding is close to the data's:

.. math::

    \\min_{z, \\beta \\in \\Delta_m}
    \\Big\\| \\frac1n \\sum_i k(x_i, \\cdot) - \\sum_j \\beta_j k(z_j, \\cdot) \\Big\\|_{\\mathcal H}^2
    = \\beta^\\top K_{zz} \\beta - \\frac2n \\beta^\\top K_{zx} 1 + \\text{const},

with the Gaussian kernel :math:`k(x, y) = \\exp(-\\|x-y\\|^2 / (2\\sigma^2))` and the
simplex :math:`\\Delta_m = \\{\\beta \\ge 0, \\sum_j \\beta_j = 1\\}`.  Only the reduced
set is ever shared: raw data stays with its owner.

Everything is torch (CPU or CUDA) and vectorised over points: k-means++ initialisation,
then joint refinement (Adam on ``z``, accelerated projected gradient on ``beta``).
:func:`batched_mmd` ranks one query against N stored RKMEs with one matrix product and
cached self-terms; :func:`mixture_weights` and :func:`greedy_mixture` solve the mixture
search; :class:`RFFEmbedding` gives fixed-length vectors for sub-linear pre-ranking.

References
----------
Wu, X.-Z., Xu, W., Liu, S., Zhou, Z.-H. (2021). Model reuse with reduced kernel mean
embedding specification. IEEE TKDE.
Gretton, A. et al. (2012). A kernel two-sample test. JMLR 13.
Rahimi, A., Recht, B. (2007). Random features for large-scale kernel machines. NeurIPS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "RFFEmbedding",
    "RKME",
    "RKMEStack",
    "batched_mmd",
    "canonical_safetensors",
    "greedy_mixture",
    "median_bandwidth",
    "mixture_weights",
    "project_simplex",
    "rank_rkmes",
    "stack_mmd",
]

FORMAT = "learndock-rkme/1"


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(..., p, q)`` by one matrix product."""
    an = (a * a).sum(-1, keepdim=True)
    bn = (b * b).sum(-1, keepdim=True)
    d = an + bn.transpose(-1, -2) - 2 * a @ b.transpose(-1, -2)
    return d.clamp_min_(0.0) if not d.requires_grad else d.clamp_min(0.0)


def _gauss(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return torch.exp(_sqdist(a, b) * (-0.5 / bandwidth**2))


def median_bandwidth(x: torch.Tensor, *, max_points: int = 1000, seed: int = 0) -> float:
    """Median heuristic: the median pairwise Euclidean distance of (a seeded subsample
    of) the rows of ``x``, divided by :math:`\\sqrt 2` so that
    :math:`k = \\exp(-d^2/(2\\sigma^2))` equals :math:`\\exp(-d^2/\\mathrm{med}^2)`.

    Above ``max_points`` rows, the distances between two disjoint seeded halves of
    ``max_points`` rows are used (``(max_points/2)^2`` pairs).

    Examples
    --------
    >>> x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    >>> 1.0 < median_bandwidth(x) < 1.6
    True
    """
    n = x.shape[0]
    if n > max_points:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)[:max_points].to(x.device)
        half = max_points // 2
        vals = _sqdist(x[perm[:half]], x[perm[half:]]).reshape(-1)
    else:
        d = _sqdist(x, x)
        iu = torch.triu_indices(n, n, 1, device=x.device)
        vals = d[iu[0], iu[1]]
    vals = vals[vals > 0]
    if vals.numel() == 0:
        return 1.0
    return float(vals.median().sqrt()) / math.sqrt(2.0)


def project_simplex(v: torch.Tensor, *, _k: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex
    (sort-based, vectorised; Duchi et al. 2008).

    Examples
    --------
    >>> project_simplex(torch.tensor([0.5, 0.5, 2.0])).tolist()
    [0.0, 0.0, 1.0]
    """
    shape = v.shape
    v2 = v.reshape(-1, shape[-1])
    u, _ = torch.sort(v2, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    k = _k if _k is not None else torch.arange(1, shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = u - css / k > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last True index
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v2 - theta).clamp_min(0).reshape(shape)


def _qp_simplex(
    G: torch.Tensor, h: torch.Tensor, w0: torch.Tensor | None = None, *, iters: int = 200
) -> torch.Tensor:
    """min_w  w'Gw - 2 h'w  over the simplex, batched over leading dims (FISTA)."""
    n = G.shape[-1]
    w = (
        w0.clone()
        if w0 is not None
        else torch.full(h.shape, 1.0 / n, dtype=G.dtype, device=G.device)
    )
    L = (
        torch.linalg.matrix_norm(G, ord="fro")[..., None] * 2 + 1e-12
    )  # Lipschitz bound of the gradient
    y, t = w.clone(), 1.0
    k = torch.arange(1, n + 1, device=G.device, dtype=G.dtype)
    for _ in range(iters):
        grad = 2 * ((G @ y[..., None])[..., 0] - h)
        w_new = project_simplex(y - grad / L, _k=k)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = w_new + ((t - 1) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def _kmeanspp(
    x: torch.Tensor, m: int, gen: torch.Generator, *, max_points: int = 1024
) -> torch.Tensor:
    """k-means++ seeding on a seeded subsample of at most ``max_points`` rows.

    One sequential step per centre (m steps of a few whole-array operations, no loop
    over points): the next centre is drawn with probability proportional to the squared
    distance to the nearest chosen centre by inverting the cumulative sum at a
    pre-drawn uniform (no host synchronisation, so the same code runs on CUDA).
    """
    n = x.shape[0]
    if n > max_points:
        x = x[torch.randperm(n, generator=gen)[:max_points].to(x.device)]
        n = max_points
    u = torch.rand(m, generator=gen, dtype=torch.float64).to(x.device, x.dtype)
    xn = (x * x).sum(-1)
    first = (u[:1] * n).long().clamp_max_(n - 1)
    idx = [first]
    d2 = (xn + xn[first] - 2 * (x @ x[first].T)[:, 0]).clamp_min_(0)
    for j in range(1, m):
        c = d2.cumsum(0)
        nxt = torch.searchsorted(c, u[j : j + 1] * c[-1:], right=True).clamp_max_(n - 1)
        idx.append(nxt)
        d2 = torch.minimum(d2, (xn + xn[nxt] - 2 * (x @ x[nxt].T)[:, 0]).clamp_min_(0))
    return x[torch.cat(idx)].clone()


def _fista_simplex(
    G: torch.Tensor, h: torch.Tensor, w: torch.Tensor, lip: float, iters: int, k: torch.Tensor
) -> torch.Tensor:
    """``iters`` accelerated projected-gradient steps on ``w'Gw - 2h'w`` over the simplex
    with step ``1/lip`` (``lip`` >= the largest eigenvalue of ``G``)."""
    y, t = w, 1.0
    for _ in range(iters):
        w_new = project_simplex(y - (G @ y - h) / lip, _k=k)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = w_new + ((t - 1) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def _simplex_weights(
    Kzz: torch.Tensor,
    h: torch.Tensor,
    iters: int,
    warm: torch.Tensor | None = None,
    *,
    exact_lip: bool = True,
) -> torch.Tensor:
    """Optimal simplex weights for a fixed reduced set, in float64.

    The unconstrained optimum solves ``K_zz beta = h`` (Cholesky with a relative jitter of
    1e-6); its simplex projection, or the warm start if that is better, starts ``iters``
    accelerated projected-gradient steps with the largest eigenvalue (or, cheaper, the
    largest row sum) as Lipschitz constant.
    """
    G, hd = Kzz.double(), h.double()
    m = G.shape[0]
    eye = torch.eye(m, dtype=G.dtype, device=G.device)
    chol, _ = torch.linalg.cholesky_ex(G + 1e-6 * eye)
    w = project_simplex(torch.cholesky_solve(hd[:, None], chol)[:, 0])
    if warm is not None:
        warm = warm.double()
        if float(warm @ G @ warm - 2 * hd @ warm) < float(w @ G @ w - 2 * hd @ w):
            w = warm
    # K_zz has positive entries: its largest row sum bounds the largest eigenvalue
    lip = float(torch.linalg.eigvalsh(G)[-1] if exact_lip else G.sum(1).max()) + 1e-12
    k = torch.arange(1, m + 1, device=G.device, dtype=G.dtype)
    return _fista_simplex(G, hd, w, lip, iters, k)


@dataclasses.dataclass
class RKME:
    """A reduced kernel mean embedding.

    Attributes
    ----------
    z : Tensor
        Reduced set, shape ``(m, d)``.
    beta : Tensor
        Simplex weights, shape ``(m,)``, non-negative, summing to one.
    bandwidth : float
        Gaussian kernel bandwidth :math:`\\sigma` (median heuristic at fit time, or the
        featurizer's fixed one).
    featurizer : str
        ``"name/version"`` of the feature space (``"raw"`` when fitted on raw rows).
    n : int
        Number of rows it summarises.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> a = RKME.fit(torch.randn(400, 3, generator=g), m=16)
    >>> b = RKME.fit(torch.randn(400, 3, generator=g) + 3, m=16)
    >>> a.mmd(a) < 1e-6 < a.mmd(b)
    True
    """

    z: torch.Tensor
    beta: torch.Tensor
    bandwidth: float
    featurizer: str = "raw"
    n: int = 0

    def __post_init__(self) -> None:
        if self.z.ndim != 2:
            raise ValueError(f"z: expected shape (m, d), got {tuple(self.z.shape)}")
        if self.beta.shape != (self.z.shape[0],):
            raise ValueError(
                f"beta: expected shape ({self.z.shape[0]},) matching z, got {tuple(self.beta.shape)}"
            )
        if not (self.bandwidth > 0 and math.isfinite(self.bandwidth)):
            raise ValueError(f"bandwidth: expected a positive finite float, got {self.bandwidth!r}")
        if not torch.isfinite(self.z).all() or not torch.isfinite(self.beta).all():
            raise ValueError("z/beta: RKME contains NaN or infinite values")
        if (self.beta < -1e-6).any() or abs(float(self.beta.sum()) - 1) > 1e-3:
            raise ValueError(
                f"beta: expected simplex weights (>= 0, sum 1), got sum {float(self.beta.sum()):.6g}"
            )

    @property
    def m(self) -> int:
        return int(self.z.shape[0])

    @property
    def d(self) -> int:
        return int(self.z.shape[1])

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        X: Any,
        *,
        m: int = 32,
        seed: int = 0,
        bandwidth: float | None = None,
        featurizer: str = "raw",
        steps: int = 16,
        inner: int = 2,
        batch: int | None = 2048,
        lr: float = 3.0,
        device: str | torch.device | None = None,
    ) -> RKME:
        """Fit the reduced set of ``m`` points and simplex weights to the rows of ``X``.

        Parameters
        ----------
        X : array_like or Tensor
            ``(n, d)`` feature rows (already in the featurizer's standardised space:
            standardisation is a fixed transform of the featurizer version, never
            per-data-set, so that RKMEs of different data sets stay comparable).
        m : int
            Size of the reduced set (at most ``n``).
        seed : int
            Seed of the k-means++ initialisation and of the minibatches (deterministic
            given the seed).
        bandwidth : float, optional
            Kernel bandwidth; default: median heuristic of ``X``.
        featurizer : str
            Feature-space id stored with the RKME.
        steps : int
            Joint refinement steps (one fixed-point step on ``z`` each).
        inner : int
            Accelerated projected-gradient iterations polishing the closed-form ``beta``
            per step.
        batch : int or None
            Rows per refinement step (a seeded minibatch when ``n`` is larger; None: all
            rows).  The final ``beta`` is always solved against all rows.
        lr : float
            Relaxation of the preconditioned fixed-point step on ``z`` (1: plain
            fixed-point iteration; each point moves at most one bandwidth per step).
        device : str or device, optional
            Where to compute; default: where ``X`` is.

        Returns
        -------
        RKME
            On the CPU, float32.

        Raises
        ------
        ValueError
            If ``X`` is not a non-empty finite 2-D array or ``m`` is not positive.

        Notes
        -----
        Initialisation: k-means++ centres ``z`` on a seeded subsample of 1,024 rows.
        Weights: for fixed ``z`` the optimal unconstrained weights solve
        :math:`K_{zz} \\beta = K_{zx} 1/n`; they are projected on the simplex and
        polished by accelerated projected gradient (float64, Cholesky with jitter).
        Points: setting the gradient of the objective in the module docstring to zero
        gives, with :math:`a_j = \\frac1n \\sum_i k(z_j, x_i)`,

        .. math::

            z_j = z_j + \\frac{1}{a_j}\\Big[\\frac1n \\sum_i k(z_j, x_i)(x_i - z_j)
                  - \\sum_l \\beta_l k(z_j, z_l)(z_l - z_j)\\Big],

        a kernel mean-shift towards the data minus a repulsion from the other points
        (a gradient step preconditioned by :math:`1/(2\\beta_j a_j/\\sigma^2)`).  It is
        over-relaxed by ``lr`` with heavy-ball momentum 0.5 and capped at one bandwidth
        per step.  Every kernel evaluation is one matrix product over all points.
        """
        x = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"X: expected a non-empty (n, d) array of feature rows, got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            x = x.float()
        if not torch.isfinite(x).all():
            raise ValueError(
                "X: feature rows contain NaN or infinite values (drop or impute them first)"
            )
        if not isinstance(m, int) or m < 1:
            raise ValueError(f"m: expected a positive integer, got {m!r}")
        if device is not None:
            x = x.to(device)
        x = x.to(torch.float32) if x.dtype != torch.float64 else x
        n = x.shape[0]
        m = min(m, n)
        if bandwidth is None:
            bandwidth = median_bandwidth(x, seed=seed)
        bw = float(bandwidth)
        if not (bw > 0 and math.isfinite(bw)):
            raise ValueError(f"bandwidth: expected a positive finite float, got {bandwidth!r}")
        gen = torch.Generator().manual_seed(seed)
        z = _kmeanspp(x, m, gen)
        xn_all = (x * x).sum(-1)
        c = -0.5 / bw**2
        cap = bw
        nb = min(n, batch) if batch else n
        vel = torch.zeros_like(z)
        beta: torch.Tensor | None = None
        for _ in range(steps):
            if nb < n:  # seeded minibatch of the data for the z-step
                sel = torch.randperm(n, generator=gen)[:nb].to(x.device)
                xb, xn = x[sel], xn_all[sel]
            else:
                xb, xn = x, xn_all
            zn = (z * z).sum(-1)
            Kzx = torch.exp((zn[:, None] + xn[None, :] - 2 * z @ xb.T).clamp_min_(0) * c)
            Kzz = torch.exp((zn[:, None] + zn[None, :] - 2 * z @ z.T).clamp_min_(0) * c)
            a = Kzx.sum(1) / nb
            beta = _simplex_weights(Kzz, a, inner, beta, exact_lip=False)
            B = Kzz * beta.to(x.dtype)[None, :]
            step = ((Kzx @ xb) / nb - a[:, None] * z - (B @ z - B.sum(1, keepdim=True) * z)) / (
                a[:, None].clamp_min(torch.finfo(x.dtype).tiny)
            )
            vel = 0.5 * vel + lr * step
            z = z + vel * (cap / vel.norm(dim=1, keepdim=True).clamp_min(cap))
        zn = (z * z).sum(-1)
        h = torch.exp((zn[:, None] + xn_all[None, :] - 2 * z @ x.T).clamp_min_(0) * c).mean(1)
        Kzz = torch.exp((zn[:, None] + zn[None, :] - 2 * z @ z.T).clamp_min_(0) * c)
        beta = _simplex_weights(Kzz, h, 30, beta)
        beta = beta.clamp_min(0) / beta.clamp_min(0).sum()
        return cls(z.float().cpu(), beta.float().cpu(), bw, featurizer, n)

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        modality: str | None = None,
        featurizer: str | None = None,
        m: int = 32,
        seed: int = 0,
    ) -> RKME:
        """Featurize raw data (:func:`specs.features.featurize`) and fit an RKME with the
        featurizer's bandwidth policy."""
        from specs.features import featurize, get_featurizer

        if hasattr(data, "data") and modality is None:
            modality = getattr(data, "modality", None)
        feat = get_featurizer(featurizer, modality=modality)
        X = featurize(data, modality=modality, featurizer=feat.id)
        return cls.fit(X, m=m, seed=seed, bandwidth=feat.bandwidth, featurizer=feat.id)

    # -- distances ----------------------------------------------------------------------
    def inner(self, other: RKME, *, bandwidth: float | None = None) -> float:
        """Kernel inner product of the two embeddings."""
        bw = float(bandwidth or self.bandwidth)
        return float(
            self.beta.double()
            @ _gauss(self.z.double(), other.z.double().to(self.z.device), bw)
            @ other.beta.double()
        )

    def mmd(self, other: RKME, *, bandwidth: float | None = None) -> float:
        """Maximum mean discrepancy between the two embeddings.

        Parameters
        ----------
        other : RKME
            Must live in the same feature space (featurizer id and dimension).
        bandwidth : float, optional
            Kernel bandwidth; default: this (the query's) bandwidth.

        Raises
        ------
        ValueError
            If the feature spaces differ.
        """
        self._check_comparable(other)
        bw = float(bandwidth or self.bandwidth)
        v = (
            self.inner(self, bandwidth=bw)
            + other.inner(other, bandwidth=bw)
            - 2 * self.inner(other, bandwidth=bw)
        )
        return math.sqrt(max(v, 0.0))

    def _check_comparable(self, other: RKME) -> None:
        if self.featurizer != other.featurizer:
            raise ValueError(
                f"RKMEs in different feature spaces cannot be compared: {self.featurizer!r} vs {other.featurizer!r}"
            )
        if self.d != other.d:
            raise ValueError(
                f"RKMEs of different feature dimension cannot be compared: {self.d} vs {other.d}"
            )

    # -- storage -------------------------------------------------------------------------
    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "z": self.z.detach().float().cpu().contiguous(),
            "beta": self.beta.detach().float().cpu().contiguous(),
        }

    def metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "bandwidth": repr(float(self.bandwidth)),
            "featurizer": self.featurizer,
            "n": str(int(self.n)),
        }

    def to_safetensors(self, path: str | Path) -> Path:
        """Write ``z``, ``beta`` and the metadata (bandwidth, featurizer) as safetensors."""
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return canonical_safetensors(save(self.to_tensors(), metadata=self.metadata()))

    @classmethod
    def _from_parts(
        cls, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None, where: str
    ) -> RKME:
        meta = meta or {}
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{where}: not an RKME file (metadata format {meta.get('format')!r}, expected {FORMAT!r})"
            )
        missing = {"z", "beta"} - set(tensors)
        if missing:
            raise ValueError(f"{where}: RKME file lacks tensors {sorted(missing)}")
        try:
            bw = float(meta["bandwidth"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{where}: RKME metadata lacks a valid 'bandwidth'") from exc
        return cls(
            tensors["z"].float(),
            tensors["beta"].float(),
            bw,
            meta.get("featurizer", "raw"),
            int(meta.get("n", 0)),
        )

    @classmethod
    def from_safetensors(cls, path: str | Path) -> RKME:
        """Read an RKME written by :meth:`to_safetensors` (no pickle involved)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls._from_parts(tensors, meta, str(path))

    @classmethod
    def from_bytes(cls, blob: bytes, where: str = "rkme") -> RKME:
        import json
        import struct

        from safetensors.torch import load

        n = struct.unpack("<Q", blob[:8])[0]
        meta = json.loads(blob[8 : 8 + n]).get("__metadata__", {})
        return cls._from_parts(load(blob), meta, where)


def canonical_safetensors(blob: bytes) -> bytes:
    """Re-serialise a safetensors header with sorted keys, so that equal tensors and
    metadata always give equal bytes (and equal sha256) across processes."""
    import json
    import struct

    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


# --------------------------------------------------------------------------------------
# batched search
# --------------------------------------------------------------------------------------
class RKMEStack:
    """N RKMEs of one feature space, stacked (zero-padded to a common ``m``) for batched
    MMD, with self-terms cached per bandwidth.

    Parameters
    ----------
    rkmes : sequence of RKME
        All in one feature space (same featurizer id and dimension).
    device : str or device
        Where the stacked tensors live.
    """

    def __init__(self, rkmes: Sequence[RKME], *, device: str | torch.device = "cpu") -> None:
        if len(rkmes) == 0:
            raise ValueError("rkmes: expected at least one RKME")
        first = rkmes[0]
        for r in rkmes:
            first._check_comparable(r)
        self.featurizer = first.featurizer
        self.d = first.d
        mm = max(r.m for r in rkmes)
        N = len(rkmes)
        z = torch.zeros(N, mm, self.d, dtype=torch.float32)
        beta = torch.zeros(N, mm, dtype=torch.float32)
        for i, r in enumerate(rkmes):
            z[i, : r.m] = r.z
            beta[i, : r.m] = r.beta
        self.z = z.to(device)
        self.beta = beta.to(device)
        self.bandwidths = torch.tensor([r.bandwidth for r in rkmes], dtype=torch.float64)
        self._self: dict[float, torch.Tensor] = {}

    @classmethod
    def from_tensors(
        cls,
        z: torch.Tensor,
        beta: torch.Tensor,
        *,
        featurizer: str = "raw",
        bandwidths: torch.Tensor | None = None,
    ) -> RKMEStack:
        """Build from already stacked ``z (N, m, d)`` and ``beta (N, m)`` (zero-padded)."""
        obj = cls.__new__(cls)
        obj.featurizer, obj.d = featurizer, int(z.shape[-1])
        obj.z, obj.beta = z, beta
        obj.bandwidths = (
            bandwidths if bandwidths is not None else torch.ones(z.shape[0], dtype=torch.float64)
        )
        obj._self = {}
        return obj

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, idx: torch.Tensor) -> RKMEStack:
        out = RKMEStack.from_tensors(
            self.z[idx],
            self.beta[idx],
            featurizer=self.featurizer,
            bandwidths=self.bandwidths[idx.cpu()],
        )
        for bw, s in self._self.items():
            out._self[bw] = s[idx]
        return out

    def self_terms(self, bandwidth: float, *, chunk: int = 8192) -> torch.Tensor:
        """``beta_i' K(z_i, z_i) beta_i`` for every stored RKME (cached per bandwidth)."""
        key = round(float(bandwidth), 12)
        if key not in self._self:
            parts = []
            for s in range(0, len(self), chunk):
                zc, bc = self.z[s : s + chunk], self.beta[s : s + chunk]
                K = _gauss(zc, zc, bandwidth)
                parts.append(((K @ bc[..., None])[..., 0] * bc).sum(-1))
            self._self[key] = torch.cat(parts).double()
        return self._self[key]


def batched_mmd(
    query: RKME, stack: RKMEStack, *, bandwidth: float | None = None, chunk: int = 16384
) -> torch.Tensor:
    """MMD from one query RKME to every RKME of a stack.

    The cross terms are one matrix product of the query's reduced set against all
    stacked points; self-terms of the stack are cached per bandwidth.

    Parameters
    ----------
    query : RKME
    stack : RKMEStack
        Same feature space as ``query``.
    bandwidth : float, optional
        Default: the query's bandwidth.

    Returns
    -------
    Tensor
        ``(N,)`` float64 MMD values (non-negative).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> rs = [RKME.fit(torch.randn(200, 2, generator=g) + i, m=8) for i in range(3)]
    >>> batched_mmd(rs[1], RKMEStack(rs)).argmin().item()
    1
    """
    if query.featurizer != stack.featurizer or query.d != stack.d:
        raise ValueError(
            f"query RKME ({query.featurizer!r}, d={query.d}) and stack ({stack.featurizer!r}, d={stack.d}) are in different feature spaces"
        )
    return stack_mmd(
        query.z, query.beta, stack, bandwidth=float(bandwidth or query.bandwidth), chunk=chunk
    )


def stack_mmd(
    z: torch.Tensor, beta: torch.Tensor, stack: RKMEStack, *, bandwidth: float, chunk: int = 16384
) -> torch.Tensor:
    r"""MMD from one reduced set ``(z (m, d), beta (m,))`` to every RKME of a stack, in the
    stack's dtype (the body of :func:`batched_mmd`, for callers holding plain tensors).

    The weights are used as given (no simplex check); the kernel is
    :math:`\exp(-\|a-b\|^2 / (2\,\mathrm{bandwidth}^2))`.

    Returns
    -------
    Tensor
        ``(N,)`` float64 MMD values (non-negative).
    """
    bw = float(bandwidth)
    zq = z.to(stack.z.device, stack.z.dtype)
    bq = beta.to(stack.z.device, stack.z.dtype)
    qq = float(bq.double() @ _gauss(zq.double(), zq.double(), bw) @ bq.double())
    ss = stack.self_terms(bw)
    N, mm, d = stack.z.shape
    cross = []
    for s in range(0, N, chunk):
        zc = stack.z[s : s + chunk].reshape(-1, d)
        K = _gauss(zq, zc, bw)  # (mq, chunk*mm): one matrix product
        v = (bq @ K).reshape(-1, mm)
        cross.append((v * stack.beta[s : s + chunk]).sum(-1))
    qs = torch.cat(cross).double()
    return (qq + ss.to(qs.device) - 2 * qs).clamp_min(0).sqrt()


def rank_rkmes(
    query: RKME,
    stored: Sequence[RKME] | RKMEStack,
    *,
    top: int | None = None,
    bandwidth: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank stored RKMEs by MMD to a query (the reusable core of registry and task search).

    Returns
    -------
    (indices, mmd) : tuple of Tensor
        Indices into ``stored`` sorted by increasing MMD (at most ``top``), and their MMD.
    """
    stack = stored if isinstance(stored, RKMEStack) else RKMEStack(list(stored))
    d = batched_mmd(query, stack, bandwidth=bandwidth)
    k = len(d) if top is None else min(int(top), len(d))
    vals, idx = torch.topk(d, k, largest=False, sorted=True)
    return idx.cpu(), vals.cpu()


# --------------------------------------------------------------------------------------
# mixtures
# --------------------------------------------------------------------------------------
def _gram(query: RKME, stack: RKMEStack, bw: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """G_ij = <mu_i, mu_j>, h_i = <mu_q, mu_i>, qq = <mu_q, mu_q> (float64)."""
    z = stack.z.double()
    b = stack.beta.double()
    N, mm, d = z.shape
    zf = z.reshape(-1, d)
    K = _gauss(zf, zf, bw).reshape(N, mm, N, mm)
    G = torch.einsum("ia,iajb,jb->ij", b, K, b)
    zq, bq = query.z.double().to(z.device), query.beta.double().to(z.device)
    Kq = _gauss(zq, zf, bw).reshape(-1, N, mm)
    h = torch.einsum("a,aib,ib->i", bq, Kq, b)
    qq = float(bq @ _gauss(zq, zq, bw) @ bq)
    return G, h, qq


def mixture_weights(
    query: RKME,
    candidates: Sequence[RKME] | RKMEStack,
    *,
    bandwidth: float | None = None,
    iters: int = 500,
) -> tuple[torch.Tensor, float]:
    """Simplex weights ``w`` minimising the MMD between the query and ``sum_i w_i mu_i``.

    Notes
    -----
    :math:`\\min_{w \\in \\Delta_k} w^\\top G w - 2 h^\\top w + \\langle\\mu_q,\\mu_q\\rangle`
    with :math:`G_{ij} = \\langle \\mu_i, \\mu_j\\rangle`, :math:`h_i = \\langle\\mu_q,\\mu_i\\rangle`,
    a k x k QP solved by accelerated projected gradient.

    Returns
    -------
    (weights, mmd) : (Tensor (k,), float)
    """
    stack = candidates if isinstance(candidates, RKMEStack) else RKMEStack(list(candidates))
    bw = float(bandwidth or query.bandwidth)
    G, h, qq = _gram(query, stack, bw)
    w = _qp_simplex(G, h, iters=iters)
    v = float(w @ G @ w - 2 * h @ w + qq)
    return w.float().cpu(), math.sqrt(max(v, 0.0))


def greedy_mixture(
    query: RKME,
    candidates: Sequence[RKME] | RKMEStack,
    *,
    k: int = 3,
    min_gain: float = 0.05,
    bandwidth: float | None = None,
) -> tuple[list[int], torch.Tensor, float]:
    """Greedy forward selection of at most ``k`` candidates and their mixture weights.

    Starting from the single best candidate, each round tries every remaining candidate,
    re-solves the simplex QP over the enlarged set, and accepts the one with the lowest
    mixture MMD only if it cuts the squared MMD by at least ``min_gain`` (a fraction).

    Returns
    -------
    (chosen, weights, mmd)
        Indices into ``candidates`` in selection order, their simplex weights, and the
        mixture MMD.
    """
    stack = candidates if isinstance(candidates, RKMEStack) else RKMEStack(list(candidates))
    if not 0 <= min_gain < 1:
        raise ValueError(f"min_gain: expected a fraction in [0, 1), got {min_gain!r}")
    if k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    bw = float(bandwidth or query.bandwidth)
    G, h, qq = _gram(query, stack, bw)
    N = G.shape[0]
    single = torch.diagonal(G) - 2 * h + qq
    chosen = [int(single.argmin())]
    w = torch.ones(1, dtype=G.dtype)
    best = float(single[chosen[0]])
    while len(chosen) < min(k, N):
        rest = [i for i in range(N) if i not in chosen]
        sets = torch.tensor([[*chosen, j] for j in rest])  # (R, s)
        Gs = G[sets[:, :, None], sets[:, None, :]]
        hs = h[sets]
        w0 = torch.cat(
            [w * (1 - 1 / sets.shape[1]), torch.full((1,), 1 / sets.shape[1], dtype=G.dtype)]
        )
        ws = _qp_simplex(Gs, hs, w0.expand(len(rest), -1).clone(), iters=300)
        vals = (ws[:, None, :] @ Gs @ ws[:, :, None])[:, 0, 0] - 2 * (ws * hs).sum(-1) + qq
        j = int(vals.argmin())
        if float(vals[j]) > best * (1 - min_gain):
            break
        chosen, w, best = sets[j].tolist(), ws[j], float(vals[j])
    return chosen, w.float(), math.sqrt(max(best, 0.0))


# --------------------------------------------------------------------------------------
# fixed-length embedding
# --------------------------------------------------------------------------------------
class RFFEmbedding:
    """Random Fourier features of an RKME: a fixed-length vector whose Euclidean distance
    approximates the MMD at one bandwidth.

    :math:`\\phi(\\mu) = \\sqrt{2/D} \\sum_j \\beta_j \\cos(W z_j + b)` with
    :math:`W \\sim \\mathcal N(0, \\sigma^{-2} I)`, :math:`b \\sim U[0, 2\\pi]`, drawn from a
    generator seeded by the feature space, dimension and bandwidth, so that every
    process computes the same frequencies.  Then
    :math:`\\|\\phi(\\mu_1) - \\phi(\\mu_2)\\| \\approx \\mathrm{MMD}(\\mu_1, \\mu_2)`.

    Parameters
    ----------
    d : int
        Feature dimension.
    bandwidth : float
        Kernel bandwidth the embedding approximates.
    dim : int
        Embedding length ``D``.
    featurizer : str
        Feature-space id (part of the seed).
    """

    def __init__(
        self, d: int, bandwidth: float, *, dim: int = 256, featurizer: str = "raw"
    ) -> None:
        self.d, self.bandwidth, self.dim, self.featurizer = (
            int(d),
            float(bandwidth),
            int(dim),
            featurizer,
        )
        key = f"{featurizer}|{self.d}|{self.bandwidth!r}|{self.dim}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)
        g = torch.Generator().manual_seed(seed)
        self.W = (
            torch.randn(self.d, self.dim, generator=g, dtype=torch.float64).float() / self.bandwidth
        )
        self.b = (torch.rand(self.dim, generator=g, dtype=torch.float64) * 2 * math.pi).float()

    def embed(self, rkme: RKME) -> torch.Tensor:
        """``(D,)`` float32 embedding of one RKME."""
        return self.embed_stack(rkme.z[None], rkme.beta[None])[0]

    def embed_stack(
        self, z: torch.Tensor, beta: torch.Tensor, *, chunk: int = 8192
    ) -> torch.Tensor:
        """``(N, D)`` embeddings of stacked ``z (N, m, d)``, ``beta (N, m)``."""
        out = []
        W, b = self.W.to(z.device), self.b.to(z.device)
        for s in range(0, z.shape[0], chunk):
            feats = torch.cos(z[s : s + chunk].float() @ W + b)  # (c, m, D)
            out.append(
                (beta[s : s + chunk, :, None].float() * feats).sum(1) * math.sqrt(2.0 / self.dim)
            )
        return torch.cat(out)
