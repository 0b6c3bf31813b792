"""Resumable batch processing: halos, shards, markers, kill/resume, schedulers, provenance.

The last test runs on a real single-node Slurm: its fixture installs Debian's
``slurm-wlm`` and ``munge`` when missing (as root, through apt-get), writes a one-node
``slurm.conf`` into a temporary directory, starts ``munged``, ``slurmctld`` and
``slurmd``, waits for the node to be idle and stops the daemons afterwards; it skips
with the reason when any of this is not possible.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from batch_kill import kill_mid_run, load_job
from scipy import ndimage

from components.base import Component
from pipelines.batch import parse_memory, resolve_halo, run_batch
from pipelines.io import open_dataset, write_lightcurve_zarr, write_ome_zarr, write_zarr


def _gauss(block: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(block, (0, 1.5, 1.5), truncate=4.0, mode="reflect")


class _BoxFilter(Component):
    """A small torch component: 5x5 box mean per frame (reflect border), footprint 2."""

    name = "test.box-filter"
    footprint = (2, 2)

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__(scale=scale)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = torch.nn.functional.pad(x[:, None], (2, 2, 2, 2), mode="reflect")
        return self.scale * torch.nn.functional.avg_pool2d(pad, 5, stride=1)[:, 0]


@pytest.fixture
def stack(tmp_path: Path) -> tuple[np.ndarray, Path]:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4000, size=(4, 96, 80)).astype(np.uint16)
    path = write_ome_zarr(
        x,
        tmp_path / "in.ome.zarr",
        axes="tyx",
        scale={"y": 0.3, "x": 0.3},
        chunks=(1, 32, 40),
        n_levels=2,
    )
    return x, path


def test_chunked_equals_whole_array_with_halo(stack, tmp_path):
    x, path = stack
    res = run_batch(_gauss, path, tmp_path / "out", halo=(0, 6, 6), progress=False)
    got = open_dataset(res.output).data.compute()
    want = _gauss(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert res.n_shards == 4 * 3 * 2 and res.n_computed == res.n_shards and res.n_skipped == 0


def test_too_small_halo_differs_from_whole_array(stack, tmp_path):
    x, path = stack
    res = run_batch(_gauss, path, tmp_path / "out", halo=0, progress=False)
    assert not np.array_equal(open_dataset(res.output).data.compute(), _gauss(x))


def test_component_halo_from_footprint_and_metadata(stack, tmp_path):
    x, path = stack
    comp = _BoxFilter(scale=2.0)
    res = run_batch(comp, path, tmp_path / "out", progress=False)
    out = open_dataset(res.output)
    with torch.no_grad():
        want = comp(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_array_equal(out.data.compute(), want)
    # output keeps axes, physical scale and units; it is an OME-Zarr image
    assert out.format == "ome-zarr" and out.axes == "tyx"
    assert out.scale["y"] == pytest.approx(0.3)
    assert res.provenance["config"]["halo"] == [0, 2, 2]
    # one dask block = one shard of the output array
    z = zarr.open_array(str(res.output / "data"), mode="r")
    assert z.shards == (1, 32, 40)


def test_provenance_and_report(stack, tmp_path):
    _, path = stack
    res = run_batch(
        _gauss, path, tmp_path / "out", halo=(0, 6, 6), progress=False, config={"note": "t"}
    )
    prov = json.loads((res.output / "provenance.json").read_text())
    assert prov["config"]["note"] == "t"
    assert prov["versions"]["dask"] and prov["versions"]["zarr"]
    assert prov["host"]["hostname"]
    assert "git" in prov
    assert prov["inputs"][0]["checksum"]["sha256"]
    attrs = dict(zarr.open_group(str(res.output), mode="r").attrs)
    assert attrs["learndock"]["provenance"]["inputs"] == prov["inputs"]
    assert attrs["learndock"]["status"] == "complete"
    assert (res.output / ".batch" / "dask-report.html").is_file()
    perf = json.loads((res.output / ".batch" / "dask-performance.json").read_text())
    assert perf["n_tasks"] > 0


def test_rerun_skips_and_unmarked_partial_shard_is_recomputed(stack, tmp_path):
    _, path = stack
    out = tmp_path / "out"
    first = run_batch(_gauss, path, out, halo=(0, 6, 6), progress=False)
    ref = open_dataset(out).data.compute()
    # an interrupted shard: marker gone, shard file garbage (a torn write)
    (out / ".batch" / "done" / "2_1_0").unlink()
    z = zarr.open_array(str(out / "data"), mode="r")
    shard_file = out / "data" / z.metadata.encode_chunk_key((2, 1, 0))
    shard_file.write_bytes(b"\x00garbage")
    second = run_batch(_gauss, path, out, halo=(0, 6, 6), progress=False)
    assert second.n_skipped == first.n_shards - 1 and second.n_computed == 1
    np.testing.assert_array_equal(open_dataset(out).data.compute(), ref)


def test_different_job_refuses_to_resume(stack, tmp_path):
    _, path = stack
    out = tmp_path / "out"
    run_batch(_gauss, path, out, halo=(0, 6, 6), progress=False)
    with pytest.raises(ValueError, match=r"different job"):
        run_batch(_gauss, path, out, halo=(0, 4, 4), progress=False)
    res = run_batch(_gauss, path, out, halo=(0, 4, 4), progress=False, overwrite=True)
    assert res.n_computed == res.n_shards


def test_numpy_and_zarr_inputs_and_dtype(tmp_path):
    x = np.arange(60 * 50, dtype=np.float64).reshape(60, 50)
    res = run_batch(lambda b: b * 2, x, tmp_path / "a", chunks=(20, 25), progress=False)
    assert res.dtype == "<f8"
    np.testing.assert_array_equal(open_dataset(res.output).data.compute(), 2 * x)
    fast = run_batch(
        lambda b: b * 2, x, tmp_path / "a2", chunks=(20, 25), progress=False, durable=False
    )
    assert fast.provenance["config"]["durable"] is False
    np.testing.assert_array_equal(open_dataset(fast.output).data.compute(), 2 * x)
    p = write_zarr(
        x.astype(np.float32), tmp_path / "plain.zarr", axes="yx", chunks=(10, 25), shards=(20, 25)
    )
    res = run_batch(lambda b: b + 1, p, tmp_path / "b", progress=False, scheduler="synchronous")
    np.testing.assert_array_equal(open_dataset(res.output).data.compute(), x.astype(np.float32) + 1)


def test_errors(stack, tmp_path):
    _, path = stack
    with pytest.raises(ValueError, match="scheduler"):
        run_batch(_gauss, path, tmp_path / "o1", scheduler="pbs")
    with pytest.raises(ValueError, match="halo"):
        run_batch(_gauss, path, tmp_path / "o2", halo=(0, 50, 6), progress=False)
    with pytest.raises(ValueError, match="memory_limit"):
        run_batch(
            _gauss, path, tmp_path / "o3", halo=(0, 6, 6), memory_limit="10kB", progress=False
        )
    with pytest.raises(ValueError, match="shape"):
        run_batch(lambda b: b[..., :1], path, tmp_path / "o4", progress=False)
    with pytest.raises(TypeError, match="input"):
        run_batch(_gauss, 42, tmp_path / "o5")
    with pytest.raises(ValueError, match="non-empty"):
        run_batch(_gauss, np.zeros((0, 3)), tmp_path / "o6")
    arch = write_lightcurve_zarr(
        [{"time": np.arange(5.0), "flux": np.ones(5)}], tmp_path / "lc.zarr"
    )
    with pytest.raises(ValueError, match="array: a ragged light-curve archive"):
        run_batch(_gauss, arch, tmp_path / "o7", array="flux")


def test_helpers():
    assert parse_memory("2GB") == 2 * 10**9 and parse_memory("1.5GiB") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="memory_limit"):
        parse_memory("lots")
    assert resolve_halo(_BoxFilter(), 3, None) == (0, 2, 2)
    assert resolve_halo(None, 3, 4) == (4, 4, 4)
    assert resolve_halo(None, 3, {1: 3}) == (0, 3, 0)
    with pytest.raises(ValueError, match="halo"):
        resolve_halo(None, 2, (1, 2, 3))


_JOB = """
import time
import numpy as np
from scipy import ndimage

def slow_filter(block):
    time.sleep(0.04)
    return ndimage.gaussian_filter(block.astype(np.float32), (0, 2, 2), truncate=3.0)

def main(inp, out):
    from pipelines.batch import run_batch
    run_batch(slow_filter, inp, out, halo=(0, 6, 6), n_workers=2, progress=False)
"""


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(100, 10, size=(16, 64, 64)).astype(np.float32)
    inp = write_zarr(x, tmp_path / "in.zarr", axes="tyx", chunks=(1, 32, 32), shards=(1, 32, 32))
    total = 16 * 2 * 2
    out = tmp_path / "killed"
    n_done = kill_mid_run(tmp_path, "batchjob", _JOB, inp, out, after=12, poll=0.02)
    assert 12 <= n_done < total, "the kill must land mid-run"
    job = load_job(tmp_path, "batchjob")
    try:
        resumed = run_batch(job.slow_filter, inp, out, halo=(0, 6, 6), n_workers=2, progress=False)
        assert resumed.n_skipped == n_done and resumed.n_computed == total - n_done
        clean = run_batch(
            job.slow_filter, inp, tmp_path / "clean", halo=(0, 6, 6), n_workers=2, progress=False
        )
    finally:
        sys.modules.pop("batchjob", None)
    a = open_dataset(out).data.compute()
    b = open_dataset(clean.output).data.compute()
    assert a.tobytes() == b.tobytes()
    np.testing.assert_array_equal(b, job.slow_filter(x))


def _distributed_matches_local(tmp_path, processes: bool) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 64, 48)).astype(np.float32)
    inp = write_zarr(x, tmp_path / "in.zarr", axes="tyx", chunks=(1, 32, 48))
    local = run_batch(_gauss, inp, tmp_path / "local", halo=(0, 6, 6), progress=False)
    dist = run_batch(
        _gauss,
        inp,
        tmp_path / "dist",
        halo=(0, 6, 6),
        scheduler="distributed",
        n_workers=2,
        cluster_options={"processes": processes},
        progress=False,
    )
    a = open_dataset(local.output).data.compute()
    b = open_dataset(dist.output).data.compute()
    assert a.tobytes() == b.tobytes()
    perf = json.loads((dist.output / ".batch" / "dask-performance.json").read_text())
    assert len(perf["workers"]) == 2


def test_distributed_two_workers_matches_local(tmp_path):
    """A 2-worker LocalCluster (in-process workers: fast) gives the local output."""
    _distributed_matches_local(tmp_path, processes=False)


@pytest.mark.slow
def test_distributed_two_worker_processes_matches_local(tmp_path):
    """The same with worker processes (pickled functions, separate zarr handles)."""
    _distributed_matches_local(tmp_path, processes=True)


# --------------------------------------------------------------------------------------
# a real Slurm
# --------------------------------------------------------------------------------------
def _sh(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _ensure_installed() -> str | None:
    if shutil.which("slurmctld") and shutil.which("munged") and shutil.which("sbatch"):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = _sh(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], timeout=900, env=env)
    if r.returncode != 0:
        _sh(["apt-get", "update", "-qq"], timeout=300, env=env)
        r = _sh(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], timeout=900, env=env)
    if r.returncode != 0 or not shutil.which("slurmctld"):
        return f"apt-get could not install slurm-wlm/munge: {r.stderr.strip()[-300:]}"
    return None


def _pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running single-node Slurm; yields ``{"conf": path, "partition": name}``."""
    reason = _ensure_installed()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool", "log", "munge"):
        (root / d).mkdir()
    host = socket.gethostname().split(".")[0]
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    cpus = os.cpu_count() or 1
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=learndock
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmctldPort=16817
SlurmdPort=16818
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=learndock Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[int] = []
    munge_pid = root / "munge" / "munged.pid"
    r = _sh(
        [
            "munged",
            "--force",
            f"--socket={root}/munge/munge.socket",
            f"--pid-file={munge_pid}",
            f"--log-file={root}/log/munged.log",
            f"--seed-file={root}/munge/seed",
        ]
    )
    if r.returncode != 0:
        pytest.skip(f"munged did not start: {r.stderr.strip()[-300:]}")
    try:
        for cmd in (["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf)]):
            r = _sh(cmd, env=env)
            if r.returncode != 0:
                pytest.skip(f"{cmd[0]} did not start: {r.stderr.strip()[-300:]}")
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            s = _sh(["sinfo", "-h", "-o", "%T"], env=env)
            state = s.stdout.strip()
            if state.startswith("idle"):
                break
            time.sleep(1)
        else:
            log = (
                (root / "log" / "slurmctld.log").read_text(errors="replace")[-500:]
                if (root / "log" / "slurmctld.log").exists()
                else ""
            )
            pytest.skip(f"the Slurm node did not become idle (state {state!r}); {log}")
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)
        try:
            yield {"conf": str(conf), "partition": "learndock", "root": str(root)}
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old
    finally:
        _sh(["scancel", "--user", "root"], env=env)
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", munge_pid):
            pid = _pid(pid_file)
            if pid:
                procs.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_batch_matches_local(slurm_cluster, tmp_path):
    # the job runs on this node, so the output directory is "shared" with it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 64, 64)).astype(np.float32)
    inp = write_zarr(x, tmp_path / "in.zarr", axes="tyx", chunks=(1, 32, 64))

    def smooth(b: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(b, (0, 2, 2), truncate=3.0)

    res = run_batch(
        smooth,
        inp,
        tmp_path / "slurm_out",
        halo=(0, 6, 6),
        scheduler="slurm",
        n_workers=1,
        threads_per_worker=1,
        memory_limit="2GB",
        cluster_options={
            "queue": slurm_cluster["partition"],
            "walltime": "00:10:00",
            "log_directory": str(tmp_path / "logs"),
            "local_directory": str(tmp_path),
        },
        progress=False,
    )
    assert res.n_computed == res.n_shards == 8
    got = open_dataset(res.output).data.compute()
    np.testing.assert_array_equal(got, smooth(x))
    assert res.provenance["config"]["scheduler"] == "slurm"


def test_pipeline_of_components(stack, tmp_path):
    pipeline_mod = pytest.importorskip("pipelines.pipeline")
    x, path = stack
    pipe = pipeline_mod.Pipeline({"a": _BoxFilter(scale=1.0), "b": _BoxFilter(scale=0.5)})
    res = pipe.run_batch(path, tmp_path / "out", halo=(0, 4, 4), progress=False)
    with torch.no_grad():
        want = pipe(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(open_dataset(res.output).data.compute(), want, rtol=1e-6, atol=1e-4)
    assert res.provenance["config"]["fn"]["kind"] == "module"
