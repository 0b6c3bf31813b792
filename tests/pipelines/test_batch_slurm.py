"""A real single-node Slurm: the SLURM path of run_batch through dask-jobqueue.

The fixture installs Debian's ``slurm-wlm`` and ``munge`` when they are missing (as
root, through apt-get), writes a one-node ``slurm.conf`` into a temporary directory,
starts ``munged``, ``slurmctld`` and ``slurmd``, waits for the node to be idle, and
stops the daemons afterwards.  It skips (with the reason) when any of this is not
possible: not root, no apt, no network, daemons that do not come up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pipelines.batch import run_batch
from pipelines.io import open_dataset, write_zarr

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _ensure_installed() -> str | None:
    if shutil.which("slurmctld") and shutil.which("munged") and shutil.which("sbatch"):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = _run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], timeout=900, env=env)
    if r.returncode != 0:
        _run(["apt-get", "update", "-qq"], timeout=300, env=env)
        r = _run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], timeout=900, env=env)
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
    r = _run(
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
            r = _run(cmd, env=env)
            if r.returncode != 0:
                pytest.skip(f"{cmd[0]} did not start: {r.stderr.strip()[-300:]}")
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            s = _run(["sinfo", "-h", "-o", "%T"], env=env)
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
        _run(["scancel", "--user", "root"], env=env)
        for pid_file in (root / "slurmd.pid", root / "slurmctld.pid", munge_pid):
            pid = _pid(pid_file)
            if pid:
                procs.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        time.sleep(1)


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
