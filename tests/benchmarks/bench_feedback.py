"""Feedback family benchmarks against named peers, same run, ratios.

(a) adaptive vs uniform random sampling (+ linear interpolation, and + our reconstruction)
    at 10 % and 20 % budgets on scikit-image's camera, coins, cell and a generated
    fluorescence field; budget needed to reach the uniform 20 % PSNR;
(b) Richardson-Lucy 3-D (256x256x64, Gaussian PSF, 30 iterations) vs
    ``skimage.restoration.richardson_lucy``, equal output (zero padding, init 0.5);
(c) RTS smoothing of 40 markers x 1000 frames with 2 % gaps vs filterpy and simdkalman;
(d) scheduling: error of the recovered transient peak time, policy vs regular cadence at
    an equal number of observations.

Run: ``.venv/bin/python tests/benchmarks/bench_feedback.py --out .bench [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from components.base import set_threads
from components.feedback import _reference as ref
from components.feedback.adaptive_sampling import adaptive_acquire, reconstruct
from components.feedback.deconvolution import gaussian_psf, richardson_lucy
from components.feedback.kalman import rts_smooth, state_space
from components.feedback.scheduling import GPParams, peak_time, propose_times


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _linear(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from scipy.interpolate import griddata

    pts = np.argwhere(mask)
    grid = np.indices(mask.shape).reshape(2, -1).T
    lin = griddata(pts, img[mask], grid, method="linear")
    near = griddata(pts, img[mask], grid, method="nearest")
    return np.where(np.isnan(lin), near, lin).reshape(mask.shape)


def _images(size: int) -> dict[str, np.ndarray]:
    from skimage import data
    from skimage.transform import resize

    out = {}
    for name in ("camera", "coins", "cell"):
        try:
            im = getattr(data, name)().astype(np.float64)
        except Exception as exc:  # a data file that needs a download
            print(f"skip {name}: {exc}")
            continue
        im = (im - im.min()) / (im.max() - im.min())
        h, w = im.shape[:2]
        s = min(h, w)
        im = im[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out[name] = resize(im, (size, size), anti_aliasing=True)
    out["fluorescence"] = ref.fluorescence_field(
        7, shape=(size, size), cells=int(18 * (size / 128) ** 2)
    ).astype(np.float64)
    return out


def bench_sampling(quick: bool) -> dict:
    size = 128 if quick else 256
    rows = []
    for name, img in _images(size).items():
        truth = torch.from_numpy(img)
        meas = lambda c, truth=truth: truth[c[:, 0], c[:, 1]]  # noqa: E731
        row: dict = {"image": name, "size": size}
        for frac in (0.1, 0.2):
            n = int(frac * img.size)
            g = np.random.default_rng(0)
            m = np.zeros(img.shape, bool)
            m.flat[g.choice(img.size, n, replace=False)] = True
            u_lin = _psnr(_linear(img, m), img)
            u_nc = _psnr(reconstruct(truth * torch.from_numpy(m), torch.from_numpy(m)).numpy(), img)
            t0 = time.perf_counter()
            res = adaptive_acquire(meas, img.shape, budget=n)
            dt = time.perf_counter() - t0
            a_nc = _psnr(res.reconstruction.numpy(), img)
            a_lin = _psnr(_linear(img, res.mask.numpy()), img)
            row[f"{int(frac * 100)}%"] = {
                "uniform_linear": u_lin,
                "uniform_ours": u_nc,
                "adaptive_ours": a_nc,
                "adaptive_linear": a_lin,
                "seconds": dt,
            }
            print(
                f"(a) {name:12s} {frac:4.0%}  uniform+linear {u_lin:6.2f}  uniform+ours {u_nc:6.2f}  adaptive {a_nc:6.2f} dB  (+{a_nc - max(u_lin, u_nc):.2f} dB)  {dt:5.1f} s",
                flush=True,
            )
        target = max(row["20%"]["uniform_linear"], row["20%"]["uniform_ours"])
        need = None
        for frac in (0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.2):
            if frac == 0.1:
                p = row["10%"]["adaptive_ours"]
            elif frac == 0.2:
                p = row["20%"]["adaptive_ours"]
            else:
                p = _psnr(
                    adaptive_acquire(
                        meas, img.shape, budget=int(frac * img.size)
                    ).reconstruction.numpy(),
                    img,
                )
            if p >= target:
                need = frac
                break
        row["budget_to_match_uniform_20%"] = need
        print(
            f"(a) {name:12s} budget reaching the uniform 20% PSNR ({target:.2f} dB): {need}",
            flush=True,
        )
        rows.append(row)
    gains = [
        r[k]["adaptive_ours"] - max(r[k]["uniform_linear"], r[k]["uniform_ours"])
        for r in rows
        for k in ("10%", "20%")
    ]
    return {
        "rows": rows,
        "mean_gain_db": float(np.mean(gains)),
        "goal_gain_db": 2.5,
        "goal_budget_ratio": 0.5,
    }


def bench_rl(quick: bool) -> dict:
    from skimage.restoration import richardson_lucy as sk_rl

    shape = (32, 128, 128) if quick else (64, 256, 256)
    img = (
        ref.bead_image(
            0, shape=shape, sigma=1.5, beads=400 if not quick else 100, photons=500
        ).astype(np.float32)
        + 1
    )
    psf = gaussian_psf((2.0, 1.5, 1.5), dtype=torch.float32).numpy()
    x = torch.from_numpy(img)
    p = torch.from_numpy(psf)
    t0 = time.perf_counter()
    ours = richardson_lucy(x, p, iterations=30, padding="zero", init=0.5).numpy()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = sk_rl(img, psf, num_iter=30, clip=False)
    t_sk = time.perf_counter() - t0
    rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    print(
        f"(b) RL {shape} 30 it: ours {t_ours:.2f} s, skimage {t_sk:.2f} s, speed-up x{t_sk / t_ours:.2f}, max rel diff {rel:.1e}",
        flush=True,
    )
    return {
        "shape": shape,
        "psf_shape": psf.shape,
        "ours_s": t_ours,
        "skimage_s": t_sk,
        "speedup": t_sk / t_ours,
        "max_rel_diff": rel,
        "goal_speedup": 2.0,
    }


def bench_rts(quick: bool) -> dict:
    import simdkalman
    from filterpy.common import Q_continuous_white_noise
    from filterpy.kalman import KalmanFilter

    frames, markers = 1000, 40
    pos = ref.gait_markers(11, frames=frames, markers=markers, gap_fraction=0.02)
    q, r, v0, rate = 2e4, 0.25, 1000.0, 100.0
    x = torch.from_numpy(pos)
    rts_smooth(x[:50, :2], rate=rate, q=q, r=r, initial_velocity_std=v0)  # warm-up
    t0 = time.perf_counter()
    est = rts_smooth(x, rate=rate, q=q, r=r, initial_velocity_std=v0)
    t_ours = time.perf_counter() - t0
    F, Q = state_space(torch.tensor([1 / rate], dtype=torch.float64))
    data = pos.transpose(1, 2, 0).reshape(-1, frames)
    first = np.array([d[np.isfinite(d)][0] for d in data])
    kf = simdkalman.KalmanFilter(F[0].numpy(), q * Q[0].numpy(), np.array([[1.0, 0.0]]), r)
    t0 = time.perf_counter()
    sres = kf.smooth(
        data,
        initial_value=np.stack([first, 0 * first], 1)[:, :, None],
        initial_covariance=np.diag([r, v0**2]),
    )
    t_simd = time.perf_counter() - t0
    simd = sres.states.mean[:, :, 0].reshape(markers, 3, frames).transpose(2, 0, 1)
    n_fp = 12 if quick else data.shape[0]
    t0 = time.perf_counter()
    fp = np.empty((n_fp, frames))
    for i in range(n_fp):
        k = KalmanFilter(dim_x=2, dim_z=1)
        k.F, k.H, k.Q, k.R = (
            F[0].numpy(),
            np.array([[1.0, 0.0]]),
            Q_continuous_white_noise(2, 1 / rate, q),
            np.array([[r]]),
        )
        k.x, k.P = np.array([[first[i]], [0.0]]), np.diag([r, v0**2])
        xs, ps = [], []
        for j, z in enumerate(data[i]):
            if j:
                k.predict()
            k.update(None if np.isnan(z) else z)
            xs.append(k.x.copy())
            ps.append(k.P.copy())
        X, _, _, _ = k.rts_smoother(np.array(xs), np.array(ps))
        fp[i] = X[:, 0, 0]
    t_fp = (time.perf_counter() - t0) * data.shape[0] / n_fp
    ours_s = est.positions.numpy().transpose(1, 2, 0).reshape(-1, frames)
    d_fp = float(np.abs(ours_s[:n_fp] - fp).max())
    d_simd = float(np.abs(est.positions.numpy() - simd).max())
    print(
        f"(c) RTS {markers} markers x {frames} frames: ours {t_ours:.3f} s, simdkalman {t_simd:.3f} s (x{t_simd / t_ours:.2f}), filterpy {t_fp:.2f} s{f' (extrapolated from {n_fp} series)' if n_fp < data.shape[0] else ''} (x{t_fp / t_ours:.1f}); max |diff| filterpy {d_fp:.1e} mm, simdkalman {d_simd:.1e} mm",
        flush=True,
    )
    return {
        "markers": markers,
        "frames": frames,
        "gap_fraction": float(np.isnan(pos).mean()),
        "ours_s": t_ours,
        "simdkalman_s": t_simd,
        "filterpy_s": t_fp,
        "filterpy_series_timed": n_fp,
        "speedup_vs_filterpy": t_fp / t_ours,
        "speedup_vs_simdkalman": t_simd / t_ours,
        "max_abs_diff_filterpy_mm": d_fp,
        "max_abs_diff_simdkalman_mm": d_simd,
        "goal_vs_filterpy": 5.0,
        "goal_vs_simdkalman": 1.0,
    }


def bench_scheduling(quick: bool) -> dict:
    n_lc = 6 if quick else 20
    errs_a, errs_r = [], []
    params = GPParams(kernel="transient", amplitude=2.0, lengthscale=8.0, jitter=0.05, mean=0.0)
    grid = torch.linspace(0, 60, 1200, dtype=torch.float64)
    for seed in range(n_lc):
        g = np.random.default_rng(100 + seed)
        kw = {
            "amplitude": 2.0,
            "t0": 20 + g.uniform(-3, 3),
            "rise": g.uniform(1.5, 3),
            "fall": g.uniform(10, 20),
        }
        tp = kw["t0"] + kw["rise"] * np.log(kw["fall"] / kw["rise"] - 1)
        t0 = np.linspace(0, 18, 5)
        f0 = ref.bazin(t0, **kw) + g.normal(0, 0.05, 5)
        t, f = t0, f0
        for _ in range(4):
            nt = propose_times(
                t,
                f,
                0.05,
                params,
                n=2,
                horizon=12.0,
                min_separation=1.0,
                target="peak_time",
                n_candidates=120,
            ).coords.numpy()
            t = np.concatenate([t, nt])
            f = np.concatenate([f, ref.bazin(nt, **kw) + g.normal(0, 0.05, nt.size)])
        errs_a.append(abs(peak_time(t, f, 0.05, params, grid=grid)[0] - tp))
        tr = np.concatenate([t0, np.linspace(18 + 42 / 8, 60, 8)])
        fr = np.concatenate([f0, ref.bazin(tr[5:], **kw) + g.normal(0, 0.05, 8)])
        errs_r.append(abs(peak_time(tr, fr, 0.05, params, grid=grid)[0] - tp))
    a, r = float(np.mean(errs_a)), float(np.mean(errs_r))
    print(
        f"(d) peak time |error| over {n_lc} transients, 13 observations each: policy {a:.2f} d, regular cadence {r:.2f} d (x{r / a:.2f})",
        flush=True,
    )
    return {
        "transients": n_lc,
        "observations": 13,
        "policy_mean_abs_err_d": a,
        "regular_mean_abs_err_d": r,
        "ratio": r / a,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".bench")
    ap.add_argument("--quick", action="store_true", help="reduced sizes")
    ap.add_argument("--only", default="abcd", help="subset of a, b, c, d")
    args = ap.parse_args()
    threads = set_threads()
    res: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={os.cpu_count()}".strip(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "torch": torch.__version__,
        "quick": args.quick,
        "load_average": os.getloadavg()[0],
    }
    if "c" in args.only:
        res["rts"] = bench_rts(args.quick)
    if "b" in args.only:
        res["richardson_lucy"] = bench_rl(args.quick)
    if "d" in args.only:
        res["scheduling"] = bench_scheduling(args.quick)
    if "a" in args.only:
        res["adaptive_sampling"] = bench_sampling(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback.json").write_text(
        json.dumps(res, indent=2, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    )
    print(f"wrote {out / 'feedback.json'}")


if __name__ == "__main__":
    main()
