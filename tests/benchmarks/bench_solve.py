"""Continual improvement of ``learndock solve``, measured (issue 8).

A stream of generated tasks across the three scales arrives in random order, with
near-repeats (same instrument, different field or night).  Each task has exact ground
truth.  Three arms are run in the same process on the same tasks:

(a) cold start  -- every task solved with an empty task library;
(b) learndock   -- the task library accumulates along the stream;
(c) fixed       -- a fixed default pipeline per modality (its default learnware for each
                   required role -- widefield deconvolution, the gait Kalman smoother,
                   the Kepler transit search -- as declared, no tuning).

Per task the score and the wall time to reach the goal (the task's target score) are
reported.  Goal: over the second half of the stream, (b) reaches the goal in at least 3x
less time than (a) at equal or better score, and beats (c) on score for >= 80 % of tasks.

Scenarios (2 instruments x ``fields`` per scale):

* micro  -- ``reconstruct`` microscopy: beads and filaments blurred by a Gaussian PSF of
  the instrument's width plus shot noise; truth: the object at 1 px resolution; metric:
  SNR (dB).
* macro  -- ``reconstruct`` biomechanics: gait marker trajectories with the instrument's
  noise (:func:`sample_data.gait_markers`); truth: clean trajectories; metric: SNR (dB).
* cosmic -- ``find-transits`` light curves (:func:`sample_data.light_curves`, one star with
  an injected transit; a quiet and an active, rotating star); truth: the period; metric:
  1 at the true period, 0 at 5 % error.

Targets: each instrument is calibrated once on a field that is not in the stream (a long
solve from an empty library gives its reference pipeline); a task's target is the score
of that reference pipeline on the task minus 0.2 dB.  For transits the target is 0.98
(period within 0.1 %).

Run: ``.venv/bin/python tests/benchmarks/bench_solve.py --out .bench [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.base import discover_learnwares, instantiate
from pipelines import solve as S
from specs.tasks import EMBEDDING_METHOD, TaskLibrary


# --------------------------------------------------------------------------------------
# task generators (ground truth known exactly)
# --------------------------------------------------------------------------------------
def micro_task(
    seed: int, *, sigma: float, photons: float, size: int
) -> tuple[dict[str, np.ndarray], Any]:
    """Beads and short filaments, blurred by a Gaussian PSF, shot noise; truth: object."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    obj = np.zeros((size, size))
    for y, x in rng.uniform(4, size - 4, (size // 4, 2)):
        obj[int(y), int(x)] += rng.uniform(0.5, 1.0)
    for _ in range(size // 24):
        y0, x0 = rng.uniform(8, size - 8, 2)
        ang = rng.uniform(0, np.pi)
        for s in np.linspace(-6, 6, 25):
            obj[int(y0 + s * np.sin(ang)), int(x0 + s * np.cos(ang))] = 0.4
    blurred = gaussian_filter(obj, sigma, mode="reflect")
    img = rng.poisson(photons * blurred + 2.0).astype(np.float64) / photons
    # truth: the object at the resolution a deconvolution can reach (1 px Gaussian)
    truth = gaussian_filter(obj, 1.0, mode="reflect") + 2.0 / photons
    return {"image": img.astype(np.float32)}, torch.from_numpy(truth).float()


def macro_task(seed: int, *, noise_mm: float, frames: int) -> tuple[dict[str, np.ndarray], Any]:
    from sample_data import gait_markers

    pts, truth = gait_markers(seed=seed, size=frames, noise_mm=noise_mm, gap_fraction=0.0)
    return {"positions": pts.astype(np.float64)}, torch.from_numpy(
        np.asarray(truth["clean"], np.float64)
    )


def cosmic_task(
    seed: int, *, noise_ppm: float, days: float, rotation: float
) -> tuple[dict[str, np.ndarray], Any]:
    """A quiet star of :func:`sample_data.light_curves` (its systematics and noise) with a
    spot-modulated rotation of relative amplitude ``rotation`` and one injected transiting
    planet (period 1.5-3.5 d, depth 1500-3000 ppm); truth: the period."""
    from sample_data import light_curves, transit_model

    data, _ = light_curves(seed=seed, size=(1, days), noise_ppm=noise_ppm, kinds=("quiet",))
    t = np.asarray(data["time"], np.float64)
    f = np.asarray(data["flux"][0], np.float64)
    rng = np.random.default_rng(seed + 7)
    period = float(rng.uniform(1.5, 3.5))
    f = f * transit_model(
        t,
        period=period,
        epoch=float(t[0] + rng.uniform(0, period)),
        depth=float(rng.uniform(1.5e-3, 3e-3)),
        duration=0.1,
        ingress=0.02,
    )
    p_rot = rng.uniform(2.0, 4.0)
    f = f * (1 + rotation * np.sin(2 * np.pi * t / p_rot + rng.uniform(0, 2 * np.pi)))
    ok = np.isfinite(f)
    return {"time": t[ok], "flux": f[ok]}, {"period": period}


@dataclass
class Scenario:
    scale: str
    goal: str
    modality: str
    instruments: list[dict[str, Any]]
    make: Callable[..., tuple[dict[str, np.ndarray], Any]]
    margin: float
    lr: float
    absolute_target: float | None = None
    default: tuple[str, ...] = ()


def scenarios(quick: bool) -> list[Scenario]:
    return [
        Scenario(
            "micro",
            "reconstruct",
            "microscopy",
            [
                {
                    "name": "confocal-1.8px",
                    "sigma": 1.8,
                    "photons": 400.0,
                    "size": 64,
                },
                {
                    "name": "thick-2.6px",
                    "sigma": 2.6,
                    "photons": 200.0,
                    "size": 64,
                },
            ],
            micro_task,
            margin=0.2,
            lr=0.1,
            default=("feedback.deconvolution.widefield",),
        ),
        Scenario(
            "macro",
            "reconstruct",
            "biomechanics",
            [
                {"name": "video-3mm", "noise_mm": 3.0, "frames": 150 if quick else 300},
                {"name": "imu-8mm", "noise_mm": 8.0, "frames": 150 if quick else 300},
            ],
            macro_task,
            margin=0.2,
            lr=0.3,
            default=("feedback.kalman.gait",),
        ),
        Scenario(
            "cosmic",
            "find-transits",
            "light-curve",
            [
                {"name": "quiet-300ppm", "noise_ppm": 300.0, "days": 8.0, "rotation": 5e-4},
                {"name": "active-600ppm", "noise_ppm": 600.0, "days": 8.0, "rotation": 4e-3},
            ],
            cosmic_task,
            margin=0.0,
            lr=0.05,
            absolute_target=0.98,
            default=("detection.transits.kepler",),
        ),
    ]


def _available(sc: Scenario) -> tuple[bool, str]:
    decls = discover_learnwares()
    for role in S.GOALS[sc.goal]:
        if role.optional:
            continue
        if not any(
            d.spec.task in role.tasks and d.spec.modality == sc.modality for _, d in decls.values()
        ):
            return (
                False,
                f"no built-in learnware for role {role.name!r} ({list(role.tasks)}) on {sc.modality}",
            )
    return True, ""


def _task(
    sc: Scenario,
    inst: dict[str, Any],
    seed: int,
    target: float | None,
    *,
    budget_s: float,
    steps: int,
) -> S.Task:
    kw = {k: v for k, v in inst.items() if k != "name"}
    data, labels = sc.make(seed, **kw)
    return S.Task(
        goal=sc.goal,
        modality=sc.modality,
        scale=sc.scale,
        data={k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()},
        labels=labels,
        budget_s=budget_s,
        steps=steps,
        target=target,
        description=f"{sc.scale} {inst['name']} field {seed}",
        tags=(inst["name"],),
    )


def fixed_pipeline(sc: Scenario, data: dict[str, Any]) -> Any:
    """Arm (c): the modality's default learnware for each required role (``sc.default``,
    else the first built-in by name), as declared, untuned."""
    decls = discover_learnwares()
    stages = []
    for role in S.GOALS[sc.goal]:
        if role.optional:
            continue
        fits = [
            n
            for n, v in decls.items()
            if v[1].spec.task in role.tasks and v[1].spec.modality == sc.modality
        ]
        name = next((n for n in fits if n in sc.default), fits[0])
        cls, d = decls[name]
        stages.append((role.name, instantiate({"_target_": cls.name, **dict(d.params)})))
    return S.compose_pipeline(stages, data)


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=".bench", help="folder for solve.json")
    ap.add_argument("--quick", action="store_true", help="smaller data and 2 fields per instrument")
    ap.add_argument(
        "--fields",
        type=int,
        default=None,
        help="fields (seeds) per instrument (default 4, quick 2)",
    )
    ap.add_argument("--seed", type=int, default=0, help="order of the stream")
    ap.add_argument("--budget", type=float, default=60.0, help="time budget per task (s)")
    ap.add_argument("--steps", type=int, default=150, help="refinement steps budget per task")
    args = ap.parse_args(argv)
    threads = int(os.environ.get("LEARNDOCK_THREADS", "2"))
    torch.set_num_threads(threads)
    fields = args.fields or (2 if args.quick else 4)
    source = S.DeclarationSource()  # the dock (its learnware RKMEs are cached: shared by all arms)
    common = dict(source=source, top_k=3, max_combos=8, round_steps=5, max_swaps=2, polish_steps=10)

    active, skipped = [], {}
    for sc in scenarios(args.quick):
        ok, why = _available(sc)
        (active.append(sc) if ok else skipped.__setitem__(sc.scale, why))
    for k, v in skipped.items():
        print(f"[skip] {k}: {v}")
    if not active:
        print("nothing to run: no scenario has its learnwares registered")
        return 1

    # calibrate each instrument once, on a field that is not in the stream: a long solve
    # from an empty library gives the instrument's reference pipeline; a task's target is
    # that pipeline's score on the task minus the margin
    reference: dict[tuple[str, str], Any] = {}
    calib: dict[str, Any] = {}
    for sc in active:
        for inst in sc.instruments:
            if sc.absolute_target is not None:
                continue
            t = _task(sc, inst, 10_000, None, budget_s=2 * args.budget, steps=2 * args.steps)
            with tempfile.TemporaryDirectory() as d:
                r = S.solve(t, library=TaskLibrary(d), remember=False, lr=sc.lr, **common)
            reference[(sc.scale, inst["name"])] = r.pipeline.eval()
            calib[f"{sc.scale}/{inst['name']}"] = {
                "score": r.score,
                "stages": r.trace["result"]["stages"],
                "pipeline": r.config,
            }
            print(
                f"[calibrate] {sc.scale}/{inst['name']}: long-solve score {r.score:.3f} {r.trace['result']['stages']}",
                flush=True,
            )

    def target_of(sc: Scenario, inst: dict[str, Any], seed: int) -> float:
        if sc.absolute_target is not None:
            return sc.absolute_target
        t = _task(sc, inst, seed, None, budget_s=1.0, steps=0)
        with torch.no_grad():
            return (
                S.metric_score(sc.goal, reference[(sc.scale, inst["name"])](**t.data), t.labels)
                - sc.margin
            )

    stream = [
        (sc, inst, 100 * (i + 1) + f)
        for sc in active
        for i, inst in enumerate(sc.instruments)
        for f in range(fields)
    ]
    order = np.random.default_rng(args.seed).permutation(len(stream))
    stream = [stream[i] for i in order]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        lib_b = TaskLibrary(Path(root) / "b")
        for k, (sc, inst, seed) in enumerate(stream):
            target = target_of(sc, inst, seed)
            row: dict[str, Any] = {
                "i": k,
                "scale": sc.scale,
                "instrument": inst["name"],
                "field": seed,
                "target": target,
            }
            # (a) cold start
            ta = _task(sc, inst, seed, target, budget_s=args.budget, steps=args.steps)
            t0 = time.perf_counter()
            ra = S.solve(
                ta, library=TaskLibrary(Path(root) / f"a{k}"), remember=False, lr=sc.lr, **common
            )
            row["a_time"] = time.perf_counter() - t0
            row["a_score"], row["a_ttg"] = ra.score, ra.time_to_target
            # (b) learndock with the accumulating library
            tb = _task(sc, inst, seed, target, budget_s=args.budget, steps=args.steps)
            t0 = time.perf_counter()
            rb = S.solve(tb, library=lib_b, remember=True, lr=sc.lr, **common)
            row["b_time"] = time.perf_counter() - t0
            row["b_score"], row["b_ttg"] = rb.score, rb.time_to_target
            row["b_origin"] = rb.trace["result"]["origin"]
            row["b_recall"] = [
                {k: r.get(k) for k in ("mmd", "close", "rescored")} for r in rb.trace["recall"][:1]
            ]
            # (c) fixed default pipeline
            tc = _task(sc, inst, seed, target, budget_s=args.budget, steps=args.steps)
            t0 = time.perf_counter()
            chain = fixed_pipeline(sc, tc.data).eval()
            with torch.no_grad():
                try:
                    row["c_score"] = S.metric_score(sc.goal, chain(**tc.data), tc.labels)
                except Exception as exc:
                    row["c_score"], row["c_error"] = (
                        float("nan"),
                        f"{type(exc).__name__}: {exc}"[:200],
                    )
            row["c_time"] = time.perf_counter() - t0
            row["c_ttg"] = row["c_time"] if row["c_score"] >= target else None
            rows.append(row)
            print(
                f"{k:3d} {sc.scale:6s} {inst['name']:16s} target {target:7.3f} | "
                f"a {ra.score:7.3f} ttg {_fmt_t(ra.time_to_target)} | b {rb.score:7.3f} ttg {_fmt_t(rb.time_to_target)} ({row['b_origin'].split(':')[0]}) | "
                f"c {row['c_score']:7.3f}",
                flush=True,
            )

    summary = summarize(rows)
    print_table(summary)
    out = {
        "benchmark": "solve-continual-improvement",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "quick": args.quick,
        "sizes": {
            "tasks": len(rows),
            "fields_per_instrument": fields,
            "budget_s": args.budget,
            "steps": args.steps,
        },
        "skipped": skipped,
        "composition": "pipelines.pipeline.Pipeline (schema checks, adapters, Pipeline.refine)",
        "embedding": EMBEDDING_METHOD,
        "calibration": calib,
        "rows": rows,
        "summary": summary,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "solve.json").write_text(json.dumps(out, indent=2, default=_json_default))
    return 0


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _fmt_t(t: float | None) -> str:
    return f"{t:6.2f}s" if t is not None else "   n/r "


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Second-half statistics: time to goal (not reached = the whole solve time, counted
    as a miss), scores, and (b) vs (c) wins."""
    half = rows[len(rows) // 2 :]

    def ttg(r: dict[str, Any], arm: str) -> float:
        v = r[f"{arm}_ttg"]
        return float(v) if v is not None else float(r[f"{arm}_time"])

    out: dict[str, Any] = {"n_tasks": len(rows), "n_second_half": len(half)}
    for arm in ("a", "b", "c"):
        out[f"{arm}_reached"] = sum(r[f"{arm}_ttg"] is not None for r in half)
        out[f"{arm}_time_to_goal_total_s"] = sum(ttg(r, arm) for r in half)
        out[f"{arm}_score_mean"] = float(np.nanmean([r[f"{arm}_score"] for r in half]))
    out["speedup_b_vs_a"] = out["a_time_to_goal_total_s"] / max(out["b_time_to_goal_total_s"], 1e-9)
    per = [ttg(r, "a") / max(ttg(r, "b"), 1e-9) for r in half]
    out["speedup_b_vs_a_median"] = float(np.median(per))
    out["b_score_ge_a"] = sum(
        r["b_score"] >= r["a_score"] - 1e-9 or (r["b_ttg"] is not None and r["a_ttg"] is not None)
        for r in half
    )
    out["b_beats_c"] = sum(
        r["b_score"] > r["c_score"] + 1e-9 or math.isnan(r["c_score"]) for r in half
    )
    out["b_beats_or_ties_c"] = sum(
        r["b_score"] >= r["c_score"] - 1e-9 or math.isnan(r["c_score"]) for r in half
    )
    out["b_beats_c_fraction"] = out["b_beats_c"] / max(len(half), 1)
    out["goal_speedup_met"] = bool(
        out["speedup_b_vs_a"] >= 3.0 and out["b_reached"] >= out["a_reached"]
    )
    out["goal_beats_c_met"] = bool(out["b_beats_c_fraction"] >= 0.8)
    by_scale: dict[str, Any] = {}
    for sc in sorted({r["scale"] for r in half}):
        rs = [r for r in half if r["scale"] == sc]
        by_scale[sc] = {
            "n": len(rs),
            "a_ttg_s": sum(ttg(r, "a") for r in rs),
            "b_ttg_s": sum(ttg(r, "b") for r in rs),
            "speedup": sum(ttg(r, "a") for r in rs) / max(sum(ttg(r, "b") for r in rs), 1e-9),
            "a_score": float(np.mean([r["a_score"] for r in rs])),
            "b_score": float(np.mean([r["b_score"] for r in rs])),
            "c_score": float(np.nanmean([r["c_score"] for r in rs])),
            "b_beats_c": sum(r["b_score"] > r["c_score"] + 1e-9 for r in rs),
            "b_recalled": sum(bool(r.get("b_recall") and r["b_recall"][0]["close"]) for r in rs),
        }
    out["by_scale"] = by_scale
    return out


def print_table(s: dict[str, Any]) -> None:
    print()
    print(f"second half of the stream: {s['n_second_half']} of {s['n_tasks']} tasks")
    print(
        f"{'scale':8s} {'n':>3s} {'(a) ttg s':>10s} {'(b) ttg s':>10s} {'a/b':>6s} {'score a':>8s} {'score b':>8s} {'score c':>8s} {'b>c':>4s} {'recall':>6s}"
    )
    for sc, v in s["by_scale"].items():
        print(
            f"{sc:8s} {v['n']:3d} {v['a_ttg_s']:10.2f} {v['b_ttg_s']:10.2f} {v['speedup']:6.1f} {v['a_score']:8.3f} {v['b_score']:8.3f} {v['c_score']:8.3f} {v['b_beats_c']:4d} {v['b_recalled']:6d}"
        )
    print(
        f"all      {s['n_second_half']:3d} {s['a_time_to_goal_total_s']:10.2f} {s['b_time_to_goal_total_s']:10.2f} {s['speedup_b_vs_a']:6.1f} "
        f"{s['a_score_mean']:8.3f} {s['b_score_mean']:8.3f} {s['c_score_mean']:8.3f} {s['b_beats_c']:4d}"
    )
    print(
        f"goal reached (2nd half): a {s['a_reached']}, b {s['b_reached']}, c {s['c_reached']}; "
        f"median per-task speedup {s['speedup_b_vs_a_median']:.1f}x; b beats c on {100 * s['b_beats_c_fraction']:.0f}% "
        f"(ties or better {s['b_beats_or_ties_c']})"
    )
    print(
        f"goal >=3x faster at equal score: {'MET' if s['goal_speedup_met'] else 'NOT MET'}; goal b beats c on >=80%: {'MET' if s['goal_beats_c_met'] else 'NOT MET'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
