"""Helpers shared by the generators: size presets and argument checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SIZES = ("small", "large")


def check_size(size: Any, presets: Mapping[str, Any], name: str = "size") -> Any:
    """Resolve ``size``: a preset name or an explicit shape/count of the generator's kind."""
    if isinstance(size, str):
        if size not in presets:
            raise ValueError(
                f"{name}: expected one of {sorted(presets)} or an explicit size, got {size!r}"
            )
        return presets[size]
    return size


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def check_shape(shape: Any, ndim: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(
            f"{name}: expected a preset name or a shape of {ndim} integers, got {shape!r}"
        ) from None
    if len(out) != ndim or any(s < minimum for s in out):
        raise ValueError(f"{name}: expected {ndim} integers >= {minimum}, got {shape!r}")
    return out
