"""Install a plug-in into an isolated directory and run commands that see it (test helper).

learndock's own tests install plug-ins (the scaffold's output, ``docs/examples/flarelab``)
with ``pip install --target DIR --no-deps --no-build-isolation`` into a temporary
directory, then run ``pytest`` and ``learndock`` in subprocesses whose ``PYTHONPATH``
starts with that directory.  Entry points, Hydra plugins and package data are found
exactly as after a normal install, but the shared environment is never modified: there is
nothing to uninstall, and parallel test runs of other packages never see the plug-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["PluginEnv", "install_plugin"]


class PluginEnv:
    """A directory with an installed plug-in and the environment to run commands in."""

    def __init__(self, site: Path, base_env: Mapping[str, str] | None = None) -> None:
        self.site = Path(site)
        env = dict(os.environ if base_env is None else base_env)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(self.site), *filter(None, [env.get("PYTHONPATH", "")])]
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("LEARNDOCK_THREADS", "1")
        env.pop("PYTEST_ADDOPTS", None)
        self.env = env

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 300,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (``"python"`` and ``"learndock"`` map to this interpreter)."""
        argv = list(args)
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "learndock":
            argv = [sys.executable, "-m", "pipelines.cli", *argv[1:]]
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"command {' '.join(map(str, args))} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
            )
        return proc


def install_plugin(
    source: str | os.PathLike[str], workdir: str | os.PathLike[str]
) -> tuple[Path, PluginEnv]:
    """Copy a plug-in's source tree into ``workdir`` and install it into ``workdir/site``.

    Returns
    -------
    (Path, PluginEnv)
        The copied source tree (run its tests there) and the environment that sees it.

    Raises
    ------
    AssertionError
        If pip fails (its output is in the message).
    """
    workdir = Path(workdir)
    src = workdir / Path(source).name
    shutil.copytree(
        source,
        src,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    site = workdir / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(site),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"pip install of {source} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return src, PluginEnv(site)
