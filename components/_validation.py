"""Shared input validation for every public component function.

Every public function validates at its boundary through these helpers so that the
errors read the same everywhere: they name the parameter, say what was expected and
what was received.  Nothing here casts silently: integer images are converted only by
:func:`as_float_tensor`, whose rule is documented, and NaNs are never dropped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "as_float_tensor",
    "check_axes",
    "check_finite",
    "check_in",
    "check_ndim",
    "check_nonempty",
    "check_positive",
    "check_range",
    "check_same_length",
]


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:200]


def as_float_tensor(
    x: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    allow_nan: bool = True,
) -> torch.Tensor:
    """Return ``x`` as a floating tensor, converting by a documented rule.

    Rules: floating tensors and arrays keep their dtype (float16/bfloat16 are promoted
    to float32, since the reductions used by the components lose too much precision in
    half precision); integer and boolean inputs are converted to float32 *by value*
    (``uint16`` 1000 becomes ``1000.0``: never rescaled, never wrapped); complex inputs
    are rejected.

    Parameters
    ----------
    x : array_like or Tensor
        The input.
    name : str
        Parameter name used in error messages.
    dtype : torch.dtype, optional
        Force this floating dtype.
    device : torch.device or str, optional
        Move to this device (default: keep the tensor's device, CPU for arrays).
    allow_nan : bool
        If False, raise when ``x`` holds NaN or inf.

    Returns
    -------
    Tensor

    Raises
    ------
    TypeError
        If ``x`` is not numeric or is complex.
    ValueError
        If NaN/inf are present and not allowed.

    Examples
    --------
    >>> import numpy as np
    >>> as_float_tensor(np.array([1, 2], dtype=np.uint16), "image").dtype
    torch.float32
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - defensive
            raise TypeError(f"{name}: expected an array or tensor, got {_describe(x)}") from exc
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise TypeError(f"{name}: expected a numeric array, got {_describe(x)}")
        if arr.dtype.kind == "f" and arr.dtype.itemsize == 2:
            arr = arr.astype(np.float32)
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float32)
        t = torch.as_tensor(np.ascontiguousarray(arr))
    if t.is_complex():
        raise TypeError(f"{name}: expected a real-valued input, got {_describe(t)}")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    if dtype is not None:
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    if not allow_nan:
        check_finite(t, name)
    return t


def check_finite(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``x`` contains NaN or inf."""
    bad = ~torch.isfinite(x) if isinstance(x, torch.Tensor) else ~np.isfinite(x)
    n = int(bad.sum())
    if n:
        raise ValueError(
            f"{name}: expected finite values, got {n} NaN/inf of {x.size if isinstance(x, np.ndarray) else x.numel()} entries"
        )


def check_ndim(
    x: torch.Tensor | np.ndarray, name: str, ndims: int | Sequence[int], axes: str | None = None
) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is one of ``ndims``."""
    allowed = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if x.ndim not in allowed:
        hint = f" (axes {axes})" if axes else ""
        raise ValueError(
            f"{name}: expected {' or '.join(f'{d}-D' for d in allowed)} input{hint}, "
            f"got {_describe(x)}"
        )


def check_nonempty(x: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has no elements."""
    size = x.numel() if isinstance(x, torch.Tensor) else x.size
    if size == 0:
        raise ValueError(f"{name}: expected a non-empty input, got {_describe(x)}")


def check_positive(value: float, name: str, *, strict: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (>= 0 if not strict)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a number, got {value!r}") from exc
    if not math.isfinite(v) or (v <= 0 if strict else v < 0):
        raise ValueError(
            f"{name}: expected a {'positive' if strict else 'non-negative'} finite number, got {value!r}"
        )


def check_range(
    value: float, name: str, low: float | None = None, high: float | None = None
) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high``."""
    v = float(value)
    if (low is not None and v < low) or (high is not None and v > high) or math.isnan(v):
        raise ValueError(f"{name}: expected a value in [{low}, {high}], got {value!r}")


def check_in(value: Any, name: str, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def check_same_length(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` if ``len(a) != len(b)``."""
    if len(a) != len(b):
        raise ValueError(
            f"{name_a} and {name_b}: expected the same length, got {len(a)} and {len(b)}"
        )


def check_axes(axes: str, name: str, allowed: str = "tczyx") -> None:
    """Raise ``ValueError`` unless ``axes`` is a string of distinct letters from ``allowed``."""
    if not isinstance(axes, str) or len(set(axes)) != len(axes) or set(axes) - set(allowed):
        raise ValueError(f"{name}: expected distinct axis letters from {allowed!r}, got {axes!r}")
