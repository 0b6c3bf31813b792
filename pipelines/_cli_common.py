"""What the Hydra applications ``learndock run`` and ``learndock solve`` share.

Both compose the same ``conf/`` directory with overrides, explain a mistyped key by
listing the valid ones, record the same provenance, write JSON the same way, turn user
errors into one line on stderr, and start Hydra the same way.  One implementation here;
:mod:`pipelines.cli_solve` uses it, and :mod:`pipelines.cli_run` can call the same
functions instead of its private copies (``_container``, ``_jsonable``, ``_versions``,
``_git_commit``, ``_explain``/``_valid_keys``, the Hydra state handling of
``compose_config``, the provenance dict of ``execute``, the error handling of ``_task``).

Examples
--------
>>> jsonable({"a": float("nan"), "b": (1, 2)})
{'a': None, 'b': [1, 2]}
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONF_DIR",
    "ConfigKeyError",
    "compose",
    "container",
    "explain_key_error",
    "git_commit",
    "hydra_app",
    "jsonable",
    "plugin_searchpath",
    "provenance",
    "report_user_errors",
    "versions",
    "write_json",
]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
"""The configuration directory of both applications."""


class ConfigKeyError(ValueError):
    """A config key that the schema does not have; the message lists the valid keys."""


# --------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------
def plugin_searchpath() -> list[str]:
    """Search-path entries contributed by plug-ins (entry-point group ``learndock.conf``)."""
    out = []
    for ep in metadata.entry_points(group="learndock.conf"):
        try:
            val = ep.load()
        except Exception:
            continue
        val = val() if callable(val) else val
        for v in [val] if isinstance(val, str) else list(val):
            out.append(v if "://" in str(v) else f"file://{v}")
    return out


def with_searchpath(overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus the plug-ins' ``hydra.searchpath`` (unless one is given)."""
    overrides = list(overrides)
    extra = plugin_searchpath()
    if not extra or any(o.startswith("hydra.searchpath") for o in overrides):
        return overrides
    return [*overrides, f"hydra.searchpath=[{','.join(extra)}]"]


def explain_key_error(exc: BaseException, schemas: Mapping[str, type]) -> str | None:
    """One line naming a mistyped key and the valid keys of its parent, or None when
    ``exc`` is not an unknown-key error of a node described by ``schemas``.

    Parameters
    ----------
    exc : BaseException
        The composition error (its causes are read too).
    schemas : mapping
        Dotted parent key (``""`` for the top level) -> the dataclass describing it.
    """
    text = str(exc)
    cause = exc.__cause__
    while cause is not None:
        text += "\n" + str(cause)
        cause = cause.__cause__
    m = re.search(r"full_key:\s*(\S+)", text) or re.search(r"Could not override '([^']+)'", text)
    if not m or not re.search(r"not in struct|Key '[^']*' (is )?not in", text):
        return None
    key = m.group(1)
    parent = ".".join(key.split(".")[:-1])
    schema = schemas.get(parent)
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    keys = [f.name for f in dataclasses.fields(schema)]
    if key.split(".")[-1] in keys:
        return None
    where = f"'{parent}'" if parent else "the top level"
    return f"unknown config key {key!r}: valid keys of {where} are {keys}"


_state: dict[str, Any] = {"hydra": None, "job": None}


def compose(
    config_name: str,
    overrides: Sequence[str] = (),
    *,
    job_name: str,
    schemas: Mapping[str, type] | None = None,
    return_hydra_config: bool = False,
) -> Any:
    """Compose ``conf/`` with overrides through Hydra's compose API.

    Hydra's global state is initialised once per ``job_name`` and reused while it is
    still the one set up here (a Hydra app or another job re-initialises it).  Plug-in
    config search paths are appended.

    Parameters
    ----------
    config_name : str
        Primary config (``"config"``, ``"learndock_solve_config"``).
    overrides : sequence of str
        Hydra overrides.
    job_name : str
        Hydra job name.
    schemas : mapping, optional
        Parent key -> dataclass, to explain unknown keys (:func:`explain_key_error`).
    return_hydra_config : bool
        Keep the ``hydra`` node.

    Returns
    -------
    omegaconf.DictConfig

    Raises
    ------
    ConfigKeyError
        A key that the schema does not have; the message lists the valid keys.
    hydra.errors.HydraException
        Any other composition error.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if not (gh.is_initialized() and gh.hydra is _state["hydra"] and _state["job"] == job_name):
        if gh.is_initialized():
            gh.clear()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=job_name)
        _state.update(hydra=gh.hydra, job=job_name)
    try:
        return hydra_compose(
            config_name=config_name,
            overrides=with_searchpath(overrides),
            return_hydra_config=return_hydra_config,
        )
    except Exception as exc:
        msg = explain_key_error(exc, schemas or {})
        if msg:
            raise ConfigKeyError(msg) from exc
        raise


def container(cfg: Any) -> dict[str, Any]:
    """A composed config as plain data (the ``hydra`` node left out, interpolations
    resolved; a missing mandatory value raises ``omegaconf.MissingMandatoryValue``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        if "hydra" in cfg:
            cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    return dict(cfg)


# --------------------------------------------------------------------------------------
# provenance and JSON
# --------------------------------------------------------------------------------------
def jsonable(v: Any) -> Any:
    """Plain JSON data: numpy/torch values to lists or scalars (arrays over 64 values as
    a ``"array(shape)"`` note), non-finite floats to None, anything else to ``str``."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return jsonable(v.item())
    if isinstance(v, np.ndarray):
        return jsonable(v.tolist()) if v.size <= 64 else f"array{v.shape}"
    if hasattr(v, "detach") and hasattr(v, "numel"):
        return jsonable(v.detach().cpu().numpy())
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``jsonable(obj)`` as indented JSON; returns the path."""
    p = Path(path)
    p.write_text(json.dumps(jsonable(obj), indent=2))
    return p


def git_commit() -> str | None:
    """The commit of the checkout the code runs from (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=CONF_DIR.parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a run's results."""
    out = {"python": platform.python_version()}
    for pkg in ("learndock", "torch", "numpy", "hydra-core", "zarr", "astropy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(
    app: str,
    *,
    started: str,
    seconds: float,
    output_dir: str | Path,
    overrides: Sequence[str] | None,
    config: Mapping[str, Any],
    threads: Any,
    seed: int,
    device: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``provenance.json`` of a run folder.

    Parameters
    ----------
    app : str
        ``"learndock_run"`` or ``"learndock_solve"`` (the key of the timing record).
    started : str
        ISO start time (UTC).
    seconds : float
        Wall time of the run.
    output_dir : path
        The run folder.
    overrides : sequence of str
        The command-line overrides.
    config : mapping
        The resolved config.
    threads, seed, device
        Execution settings.
    **extra
        Further entries (``pipeline``, ``data``, ``task_id`` ...), in this order after
        ``config``.

    Examples
    --------
    >>> p = provenance("learndock_run", started="t", seconds=1.0, output_dir=".",
    ...                overrides=["a=1"], config={}, threads=2, seed=0)
    >>> sorted(p)[:4]
    ['config', 'git_commit', 'learndock_run', 'overrides']
    """
    out: dict[str, Any] = {
        app: {
            "started": started,
            "seconds": round(float(seconds), 3),
            "output_dir": str(Path(output_dir).resolve()),
        },
        "overrides": list(overrides or []),
        "config": dict(config),
        **extra,
        "versions": versions(),
        "git_commit": git_commit(),
        "platform": {
            "machine": platform.machine(),
            "system": platform.system(),
            "node": platform.node(),
        },
        "threads": threads,
        "seed": int(seed),
    }
    if device is not None:
        out["device"] = str(device)
    return out


def now_utc() -> str:
    """The current time, ISO format, UTC."""
    return _dt.datetime.now(_dt.UTC).isoformat()


# --------------------------------------------------------------------------------------
# running as a Hydra application
# --------------------------------------------------------------------------------------
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError, OSError)
"""Errors that mean a wrong input, reported as one line (``HYDRA_FULL_ERROR=1`` shows the
stack)."""


def report_user_errors(
    prog: str, fn: Callable[[], Any], *, errors: tuple[type[BaseException], ...] = USER_ERRORS
) -> Any:
    """Run ``fn``; a user error becomes ``"<prog>: error: <message>"`` on stderr and exit
    status 1 (unless ``HYDRA_FULL_ERROR=1``).

    Examples
    --------
    >>> report_user_errors("demo", lambda: 3)
    3
    """
    try:
        return fn()
    except errors as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def hydra_app(config_name: str, task: Callable[[Any], None]) -> Callable[[], Any]:
    """``hydra.main`` over ``conf/`` for ``task``, with the plug-ins' search path added
    to ``sys.argv`` and a clean Hydra state (compose calls may have set one up)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    extra = plugin_searchpath()
    if extra and not any(a.startswith("hydra.searchpath") for a in sys.argv[1:]):
        sys.argv.append(f"hydra.searchpath=[{','.join(extra)}]")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    _state.update(hydra=None, job=None)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)
