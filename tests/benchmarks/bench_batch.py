"""Batch benchmark: Gaussian filter + spot detection over a uint16 archive larger than RAM budgets.

Same work, same data, same chunks, same number of threads, measured in the same run:

- ``learndock``: :func:`pipelines.batch.run_batch` (halo'd ``map_overlap``, one shard per
  block, durable per-shard markers, provenance) with a block function made of
  ``scipy.ndimage`` kernels;
- ``dask-image``: ``dask_image.ndfilters.gaussian_filter`` and ``maximum_filter`` on the
  same dask array, written with ``dask.array.to_zarr`` (no resumability);
- ``learndock-nofsync``: the same with ``durable=False`` (no fsync of shards and
  markers: exact after a killed process, not after a machine crash), to show what
  durability costs;
- optionally (``--torch``) ``learndock-torch``: the same detection written in torch,
  the way a learndock component would be.

Each method runs in its own subprocess so that its peak resident memory (``ru_maxrss``)
is its own.  The archive is a fluorescence time-lapse rendered by
:class:`sample_data.microscopy.TimelapseModel` (diffusing spots with known positions;
moment-matched Gaussian camera noise, ``render(noise="gaussian")``; Blosc-LZ4 with
bit-shuffle; frames rendered by a process pool, one chunk of frames per task), so the
detections are also scored against the truth on a few frames.

Run::

    .venv/bin/python tests/benchmarks/bench_batch.py --out .bench            # >= 8 GB
    .venv/bin/python tests/benchmarks/bench_batch.py --out .bench --quick    # 64 MB
    .venv/bin/python tests/benchmarks/bench_batch.py --out .bench --ragged 64  # light curves
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIGMA = 2.0
TRUNCATE = 4.0
MAX_SIZE = 5
HALO = int(SIGMA * TRUNCATE + 0.5) + MAX_SIZE // 2
THRESHOLD = 210.0  # camera counts after smoothing (offset 100 + background ~40-60 + spot)


def detect_numpy(block: np.ndarray) -> np.ndarray:
    """Gaussian smoothing (y, x) then local maxima above THRESHOLD, as uint8 mask."""
    from scipy import ndimage

    g = ndimage.gaussian_filter(
        block.astype(np.float32), (0, SIGMA, SIGMA), truncate=TRUNCATE, mode="mirror"
    )
    m = ndimage.maximum_filter(g, (1, MAX_SIZE, MAX_SIZE), mode="mirror")
    return ((g == m) & (g > THRESHOLD)).astype(np.uint8)


def detect_torch(block: np.ndarray) -> np.ndarray:
    """The same detection in torch (symmetric shift-and-add Gaussian, separable max-pool)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(block.astype(np.float32))
    r = int(SIGMA * TRUNCATE + 0.5)
    w = torch.exp(-(torch.arange(0, r + 1, dtype=torch.float32) ** 2) / (2 * SIGMA**2))
    w = w / (w[0] + 2 * w[1:].sum())

    def smooth(x: torch.Tensor, ax: int) -> torch.Tensor:
        n = x.shape[ax]
        xp = torch.cat([x.narrow(ax, 1, r).flip(ax), x, x.narrow(ax, n - r - 1, r).flip(ax)], ax)
        out = xp.narrow(ax, r, n) * w[0]
        for k in range(1, r + 1):
            out.add_(xp.narrow(ax, r - k, n) + xp.narrow(ax, r + k, n), alpha=float(w[k]))
        return out

    g = smooth(smooth(x, 1), 2)
    p = MAX_SIZE // 2
    gp = F.pad(g[:, None], (p, p, p, p), mode="reflect")
    m = F.max_pool2d(F.max_pool2d(gp, (MAX_SIZE, 1), 1), (1, MAX_SIZE), 1)[:, 0]
    return ((g == m) & (g > THRESHOLD)).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------
# workers (one subprocess each)
# --------------------------------------------------------------------------------------
def worker(method: str, archive: Path, out: Path, threads: int) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    if method in ("learndock", "learndock-torch", "learndock-nofsync"):
        from pipelines.batch import run_batch

        if method == "learndock-torch":
            import torch

            torch.set_num_threads(1)
        fn = detect_torch if method == "learndock-torch" else detect_numpy
        res = run_batch(
            fn,
            archive,
            out,
            halo=(0, HALO, HALO),
            n_workers=threads,
            memory_limit="2GB",
            progress=False,
            dtype=np.uint8,
            durable=method != "learndock-nofsync",
        )
        extra = {"n_shards": res.n_shards}
    elif method == "dask-image":
        import dask
        import dask.array as da
        import zarr
        from dask_image import ndfilters

        x = da.from_zarr(zarr.open_array(str(archive / "data"), mode="r"))
        g = ndfilters.gaussian_filter(
            x.astype(np.float32), sigma=(0, SIGMA, SIGMA), truncate=TRUNCATE, mode="mirror"
        )
        m = ndfilters.maximum_filter(g, size=(1, MAX_SIZE, MAX_SIZE), mode="mirror")
        mask = ((g == m) & (g > THRESHOLD)).astype(np.uint8)
        with dask.config.set(scheduler="threads", num_workers=threads):
            da.to_zarr(mask, str(out), component="data", overwrite=True)
        extra = {"n_blocks": int(np.prod(x.numblocks))}
    else:
        raise ValueError(f"method: unknown {method!r}")
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, "seconds": seconds, "peak_rss_mb": rss_mb, **extra}


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------
def make_archive(
    path: Path,
    shape: tuple[int, int, int],
    chunks: tuple[int, int, int],
    seed: int,
    n_spots: int,
    workers: int,
) -> dict:
    import zarr
    from zarr.codecs import BloscCodec

    meta_file = path / "bench-meta.json"
    want = {
        "shape": list(shape),
        "chunks": list(chunks),
        "seed": seed,
        "n_spots": n_spots,
        "noise": "gaussian",
        "codec": "blosc-lz4-bitshuffle",
    }
    if meta_file.is_file() and json.loads(meta_file.read_text()) == want:
        return {"reused": True, "seconds": 0.0}
    if path.exists():
        shutil.rmtree(path)
    from concurrent.futures import ProcessPoolExecutor

    from sample_data.microscopy import timelapse_model

    t0 = time.perf_counter()
    m = timelapse_model(seed, shape, n_spots=n_spots)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["learndock"] = {
        "kind": "array",
        "array": "data",
        "axes": "tyx",
        "modality": "microscopy",
    }
    group.create_array(
        "data",
        shape=shape,
        dtype=np.uint16,
        chunks=chunks,
        dimension_names=["t", "y", "x"],
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    )
    starts = list(range(0, shape[0], chunks[0]))
    with ProcessPoolExecutor(max_workers=workers) as ex:
        list(
            ex.map(
                _render_into,
                [
                    (str(path), seed, shape, n_spots, t0_, min(shape[0], t0_ + chunks[0]))
                    for t0_ in starts
                ],
                chunksize=1,
            )
        )
    meta_file.write_text(json.dumps(want))
    np.save(path / "truth_positions.npy", m.positions[: min(shape[0], 8)])
    return {"reused": False, "seconds": time.perf_counter() - t0}


_MODEL = {}


def _render_into(args: tuple) -> None:
    import zarr

    from sample_data.microscopy import timelapse_model

    path, seed, shape, n_spots, t0, t1 = args
    key = (seed, tuple(shape), n_spots)
    if key not in _MODEL:
        _MODEL[key] = timelapse_model(seed, shape, n_spots=n_spots)
    z = zarr.open_array(str(Path(path) / "data"), mode="r+")
    z[t0:t1] = _MODEL[key].render(t0, t1, noise="gaussian")


def score(archive: Path, outs: dict[str, Path]) -> dict:
    import zarr

    ref = zarr.open_array(str(outs["dask-image"] / "data"), mode="r")
    truth = np.load(archive / "truth_positions.npy")
    result = {}
    n_frames = truth.shape[0]
    for name, p in outs.items():
        z = zarr.open_array(str(p / "data"), mode="r")
        same = total = 0
        for t0 in range(0, z.shape[0], 8):
            a = z[t0 : t0 + 8]
            b = ref[t0 : t0 + 8]
            same += int((a == b).sum())
            total += a.size
        # recall of true spot positions on the first frames (a detection within 2 px)
        m = z[:n_frames]
        hits = n = 0
        for t in range(n_frames):
            for y, x in truth[t]:
                iy, ix = round(float(y)), round(float(x))
                n += 1
                hits += bool(m[t, max(0, iy - 2) : iy + 3, max(0, ix - 2) : ix + 3].any())
        result[name] = {
            "agreement_with_dask_image": same / total,
            "recall_first_frames": hits / max(n, 1),
            "n_detections_first_frames": int(m.sum()),
        }
    return result


def ragged_bench(out: Path, n_stars: int, days: float, threads: int) -> dict:
    """Transit search over a ragged light-curve archive: ``run_batch`` vs a plain loop.

    The archive holds ``n_stars`` TESS-like 2-minute light curves (every other star
    transits, known period), each cut to its own length.  ``loop`` is what one would
    write by hand: read each target (:func:`pipelines.io.get_lightcurve`) and call the
    component (one torch thread, after a warm-up call); ``run_batch`` runs the same component
    a run of targets per task on ``threads`` workers (one torch thread each), with
    durable per-task parts and markers; ``resume`` re-runs the finished job (all tasks
    skipped).  Both must find the same periods.
    """
    import torch

    from components.detection.transits import TransitSearch
    from pipelines.batch import run_batch
    from pipelines.io import get_lightcurve, open_dataset, write_lightcurve_zarr
    from sample_data.lightcurves import light_curves

    data, truth = light_curves(seed=0, size=(n_stars, days))
    rng = np.random.default_rng(1)
    curves = []
    for i in range(n_stars):
        a, b = int(rng.integers(0, 1000)), data["time"].size - int(rng.integers(0, 1000))
        curves.append({"time": data["time"][a:b], "flux": data["flux"][i, a:b]})
    archive = out / "batch-ragged-archive.zarr"
    write_lightcurve_zarr(curves, archive)
    ds = open_dataset(archive)
    cadences = int(ds.attrs["offsets"][-1])
    search = TransitSearch(min_period=0.5, max_period=min(10.0, days / 2.5))
    # the loop runs one torch thread: on this shared 2-core machine 2 intra-op threads
    # were 5-7x slower (oversubscription), so one thread is the fair baseline
    torch.set_num_threads(1)
    lc = get_lightcurve(ds, 0)  # warm-up (one-off torch initialisation), not timed
    with torch.no_grad():
        search(torch.from_numpy(lc["time"]), torch.from_numpy(lc["flux"]))
    t0 = time.perf_counter()
    loop_periods = []
    for i in range(n_stars):
        lc = get_lightcurve(ds, i)
        with torch.no_grad():
            res = search(torch.from_numpy(lc["time"]), torch.from_numpy(lc["flux"]))
        loop_periods.append(float(res.period))
    t_loop = time.perf_counter() - t0
    dest = out / "batch-ragged-out.zarr"
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    r = run_batch(search, archive, dest, n_workers=threads, progress=False)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = run_batch(search, archive, dest, n_workers=threads, progress=False)
    t_resume = time.perf_counter() - t0
    assert again.n_computed == 0
    periods = r.table()["period"]
    stars = [s for s in truth["stars"] if s["kind"] == "transit"]
    recovered = sum(abs(periods[s["index"]] - s["period"]) < 0.01 * s["period"] for s in stars)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(archive, ignore_errors=True)
    return {
        "n_stars": n_stars,
        "days": days,
        "cadences": cadences,
        "tasks": r.n_shards,
        "threads": {"loop": 1, "run_batch_workers": threads, "torch_threads_per_worker": 1},
        "seconds": {"loop": t_loop, "run_batch": t_batch, "resume_noop": t_resume},
        "stars_per_s": {"loop": n_stars / t_loop, "run_batch": n_stars / t_batch},
        "speedup_vs_loop": t_loop / t_batch,
        "same_periods_as_loop": bool(np.allclose(periods, loop_periods, rtol=1e-9)),
        "period_recovered_1pct": f"{recovered}/{len(stars)}",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", default=".bench", help="directory of the JSON figures (and the archive)"
    )
    ap.add_argument("--quick", action="store_true", help="64 MB archive instead of >= 8 GB")
    ap.add_argument(
        "--size-gb", type=float, default=8.05, help="archive size (ignored with --quick)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--torch", action="store_true", help="also time the torch variant of the detection"
    )
    ap.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of learndock,learndock-nofsync,dask-image,learndock-torch",
    )
    ap.add_argument("--archive", default=None, help="where to generate/reuse the archive")
    ap.add_argument("--keep", action="store_true", help="keep the archive and outputs")
    ap.add_argument(
        "--ragged",
        type=int,
        default=None,
        metavar="N_STARS",
        help="instead: transit search over a ragged archive of N_STARS light curves",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(
            json.dumps(worker(args.worker, Path(args.archive), Path(args.worker_out), args.threads))
        )
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.ragged:
        days = 13.7 if args.quick else 27.4
        res = ragged_bench(out, args.ragged, days, args.threads)
        print(
            f"ragged archive: {res['n_stars']} stars, {res['cadences']} cadences, {res['tasks']} tasks"
        )
        for k, v in res["seconds"].items():
            print(f"  {k:12s} {v:8.1f} s")
        print(
            f"speedup of run_batch vs the plain loop: {res['speedup_vs_loop']:.2f}x; same periods: "
            f"{res['same_periods_as_loop']}; periods recovered: {res['period_recovered_1pct']}"
        )
        doc = {
            "benchmark": "batch-ragged",
            "date": _dt.datetime.now(_dt.UTC).isoformat(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "quick": args.quick,
            **res,
        }
        name = "batch-ragged-quick.json" if args.quick else "batch-ragged.json"
        (out / name).write_text(json.dumps(doc, indent=2))
        print(f"wrote {out / name}")
        return 0
    frame = (1024, 1024) if args.quick else (2048, 2048)
    n_frames = 32 if args.quick else max(8, int(args.size_gb * 1e9 / (2 * frame[0] * frame[1])))
    shape = (n_frames, *frame)
    chunks = (4, 1024, 1024)
    archive = (
        Path(args.archive)
        if args.archive
        else out / ("batch-archive-quick.zarr" if args.quick else "batch-archive.zarr")
    )
    gb = float(2 * np.prod(shape) / 1e9)
    print(f"archive {archive}: {shape} uint16 = {gb:.2f} GB, chunks {chunks}")
    gen = make_archive(
        archive, shape, chunks, seed=0, n_spots=300 if args.quick else 1500, workers=args.threads
    )
    gen_text = "reused" if gen["reused"] else f"{gen['seconds']:.1f} s"
    print(f"archive generation: {gen_text}")
    methods = (
        [m.strip() for m in args.methods.split(",") if m.strip()]
        if args.methods
        else ["learndock", "learndock-nofsync", "dask-image"]
    )
    if args.torch and "learndock-torch" not in methods:
        methods.append("learndock-torch")
    if "learndock" not in methods or "dask-image" not in methods:
        ap.error("--methods: must include learndock and dask-image (the ratio's two sides)")
    runs = {}
    outs = {}
    for method in methods:
        dest = out / f"batch-out-{method}{'-quick' if args.quick else ''}.zarr"
        if dest.exists():
            shutil.rmtree(dest)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            method,
            "--archive",
            str(archive),
            "--worker-out",
            str(dest),
            "--threads",
            str(args.threads),
        ]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        runs[method] = json.loads(r.stdout.strip().splitlines()[-1])
        runs[method]["throughput_mb_s"] = gb * 1e3 / runs[method]["seconds"]
        outs[method] = dest
        print(
            f"  {method:16s} {runs[method]['seconds']:8.1f} s  {runs[method]['throughput_mb_s']:7.1f} MB/s  peak RSS {runs[method]['peak_rss_mb']:7.0f} MB"
        )
    accuracy = score(archive, outs)
    base = runs["dask-image"]
    ratios = {
        m: {
            "throughput_vs_dask_image": runs[m]["throughput_mb_s"] / base["throughput_mb_s"],
            "peak_rss_vs_dask_image": runs[m]["peak_rss_mb"] / base["peak_rss_mb"],
        }
        for m in runs
    }
    print()
    print(
        f"{'method':16s} {'MB/s':>8s} {'x dask-image':>13s} {'peak MB':>8s} {'agree':>8s} {'recall':>7s}"
    )
    for m in runs:
        print(
            f"{m:16s} {runs[m]['throughput_mb_s']:8.1f} {ratios[m]['throughput_vs_dask_image']:13.2f} {runs[m]['peak_rss_mb']:8.0f} {accuracy[m]['agreement_with_dask_image']:8.6f} {accuracy[m]['recall_first_frames']:7.3f}"
        )
    goal_tp = bool(ratios["learndock"]["throughput_vs_dask_image"] >= 1.0)
    goal_mem = bool(runs["learndock"]["peak_rss_mb"] < 2048)
    print(
        f"goal throughput >= dask-image: {'met' if goal_tp else 'NOT met'}; goal peak memory < 2 GB: {'met' if goal_mem else 'NOT met'}"
    )
    import dask
    import torch

    try:
        from importlib.metadata import version

        dask_image_version = version("dask-image")
    except Exception:  # pragma: no cover
        dask_image_version = None
    doc = {
        "benchmark": "batch",
        "date": _dt.datetime.now(_dt.UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "threads": args.threads,
        "quick": args.quick,
        "sizes": {
            "shape": list(shape),
            "dtype": "uint16",
            "gb": gb,
            "chunks": list(chunks),
            "halo": HALO,
        },
        "versions": {
            "dask": dask.__version__,
            "dask-image": dask_image_version,
            "torch": torch.__version__,
        },
        "generation": gen,
        "times": runs,
        "ratios": ratios,
        "accuracy": accuracy,
        "goals": {"throughput_at_least_dask_image": goal_tp, "peak_memory_under_2GB": goal_mem},
    }
    name = "batch-quick.json" if args.quick else "batch.json"
    (out / name).write_text(json.dumps(doc, indent=2))
    print(f"wrote {out / name}")
    if not args.keep:
        for p in outs.values():
            shutil.rmtree(p, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
