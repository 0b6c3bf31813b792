"""Detection benchmarks: ours vs the named peer, same data, same run, ratios.

* spots: matched filter vs ``skimage.feature.blob_log`` (5 sigmas) on a 2-D image with
  planted spots (F1 at 1.5 px), and a 3-D stack;
* transits: BLS vs ``astropy.timeseries.BoxLeastSquares`` on the same period/duration
  grid (best period must agree), and a 100-star batch (stars per second);
* rpca: inexact-ALM robust PCA vs ``tensorly.decomposition.robust_pca`` at the same
  tolerance (F1 of the event support), plus the hard case against a truncated SVD.

Run ``python tests/benchmarks/bench_detection.py --out .bench [--quick]``; figures are
printed and written to ``<out>/detection.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.detection._reference import make_light_curve, make_movie, make_spots
from components.detection.rpca import rpca_scores
from components.detection.spots import detect_spots
from components.detection.transits import bls_power, transit_search


def f1_points(found: np.ndarray, truth: np.ndarray, radius: float) -> float:
    from scipy.spatial import cKDTree

    if len(found) == 0 or len(truth) == 0:
        return 0.0
    d, j = cKDTree(found).query(truth, distance_upper_bound=radius)
    tp = len(set(j[np.isfinite(d)].tolist()))
    return 2 * tp / (len(found) + len(truth))


def f1_mask(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float((pred & truth).sum())
    return 2 * tp / max(1.0, float(pred.sum() + truth.sum()))


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _spots_3d_child(which: str, path: str, threads: int, conn) -> None:
    """One 3-D spots case in a fresh process (``spawn``), so its peak memory is its own:
    sends back (wall s, CPU s, peak RSS above the loaded volume in MB, detections).  The peak is
    ``VmHWM`` of /proc/self/status (``ru_maxrss`` survives fork + exec on Linux)."""

    def status_mb(key: str) -> float:
        with open("/proc/self/status") as f:
            line = next(v for v in f if v.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    torch.set_num_threads(threads)
    vol = np.load(path)
    base = status_mb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    if which == "ours":
        found = detect_spots(torch.as_tensor(vol), sigma=1.5, anisotropy=2.0).positions.numpy()
    else:
        from skimage.feature import blob_log

        z = vol - np.float32(np.median(vol))
        found = blob_log(
            z,
            min_sigma=(3.0, 1.5, 1.5),
            max_sigma=(3.0, 1.5, 1.5),
            num_sigma=1,
            threshold=float(which.split(":")[1]),
        )[:, :3]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    conn.send((dt, dc, status_mb("VmHWM") - base, found))
    conn.close()


def _run_3d_child(which: str, path: str, threads: int) -> tuple[float, float, float, np.ndarray]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_spots_3d_child, args=(which, path, threads, b))
    p.start()
    out = a.recv()
    p.join()
    return out


def bench_spots(quick: bool) -> dict:
    """2-D: 500 spots (sigma 1.5, peak SNR 5) on 2048 x 2048 vs ``blob_log`` with 5 sigmas
    (wall and CPU seconds, F1 at 1.5 px); 3-D: anisotropic stacks (sigma_z = 2 sigma_xy),
    the 256 x 512 x 512 one in child processes for its peak memory."""
    import tempfile

    from skimage.feature import blob_log

    def cpu_timed(fn, repeat: int = 1):
        best_w, best_c, out = float("inf"), float("inf"), None
        for _ in range(repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            out = fn()
            best_w = min(best_w, time.perf_counter() - w0)
            best_c = min(best_c, time.process_time() - c0)
        return best_w, best_c, out

    n = 1024 if quick else 2048
    n_spots = 125 if quick else 500
    img, pos = make_spots((n, n), n_spots, sigma=1.5, snr=5.0, seed=1)
    x = torch.as_tensor(img)
    scales = [1.0, 1.5, 2.0, 2.5, 3.0]
    detect_spots(x[:256, :256], sigma=scales)  # warm-up (first-call overheads)
    t1, c1, ours1 = cpu_timed(lambda: detect_spots(x, sigma=1.5, threshold=5.0), 3)
    t5, c5, ours5 = cpu_timed(lambda: detect_spots(x, sigma=scales, threshold=5.0), 3)
    f1_1 = f1_points(ours1.positions.numpy(), pos, 1.5)
    f1_5 = f1_points(ours5.positions.numpy(), pos, 1.5)
    # peer on the background-subtracted image; its threshold is chosen for the best F1 on
    # a 256 x 256 crop of the same image (generous to the peer)
    z = (img - np.median(img)).astype(np.float32)
    crop = z[:256, :256]
    cpos = pos[(pos[:, 0] < 256) & (pos[:, 1] < 256)]
    best_thr, best_f = 0.5, -1.0
    for thr in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        b = blob_log(crop, min_sigma=1.0, max_sigma=3.0, num_sigma=5, threshold=thr)
        f = f1_points(b[:, :2], cpos, 1.5)
        if f > best_f:
            best_thr, best_f = thr, f
    tp, cp, blobs = cpu_timed(
        lambda: blob_log(z, min_sigma=1.0, max_sigma=3.0, num_sigma=5, threshold=best_thr)
    )
    f1_p = f1_points(blobs[:, :2], pos, 1.5)
    res = {
        "size": [n, n],
        "n_spots": n_spots,
        "threads": torch.get_num_threads(),
        "ours_1scale_s": t1,
        "ours_5scales_s": t5,
        "blob_log_5sigmas_s": tp,
        "ours_1scale_cpu_s": c1,
        "ours_5scales_cpu_s": c5,
        "blob_log_5sigmas_cpu_s": cp,
        "blob_log_threshold": best_thr,
        "f1_ours_1scale": f1_1,
        "f1_ours_5scales": f1_5,
        "f1_blob_log": f1_p,
        "speedup_1scale": tp / t1,
        "speedup_5scales": tp / t5,
        "speedup_5scales_cpu_time": cp / c5,
    }
    # 3-D stack, anisotropic (sigma_z = 3 px, sigma_xy = 1.5 px), single scale for both
    shape3 = (32, 128, 128) if quick else (64, 256, 256)
    vol, pos3 = make_spots(shape3, 60 if quick else 300, sigma=1.5, anisotropy=2.0, snr=5.0, seed=2)
    v = torch.as_tensor(vol)
    t3, c3, o3 = cpu_timed(lambda: detect_spots(v, sigma=1.5, anisotropy=2.0, threshold=5.0), 2)
    z3 = (vol - np.median(vol)).astype(np.float32)
    best3, bf3 = 0.5, -1.0
    for thr in (0.25, 0.5, 1.0, 1.5, 2.0):
        b = blob_log(
            z3, min_sigma=(3.0, 1.5, 1.5), max_sigma=(3.0, 1.5, 1.5), num_sigma=1, threshold=thr
        )
        f = f1_points(b[:, :3], pos3, 2.0)
        if f > bf3:
            best3, bf3 = thr, f
    tp3, cp3, b3 = cpu_timed(
        lambda: blob_log(
            z3, min_sigma=(3.0, 1.5, 1.5), max_sigma=(3.0, 1.5, 1.5), num_sigma=1, threshold=best3
        )
    )
    res.update(
        {
            "size_3d": list(shape3),
            "ours_3d_s": t3,
            "blob_log_3d_s": tp3,
            "ours_3d_cpu_s": c3,
            "blob_log_3d_cpu_s": cp3,
            "blob_log_3d_threshold": best3,
            "f1_ours_3d": f1_points(o3.positions.numpy(), pos3, 2.0),
            "f1_blob_log_3d": f1_points(b3[:, :3], pos3, 2.0),
            "speedup_3d": tp3 / t3,
        }
    )
    if not quick:
        big = (256, 512, 512)
        volb, posb = make_spots(big, 2000, sigma=1.5, anisotropy=2.0, snr=5.0, seed=3)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "vol.npy")
            np.save(path, volb)
            del volb
            threads = torch.get_num_threads()
            tb, cb, mb, fb = _run_3d_child("ours", path, threads)
            tpb, cpb, mpb, fpb = _run_3d_child(f"blob_log:{best3}", path, threads)
        res.update(
            {
                "size_3d_large": list(big),
                "ours_3d_large_s": tb,
                "ours_3d_large_cpu_s": cb,
                "ours_3d_large_peak_extra_mb": mb,
                "f1_ours_3d_large": f1_points(fb, posb, 2.0),
                "blob_log_1sigma_3d_large_s": tpb,
                "blob_log_1sigma_3d_large_cpu_s": cpb,
                "blob_log_3d_large_peak_extra_mb": mpb,
                "f1_blob_log_3d_large": f1_points(fpb, posb, 2.0),
                "speedup_3d_large": tpb / tb,
                "speedup_3d_large_cpu_time": cpb / cb,
            }
        )
    return res


def timed_cpu(fn, repeat: int = 1):
    """Best wall time, the process CPU time of that run, and the output (the CPU time is
    the robust figure on a shared machine: waiting for a core does not count)."""
    best, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, cpu = wall, time.process_time() - c0
    return best, cpu, out


def bench_transits(quick: bool) -> dict:
    from astropy.timeseries import BoxLeastSquares

    t, f = make_light_curve(
        baseline=730.0, cadence=1 / 48, planets=((3.1234, 1.7, 0.12, 5e-4),), noise=3e-4, seed=4
    )
    durs = np.array([0.08, 0.12, 0.16])
    pmin, pmax = (2.9, 3.4) if quick else (2.0, 5.0)
    # log-uniform grid, shift of the last transit <= min duration / 3 (see period_grid)
    step = durs.min() / (3 * (t[-1] - t[0]))
    periods = pmin * np.exp(
        np.arange(int(np.log(pmax / pmin) / np.log1p(step)) + 1) * np.log1p(step)
    )
    y = f - np.mean(f)
    err = np.full_like(f, 3e-4)
    ta, ref = timed(
        lambda: BoxLeastSquares(t, f, dy=err).power(periods, durs, oversample=3, objective="snr"),
        3,
    )
    tt = torch.as_tensor(t, dtype=torch.float64)
    yy = torch.as_tensor(y, dtype=torch.float64)[None]
    ww = torch.full_like(yy, 1 / 3e-4**2)
    pp, dd = torch.as_tensor(periods), torch.as_tensor(durs)
    # default: coarse-to-fine (exact statistic around the top coarse peaks)
    to, co, ours = timed_cpu(lambda: bls_power(tt, yy, pp, dd, weights=ww, bin_oversample=3), 3)
    ta_cpu = timed_cpu(
        lambda: BoxLeastSquares(t, f, dy=err).power(periods, durs, oversample=3, objective="snr"),
        3,
    )[1]
    # the full-grid exact path
    te, exact = timed(
        lambda: bls_power(tt, yy, pp, dd, weights=ww, bin_oversample=3, method="exact"), 3
    )
    i_ref = int(np.argmax(ref.power))
    i_ours = int(torch.nan_to_num(ours.power[0], nan=-1e30).argmax())
    i_exact = int(torch.nan_to_num(exact.power[0], nan=-1e30).argmax())
    p_ref, p_ours = float(periods[i_ref]), float(periods[i_ours])
    res = {
        "n_points": int(t.size),
        "n_periods": int(periods.size),
        "n_durations": int(durs.size),
        "astropy_s": ta,
        "ours_s": to,
        "speedup": ta / to,
        "astropy_cpu_s": ta_cpu,
        "ours_cpu_s": co,
        "speedup_cpu": ta_cpu / co,
        "ours_exact_s": te,
        "speedup_exact": ta / te,
        "ours_periods_evaluated": int(ours.exact[0].sum()),
        "best_period_astropy": p_ref,
        "best_period_ours": p_ours,
        "best_period_exact": float(periods[i_exact]),
        "best_period_same_as_exact": i_ours == i_exact,
        "best_period_index_difference": i_ours - i_ref,
        "best_period_relative_difference": abs(p_ours - p_ref) / p_ref,
        "ours_float32_s": timed(
            lambda: bls_power(tt.float(), yy.float(), pp, dd, weights=ww.float(), bin_oversample=3),
            3,
        )[0],
    }
    # many stars on one time grid, the same (fully sampled) period grid, float32 flux;
    # ours batched vs ours one star at a time vs astropy looped over stars
    n_stars = 20 if quick else 100
    rng = np.random.default_rng(5)
    flux = 1 + 3e-4 * rng.standard_normal((n_stars, t.size))
    planted = make_light_curve(
        baseline=730.0, cadence=1 / 48, planets=((3.1234, 1.7, 0.12, 5e-4),), noise=0.0
    )[1]
    flux[::4] *= planted[None]  # every 4th star transits
    fl = torch.as_tensor(flux, dtype=torch.float32)
    kw = {"periods": periods, "durations": durs, "detrend": None, "refine": False}
    tb, cb, batch = timed_cpu(lambda: transit_search(t, fl, **kw))
    n_ref = min(n_stars, 5)
    to1, co1, _ = timed_cpu(lambda: [transit_search(t, fl[i], **kw) for i in range(n_ref)])
    ta_b, ca_b, _ = timed_cpu(
        lambda: [
            BoxLeastSquares(t, flux[i], dy=err).power(periods, durs, oversample=3)
            for i in range(n_ref)
        ]
    )
    found = np.abs(batch.period.numpy()[::4] - 3.1234) / 3.1234 < 1e-3
    res.update(
        {
            "batch_stars": n_stars,
            "batch_periods": int(periods.size),
            "batch_dtype": "float32",
            "ours_stars_per_s": n_stars / tb,
            "ours_one_by_one_stars_per_s": n_ref / to1,
            "astropy_stars_per_s": n_ref / ta_b,
            "batch_speedup": (n_stars / tb) / (n_ref / ta_b),
            "batch_gain_over_one_by_one": (n_stars / tb) / (n_ref / to1),
            "ours_stars_per_cpu_s": n_stars / cb,
            "ours_one_by_one_stars_per_cpu_s": n_ref / co1,
            "astropy_stars_per_cpu_s": n_ref / ca_b,
            "batch_speedup_cpu": (n_stars / cb) / (n_ref / ca_b),
            "batch_planets_recovered": f"{int(found.sum())}/{found.size}",
        }
    )
    return res


def bench_rpca(quick: bool) -> dict:
    import tensorly as tl
    from tensorly.decomposition import robust_pca as tl_rpca

    shape = (150, 64, 64) if quick else (300, 128, 128)
    tol = 1e-6
    movie, _, ev = make_movie(
        shape=shape, rank=3, event_fraction=0.01, event_amplitude=3.0, noise=0.05, seed=6
    )
    x = torch.as_tensor(movie)
    to, out = timed(lambda: rpca_scores(x, tol=tol))
    f1_o = f1_mask((out.score.abs() > 5).numpy(), ev)
    # the PCP sparse part scored without the debiased background refit
    raw = rpca_scores(x, tol=tol, debias=False)
    f1_raw = f1_mask((raw.score.abs() > 5).numpy(), ev)
    A = movie.reshape(shape[0], -1).T.astype(np.float32)
    tl.set_backend("numpy")
    n_iter = 100
    lam = 1.0 / np.sqrt(max(A.shape))  # the same sparsity weight as ours (tensorly's default is 1)
    tp, (D, E) = timed(lambda: tl_rpca(A, tol=tol, reg_E=lam, n_iter_max=n_iter, verbose=0))
    E = np.asarray(E).T.reshape(shape)
    R = movie - np.asarray(D).T.reshape(shape)
    sig = 1.4826 * np.median(np.abs(R - np.median(R)))
    f1_p = f1_mask(np.abs(E) > 5 * sig, ev)
    res = {
        "size": list(shape),
        "tol": tol,
        "ours_s": to,
        "tensorly_s": tp,
        "tensorly_n_iter_max": n_iter,
        "tensorly_reg_E": float(lam),
        "speedup": tp / to,
        "f1_ours": f1_o,
        "f1_ours_without_debias": f1_raw,
        "ours_background_rank": out.rank,
        "f1_tensorly": f1_p,
    }
    # hard case: large events on 5 % of entries, drifting background; vs truncated SVD
    hs = (100, 32, 32)
    hm, _, hev = make_movie(
        shape=hs, rank=2, event_fraction=0.05, event_amplitude=20.0, noise=0.05, drift=0.5, seed=7
    )
    H = torch.as_tensor(hm, dtype=torch.float64).reshape(hs[0], -1).T
    U, Sv, Vh = torch.linalg.svd(H, full_matrices=False)
    resid = (H - (U[:, :3] * Sv[:3]) @ Vh[:3]).T.reshape(hs).numpy()
    sig = 1.4826 * np.median(np.abs(resid - np.median(resid)))
    f1_svd = f1_mask(np.abs(resid) > 5 * sig, hev)
    ho = rpca_scores(torch.as_tensor(hm, dtype=torch.float64), tol=1e-7)
    hr = rpca_scores(torch.as_tensor(hm, dtype=torch.float64), tol=1e-7, debias=False)
    res.update(
        {
            "hard_size": list(hs),
            "hard_f1_rpca": f1_mask((ho.score.abs() > 5).numpy(), hev),
            "hard_f1_rpca_without_debias": f1_mask((hr.score.abs() > 5).numpy(), hev),
            "hard_f1_truncated_svd_rank3": f1_svd,
        }
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".bench")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LEARNDOCK_THREADS", "2")))
    ap.add_argument("--only", choices=["spots", "transits", "rpca"], nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    meta = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "load_average": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "threads": a.threads,
        "torch": torch.__version__,
        "quick": a.quick,
        "device": "cpu",
    }
    results: dict = {"meta": meta}
    for name, fn in (("spots", bench_spots), ("transits", bench_transits), ("rpca", bench_rpca)):
        if a.only and name not in a.only:
            continue
        print(f"== {name}", flush=True)
        results[name] = r = fn(a.quick)
        for k, v in r.items():
            print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "detection.json"
    old = json.loads(path.read_text()) if path.exists() and a.only else {}
    old.update(results)
    path.write_text(json.dumps(old, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
