"""Shared scaffolding of the kill-and-resume tests of the batch runner: run a job module
in a fresh interpreter, SIGKILL it once enough completion markers exist, load the same
module in-process for the resume."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

from pipelines.batch import completed_shards


def load_job(directory: Path, name: str) -> ModuleType:
    """Import ``directory/<name>.py`` as module ``name`` (the caller pops it afterwards)."""
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def kill_mid_run(
    directory: Path, name: str, source: str, inp: Path, out: Path, *, after: int, poll: float = 0.01
) -> int:
    """Write ``source`` as ``directory/<name>.py``, run ``<name>.main(inp, out)`` in a
    subprocess, SIGKILL it once ``out`` has ``after`` completion markers, and return how
    many markers the killed run left."""
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    env = {
        **os.environ,
        "PYTHONPATH": f"{directory}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import {name}; {name}.main({str(inp)!r}, {str(out)!r})"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while len(completed_shards(out)) < after:
            if proc.poll() is not None:
                pytest.fail(f"batch job exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("batch job made no progress")
            time.sleep(poll)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return len(completed_shards(out))
