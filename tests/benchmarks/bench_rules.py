"""Benchmark of the rules family against its peers (run by ``make bench``).

Two parts:

* **Feynman** (``../shared/data/feynman``): each equation of ``feynman_subset.csv``, 1,000
  samples from its sampling ranges, several seeds and noise levels, the same wall budget
  per equation for every engine: learndock's ``discover`` (operon backend + analytic
  candidates + snapping + units) vs pyoperon with its defaults vs gplearn.  Reported:
  exact-recovery rate (sympy equivalence after expansion and constant snapping), the
  stricter rate (constants rounded to 3 decimals first, no snapping), the rate of test
  R^2 > 0.999, and, for the equations in ``feynman_units_pmlb.csv``, learndock with and
  without units.
* **Strogatz** (``../shared/data/strogatz``): SINDy coefficient error and fit time vs
  pysindy on the same data (given derivatives) and the same library.

Usage::

    python tests/benchmarks/bench_rules.py --out .bench           # full (long: ~1.5 h on 2 cores)
    python tests/benchmarks/bench_rules.py --out .bench --quick   # 10 equations, 1 seed

The engine knows nothing about the benchmark: no per-equation settings.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import sympy as sp

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LEARNDOCK_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()


# --------------------------------------------------------------------------------------
# Feynman
# --------------------------------------------------------------------------------------
def load_feynman() -> list[dict[str, Any]]:
    rows = []
    with open(DATA / "feynman" / "feynman_subset.csv") as fh:
        for r in csv.DictReader(fh):
            n = int(r["n_vars"])
            r["vars"] = [
                (r[f"v{i}_name"], float(r[f"v{i}_low"]), float(r[f"v{i}_high"]))
                for i in range(1, n + 1)
            ]
            rows.append(r)
    units: dict[str, dict[str, str]] = {}
    with open(DATA / "feynman" / "feynman_units_pmlb.csv") as fh:
        for r in csv.DictReader(fh):
            parts = []
            for col, sym in (("m", "m"), ("s", "s"), ("kg", "kg"), ("T", "K"), ("V", "V")):
                e = int(float(r[col]))
                if e:
                    parts.append(f"{sym}{e}" if e != 1 else sym)
            units.setdefault(r["equation"], {})[
                r["variable"] if r["role"] == "input" else "__out__"
            ] = " ".join(parts)
    for r in rows:
        r["units"] = units.get(r["Filename"])
    return rows


def _symbols(names: list[str]) -> dict[str, sp.Symbol]:
    return {n: sp.Symbol(n, positive=True) for n in names}


def truth_expr(row: dict[str, Any]) -> sp.Expr:
    names = [v[0] for v in row["vars"]]
    loc = {**_symbols(names), "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "ln": sp.log}
    return sp.sympify(row["Formula"], locals=loc)


def sample(row: dict[str, Any], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    names = [v[0] for v in row["vars"]]
    X = np.column_stack([rng.uniform(lo, hi, n) for _, lo, hi in row["vars"]])
    f = sp.lambdify([_symbols(names)[k] for k in names], truth_expr(row), "numpy")
    y = np.asarray(f(*X.T), dtype=np.float64) * np.ones(n)
    return X, y


class _Timeout(Exception):
    pass


def _alarm(_sig: int, _frm: Any) -> None:
    raise _Timeout


def _numeric_equal(a: sp.Expr, b: sp.Expr, row: dict[str, Any]) -> bool:
    names = [v[0] for v in row["vars"]]
    syms = [_symbols(names)[k] for k in names]
    X, _ = sample(row, 50, 12345)
    with np.errstate(all="ignore"):
        fa = np.asarray(sp.lambdify(syms, a, "numpy")(*X.T), dtype=np.complex128) * np.ones(50)
        fb = np.asarray(sp.lambdify(syms, b, "numpy")(*X.T), dtype=np.complex128) * np.ones(50)
    if not (np.all(np.isfinite(fa)) and np.all(np.isfinite(fb))):
        return False
    return bool(np.all(np.abs(fa - fb) <= 1e-9 * np.maximum(np.abs(fb), 1e-12)))


def _snap_number(v: float) -> sp.Expr | None:
    if abs(v) < 1e-8:
        return sp.Integer(0)
    facs = [
        sp.Integer(1),
        sp.pi,
        1 / sp.pi,
        sp.sqrt(2),
        1 / sp.sqrt(2),
        sp.sqrt(sp.pi),
        1 / sp.sqrt(sp.pi),
        sp.sqrt(2 * sp.pi),
        1 / sp.sqrt(2 * sp.pi),
    ]
    for maxden in (1, 2, 3, 4, 6, 8, 12):
        for fac in facs:
            q = v / float(fac)
            fr = Fraction(q).limit_denominator(maxden)
            if fr != 0 and abs(float(fr) - q) <= 1e-3 * abs(q):
                return sp.Rational(fr.numerator, fr.denominator) * fac
    return None


def judge(expr: sp.Expr | None, row: dict[str, Any], *, timeout_s: int = 20) -> tuple[bool, bool]:
    """(exact after expansion + snapping, exact after rounding constants to 3 decimals)."""
    if expr is None:
        return False, False
    names = [v[0] for v in row["vars"]]
    syms = _symbols(names)
    truth = truth_expr(row)
    expr = expr.xreplace({s: syms[s.name] for s in expr.free_symbols if s.name in syms})
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        # strict: round every constant to 3 decimals, then exact equivalence
        strict_e = expr.xreplace(
            {f: sp.nsimplify(round(float(f), 3), rational=True) for f in expr.atoms(sp.Float)}
        )
        strict = _numeric_equal(strict_e, truth, row) and _symbolic_equal(strict_e, truth)
        # lenient: expand (merges products of constants), snap each constant
        e = sp.expand(expr) if sum(1 for _ in sp.preorder_traversal(expr)) < 400 else expr
        reps = {}
        for f in e.atoms(sp.Float):
            s = _snap_number(float(f))
            if s is not None:
                reps[f] = s
        e = e.xreplace(reps)
        lenient = strict or (_numeric_equal(e, truth, row) and _symbolic_equal(e, truth))
    except _Timeout:
        strict = lenient = False
    except Exception:
        strict = lenient = False
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return lenient, strict


def _symbolic_equal(a: sp.Expr, b: sp.Expr) -> bool:
    """sympy equivalence; a numerically identical pair whose simplification does not
    terminate in time counts by its numerical identity (checked before)."""
    try:
        d = sp.simplify(a - b)
        if d == 0:
            return True
        r = sp.simplify(a / b)
        if r == 1:
            return True
        # radicals: sympy does not prove e.g. sqrt((1 + x)/(1 - x)) == (1 + x)/sqrt(1 - x**2);
        # for two expressions of the same sign on the domain (checked numerically by the
        # caller), a == b iff a**2 == b**2
        return bool(a.has(sp.Pow) and sp.simplify(sp.expand(a**2) - sp.expand(b**2)) == 0)
    except _Timeout:
        raise
    except Exception:
        return False


# --- engines ------------------------------------------------------------------------------
def run_learndock(X, y, names, *, budget, seed, units=None, out_unit=None):
    from components.rules.symbolic import discover

    res = discover(
        X,
        y,
        names=names,
        budget_s=budget,
        seed=seed,
        units=units,
        output_unit=out_unit,
        max_evaluations=10_000_000,
    )
    return res.best.sympy


def run_operon_default(X, y, names, *, budget, seed, **_):
    from pyoperon.sklearn import SymbolicRegressor

    reg = SymbolicRegressor(max_time=max(1, round(budget)), n_threads=1, random_state=seed)
    reg.fit(X, y)
    tmp = [f"x{i}" for i in range(X.shape[1])]
    s = reg.get_model_string(reg.model_, 17, tmp).replace("^", "**")
    syms = [sp.Symbol(n, real=True) for n in names]
    return sp.sympify(s, locals={**{t: syms[i] for i, t in enumerate(tmp)}, "abs": sp.Abs})


def run_gplearn(X, y, names, *, budget, seed, **_):
    from gplearn.genetic import SymbolicRegressor

    reg = SymbolicRegressor(
        population_size=1000,
        generations=1,
        warm_start=True,
        function_set=("add", "sub", "mul", "div", "sqrt", "log", "sin", "cos"),
        random_state=seed,
        n_jobs=1,
        verbose=0,
        parsimony_coefficient=0.001,
    )
    t0 = time.perf_counter()
    g = 1
    while True:
        reg.set_params(generations=g)
        reg.fit(X, y)
        g += 1
        if time.perf_counter() - t0 > budget * 0.9 or g > 1000:
            break
    syms = [sp.Symbol(n, real=True) for n in names]
    loc = {f"X{i}": s for i, s in enumerate(syms)}
    loc.update(
        {
            "add": lambda a, b: a + b,
            "sub": lambda a, b: a - b,
            "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b,
            "sqrt": lambda a: sp.sqrt(sp.Abs(a)),
            "log": lambda a: sp.log(sp.Abs(a)),
            "sin": sp.sin,
            "cos": sp.cos,
        }
    )
    return sp.sympify(str(reg._program), locals=loc)


ENGINES = {"learndock": run_learndock, "operon-default": run_operon_default, "gplearn": run_gplearn}


def _r2(expr: sp.Expr | None, row: dict[str, Any], seed: int) -> float:
    if expr is None:
        return float("nan")
    names = [v[0] for v in row["vars"]]
    X, y = sample(row, 1000, 10_000 + seed)
    try:
        f = sp.lambdify(
            [sp.Symbol(n, real=True) for n in names],
            expr.xreplace({s: sp.Symbol(s.name, real=True) for s in expr.free_symbols}),
            "numpy",
        )
        with np.errstate(all="ignore"):
            p = np.asarray(f(*X.T), dtype=np.float64) * np.ones(len(y))
    except Exception:
        return float("nan")
    if not np.all(np.isfinite(p)):
        return float("nan")
    return float(1 - np.mean((p - y) ** 2) / np.var(y))


def _warm_imports() -> None:
    """Import the engines once per worker so that import time is not charged to a run."""
    import gplearn.genetic  # noqa: F401
    import pyoperon.sklearn  # noqa: F401
    import scipy.optimize  # noqa: F401

    import components.rules.symbolic  # noqa: F401


def feynman_task(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    row, engine, seed, noise, budget, with_units = (
        task["row"],
        task["engine"],
        task["seed"],
        task["noise"],
        task["budget"],
        task["units"],
    )
    names = [v[0] for v in row["vars"]]
    X, y = sample(row, 1000, seed)
    if noise:
        y = y + noise * np.std(y) * np.random.default_rng(seed + 777).standard_normal(len(y))
    kw: dict[str, Any] = {}
    if with_units:
        kw = {"units": {n: row["units"][n] for n in names}, "out_unit": row["units"]["__out__"]}
    t0 = time.perf_counter()
    err = ""
    try:
        expr = ENGINES[engine](X, y, names, budget=budget, seed=seed, **kw)
    except Exception as exc:  # an engine failure counts as a miss, and is recorded
        expr, err = None, f"{type(exc).__name__}: {exc}"[:200]
    wall = time.perf_counter() - t0
    lenient, strict = judge(expr, row)
    return {
        "equation": row["Filename"],
        "engine": engine + ("+units" if with_units else ""),
        "seed": seed,
        "noise": noise,
        "exact": lenient,
        "exact_strict": strict,
        "r2": _r2(expr, row, seed),
        "wall_s": wall,
        "expr": str(expr)[:300],
        "error": err,
    }


def bench_feynman(args: argparse.Namespace) -> dict[str, Any]:
    rows = load_feynman()
    if args.quick:
        rows = [r for r in rows if r["in_benchmark10"] == "1"]
    if args.equations:
        keep = set(args.equations.split(","))
        rows = [r for r in rows if r["Filename"] in keep]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    engines = args.engines.split(",")
    tasks = []
    for noise in args.noise:
        for row in rows:
            for seed in seeds:
                for eng in engines:
                    tasks.append(
                        {
                            "row": row,
                            "engine": eng,
                            "seed": seed,
                            "noise": noise,
                            "budget": args.budget,
                            "units": False,
                        }
                    )
    for row in rows:
        if row["units"] and "learndock" in engines and not args.no_units:
            for seed in seeds:
                tasks.append(
                    {
                        "row": row,
                        "engine": "learndock",
                        "seed": seed,
                        "noise": 0.0,
                        "budget": args.budget,
                        "units": True,
                    }
                )
    print(
        f"feynman: {len(rows)} equations, {len(tasks)} runs, budget {args.budget} s, {args.jobs} jobs",
        flush=True,
    )
    results = []
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(args.jobs, initializer=_warm_imports) as pool:
            for i, r in enumerate(pool.imap_unordered(feynman_task, tasks)):
                results.append(r)
                _progress(i, len(tasks), r)
    else:
        _warm_imports()
        for i, t in enumerate(tasks):
            r = feynman_task(t)
            results.append(r)
            _progress(i, len(tasks), r)
    summary = summarize(results)
    return {
        "runs": results,
        "summary": summary,
        "equations": [r["Filename"] for r in rows],
        "seeds": seeds,
        "noise": args.noise,
        "budget_s": args.budget,
    }


def _progress(i: int, n: int, r: dict[str, Any]) -> None:
    print(
        f"[{i + 1}/{n}] {r['equation']:9s} {r['engine']:16s} s={r['seed']} noise={r['noise']:<6} exact={int(r['exact'])} strict={int(r['exact_strict'])} r2={r['r2']:.6f} {r['wall_s']:.1f}s  {r['expr'][:70]}",
        flush=True,
    )


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = sorted({(r["engine"], r["noise"]) for r in results})
    for eng, noise in keys:
        rs = [r for r in results if r["engine"] == eng and r["noise"] == noise]
        out[f"{eng}@{noise}"] = {
            "engine": eng,
            "noise": noise,
            "runs": len(rs),
            "exact_rate": float(np.mean([r["exact"] for r in rs])),
            "exact_strict_rate": float(np.mean([r["exact_strict"] for r in rs])),
            "r2_gt_0.999_rate": float(
                np.mean([(r["r2"] > 0.999) if math.isfinite(r["r2"]) else False for r in rs])
            ),
            "mean_wall_s": float(np.mean([r["wall_s"] for r in rs])),
        }
    # units vs no units on the same equations
    ueqs = {r["equation"] for r in results if r["engine"] == "learndock+units"}
    if ueqs:
        for eng in ("learndock", "learndock+units"):
            rs = [
                r
                for r in results
                if r["engine"] == eng and r["noise"] == 0.0 and r["equation"] in ueqs
            ]
            out[f"units-subset:{eng}"] = {
                "runs": len(rs),
                "exact_rate": float(np.mean([r["exact"] for r in rs])) if rs else float("nan"),
            }
    return out


# --------------------------------------------------------------------------------------
# Strogatz
# --------------------------------------------------------------------------------------
CUSTOM = ["sin(x)", "sin(y)", "cos(x)", "cos(y)", "sin(x - y)", "x*y/(1 + x)"]
SYSTEMS = ["lv", "predprey", "vdp", "barmag"]


def _strogatz_truth() -> dict[str, list[sp.Expr]]:
    x, y = sp.symbols("x y", real=True)
    out: dict[str, list[sp.Expr]] = {}
    with open(DATA / "strogatz" / "strogatz_equations.csv") as fh:
        for r in csv.DictReader(fh):
            sysname = r["dataset"].removeprefix("strogatz_")[:-1]
            out.setdefault(sysname, []).append(sp.sympify(r["equation"], locals={"x": x, "y": y}))
    return out


def _fit_true(expr: sp.Expr, lib_terms: list[str], X: np.ndarray) -> np.ndarray:
    """True coefficients by exact least squares of the true law onto the library on the data
    (the true law lies in the span of the library, so the residual is ~1e-13)."""
    x, y = sp.symbols("x y", real=True)
    theta = np.column_stack(
        [
            np.asarray(
                sp.lambdify([x, y], sp.sympify(t, locals={"x": x, "y": y}), "numpy")(
                    X[:, 0], X[:, 1]
                ),
                dtype=np.float64,
            )
            * np.ones(len(X))
            for t in lib_terms
        ]
    )
    target = np.asarray(sp.lambdify([x, y], expr, "numpy")(X[:, 0], X[:, 1]), dtype=np.float64)
    c, *_ = np.linalg.lstsq(theta, target, rcond=None)
    c[np.abs(c) < 1e-8] = 0.0
    return c


def _wrap(f: Any) -> Any:
    return lambda a, b: f(a, b) * np.ones_like(a)


def bench_strogatz(args: argparse.Namespace) -> dict[str, Any]:
    import pysindy as ps
    import torch

    from components.rules.sindy import Library, fit_sindy

    torch.set_num_threads(1)
    truth = _strogatz_truth()
    out: dict[str, Any] = {"systems": {}}
    reps = 3 if args.quick else 10
    for name in SYSTEMS:
        d1 = np.loadtxt(DATA / "strogatz" / f"d_{name}1.txt", delimiter=",", skiprows=1)
        d2 = np.loadtxt(DATA / "strogatz" / f"d_{name}2.txt", delimiter=",", skiprows=1)
        X = d1[:, 1:3]
        dX = np.column_stack([d1[:, 0], d2[:, 0]])
        t = np.arange(len(X)) * 0.1
        lib = Library(["x", "y"], degree=3, custom=CUSTOM)
        terms = lib.terms
        true = np.stack([_fit_true(e, terms, X) for e in truth[name]])
        # ours
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = fit_sindy(t, X, names=["x", "y"], library=lib, derivatives=dX)
            times.append(time.perf_counter() - t0)
        ours = res.coefficients.numpy()
        # pysindy: the same 16 functions as a CustomLibrary, STLSQ, given derivatives
        x_, y_ = sp.symbols("x y", real=True)
        funcs = [
            sp.lambdify([x_, y_], sp.sympify(tm, locals={"x": x_, "y": y_}), "numpy")
            for tm in terms
        ]
        fl = [_wrap(f) for f in funcs]
        peer: dict[str, Any] = {}
        for label, thr in (("pysindy-default", 0.1), ("pysindy-thr0.01", 0.01)):
            ptimes = []
            for _ in range(reps):
                t0 = time.perf_counter()
                model = ps.SINDy(
                    feature_library=ps.CustomLibrary(library_functions=fl, include_bias=False),
                    optimizer=ps.STLSQ(threshold=thr),
                )
                model.fit(X, t=0.1, x_dot=dX)
                ptimes.append(time.perf_counter() - t0)
            peer[label] = {"coef": model.coefficients(), "time_s": statistics.median(ptimes)}

        def err(c: np.ndarray, true: np.ndarray = true) -> float:
            return float(np.linalg.norm(c - true) / np.linalg.norm(true))

        def sup(c: np.ndarray, true: np.ndarray = true) -> bool:
            return bool(np.array_equal(np.abs(c) > 1e-6, np.abs(true) > 1e-6))

        out["systems"][name] = {
            "learndock": {
                "rel_coef_error": err(ours),
                "support_exact": sup(ours),
                "time_s": statistics.median(times),
            },
            **{
                k: {
                    "rel_coef_error": err(v["coef"]),
                    "support_exact": sup(v["coef"]),
                    "time_s": v["time_s"],
                }
                for k, v in peer.items()
            },
            "n_terms": len(terms),
        }
    for eng in ("learndock", "pysindy-default", "pysindy-thr0.01"):
        out[eng] = {
            "median_rel_coef_error": statistics.median(
                out["systems"][s][eng]["rel_coef_error"] for s in SYSTEMS
            ),
            "median_time_s": statistics.median(out["systems"][s][eng]["time_s"] for s in SYSTEMS),
            "support_exact": sum(out["systems"][s][eng]["support_exact"] for s in SYSTEMS),
        }
    out["speedup_vs_pysindy_default"] = (
        out["pysindy-default"]["median_time_s"] / out["learndock"]["median_time_s"]
    )
    return out


# --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=".bench")
    ap.add_argument(
        "--quick", action="store_true", help="10 equations (in_benchmark10), 1 seed, 5 s budget"
    )
    ap.add_argument("--part", default="all", choices=["all", "feynman", "strogatz"])
    ap.add_argument(
        "--budget", type=float, default=None, help="wall budget per equation and engine (s)"
    )
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument(
        "--first-seed", type=int, default=0, help="seeds are first_seed .. first_seed + seeds - 1"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--noise", type=float, nargs="*", default=None)
    ap.add_argument(
        "--equations", default="", help="comma-separated Filenames (default: all / quick subset)"
    )
    ap.add_argument("--engines", default="learndock,operon-default,gplearn")
    ap.add_argument(
        "--no-units",
        action="store_true",
        help="skip the learndock+units runs (noiseless; e.g. when only noise levels are run)",
    )
    args = ap.parse_args()
    args.budget = args.budget if args.budget is not None else (5.0 if args.quick else 10.0)
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    args.noise = args.noise if args.noise is not None else [0.0, 0.001, 0.01]
    sys.path.insert(0, str(ROOT))
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA} (set LEARNDOCK_SHARED_DATA)")
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "threads": 1,
        "jobs": args.jobs,
        "quick": args.quick,
    }
    if args.part in ("all", "strogatz"):
        s = bench_strogatz(args)
        report["strogatz"] = s
        print("\nStrogatz (given derivatives, 16-term library: poly3 + trig + x*y/(1+x))")
        print(
            f"{'system':10s} {'engine':16s} {'rel coef err':>12s} {'support':>8s} {'time ms':>8s}"
        )
        for name in SYSTEMS:
            for eng in ("learndock", "pysindy-default", "pysindy-thr0.01"):
                r = s["systems"][name][eng]
                print(
                    f"{name:10s} {eng:16s} {r['rel_coef_error']:12.2e} {r['support_exact']!s:>8s} {1e3 * r['time_s']:8.2f}"
                )
        print(f"speed-up vs pysindy (default): {s['speedup_vs_pysindy_default']:.2f}x")
    if args.part in ("all", "feynman"):
        f = bench_feynman(args)
        report["feynman"] = f
        print("\nFeynman")
        print(
            f"{'engine':18s} {'noise':>6s} {'runs':>5s} {'exact':>6s} {'strict':>6s} {'R2>.999':>7s} {'wall s':>7s}"
        )
        for v in f["summary"].values():
            if "engine" in v:
                print(
                    f"{v['engine']:18s} {v['noise']:6g} {v['runs']:5d} {v['exact_rate']:6.2f} {v['exact_strict_rate']:6.2f} {v['r2_gt_0.999_rate']:7.2f} {v['mean_wall_s']:7.1f}"
                )
        for k, v in f["summary"].items():
            if k.startswith("units-subset"):
                print(f"{k:30s} runs={v['runs']} exact={v['exact_rate']:.2f}")
        ours = f["summary"].get("learndock@0.0", {}).get("exact_rate")
        peer = f["summary"].get("operon-default@0.0", {}).get("exact_rate")
        if ours is not None and peer is not None:
            ratio = ours / peer if peer else float("inf")
            report["feynman"]["ratio_exact_vs_operon_default"] = ratio
            print(
                f"exact recovery learndock / operon-default = {ratio:.2f} (goal >= 1.25), learndock = {ours:.2f} (goal > 0.75)"
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "rules_quick.json" if args.quick else "rules.json"
    (out / name).write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
