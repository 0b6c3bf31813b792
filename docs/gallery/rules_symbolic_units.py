"""Symbolic regression with units as a hard prior, and a conserved quantity.

1. Relativistic mass ``m = m_0 / sqrt(1 - v^2/c^2)`` from 500 noisy samples: with units,
   the search runs on the Buckingham-pi group ``v/c`` and returns a dimensionally
   consistent law; the Pareto front (complexity vs error) is printed.
2. The energy of an anharmonic oscillator, found as the quantity that stays constant
   along four measured trajectories (weak form, no derivatives of the data).

Run: ``python docs/gallery/rules_symbolic_units.py`` (figures go to ``$LEARNDOCK_GALLERY_OUT``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.rules import _reference
from components.rules.conservation import find_conserved
from components.rules.symbolic import discover

rng = np.random.default_rng(0)
X = np.column_stack([rng.uniform(1, 5, 500), rng.uniform(1, 2, 500), rng.uniform(3, 10, 500)])
m = X[:, 0] / np.sqrt(1 - X[:, 1] ** 2 / X[:, 2] ** 2)
m = m + 1e-4 * m.std() * rng.standard_normal(len(m))
units = {"m_0": "kg", "v": "m/s", "c": "m/s"}
res = discover(X, m, names=["m_0", "v", "c"], units=units, output_unit="kg", budget_s=8, seed=0)
print("Pareto front (* = chosen):")
print(res)
print(
    "law:",
    res.best.sympy,
    "| dimensionally consistent:",
    res.dimensionally_consistent,
    "| R2:",
    round(res.r2, 8),
)

t, trajs = _reference.pendulum_energy_trajectories(0, noise=0.001)
inv = find_conserved(t, trajs, names=["q", "p"], max_degree=4)
print("conserved quantity:", inv.expression.sympy, "(truth: q**2 + p**2/2 + q**4/4 up to scale)")

out = os.environ.get("LEARNDOCK_GALLERY_OUT")
if out:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].semilogy(
        [e.complexity for e in res.pareto], [max(e.loss, 1e-16) for e in res.pareto], "o-"
    )
    best = next(e for e in res.pareto if e.chosen)
    ax[0].semilogy([best.complexity], [max(best.loss, 1e-16)], "r*", ms=14)
    ax[0].set_xlabel("complexity")
    ax[0].set_ylabel("MSE")
    ax[0].set_title("Pareto front")
    H = inv.expression.evaluate(trajs.reshape(-1, 2)).reshape(trajs.shape[:2])
    for h in H:
        ax[1].plot(t, h)
    ax[1].set_xlabel("t")
    ax[1].set_ylabel("H(q, p)")
    ax[1].set_title("conserved along each trajectory")
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out) / "rules_symbolic_units.png", dpi=120)
