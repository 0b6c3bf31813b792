"""What a learnware submission must pass, as small reusable checks.

Each check returns a list of :class:`Problem` s (empty when it passes) instead of
raising, so that ``learndock registry verify`` can report every problem of a package at
once, in words a lab can act on.  :func:`specs.package.verify_package` and
:meth:`specs.registry.Registry.submit` run them in this order:

1. layout: ``learnware.yaml`` present, members have safe relative paths (no absolute
   paths, no ``..``, no links, no oversize members), required files present;
2. manifest: format, semantic spec (vocabulary), component discovered through the
   allow-list, params plain data;
3. integrity: the sha256 of every file matches the manifest and no file is unlisted;
4. contents: the RKME and the example arrays load without pickle and are consistent;
5. behaviour (``test``): the component, instantiated through the allow-list, reproduces
   the expected example output within tolerance and within a time limit.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import numpy as np

__all__ = [
    "MAX_MEMBER_BYTES",
    "MAX_TOTAL_BYTES",
    "Problem",
    "SubmissionError",
    "compare_outputs",
    "safe_member_name",
    "run_with_timeout",
]

MAX_MEMBER_BYTES = 512 * 1024**2
"""Largest single file a package may hold (weights included)."""
MAX_TOTAL_BYTES = 1024**3
"""Largest total size of a package."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a package.

    Attributes
    ----------
    code : str
        Stable machine-readable code (``missing-file``, ``hash-mismatch``, ``unsafe-path``,
        ``unknown-component``, ``bad-spec``, ``example-mismatch``, ...).
    where : str
        The file or manifest field concerned.
    message : str
        What is wrong and what to do about it.
    """

    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message} [{self.code}]"


class SubmissionError(ValueError):
    """A package was rejected; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem], what: str = "package rejected") -> None:
        self.problems = list(problems)
        head = "; ".join(str(p) for p in self.problems[:3])
        more = f" (+{len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        super().__init__(f"{what}: {head}{more}")


def safe_member_name(name: str) -> str | None:
    """Why a package member name is unsafe, or None if it is a safe relative path.

    Examples
    --------
    >>> safe_member_name("example/input.npz") is None
    True
    >>> safe_member_name("../evil.py")
    "contains '..'"
    """
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if "\x00" in name:
        return "contains a NUL byte"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "contains '..'"
    return None


def compare_outputs(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], *, rtol: float, atol: float
) -> list[Problem]:
    """Compare example outputs key by key; report expected vs got for each mismatch."""
    problems: list[Problem] = []
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing:
        problems.append(
            Problem(
                "example-mismatch",
                "example/expected.npz",
                f"the component did not produce outputs {missing} (got {sorted(got)})",
            )
        )
    if extra:
        problems.append(
            Problem(
                "example-mismatch",
                "example/expected.npz",
                f"the component produced outputs {extra} that expected.npz lacks",
            )
        )
    for k in sorted(set(expected) & set(got)):
        e, g = np.asarray(expected[k]), np.asarray(got[k])
        if e.shape != g.shape:
            problems.append(
                Problem(
                    "example-mismatch",
                    f"example/expected.npz[{k}]",
                    f"expected shape {e.shape}, got {g.shape}",
                )
            )
            continue
        if e.dtype.kind in "fc" or g.dtype.kind in "fc":
            e64, g64 = e.astype(np.float64), g.astype(np.float64)
            ok = np.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
            if not ok.all():
                bad = np.argwhere(~ok)[0]
                i = tuple(int(v) for v in bad)
                err = float(np.nanmax(np.abs(g64 - e64))) if e.size else 0.0
                problems.append(
                    Problem(
                        "example-mismatch",
                        f"example/expected.npz[{k}]",
                        f"output does not reproduce: {int((~ok).sum())} of {ok.size} values differ beyond rtol={rtol:g}, atol={atol:g} "
                        f"(max abs error {err:.3g}; at index {list(i)} expected {e64[i]:.6g}, got {g64[i]:.6g})",
                    )
                )
        elif not np.array_equal(e, g):
            problems.append(
                Problem(
                    "example-mismatch",
                    f"example/expected.npz[{k}]",
                    f"expected {e.ravel()[:5].tolist()}..., got {g.ravel()[:5].tolist()}...",
                )
            )
    return problems


def run_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in a worker thread and wait at most ``timeout`` seconds.

    Raises
    ------
    TimeoutError
        If it did not finish in time (the worker is abandoned as a daemon thread).
    """
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True, name="learndock-example")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"the example did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
