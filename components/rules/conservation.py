"""Conserved quantities: a function of the state that stays constant along trajectories.

``H(x) = sum_j c_j theta_j(x)`` over a candidate library (no constant term) is conserved
when ``d/dt H(x(t)) = 0`` along every measured trajectory.  In weak form, against test
functions ``phi_k`` that vanish at the ends of their support,

    ``int phi_k'(t) H(x(t)) dt = 0``  for every k and every trajectory,

i.e. ``G c = 0`` with ``G_kj = int phi_k' theta_j(x) dt``: no derivative of the (noisy)
data is needed, and trajectories at several energy levels simply stack their rows.  The
law is the (sparsified) null vector of ``G``; the library degree is raised until a
null direction appears, so the lowest-order invariant is returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy as sp
import torch

from components._validation import check_positive
from components.base import Component, Declaration
from components.rules.expression import Expression
from components.rules.sindy import Library, _as_trajectories, weak_form
from specs.semantic import SemanticSpec, TensorSchema

__all__ = ["ConservationLaw", "ConservationResult", "find_conserved"]


@dataclasses.dataclass
class ConservationResult:
    """Output of :func:`find_conserved`.

    Attributes
    ----------
    coefficients : Tensor (p,)
        ``H = sum_j coefficients[j] * terms[j]``, scaled so the largest is 1.
    residual : Tensor ()
        Relative weak-form residual ``||G c|| / (||G|| ||c||)`` of the returned law
        (0 for an exact invariant).
    gap : Tensor ()
        Ratio of the two smallest singular values of the normalised ``G``: small means a
        well-identified invariant.
    terms : tuple of str
    expression : Expression
    """

    coefficients: torch.Tensor
    residual: torch.Tensor
    gap: torch.Tensor
    terms: tuple[str, ...]
    expression: Expression


def find_conserved(
    t: Any,
    X: Any,
    *,
    names: Sequence[str],
    max_degree: int = 4,
    trig: int = 0,
    custom: Sequence[str] = (),
    n_test: int | None = None,
    tol: float = 1e-3,
    sparsity: float = 1e-2,
) -> ConservationResult:
    """Find a conserved quantity ``H(x)`` of measured trajectories.

    Parameters
    ----------
    t : array_like (n,)
        Sample times.
    X : array_like (n, m) or (r, n, m)
        Trajectories (several energy levels help: each adds independent rows).
    names : sequence of str
        State variable names.
    max_degree : int
        Highest polynomial degree tried; degrees ``1..max_degree`` are tried in turn.
    trig, custom
        Extra library terms (see :class:`~components.rules.sindy.Library`).
    n_test : int, optional
        Test functions per trajectory.
    tol : float
        A null direction exists when the smallest singular value of the column
        normalised ``G`` is below ``tol`` times the largest.
    sparsity : float
        Coefficients below ``sparsity`` times the largest (in normalised units) are
        dropped and the law is refitted on the remaining terms.

    Returns
    -------
    ConservationResult

    Raises
    ------
    ValueError
        Bad shapes, NaN, constant variables, fewer weak-form rows than terms.

    Notes
    -----
    The invariant minimises ``||G c||`` subject to ``||c|| = 1`` (smallest right
    singular vector) with the columns of ``G`` scaled to unit norm.

    References
    ----------
    Messenger & Bortz, J. Comput. Phys. 443 (2021) (weak form).  Liu & Tegmark,
    Phys. Rev. Lett. 126 (2021) 180604 (machine-learning conservation laws).

    Examples
    --------
    >>> tt = torch.linspace(0, 10, 500, dtype=torch.float64)
    >>> X = torch.stack([torch.cos(tt), -torch.sin(tt)], 1)
    >>> find_conserved(tt, X, names=["q", "p"]).expression.sympy
    p**2 + q**2
    """
    check_positive(tol, "tol")
    tt, xt = _as_trajectories(t, X)
    from components._validation import check_finite

    check_finite(xt, "X")
    r, n, m = xt.shape
    names = [str(v) for v in names]
    if len(names) != m:
        raise ValueError(
            f"names: expected {m} names (one per state variable), got {len(names)}: {names}"
        )
    std = xt.reshape(-1, m).std(0) if r * n > 1 else xt.new_zeros(m)
    for i, s in enumerate(std.tolist()):
        if not s > 0:
            raise ValueError(f"X: state variable {names[i]!r} is constant")
    if int(max_degree) < 1:
        raise ValueError(f"max_degree: expected an integer >= 1, got {max_degree!r}")
    last = None
    for deg in range(1, int(max_degree) + 1):
        lib = Library(names, degree=deg, trig=trig, custom=custom, include_bias=False)
        theta = lib(xt)
        p = theta.shape[-1]
        # weak form of dH/dt = 0: b-side is -int phi' theta (derivative on the test fn)
        _, g = weak_form(tt, theta, theta, n_test=n_test)
        if g.shape[0] < p:
            raise ValueError(
                f"X: {g.shape[0]} weak-form rows are fewer than the {p} library terms; give longer or more trajectories"
            )
        scale = g.norm(dim=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        gn = g / scale
        _, s, vh = torch.linalg.svd(gn, full_matrices=False)
        ratio = s[-1] / s[0]
        last = (lib, gn, scale, s, vh)
        if float(ratio) < tol:
            break
    assert last is not None
    lib, gn, scale, s, vh = last
    c = vh[-1]
    keep = c.abs() >= sparsity * c.abs().max()
    if int(keep.sum()) < len(c):
        _, _, vh2 = torch.linalg.svd(gn[:, keep], full_matrices=False)
        c = torch.zeros_like(c)
        c[keep] = vh2[-1]
    coef = c / scale
    coef = coef / coef[coef.abs().argmax()]
    cn = coef * scale
    residual = (gn @ cn).norm() / (cn.norm() * torch.linalg.matrix_norm(gn, 2))
    gap = s[-1] / s[-2] if len(s) > 1 else s[-1] / s[0]
    template = sp.Integer(0)
    consts: dict[str, float] = {}
    kept = []
    for j, term in enumerate(lib.exprs):
        if float(coef[j]) != 0.0:
            v = float(coef[j])
            if abs(v - 1.0) < 1e-12:
                template = template + term
            else:
                cname = f"c{len(consts)}"
                consts[cname] = v
                template = template + sp.Symbol(cname, real=True) * term
            kept.append(str(term))
    expr = Expression(template, names, consts, output="H", terms=kept, loss=float(residual))
    return ConservationResult(
        coefficients=coef, residual=residual, gap=gap, terms=tuple(lib.terms), expression=expr
    )


def conserved_quantity(
    t: torch.Tensor,
    x: torch.Tensor,
    *,
    names: Sequence[str],
    max_degree: int = 4,
    trig: int = 0,
    custom: Sequence[str] = (),
    tol: float = 1e-3,
) -> ConservationResult:
    """Tensor entry point of :class:`ConservationLaw` (see :func:`find_conserved`)."""
    return find_conserved(
        t, x, names=names, max_degree=max_degree, trig=trig, custom=custom, tol=tol
    )


class ConservationLaw(Component):
    """Conserved-quantity discovery as a pipeline stage: ``(t, x) -> ConservationResult``.

    Parameters
    ----------
    names : list of str
    max_degree, trig, custom, tol
        See :func:`find_conserved`.

    Raises
    ------
    ValueError
        If ``t`` and ``x`` disagree in length, hold NaN/inf, or there are fewer
        samples than library terms.

    Examples
    --------
    >>> tt = torch.linspace(0, 10, 500, dtype=torch.float64)
    >>> X = torch.stack([torch.cos(tt), -torch.sin(tt)], 1)
    >>> ConservationLaw(names=["q", "p"])(tt, X).terms
    ('q', 'p', 'q**2', 'p*q', 'p**2')
    """

    name = "rules.conservation"
    function = staticmethod(conserved_quantity)
    differentiable = False
    footprint = 0

    def __init__(
        self,
        *,
        names: Sequence[str],
        max_degree: int = 4,
        trig: int = 0,
        custom: Sequence[str] = (),
        tol: float = 1e-3,
    ) -> None:
        check_positive(tol, "tol")
        super().__init__(
            names=list(names),
            max_degree=int(max_degree),
            trig=int(trig),
            custom=list(custom),
            tol=float(tol),
        )

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> ConservationResult:
        return conserved_quantity(t, x, **self._config)

    @classmethod
    def bad_examples(cls) -> list[tuple[dict[str, np.ndarray], type[Exception], str]]:
        t = np.linspace(0, 1, 50)
        x = np.stack([np.sin(t), np.cos(t)], 1)
        xn = x.copy()
        xn[1, 1] = np.inf
        return [
            ({"t": t[:30], "x": x}, ValueError, "same number of time samples"),
            ({"t": t, "x": xn}, ValueError, "finite"),
            ({"t": t, "x": np.stack([np.sin(t), np.zeros_like(t)], 1)}, ValueError, "constant"),
        ]

    @classmethod
    def learnwares(cls) -> list[Declaration]:
        from components.rules import _reference

        def example() -> dict[str, np.ndarray]:
            t, X = _reference.pendulum_energy_trajectories(0, n_traj=3, n=200)
            return {"t": t, "x": X.astype(np.float32)}

        def reference(seed: int) -> np.ndarray:
            _, X = _reference.pendulum_energy_trajectories(seed, noise=0.001)
            return X.reshape(-1, 2)

        spec = SemanticSpec(
            name="rules.conservation",
            family="rules",
            task="conservation-law",
            modality="tabular",
            scale="macro",
            inputs={
                "t": TensorSchema(axes="t", dtype="float64", units="s"),
                "x": TensorSchema(
                    axes="btc",
                    dtype="any",
                    description="trajectories (trajectory, time, state) at several energy levels",
                ),
            },
            outputs={
                "coefficients": TensorSchema(
                    axes="n",
                    dtype="any",
                    description="conserved quantity coefficients over the library terms",
                )
            },
            differentiable=False,
            description="Conserved quantity (energy-like invariant) of measured trajectories by the weak form over a polynomial library, lowest degree first.",
            tags=("conservation-law", "invariant", "energy", "weak-form", "hamiltonian"),
            authors=("learndock",),
        )
        return [
            Declaration(
                spec=spec,
                params={"names": ["q", "p"], "max_degree": 4},
                reference_data=reference,
                example=example,
                rtol=1e-3,
                atol=1e-4,
            )
        ]
