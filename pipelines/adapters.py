"""Port schemas and the mechanical adapters that a :class:`~pipelines.pipeline.Pipeline` inserts.

Two stages fit together when the schema of the producer's output (axes, dtype, units,
sampling rate) matches the schema of the consumer's input.  Some mismatches are
*mechanical*: they have exactly one sensible fix that loses nothing.  For those the
pipeline inserts an :class:`Adapter` stage and reports it; every other mismatch is an
error raised before anything runs.

=====================  ==================================================================
mismatch               adapter step
=====================  ==================================================================
units                  multiply by the astropy conversion factor (``"ms"`` -> ``"s"``)
dtype                  integer/bool -> floating (by value, never rescaled); floating
                       dtypes are one family and are not cast (float32/float64 preserved)
axis order             permute (``"yxt"`` -> ``"tyx"``)
one singleton axis     unsqueeze an axis the consumer wants, or squeeze one it does not
                       (checked to be of length 1 at run time)
time base              linear resampling along ``t`` (rates in samples per time unit)
=====================  ==================================================================

Not mechanical (an error naming both stages): axes that differ in more than one letter or
on both sides, units of different physical dimensions, floating -> integer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "Adapter",
    "IncompatibleStagesError",
    "PortSchema",
    "plan_adapter",
]

_FLOAT = {"float16", "bfloat16", "float32", "float64"}
_INT = {"int16", "int32", "int64", "uint8", "uint16", "bool"}
_TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class IncompatibleStagesError(ValueError):
    """Two consecutive stages whose schemas cannot be reconciled mechanically."""


@dataclasses.dataclass(frozen=True)
class PortSchema:
    """Schema of one stage input or output.

    Parameters
    ----------
    axes : str
        Axis letters (``"tyx"``, ``"tmc"``, ``"t"``); a leading ``"*"`` accepts any
        leading batch axes.
    dtype : str
        Element dtype name or ``"any"``.
    units : str, optional
        Physical units as an astropy unit string.
    rate : float, optional
        Sampling rate along ``t`` (samples per time unit), when the port carries a time
        series on a regular grid.
    """

    axes: str
    dtype: str = "any"
    units: str | None = None
    rate: float | None = None

    @classmethod
    def coerce(cls, obj: Any, where: str = "schema") -> PortSchema | None:
        """Build from a PortSchema, a ``specs.semantic.TensorSchema``, a mapping or None."""
        if obj is None or isinstance(obj, PortSchema):
            return obj
        if hasattr(obj, "model_dump"):  # pydantic TensorSchema
            d = obj.model_dump()
            return cls(axes=d["axes"], dtype=d.get("dtype", "any"), units=d.get("units"))
        if isinstance(obj, str):
            return cls(axes=obj)
        if isinstance(obj, Mapping):
            d = {k: v for k, v in dict(obj).items() if k != "description"}
            unknown = set(d) - {"axes", "dtype", "units", "rate"}
            if unknown or "axes" not in d:
                raise ValueError(
                    f"{where}: expected keys axes (required), dtype, units, rate; got {sorted(dict(obj))}"
                )
            return cls(
                axes=str(d["axes"]),
                dtype=str(d.get("dtype") or "any"),
                units=None if d.get("units") in (None, "") else str(d["units"]),
                rate=None if d.get("rate") is None else float(d["rate"]),
            )
        raise TypeError(
            f"{where}: expected a schema mapping {{axes, dtype, units, rate}}, got {type(obj).__name__}"
        )

    @property
    def body(self) -> str:
        return self.axes[1:] if self.axes.startswith("*") else self.axes

    @property
    def batched(self) -> bool:
        return self.axes.startswith("*")

    def __str__(self) -> str:
        parts = [f"axes={self.axes!r}", f"dtype={self.dtype}"]
        if self.units:
            parts.append(f"units={self.units}")
        if self.rate:
            parts.append(f"rate={self.rate:g}")
        return "(" + ", ".join(parts) + ")"


# --------------------------------------------------------------------------------------
# adapter steps: small differentiable tensor maps
# --------------------------------------------------------------------------------------
def _scale(x: torch.Tensor, *, factor: float) -> torch.Tensor:
    return x * factor


def _cast(x: torch.Tensor, *, dtype: str) -> torch.Tensor:
    if x.is_floating_point():
        return x
    return x.to(_TORCH_DTYPES.get(dtype, torch.get_default_dtype()))


def _permute(x: torch.Tensor, *, perm: tuple[int, ...]) -> torch.Tensor:
    lead = x.ndim - len(perm)
    if lead < 0:
        raise ValueError(
            f"adapter permute: expected at least {len(perm)} axes, got a tensor of shape {tuple(x.shape)}"
        )
    return x.permute(*range(lead), *(lead + p for p in perm))


def _squeeze(x: torch.Tensor, *, axis: int, letter: str) -> torch.Tensor:
    ax = axis if axis >= 0 else x.ndim + axis
    if x.shape[ax] != 1:
        raise ValueError(
            f"adapter squeeze: axis {letter!r} must have length 1 to be dropped, got shape {tuple(x.shape)}"
        )
    return x.squeeze(ax)


def _unsqueeze(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    return x.unsqueeze(axis if axis >= 0 else x.ndim + 1 + axis)


def resample_linear(
    x: torch.Tensor, *, axis: int, src_rate: float, dst_rate: float
) -> torch.Tensor:
    """Resample ``x`` along ``axis`` from ``src_rate`` to ``dst_rate`` by linear interpolation.

    The first sample keeps its time stamp; the output covers the input's time span.
    Differentiable in ``x``; NaNs propagate to the neighbouring output samples.
    """
    ax = axis if axis >= 0 else x.ndim + axis
    n = x.shape[ax]
    if n < 2:
        raise ValueError(
            f"adapter resample: need at least 2 samples along the time axis, got shape {tuple(x.shape)}"
        )
    duration = (n - 1) / src_rate
    m = round(duration * dst_rate) + 1
    t_new = torch.arange(m, device=x.device, dtype=torch.float64) / dst_rate * src_rate
    t_new = t_new.clamp(max=n - 1)
    i0 = t_new.floor().long().clamp(max=n - 2)
    w = (t_new - i0).to(x.dtype if x.is_floating_point() else torch.float32)
    xm = x.movedim(ax, -1)
    a = xm.index_select(-1, i0)
    b = xm.index_select(-1, i0 + 1)
    return (a + (b - a) * w).movedim(-1, ax)


_STEP_FUNCS: dict[str, Any] = {
    "scale": _scale,
    "cast": _cast,
    "permute": _permute,
    "squeeze": _squeeze,
    "unsqueeze": _unsqueeze,
    "resample": resample_linear,
}


class Adapter(nn.Module):
    """A stage the pipeline inserts between two stages to fix a mechanical mismatch.

    Parameters
    ----------
    steps : list of (kind, kwargs)
        Applied in order; kinds: ``scale``, ``cast``, ``permute``, ``squeeze``,
        ``unsqueeze``, ``resample``.
    reasons : list of str
        One human-readable line per step (what was wrong and what is done).

    Examples
    --------
    >>> a = Adapter([("permute", {"perm": (2, 0, 1)})], ["axes 'yxt' -> 'tyx'"])
    >>> a(torch.zeros(4, 5, 3)).shape
    torch.Size([3, 4, 5])
    """

    differentiable = True
    footprint = 0

    def __init__(self, steps: list[tuple[str, dict[str, Any]]], reasons: list[str]) -> None:
        super().__init__()
        for kind, _ in steps:
            if kind not in _STEP_FUNCS:
                raise ValueError(
                    f"Adapter: unknown step {kind!r}; expected one of {sorted(_STEP_FUNCS)}"
                )
        self.steps = [(k, dict(kw)) for k, kw in steps]
        self.reasons = list(reasons)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Adapter: expected a tensor, got {type(x).__name__}")
        for kind, kw in self.steps:
            x = _STEP_FUNCS[kind](x, **kw)
        return x

    def describe(self) -> str:
        return "; ".join(self.reasons)

    def extra_repr(self) -> str:
        return self.describe()


# --------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------
def _units_factor(src: str, dst: str) -> float:
    from astropy import units as u

    try:
        return float(u.Unit(src).to(u.Unit(dst)))
    except (u.UnitConversionError, u.UnitsError, ValueError) as exc:
        raise IncompatibleStagesError(
            f"units {src!r} cannot be converted to {dst!r} ({exc})"
        ) from exc


def plan_adapter(
    src: PortSchema | None, dst: PortSchema | None
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The adapter steps that turn data of schema ``src`` into schema ``dst``.

    Returns
    -------
    steps, reasons : list, list
        Empty when the schemas already agree (or one of them is unknown).

    Raises
    ------
    IncompatibleStagesError
        If the mismatch is not mechanical; the message says which field differs and how.

    Examples
    --------
    >>> steps, why = plan_adapter(PortSchema("tyx", units="ms"), PortSchema("tyx", units="s"))
    >>> steps[0][0], round(steps[0][1]["factor"], 6)
    ('scale', 0.001)
    """
    steps: list[tuple[str, dict[str, Any]]] = []
    reasons: list[str] = []
    if src is None or dst is None:
        return steps, reasons
    # units
    if src.units and dst.units and src.units != dst.units:
        f = _units_factor(src.units, dst.units)
        if f != 1.0:
            steps.append(("scale", {"factor": f}))
        reasons.append(f"units {src.units} -> {dst.units} (x{f:g})")
    # dtype
    if src.dtype != "any" and dst.dtype != "any" and src.dtype != dst.dtype:
        if src.dtype in _FLOAT and dst.dtype in _INT:
            raise IncompatibleStagesError(
                f"dtype {src.dtype} cannot be fed to an input declared {dst.dtype} (floating -> integer loses values)"
            )
        if src.dtype in _INT and dst.dtype in _FLOAT:
            steps.append(("cast", {"dtype": dst.dtype}))
            reasons.append(f"dtype {src.dtype} -> {dst.dtype} (by value, not rescaled)")
    # axes
    s_axes, d_axes = src.body, dst.body
    if s_axes != d_axes:
        extra = [a for a in s_axes if a not in d_axes]
        missing = [a for a in d_axes if a not in s_axes]
        if dst.batched and not missing:
            extra = []  # the consumer accepts any leading batch axes
        if (extra and missing) or len(extra) > 1 or len(missing) > 1:
            raise IncompatibleStagesError(
                f"axes {src.axes!r} do not match {dst.axes!r}"
                + (f": axes {''.join(extra)!r} are not consumed" if extra else "")
                + (
                    f"{' and' if extra else ':'} axes {''.join(missing)!r} are not produced"
                    if missing
                    else ""
                )
                + " (only a permutation or one singleton axis is adapted automatically)"
            )
        cur = s_axes
        if extra and not dst.batched:
            ax = cur.index(extra[0])
            steps.append(("squeeze", {"axis": ax - len(cur), "letter": extra[0]}))
            reasons.append(
                f"drop singleton axis {extra[0]!r} ({src.axes!r} -> {cur.replace(extra[0], '')!r})"
            )
            cur = cur.replace(extra[0], "")
        if missing:
            # put the new axis where the consumer expects it relative to the others
            target = [a for a in d_axes if a in cur or a == missing[0]]
            pos = target.index(missing[0])
            steps.append(("unsqueeze", {"axis": pos - len(cur) - 1 if pos < len(cur) else -1}))
            cur = cur[:pos] + missing[0] + cur[pos:]
            reasons.append(f"add singleton axis {missing[0]!r} (-> {cur!r})")
        order = [a for a in cur if a in d_axes]
        lead = [a for a in cur if a not in d_axes]
        if order != list(d_axes):
            trailing = lead + list(d_axes)
            perm = tuple(cur.index(a) for a in trailing)
            steps.append(("permute", {"perm": perm}))
            reasons.append(f"axis order {cur!r} -> {''.join(trailing)!r}")
    # time base
    if src.rate and dst.rate and abs(src.rate - dst.rate) > 1e-9 * max(src.rate, dst.rate):
        if "t" not in d_axes:
            raise IncompatibleStagesError(
                f"rates {src.rate:g} and {dst.rate:g} differ but {dst.axes!r} has no time axis 't'"
            )
        ax = d_axes.index("t") - len(d_axes)
        steps.append(
            ("resample", {"axis": ax, "src_rate": float(src.rate), "dst_rate": float(dst.rate)})
        )
        reasons.append(
            f"time base {src.rate:g} -> {dst.rate:g} samples per unit (linear resampling)"
        )
    return steps, reasons
