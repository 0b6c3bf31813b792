"""Feedback at three scales: adaptive scanning (micro), gap filling (macro), scheduling (cosmic).

Runs in well under 30 s on a laptop CPU.  Prints each result against the planted truth and,
when ``LEARNDOCK_GALLERY_OUT`` is set, saves one figure per scale there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from components.feedback import _reference as ref
from components.feedback.adaptive_sampling import adaptive_acquire, reconstruct
from components.feedback.kalman import rts_smooth
from components.feedback.scheduling import GPParams, gp_posterior, peak_time, propose_times


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def main() -> None:
    out_dir = os.environ.get("LEARNDOCK_GALLERY_OUT")
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    # micro: scan 12 % of a fluorescence field, guided by the reconstruction's uncertainty
    img = ref.fluorescence_field(3, shape=(96, 96), cells=10).astype(np.float64)
    truth = torch.from_numpy(img)
    n = int(0.12 * img.size)
    res = adaptive_acquire(lambda c: truth[c[:, 0], c[:, 1]], img.shape, budget=n, batch=60)
    rng = np.random.default_rng(0)
    m = np.zeros(img.shape, bool)
    m.flat[rng.choice(img.size, n, replace=False)] = True
    uni = reconstruct(truth * torch.from_numpy(m), torch.from_numpy(m)).numpy()
    print(
        f"micro  : {n} samples (12 %): adaptive {_psnr(res.reconstruction.numpy(), img):.2f} dB vs uniform random {_psnr(uni, img):.2f} dB"
    )
    if out is not None:
        fig, ax = plt.subplots(1, 4, figsize=(13, 3.4))
        for a, im, title in zip(
            ax,
            [img, res.mask.numpy(), res.reconstruction.numpy(), uni],
            ["truth", "adaptive samples", "adaptive reconstruction", "uniform reconstruction"],
        ):
            a.imshow(im, cmap="magma" if im.dtype != bool else "gray")
            a.set_title(title)
            a.axis("off")
        fig.tight_layout()
        fig.savefig(out / "feedback_micro_adaptive.png", dpi=90)
        plt.close(fig)

    # macro: a 0.25 s occlusion of one gait marker, bridged with an error bar
    clean = ref.gait_markers(4, frames=200, markers=6, gap_fraction=0.0, noise=0.0)
    pos = clean + np.random.default_rng(1).normal(0, 0.5, clean.shape)
    pos[80:105, 2, :] = np.nan
    est = rts_smooth(torch.from_numpy(pos), rate=100.0, q=2e5, r=0.25)
    err = np.abs(est.positions.numpy()[80:105, 2] - clean[80:105, 2])
    inside = float((err <= 2 * est.std.numpy()[80:105, 2]).mean())
    print(
        f"macro  : 25-frame gap filled, mean |error| {err.mean():.2f} mm, {inside:.0%} of filled samples inside +-2 std"
    )
    if out is not None:
        t = np.arange(200) / 100
        fig, ax = plt.subplots(figsize=(7, 3))
        mu, sd = est.positions.numpy()[:, 2, 2], est.std.numpy()[:, 2, 2]
        ax.plot(t, clean[:, 2, 2], "k-", lw=0.8, label="truth")
        ax.plot(t, pos[:, 2, 2], ".", ms=2, label="observed")
        ax.plot(t, mu, "C1", label="RTS")
        ax.fill_between(t, mu - 2 * sd, mu + 2 * sd, color="C1", alpha=0.3, label="+-2 std")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("z (mm)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "feedback_macro_gap.png", dpi=90)
        plt.close(fig)

    # cosmic: schedule follow-up of a transient to pin down its time of peak
    g = np.random.default_rng(2)
    kw = {"amplitude": 2.0, "t0": 21.0, "rise": 2.0, "fall": 15.0}
    tp_true = kw["t0"] + kw["rise"] * np.log(kw["fall"] / kw["rise"] - 1)
    t = np.linspace(0, 18, 5)
    f = ref.bazin(t, **kw) + g.normal(0, 0.05, t.size)
    params = GPParams(kernel="transient", amplitude=2.0, lengthscale=8.0, jitter=0.05, mean=0.0)
    for night in range(4):
        nxt = propose_times(
            t, f, 0.05, params, n=2, horizon=12.0, min_separation=1.0, target="peak_time"
        ).coords.numpy()
        print(f"cosmic : night {night}: observe at {np.round(nxt, 2).tolist()} d")
        t = np.concatenate([t, nxt])
        f = np.concatenate([f, ref.bazin(nxt, **kw) + g.normal(0, 0.05, nxt.size)])
    grid = torch.linspace(0, 60, 1200, dtype=torch.float64)
    tp, sd = peak_time(t, f, 0.05, params, grid=grid)
    print(
        f"cosmic : peak at {tp:.2f} +- {sd:.2f} d (true {tp_true:.2f} d) from {t.size} observations"
    )
    if out is not None:
        mu, var = gp_posterior(
            torch.from_numpy(t), torch.from_numpy(f), 0.05, grid, params, full_cov=False
        )
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(grid, ref.bazin(grid.numpy(), **kw), "k-", lw=0.8, label="truth")
        ax.plot(grid, mu, "C0", label="GP mean")
        ax.fill_between(
            grid.numpy(), (mu - 2 * var.sqrt()).numpy(), (mu + 2 * var.sqrt()).numpy(), alpha=0.3
        )
        ax.plot(t[:5], f[:5], "ko", ms=4, label="initial")
        ax.plot(t[5:], f[5:], "C3o", ms=4, label="scheduled")
        ax.axvline(tp_true, color="k", ls=":")
        ax.set_xlabel("time (d)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "feedback_cosmic_schedule.png", dpi=90)
        plt.close(fig)


if __name__ == "__main__":
    main()
