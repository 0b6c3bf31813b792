"""Install a plug-in into an isolated directory and run commands that see it (test helper).

learndock's own tests install plug-ins (the scaffold's output, ``docs/examples/flarelab``)
with ``pip install --target DIR --no-deps --no-build-isolation`` into a temporary
directory, then run ``pytest`` and ``learndock`` in subprocesses whose ``PYTHONPATH``
starts with that directory.  Entry points, Hydra plugins and package data are found
exactly as after a normal install, but the shared environment is never modified: there is
nothing to uninstall, and parallel test runs of other packages never see the plug-in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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

    def cli(
        self,
        commands: Sequence[Sequence[Any]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 600,
        env_vars: Mapping[str, str] | None = None,
    ) -> list[tuple[int, str]]:
        """Run several ``learndock`` commands in ONE subprocess (one interpreter start-up).

        Each command (the arguments after ``learndock``) runs through the typer app with
        typer's ``CliRunner``; ``registry`` commands fall back to the Python API of
        :mod:`specs.package` / :mod:`specs.registry` while ``pipelines.cli_registry`` does
        not exist.  Returns ``(exit code, output)`` per command.
        """
        script = _CLI_SCRIPT.replace(
            "__COMMANDS__", repr(json.dumps([list(map(str, c)) for c in commands]))
        )
        proc = self.run(["python", "-c", script], cwd=cwd, timeout=timeout, env=env_vars)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULTS@@")][-1]
        return [(int(code), str(out)) for code, out in json.loads(line[len("@@RESULTS@@") :])]


_CLI_SCRIPT = r"""
import importlib.util, json, traceback
from typer.testing import CliRunner
from pipelines import cli
cli._assemble()
runner = CliRunner()
has_cli_registry = importlib.util.find_spec("pipelines.cli_registry") is not None

def api(args):
    import numpy as np
    from specs.package import test_package, verify_package
    from specs.registry import Registry
    action, target, opts = args[1], args[2] if len(args) > 2 else None, args[3:]
    kw = dict(o[2:].split("=", 1) for o in opts if o.startswith("--") and "=" in o)
    if action == "verify":
        problems = verify_package(target)
        return (1 if problems else 0), "\n".join(map(str, problems)) or "ok"
    if action == "test":
        r = test_package(target)
        return (0 if r.ok else 1), "\n".join(map(str, r.problems)) or "ok"
    if action == "submit":
        return 0, str(Registry().submit(target))
    if action == "search":
        data = kw.pop("data", None)
        hits = Registry().search(data=None if data is None else np.load(data), **kw)
        return 0, "\n".join(f"{h.name} {h.score:.3f}" for h in hits)
    return 2, f"unsupported without pipelines.cli_registry: {args}"

results = []
for args in json.loads(__COMMANDS__):
    if args[0] == "registry" and not has_cli_registry:
        try:
            results.append(api(args))
        except Exception:
            results.append((1, traceback.format_exc()))
        continue
    res = runner.invoke(cli.app, args)
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "".join(traceback.format_exception(res.exception))
    results.append((res.exit_code, out))
print("@@RESULTS@@" + json.dumps(results))
"""


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
