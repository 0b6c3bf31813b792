"""Input validation helpers for plug-in authors (the same ones the built-ins use).

Validate at your component function's public boundary so that errors read like the
built-ins': they name the parameter, say what was expected and what was received::

    from learndock.validation import as_float_tensor, check_nonempty, check_positive

    def my_filter(x, *, sigma=1.0):
        x = as_float_tensor(x, "x")
        check_nonempty(x, "x")
        check_positive(sigma, "sigma")
        ...

This module is the stable, public re-export of ``components._validation``.
"""

from __future__ import annotations

from components._validation import (
    as_float_tensor,
    check_axes,
    check_finite,
    check_in,
    check_ndim,
    check_nonempty,
    check_positive,
    check_range,
    check_same_length,
)

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
