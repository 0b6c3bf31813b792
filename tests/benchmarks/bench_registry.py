"""Benchmark of the dock's statistical specifications against the ``learnware`` package.

Measures, in the same run and on the same data:

1. spec generation: RKME of 5,000 x 20 data (ours: ``specs.rkme.RKME.fit``; peer:
   ``learnware.specification.RKMETableSpecification.generate_stat_spec_from_data``), and
   recovery of the planted sources (the user's data is drawn from 3 of 50 learnwares; a
   method recovers a source when it ranks it in its top 3 by its own MMD);
2. search: one query against N = 50, 500, 2,000 (and 100,000, ours only) registered
   specs (ours: ``specs.registry.SpecIndex.query``, batched MMD with cached self-terms,
   RFF pre-ranking above 4,096 candidates; peer: the loop of ``RKMETableSpecification.dist``
   that ``learnware``'s ``EasyStatSearcher`` runs for single-learnware search);
3. at N = 100,000: seconds per query and whether the RFF-pre-ranked top-3 equals the
   exact-MMD top-3 over all specs.

The peer runs in a subprocess with ``.venv-peers/bin/python`` (created by
``make bench-peers``); data are exchanged as ``.npy`` files.  Without ``.venv-peers``
the comparison is skipped with a message.

Usage::

    .venv/bin/python tests/benchmarks/bench_registry.py --out .bench [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
PEER_PY = ROOT / ".venv-peers" / "bin" / "python"
D = 20
N_LW = 50
SOURCES = (3, 17, 41)
PEER_GAMMA = 0.1  # learnware's default kernel exp(-gamma |x - y|^2)

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[2]))
from learnware.specification import RKMETableSpecification
d = sys.argv[1]
cfg = json.load(open(d + "/cfg.json"))
out = {}
def spec_from(z, beta, gamma):
    s = RKMETableSpecification(gamma=gamma, cuda_idx=-1)
    s.z = torch.as_tensor(z, dtype=torch.float64)
    s.beta = torch.as_tensor(beta, dtype=torch.float64)
    s.num_points = len(z)
    return s
# 1. spec generation on the user's data, and recovery with the peer's own specs
X = np.load(d + "/user.npy")
times = []
for rep in range(cfg["reps"]):
    user_spec = RKMETableSpecification(gamma=cfg["gamma"], cuda_idx=-1)
    t = time.perf_counter(); user_spec.generate_stat_spec_from_data(X, K=cfg["K"]); times.append(time.perf_counter() - t)
out["fit_s"] = min(times)
lw = []
for i in range(cfg["n_lw"]):
    s = RKMETableSpecification(gamma=cfg["gamma"], cuda_idx=-1)
    s.generate_stat_spec_from_data(np.load(d + f"/lw{i}.npy"), K=cfg["K_lw"])
    lw.append(s)
dists = [float(l.dist(user_spec)) for l in lw]
out["top3"] = [int(i) for i in np.argsort(dists)[:3]]
# 2. search over N synthetic specs (the same z, beta as ours)
out["search"] = {}
Z = np.load(d + "/bank_z.npy"); B = np.load(d + "/bank_beta.npy"); qz = np.load(d + "/q_z.npy"); qb = np.load(d + "/q_beta.npy")
q = spec_from(qz, qb, cfg["gamma"])
for N in cfg["sizes"]:
    specs = [spec_from(Z[i], B[i], cfg["gamma"]) for i in range(N)]
    t = time.perf_counter()
    dd = [float(s.dist(q)) for s in specs]
    order = sorted(range(N), key=lambda k: dd[k])[:3]
    out["search"][str(N)] = {"s": time.perf_counter() - t, "top3": order}
json.dump(out, open(d + "/peer.json", "w"))
"""


def planted(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.0, size=(N_LW, 3, D))

    def draw(i: int, n: int) -> np.ndarray:
        c = centers[i][rng.integers(0, 3, n)]
        return c + rng.normal(0, 0.5, size=(n, D))

    lws = [draw(i, 1000) for i in range(N_LW)]
    user = np.concatenate(
        [draw(i, 5000 // 3 + (1 if k < 5000 % 3 else 0)) for k, i in enumerate(SOURCES)]
    )
    return user, lws, centers


def synthetic_bank(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n specs of m points: clustered reduced sets with Dirichlet weights."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n, 1, D, generator=g) * 1.0
    z = centers + 0.5 * torch.randn(n, m, D, generator=g)
    beta = torch.distributions.Dirichlet(torch.ones(m)).sample((n,))
    return z.float(), beta.float()


def _mmd2_to_data(x: torch.Tensor, r: object) -> float:
    """Exact squared MMD (float64) between the data's empirical embedding and an RKME."""
    from specs.rkme import _gauss

    bw = r.bandwidth  # type: ignore[attr-defined]
    xd, z, b = x.double(), r.z.double(), r.beta.double()  # type: ignore[attr-defined]
    xx = sum(float(_gauss(xd[i : i + 1000], xd, bw).sum()) for i in range(0, len(xd), 1000))
    return (
        xx / len(xd) ** 2
        - 2 * float(_gauss(xd, z, bw).mean(0) @ b)
        + float(b @ _gauss(z, z, bw) @ b)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".bench", help="directory for registry.json")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (N up to 2,000 and 20,000)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LEARNDOCK_THREADS", "2")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from specs.registry import SpecIndex
    from specs.rkme import RKME, RKMEStack, median_bandwidth

    sizes = [50, 500, 2000]
    big = 20_000 if args.quick else 100_000
    reps = 1 if args.quick else 3
    m_user, m_lw, m_bank = 100, 32, 16
    user, lws, _ = planted()
    res: dict[str, object] = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU, {platform.system()}",
        "date": dt.date.today().isoformat(),
        "threads": args.threads,
        "torch": torch.__version__,
        "sizes": {"user": list(user.shape), "n_learnwares": N_LW, "search": [*sizes, big]},
    }
    # 1. spec generation + recovery
    X = torch.as_tensor(user, dtype=torch.float32)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        q = RKME.fit(X, m=m_user, seed=0)
        times.append(time.perf_counter() - t)
    ours_fit = min(times)
    bw = q.bandwidth
    lw_rk = [
        RKME.fit(torch.as_tensor(x, dtype=torch.float32), m=m_lw, seed=i, bandwidth=bw)
        for i, x in enumerate(lws)
    ]
    d_ours = RKMEStack(lw_rk)
    from specs.rkme import batched_mmd

    top3 = torch.topk(batched_mmd(q, d_ours, bandwidth=bw), 3, largest=False).indices.tolist()
    res["fit"] = {
        "ours_s": ours_fit,
        "m": m_user,
        "bandwidth": bw,
        "ours_top3": top3,
        "ours_recovered": len(set(top3) & set(SOURCES)) / 3,
        "ours_mmd2_to_data": _mmd2_to_data(X, q),
    }
    # 2. search
    Zb, Bb = synthetic_bank(max([*sizes, big]), m_bank, seed=1)
    qz, qb = (
        Zb[7] + 0.05 * torch.randn(m_bank, D, generator=torch.Generator().manual_seed(2)),
        Bb[7],
    )
    qr = RKME(qz, qb, bandwidth=median_bandwidth(Zb[:64].reshape(-1, D)))
    search: dict[str, dict[str, object]] = {}
    for N in [*sizes, big]:
        index = SpecIndex(
            [str(i) for i in range(N)],
            RKMEStack.from_tensors(Zb[:N].clone(), Bb[:N].clone(), featurizer="raw"),
            rff_bandwidth=qr.bandwidth,
        )
        index.query(qr, top=3)  # warm the self-term cache (stored with the index)
        ts = []
        for _ in range(reps if N < big else 5):
            t = time.perf_counter()
            idx, _, _, n_exact = index.query(qr, top=3, bandwidth=qr.bandwidth)
            ts.append(time.perf_counter() - t)
        exact, *_ = index.query(qr, top=3, prerank=False, bandwidth=qr.bandwidth)
        search[str(N)] = {
            "ours_s": float(np.median(ts)),
            "n_exact": n_exact,
            "top3": idx.tolist(),
            "exact_top3": exact.tolist(),
            "top3_unchanged": idx.tolist() == exact.tolist(),
        }
    res["search"] = search
    # 3. the peer
    if not PEER_PY.exists():
        res["peer"] = "skipped: .venv-peers not found (run `make bench-peers`)"
        print(f"learnware comparison {res['peer']}")
    else:
        with tempfile.TemporaryDirectory() as d:
            np.save(f"{d}/user.npy", user)
            for i, x in enumerate(lws):
                np.save(f"{d}/lw{i}.npy", x)
            np.save(f"{d}/bank_z.npy", Zb[: max(sizes)].double().numpy())
            np.save(f"{d}/bank_beta.npy", Bb[: max(sizes)].double().numpy())
            np.save(f"{d}/q_z.npy", qz.double().numpy())
            np.save(f"{d}/q_beta.npy", qb.double().numpy())
            gamma = 1 / (2 * qr.bandwidth**2)  # the same kernel as ours for the search part
            json.dump(
                {
                    "reps": reps,
                    "K": m_user,
                    "K_lw": m_lw,
                    "n_lw": N_LW,
                    "gamma": PEER_GAMMA,
                    "sizes": sizes,
                },
                open(f"{d}/cfg.json", "w"),
            )
            Path(f"{d}/peer.py").write_text(PEER_SCRIPT)
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            t0 = time.perf_counter()
            r = subprocess.run(
                [str(PEER_PY), f"{d}/peer.py", d, str(args.threads)],
                capture_output=True,
                text=True,
                env=env,
                timeout=3600,
            )
            if r.returncode != 0:
                res["peer"] = (
                    f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
                )
            else:
                peer = json.load(open(f"{d}/peer.json"))
                peer["wall_s"] = time.perf_counter() - t0
                peer["gamma_search_equivalent"] = gamma
                res["peer"] = peer
                res["fit"]["peer_s"] = peer["fit_s"]  # type: ignore[index]
                res["fit"]["peer_top3"] = peer["top3"]  # type: ignore[index]
                res["fit"]["peer_recovered"] = len(set(peer["top3"]) & set(SOURCES)) / 3  # type: ignore[index]
                res["fit"]["speedup"] = peer["fit_s"] / ours_fit  # type: ignore[index]
                for N in sizes:
                    s = search[str(N)]
                    p = peer["search"][str(N)]
                    s["peer_s"] = p["s"]
                    s["speedup"] = p["s"] / s["ours_s"]
                    s["peer_top3"] = p["top3"]
    # report
    f = res["fit"]
    print(f"{'measure':<34}{'ours':>12}{'learnware':>12}{'ratio':>10}")
    print(
        f"{'RKME fit 5000x20 (s)':<34}{f['ours_s']:>12.3f}{f.get('peer_s', float('nan')):>12.3f}{f.get('speedup', float('nan')):>10.1f}"
    )  # type: ignore[union-attr]
    print(
        f"{'planted sources in top-3':<34}{f['ours_recovered']:>12.2f}{f.get('peer_recovered', float('nan')):>12.2f}"
    )  # type: ignore[union-attr]
    print(f"{'RKME MMD^2 to the data (ours)':<34}{f['ours_mmd2_to_data']:>12.3g}")  # type: ignore[index]
    for N, s in search.items():
        print(
            f"{'search N=' + N + ' (s/query)':<34}{s['ours_s']:>12.4f}{s.get('peer_s', float('nan')):>12.4f}{s.get('speedup', float('nan')):>10.1f}   top-3 unchanged: {s['top3_unchanged']}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "registry.json").write_text(json.dumps(res, indent=2, default=float))
    print(f"figures written to {out / 'registry.json'}")


if __name__ == "__main__":
    sys.exit(main())
