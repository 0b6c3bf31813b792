"""Flagship ``microscopy-transients`` (micro).

(deconvolution) -> background separation (RPCA; temporal median when the RPCA
component is absent) -> matched-filter spot detection per frame -> flash detection
(large-scale matched filter + short-lived events) -> tracking (optimal frame-to-frame
assignment) -> diffusion law of the tracks,

.. math:: \\mathrm{MSD}(\\tau) = 4 D \\tau + 4 \\sigma_\\mathrm{loc}^2 .

Scores: spot detection F1 against the true positions (matched within
``match_radius`` pixels), flash F1 (events), recovered diffusion coefficient.
Sample data: :func:`sample_data.fluorescence_timelapse`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.cli_run import RunData, RunOutcome
from pipelines.flagships._common import build, f1, match_points, refine_pipeline, stage_config

__all__ = [
    "FrameSpots",
    "FrameWise",
    "Separation",
    "TemporalMedianBackground",
    "link_tracks",
    "msd_diffusion",
    "run",
    "sample",
]


def sample(*, seed: int = 0, size: str = "small") -> RunData:
    """The fluorescence time-lapse of :mod:`sample_data` (diffusing spots, flashes,
    drifting low-rank background) with its exact truth."""
    from sample_data import fluorescence_timelapse

    movie, truth = fluorescence_timelapse(seed=seed, size=size)
    meta = {
        "source": f"sample_data.fluorescence_timelapse(seed={seed}, size={size!r})",
        "axes": "tyx",
        "dtype": str(movie.dtype),
    }
    return RunData(inputs={"movie": movie}, truth=truth, meta=meta)


@dataclasses.dataclass
class Separation:
    """Background / foreground split of a movie."""

    sparse: torch.Tensor
    low_rank: torch.Tensor


class TemporalMedianBackground(nn.Module):
    """Background = per-pixel temporal median (the fallback when RPCA is absent)."""

    differentiable = True
    footprint = 0
    input_schema = {"movie": {"axes": "tyx"}}  # noqa: RUF012
    output_schema = {"sparse": {"axes": "tyx"}, "low_rank": {"axes": "tyx"}}  # noqa: RUF012

    def forward(self, movie: torch.Tensor) -> Separation:
        bg = movie.median(dim=0, keepdim=True).values.expand_as(movie)
        return Separation(sparse=movie - bg, low_rank=bg)


@dataclasses.dataclass
class FrameSpots:
    """Per-frame spot tables of a movie plus the stacked dense maps."""

    positions: list[torch.Tensor]
    snr: list[torch.Tensor]
    score: torch.Tensor
    probability: torch.Tensor


class FrameWise(nn.Module):
    """Apply a 2-D detector (e.g. ``detection.spots``) to every frame of a ``tyx`` movie."""

    differentiable = True
    footprint = 0
    input_schema = {"movie": {"axes": "tyx"}}  # noqa: RUF012
    output_schema = {"score": {"axes": "tyx"}}  # noqa: RUF012

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.footprint = getattr(detector, "footprint", 0)

    def forward(self, movie: torch.Tensor) -> FrameSpots:
        tables = [self.detector(frame) for frame in movie]
        return FrameSpots(
            positions=[t.positions for t in tables],
            snr=[t.snr for t in tables],
            score=torch.stack([t.score for t in tables]),
            probability=torch.stack([t.probability for t in tables]),
        )

    def self_supervised_loss(self, inputs: Any, output: FrameSpots) -> torch.Tensor:
        p = output.probability.clamp(1e-6, 1 - 1e-6)
        return -(p * p.log() + (1 - p) * (1 - p).log()).mean()


def link_tracks(positions: list[np.ndarray], *, radius: float) -> list[np.ndarray]:
    """Link per-frame detections into tracks by optimal assignment between frames.

    Returns
    -------
    list of ndarray
        One ``(n_frames_in_track, 3)`` array of ``(t, y, x)`` per track.
    """
    from scipy.optimize import linear_sum_assignment

    tracks: list[list[tuple[int, float, float]]] = []
    active: list[int] = []  # index into tracks of tracks that ended in the previous frame
    prev = np.zeros((0, 2))
    for t, pos in enumerate(positions):
        pos = np.asarray(pos, dtype=float).reshape(-1, 2)
        new_active = [-1] * len(pos)
        if len(prev) and len(pos):
            d = np.linalg.norm(prev[:, None] - pos[None], axis=-1)
            cost = np.where(d <= radius, d, 1e6)
            r, c = linear_sum_assignment(cost)
            for i, j in zip(r, c):
                if cost[i, j] <= radius:
                    tracks[active[i]].append((t, pos[j, 0], pos[j, 1]))
                    new_active[j] = active[i]
        for j in range(len(pos)):
            if new_active[j] < 0:
                tracks.append([(t, pos[j, 0], pos[j, 1])])
                new_active[j] = len(tracks) - 1
        active, prev = new_active, pos
    return [np.asarray(tr, dtype=float) for tr in tracks]


def msd_diffusion(
    tracks: list[np.ndarray], *, max_lag: int = 4, min_length: int = 10
) -> dict[str, Any]:
    """Diffusion coefficient from the mean squared displacement of 2-D tracks.

    Fits :math:`\\mathrm{MSD}(\\tau) = 4 D \\tau + b` by least squares over lags
    ``1..max_lag`` (frames), pooling every displacement of every track of at least
    ``min_length`` frames.  ``D`` is in pixel^2 per frame.
    """
    lags = np.arange(1, max_lag + 1)
    msd = np.zeros(max_lag)
    count = np.zeros(max_lag)
    long = [tr for tr in tracks if len(tr) >= min_length]
    for tr in long:
        tt, yx = tr[:, 0].astype(int), tr[:, 1:]
        for k, lag in enumerate(lags):
            # only pairs exactly `lag` frames apart (tracks are gap-free by construction)
            idx = np.flatnonzero(tt[lag:] - tt[:-lag] == lag)
            if idx.size:
                d2 = np.sum((yx[idx + lag] - yx[idx]) ** 2, axis=1)
                msd[k] += d2.sum()
                count[k] += d2.size
    ok = count > 0
    if ok.sum() < 2:
        return {
            "D": float("nan"),
            "offset": float("nan"),
            "lags": lags,
            "msd": np.full(max_lag, np.nan),
            "tracks": len(long),
        }
    msd = np.where(ok, msd / np.maximum(count, 1), np.nan)
    A = np.stack([4 * lags[ok], np.ones(ok.sum())], 1)
    (D, b), *_ = np.linalg.lstsq(A, msd[ok], rcond=None)
    return {"D": float(D), "offset": float(b), "lags": lags, "msd": msd, "tracks": len(long)}


def _flash_events(
    positions: list[np.ndarray],
    spot_tracks: list[np.ndarray],
    *,
    radius: float,
    max_duration: int,
    exclusion: float,
) -> list[dict[str, float]]:
    """Short-lived large-scale events that are not explained by a persistent spot."""
    persistent: dict[int, list[np.ndarray]] = {}
    for tr in spot_tracks:
        if len(tr) > max_duration:
            for row in tr:
                persistent.setdefault(int(row[0]), []).append(row[1:])
    events = []
    for tr in link_tracks(positions, radius=radius):
        if len(tr) > max_duration:
            continue
        near = 0
        for row in tr:
            pts = persistent.get(int(row[0]))
            if (
                pts is not None
                and np.min(np.linalg.norm(np.asarray(pts) - row[1:], axis=1)) <= exclusion
            ):
                near += 1
        if near * 2 > len(tr):
            continue
        events.append(
            {
                "t0": float(tr[0, 0]),
                "t1": float(tr[-1, 0]),
                "y": float(tr[:, 1].mean()),
                "x": float(tr[:, 2].mean()),
            }
        )
    return events


def run(cfg: dict[str, Any], data: RunData, *, device: Any = None) -> RunOutcome:
    """Run the microscopy flagship on ``data`` and score it against ``data.truth``."""
    from pipelines.pipeline import Pipeline, _declared_schemas
    from pipelines.report import Section, figure_png, new_figure

    opts = dict((cfg.get("pipeline") or {}).get("options") or {})
    movie_np = np.asarray(data.inputs.get("movie", next(iter(data.inputs.values()))))
    if movie_np.ndim != 3:
        raise ValueError(
            f"microscopy-transients: expected a (t, y, x) movie, got shape {movie_np.shape}"
        )
    movie = torch.as_tensor(movie_np.astype(np.float32))
    stages: dict[str, Any] = {}
    notes = []
    if opts.get("deconvolve"):
        dc = stage_config(cfg, "deconvolve")
        if dc is not None:
            stages["deconvolve"] = build(dc)
        else:
            notes.append(
                "deconvolution requested but feedback.deconvolution is not installed: skipped"
            )
    bg_cfg = stage_config(cfg, "background")
    stages["background"] = build(bg_cfg) if bg_cfg is not None else TemporalMedianBackground()
    if bg_cfg is None:
        notes.append("detection.rpca not installed: background = temporal median")
    _, bg_outs = _declared_schemas(stages["background"])
    fg = next((k for k in ("sparse", "foreground", "events", "residual") if k in bg_outs), None)
    if fg is None:
        notes.append(
            f"{type(stages['background']).__name__} declares no sparse/foreground output: "
            "background = temporal median"
        )
        stages["background"] = TemporalMedianBackground()
        fg = "sparse"
    spot_cfg = stage_config(cfg, "spots")
    if spot_cfg is None:
        raise ValueError(
            "microscopy-transients: the 'spots' stage (detection.spots) is not available"
        )
    stages["spots"] = FrameWise(build(spot_cfg))
    wiring = {"spots": {"movie": f"background.{fg}"}}
    pipe = Pipeline(
        stages,
        inputs={"movie": {"axes": "tyx"}},
        wiring=wiring,
        device=device,
        name="microscopy-transients",
    )
    dev = pipe.device
    movie = movie.to(dev)
    n_ref = int(opts.get("refine_frames", 6))
    if opts.get("refine_background", False):
        refine = refine_pipeline(pipe, {"movie": movie[:n_ref]}, cfg)
    else:
        # the background model is fitted, not learned: refine the detector on its output
        with torch.no_grad():
            fg_ref = pipe.trace(movie=movie[:n_ref], until="background")[f"background.{fg}"]
        sub = Pipeline(
            {"spots": pipe.stages["spots"]}, inputs={"movie": {"axes": "tyx"}}, name="spots"
        )
        refine = refine_pipeline(sub, {"movie": fg_ref}, cfg)
    with torch.no_grad():
        board = pipe.trace(movie=movie)
        sparse = board[f"background.{fg}"]
        low_rank = board.get("background.low_rank")
        if not isinstance(low_rank, torch.Tensor):
            low_rank = movie - sparse
        spots: FrameSpots = board["spots"]
        flash_det = FrameWise(
            build(
                {
                    **spot_cfg,
                    "sigma": float(opts.get("flash_sigma", 4.0)),
                    "threshold": float(opts.get("flash_threshold", 6.0)),
                }
            )
        ).to(dev)
        flashes_ft = flash_det(sparse)
    det = [p.detach().cpu().numpy() for p in spots.positions]
    tracks = link_tracks(det, radius=float(opts.get("link_radius", 4.0)))
    law = msd_diffusion(
        tracks, max_lag=int(opts.get("max_lag", 4)), min_length=int(opts.get("min_track", 10))
    )
    flash_events = _flash_events(
        [p.detach().cpu().numpy() for p in flashes_ft.positions],
        tracks,
        radius=6.0,
        max_duration=int(opts.get("flash_max_frames", 5)),
        exclusion=float(opts.get("flash_exclusion", 5.0)),
    )

    outputs: dict[str, np.ndarray] = {
        "background.sparse": sparse.detach().cpu().numpy().astype(np.float32),
        "spots.score": spots.score.detach().cpu().numpy().astype(np.float32),
        "spots.table": np.concatenate(
            [np.column_stack([np.full(len(p), t), p]) for t, p in enumerate(det)]
        )
        if det
        else np.zeros((0, 3)),
        "tracks": np.concatenate(
            [np.column_stack([np.full(len(tr), i), tr]) for i, tr in enumerate(tracks)]
        )
        if tracks
        else np.zeros((0, 4)),
        "law.msd": np.asarray(law["msd"], dtype=np.float64),
    }
    metrics: dict[str, Any] = {
        "detections": int(sum(len(p) for p in det)),
        "tracks_long": law["tracks"],
        "D_px2_per_frame": law["D"],
        "flash_events": len(flash_events),
    }
    passed = None
    truth = data.truth
    r = float(opts.get("match_radius", 2.0))
    if truth is not None:
        true_pos = np.asarray(truth["spot_positions"])
        T, H, W = movie_np.shape
        border = 3
        tp = fp = fn = 0
        for t in range(T):
            tpos = true_pos[t]
            inside = (
                (tpos[:, 0] >= border)
                & (tpos[:, 0] < H - border)
                & (tpos[:, 1] >= border)
                & (tpos[:, 1] < W - border)
            )
            p = det[t]
            pin = (
                (p[:, 0] >= border)
                & (p[:, 0] < H - border)
                & (p[:, 1] >= border)
                & (p[:, 1] < W - border)
                if len(p)
                else np.zeros(0, bool)
            )
            a, b, c, _ = match_points(p[pin], tpos[inside], r)
            tp, fp, fn = tp + a, fp + b, fn + c
        metrics["spot_f1"] = f1(tp, fp, fn)
        metrics["spot_precision"] = tp / max(tp + fp, 1)
        metrics["spot_recall"] = tp / max(tp + fn, 1)
        D_true = float(truth["diffusion"])
        metrics["D_true_px2_per_frame"] = D_true
        metrics["D_rel_error"] = (
            abs(law["D"] - D_true) / D_true if np.isfinite(law["D"]) else float("inf")
        )
        true_flashes = list(truth.get("flashes") or [])
        ftp = 0
        used: set[int] = set()
        for fl in true_flashes:
            for k, ev in enumerate(flash_events):
                if k in used:
                    continue
                if (
                    abs(ev["y"] - fl["y"]) <= 6
                    and abs(ev["x"] - fl["x"]) <= 6
                    and ev["t0"] <= fl["t0"] + fl["duration"]
                    and ev["t1"] >= fl["t0"]
                ):
                    ftp += 1
                    used.add(k)
                    break
        metrics["flash_f1"] = f1(ftp, len(flash_events) - ftp, len(true_flashes) - ftp)
        passed = bool(metrics["spot_f1"] >= 0.9 and metrics["D_rel_error"] < 0.2)
        metrics["passed"] = passed

    # ---- report
    sections = []
    mid = movie_np.shape[0] // 2
    fig, ax = new_figure(3, 1, height=3.3, width=11)
    ax[0, 0].imshow(movie_np[mid], cmap="gray")
    ax[0, 0].set_title(f"raw frame {mid}")
    ax[0, 1].imshow(
        low_rank[mid].detach().cpu().numpy(),
        cmap="gray",
    )
    ax[0, 1].set_title("background (low rank)")
    ax[0, 2].imshow(sparse[mid].detach().cpu().numpy(), cmap="magma")
    ax[0, 2].set_title("foreground (sparse)")
    for a in ax[0]:
        a.set_axis_off()
    sections.append(
        Section(
            "Input overview and background separation",
            text=" ".join(
                [
                    "A (t, y, x) fluorescence movie; the background model is removed before detection.",
                    *notes,
                ]
            ),
            table={
                "shape (t, y, x)": movie_np.shape,
                "dtype": str(movie_np.dtype),
                "source": data.meta.get("source", ""),
            },
            figures=[figure_png(fig, "Raw frame, background and foreground")],
        )
    )
    fig, ax = new_figure(2, 1, height=4.4, width=10)
    ax[0, 0].imshow(sparse[mid].detach().cpu().numpy(), cmap="gray")
    if len(det[mid]):
        ax[0, 0].scatter(
            det[mid][:, 1],
            det[mid][:, 0],
            s=70,
            facecolors="none",
            edgecolors="#ff4d4d",
            lw=1.2,
            label="detected",
        )
    if truth is not None:
        tp_ = np.asarray(truth["spot_positions"])[mid]
        ax[0, 0].scatter(tp_[:, 1], tp_[:, 0], s=8, c="#3fd0ff", label="truth")
    ax[0, 0].legend(loc="lower right", fontsize=8)
    ax[0, 0].set_title(f"spot detections, frame {mid}")
    ax[0, 0].set_axis_off()
    ax[0, 1].imshow(movie_np.max(0), cmap="gray")
    for tr in tracks:
        if len(tr) >= int(opts.get("min_track", 10)):
            ax[0, 1].plot(tr[:, 2], tr[:, 1], lw=1)
    for ev in flash_events:
        ax[0, 1].scatter(
            [ev["x"]], [ev["y"]], s=250, facecolors="none", edgecolors="yellow", lw=1.5
        )
    ax[0, 1].set_title("tracks (lines) and flashes (yellow) on the max projection")
    ax[0, 1].set_axis_off()
    sections.append(
        Section(
            "Stage spots: matched-filter detection, tracking, flashes",
            figures=[
                figure_png(fig, "Detections overlaid on the foreground; tracks and flash events")
            ],
        )
    )
    fig, ax = new_figure(1, 1, height=3.0, width=6)
    ax[0, 0].plot(law["lags"], law["msd"], "o", label="MSD of tracks")
    if np.isfinite(law["D"]):
        ax[0, 0].plot(
            law["lags"],
            4 * law["D"] * law["lags"] + law["offset"],
            "-",
            label=f"fit D = {law['D']:.3f} px²/frame",
        )
    ax[0, 0].set_xlabel("lag [frames]")
    ax[0, 0].set_ylabel("MSD [px²]")
    ax[0, 0].legend(fontsize=8)
    eqs = [
        (
            "diffusion law",
            rf"\mathrm{{MSD}}(\tau) = 4 \times {law['D']:.4g}\,\tau + {law['offset']:.3g}",
        )
    ]
    if truth is not None:
        eqs.append(
            ("truth", rf"D = {float(truth['diffusion']):.4g}\ \mathrm{{px}}^2/\mathrm{{frame}}")
        )
    sections.append(
        Section(
            "Stage law: diffusion of the tracked spots",
            equations=eqs,
            figures=[figure_png(fig, "Mean squared displacement vs lag")],
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
