"""Flagship ``gait-dynamics`` (macro): markers -> RTS gap filling -> joint angle -> SINDy law.

Sample data: a limb segment swinging as a damped pendulum about a hip that walks
forward at constant speed,

.. math:: \\ddot\\theta = -\\frac{g}{L}\\sin\\theta - c\\,\\dot\\theta ,

observed through three markers on the segment (hip, knee, ankle) at 100 Hz with
Gaussian noise and occlusion gaps (NaN).  Scores: RMSE of the gap-filled marker
positions inside the gaps, and the recovered law coefficients (``-g/L`` on
:math:`\\sin\\theta`, ``-c`` on :math:`\\dot\\theta`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.cli_run import RunData, RunOutcome
from pipelines.flagships._common import build, refine_pipeline, stage_config

__all__ = ["JointAngle", "run", "sample"]

G = 9.81


def sample(*, seed: int = 0, size: str = "small") -> RunData:
    """Three markers on a damped pendulum limb, with noise and occlusion gaps.

    Returns
    -------
    RunData
        ``inputs``: ``positions`` (t, 3, 3) mm with NaN gaps, ``t`` (t,) s;
        ``truth``: clean positions, theta, omega, gap mask, ``g_over_l``, ``damping``.
    """
    from scipy.integrate import solve_ivp

    rng = np.random.default_rng(seed)
    rate = 100.0
    duration = 12.0 if size == "small" else 120.0
    n = int(duration * rate)
    t = np.arange(n) / rate
    length = 0.9  # m, hip to ankle
    g_over_l = G / length * rng.uniform(0.9, 1.1)
    damping = rng.uniform(0.15, 0.3)
    theta0 = rng.uniform(1.1, 1.4)
    sol = solve_ivp(
        lambda _t, y: [y[1], -g_over_l * np.sin(y[0]) - damping * y[1]],
        (0, t[-1]),
        [theta0, 0.0],
        t_eval=t,
        rtol=1e-10,
        atol=1e-10,
    )
    theta, omega = sol.y
    hip = np.stack([1200.0 * t, np.zeros(n), np.full(n, 900.0)], 1)  # mm, walking along x
    unit = np.stack([np.sin(theta), np.zeros(n), -np.cos(theta)], 1)
    clean = np.stack([hip, hip + 450.0 * unit, hip + 900.0 * unit], 1)
    noise = 2.0
    obs = clean + rng.normal(0, noise, clean.shape)
    gaps = np.zeros((n, 3), dtype=bool)
    n_gaps = 4 if size == "small" else 40
    for m in (1, 2):
        for _ in range(n_gaps):
            length_g = int(rng.integers(10, 30))
            start = int(rng.integers(50, n - 50 - length_g))
            gaps[start : start + length_g, m] = True
    obs[gaps] = np.nan
    truth = {
        "positions": clean,
        "theta": theta,
        "omega": omega,
        "gaps": gaps,
        "g_over_l": g_over_l,
        "damping": damping,
        "noise_mm": noise,
        "rate": rate,
    }
    meta = {
        "source": f"generated gait sample (seed={seed}, size={size})",
        "rate": rate,
        "labels": ["hip", "knee", "ankle"],
        "units": "mm",
    }
    return RunData(inputs={"positions": obs.astype(np.float64), "t": t}, truth=truth, meta=meta)


class JointAngle(nn.Module):
    """Sagittal joint angle and angular velocity from two markers of a segment.

    ``theta = atan2(dx, -dz)`` of the vector pivot -> distal, ``omega`` by central
    differences; differentiable in the positions.
    """

    differentiable = True
    footprint = 1
    input_schema = {"positions": {"axes": "tmc", "units": "mm"}}  # noqa: RUF012
    output_schema = {"output": {"axes": "tc"}}  # noqa: RUF012

    def __init__(self, *, pivot: int = 0, distal: int = 2, rate: float = 100.0) -> None:
        super().__init__()
        self.pivot, self.distal, self.rate = int(pivot), int(distal), float(rate)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        v = positions[..., self.distal, :] - positions[..., self.pivot, :]
        theta = torch.atan2(v[..., 0], -v[..., 2])
        omega = torch.gradient(theta, spacing=1.0 / self.rate, dim=-1)[0]
        return torch.stack([theta, omega], -1)


def _law_coefficients(result: Any) -> dict[str, float]:
    terms = list(result.terms)
    coef = result.coefficients.detach().cpu().numpy()
    out = {}
    for name in ("sin(theta)", "omega", "theta"):
        if name in terms:
            out[name] = float(coef[1, terms.index(name)])
    return out


def run(cfg: dict[str, Any], data: RunData, *, device: Any = None) -> RunOutcome:
    """Run the gait flagship on ``data`` and score it against ``data.truth``."""
    from pipelines.pipeline import Pipeline
    from pipelines.report import Section, figure_png, new_figure

    opts = dict((cfg.get("pipeline") or {}).get("options") or {})
    rate = float(data.meta.get("rate") or (data.truth or {}).get("rate") or 100.0)
    positions = np.asarray(data.inputs["positions"], dtype=np.float64)
    t = np.asarray(data.inputs.get("t", np.arange(len(positions)) / rate), dtype=np.float64)
    joint = list(opts.get("joint") or [0, 1, 2])
    smooth_cfg = stage_config(cfg, "smooth", rate=rate)
    law_cfg = stage_config(cfg, "law")
    if smooth_cfg is None:
        raise ValueError("gait-dynamics: the 'smooth' stage (feedback.kalman) is not available")
    stages: dict[str, Any] = {
        "smooth": build(smooth_cfg),
        "angle": JointAngle(pivot=joint[0], distal=joint[-1], rate=rate),
    }
    wiring = {}
    if law_cfg is not None:
        stages["law"] = build(law_cfg)
        wiring["law"] = {"t": "input.t", "x": "angle"}
    pipe = Pipeline(
        stages,
        inputs={
            "positions": {"axes": "tmc", "units": "mm"},
            "t": {"axes": "t", "dtype": "float64", "units": "s"},
        },
        wiring=wiring,
        device=device,
        name="gait-dynamics",
    )
    dev = pipe.device
    inputs = {
        "positions": torch.as_tensor(positions, device=dev),
        "t": torch.as_tensor(t, device=dev),
    }
    # q and r are stationary: refine them on a window (the RTS pass is O(t) per step)
    n_ref = int(opts.get("refine_frames") or len(t))
    refine = refine_pipeline(pipe, {k: v[:n_ref] for k, v in inputs.items()}, cfg)
    with torch.no_grad():
        board = pipe.trace(**inputs)
    est = board["smooth"]
    filled = est.positions.detach().cpu().numpy()
    std = est.std.detach().cpu().numpy()
    angles = board["angle"].detach().cpu().numpy()
    law = board.get("law")
    outputs = {
        "input.positions": positions,
        "smooth.positions": filled,
        "smooth.std": std,
        "angle.theta_omega": angles,
    }
    metrics: dict[str, Any] = {}
    truth = data.truth
    passed = None
    if law is not None:
        outputs["law.coefficients"] = law.coefficients.detach().cpu().numpy()
    if truth is not None:
        gaps = truth["gaps"]
        err = np.linalg.norm(filled - truth["positions"], axis=-1)
        raw_err = np.linalg.norm(np.nan_to_num(positions) - truth["positions"], axis=-1)
        metrics["marker_rmse_gaps_mm"] = float(np.sqrt(np.mean(err[gaps] ** 2)))
        metrics["marker_rmse_observed_mm"] = float(np.sqrt(np.mean(err[~gaps] ** 2)))
        metrics["raw_rmse_observed_mm"] = float(np.sqrt(np.mean(raw_err[~gaps] ** 2)))
        metrics["angle_rmse_deg"] = float(
            np.degrees(np.sqrt(np.mean((angles[:, 0] - truth["theta"]) ** 2)))
        )
        ok = metrics["marker_rmse_gaps_mm"] < 5 * truth["noise_mm"]
        if law is not None:
            c = _law_coefficients(law)
            metrics["law_sin_theta_coef"] = c.get("sin(theta)", 0.0)
            metrics["law_sin_theta_true"] = -truth["g_over_l"]
            metrics["law_sin_theta_rel_error"] = (
                abs(c.get("sin(theta)", 0.0) + truth["g_over_l"]) / truth["g_over_l"]
            )
            metrics["law_damping_coef"] = c.get("omega", 0.0)
            metrics["law_damping_true"] = -truth["damping"]
            metrics["law_damping_abs_error"] = abs(c.get("omega", 0.0) + truth["damping"])
            ok = (
                ok
                and metrics["law_sin_theta_rel_error"] < 0.05
                and metrics["law_damping_abs_error"] < 0.1
            )
        passed = bool(ok)
        metrics["passed"] = passed

    # ---- report sections
    sections = []
    fig, ax = new_figure(1, 1, height=3.0)
    for m, name in enumerate(data.meta.get("labels", ["m0", "m1", "m2"])[: positions.shape[1]]):
        ax[0, 0].plot(t, positions[:, m, 2], lw=0.8, label=f"{name} z")
    ax[0, 0].set_xlabel("time [s]")
    ax[0, 0].set_ylabel("z [mm]")
    ax[0, 0].legend(loc="upper right", fontsize=8)
    ax[0, 0].set_title("raw markers (gaps are occlusions)")
    sections.append(
        Section(
            "Input overview",
            text="Marker trajectories (t, marker, xyz) in mm with NaN where a marker was occluded.",
            table={
                "frames": positions.shape[0],
                "markers": positions.shape[1],
                "rate [Hz]": rate,
                "missing samples": int(np.isnan(positions[..., 0]).sum()),
                "source": data.meta.get("source", ""),
            },
            figures=[figure_png(fig, "Raw vertical marker coordinates")],
        )
    )
    fig, ax = new_figure(2, 1, height=3.2)
    m = positions.shape[1] - 1
    miss = np.isnan(positions[:, m, 0])
    idx = np.flatnonzero(miss)
    lo, hi = (
        (max(int(idx[0]) - 80, 0), min(int(idx[0]) + 120, len(t)))
        if idx.size
        else (0, min(300, len(t)))
    )
    sl = slice(lo, hi)
    ref = filled[:, 0, 0]  # relative to the pivot: the walking trend would hide the gap
    rel = filled[sl, m, 0] - ref[sl]
    ax[0, 0].plot(t[sl], positions[sl, m, 0] - ref[sl], ".", ms=3, color="0.5", label="observed")
    ax[0, 0].plot(t[sl], rel, color="#1f5fa8", lw=1.5, label="RTS smoothed")
    band = 2 * std[sl, m, 0]
    ax[0, 0].fill_between(t[sl], rel - band, rel + band, color="#1f5fa8", alpha=0.25, label="±2σ")
    if truth is not None:
        ax[0, 0].plot(
            t[sl],
            truth["positions"][sl, m, 0] - ref[sl],
            "--",
            color="#c4572a",
            lw=1,
            label="truth",
        )
    ax[0, 0].set_xlabel("time [s]")
    ax[0, 0].set_ylabel("x - x_hip [mm]")
    ax[0, 0].set_title("gap filling (distal marker; occluded samples have no dots)")
    ax[0, 0].legend(fontsize=8)
    ax[0, 1].plot(t, angles[:, 0], lw=1, label="estimated")
    if truth is not None:
        ax[0, 1].plot(t, truth["theta"], "--", lw=1, label="truth")
    ax[0, 1].set_title("joint angle theta [rad]")
    ax[0, 1].legend(fontsize=8)
    sections.append(
        Section(
            "Stage smooth + angle: RTS gap filling and joint angle",
            text="Kalman/RTS smoother (constant-velocity model) fills the gaps with a posterior band; the joint angle is the sagittal angle hip -> ankle.",
            figures=[figure_png(fig, "Smoothed vs raw trajectories, and the joint-angle series")],
        )
    )
    if law is not None:
        import sympy as sp

        eqs = []
        for name, expr in zip(("theta", "omega"), law.expressions):
            try:
                eqs.append((f"d{name}/dt", rf"\dot{{\{name}}} = " + sp.latex(sp.N(expr.sympy, 4))))
            except Exception:
                eqs.append((f"d{name}/dt", str(expr)))
        if truth is not None:
            eqs.append(
                (
                    "truth",
                    rf"\dot{{\omega}} = -{truth['g_over_l']:.4g}\,\sin\theta - {truth['damping']:.3g}\,\omega",
                )
            )
        sections.append(
            Section(
                "Stage law: SINDy",
                text="Sparse regression on a library of polynomial and trigonometric terms of (theta, omega).",
                equations=eqs,
            )
        )
    return RunOutcome(
        outputs=outputs,
        metrics=metrics,
        sections=sections,
        description=pipe.describe(),
        refine=refine,
        pipeline_config=pipe.config(),
        data_meta=data.meta,
        passed=passed,
    )
