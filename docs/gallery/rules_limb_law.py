"""Motion law of a tracked limb: markers -> joint angle -> SINDy -> differentiable stage.

A shank swings about the knee (three markers, 0.5 mm tracking noise).  We compute the
knee angle from the markers, let weak-form SINDy discover ``theta'' = f(theta, theta')``
from a polynomial + Fourier library, then turn the discovered law into an
``ExpressionModule`` and refine its constants by differentiable simulation.

Run: ``python docs/gallery/rules_limb_law.py`` (figures go to ``$LEARNDOCK_GALLERY_OUT``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from components.rules import _reference
from components.rules.sindy import Library, differentiate, fit_sindy

torch.set_num_threads(2)

# 1. data: three markers (knee, mid-shank, ankle) in metres, 100 Hz
markers = _reference.limb_markers(0, n=800, dt=0.01)  # (t, marker, xyz)
t = np.arange(len(markers)) * 0.01
shank = markers[:, 2] - markers[:, 0]
theta = np.arctan2(shank[:, 0], -shank[:, 2])  # knee angle [rad]

# 2. state (theta, omega) with a smoothed derivative, then weak-form SINDy
tt = torch.as_tensor(t)
omega = differentiate(torch.as_tensor(theta)[:, None], tt, window=15)[:, 0].numpy()
X = np.column_stack([theta, omega])
lib = Library(["theta", "omega"], degree=1, trig=1, include_bias=False)
res = fit_sindy(t, X, names=["theta", "omega"], library=lib, weak=True)
print("discovered dynamics:")
for law in res.expressions:
    print("  ", law)
print("truth:  domega/dt = -24.5 sin(theta) - 0.8 omega")

# 3. the law of omega' as a differentiable stage (constants are nn.Parameters), refined
#    by differentiable simulation: roll the law out from the initial state (semi-implicit
#    Euler, 4 substeps per sample) and match the measured knee angle
law = res.expressions[1]
module = law.to_module()
print("module config:", module.config())
horizon, sub, dt = 150, 4, 0.01
theta_meas = torch.as_tensor(theta[:horizon])


# the initial state is refined too (single shooting): the measured one is noisy
init = torch.tensor([theta[0], omega[0]], dtype=torch.float64, requires_grad=True)


def rollout() -> torch.Tensor:
    th, om = init[0], init[1]
    out = [th]
    for _ in range(horizon - 1):
        for _ in range(sub):
            om = om + dt / sub * module(torch.stack([th, om])[None])[0]
            th = th + dt / sub * om
        out.append(th)
    return torch.stack(out)


opt = torch.optim.LBFGS([*module.parameters(), init], max_iter=30, line_search_fn="strong_wolfe")


def closure() -> torch.Tensor:
    opt.zero_grad()
    loss = ((rollout() - theta_meas) ** 2).mean()
    loss.backward()
    return loss


opt.step(closure)
print("after refinement by simulation:", module.to_expression().sympy)
sim = rollout().detach()
print(f"rms angle error of the rollout: {float(((sim - theta_meas) ** 2).mean().sqrt()):.2e} rad")

out = os.environ.get("LEARNDOCK_GALLERY_OUT")
if out:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(t, theta, label="knee angle")
    ax[0].set_xlabel("t [s]")
    ax[0].set_ylabel("theta [rad]")
    ax[1].plot(t[:horizon], theta[:horizon], ".", ms=3, label="measured")
    ax[1].plot(t[:horizon], sim.numpy(), label="simulated law")
    ax[1].set_xlabel("t [s]")
    ax[1].set_ylabel("theta [rad]")
    ax[1].legend()
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out) / "rules_limb_law.png", dpi=120)
