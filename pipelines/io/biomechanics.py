"""Motion capture: C3D files (ezc3d) and their Zarr twin.

Marker trajectories come back as ``points`` with axes ``(t, marker, xyz)`` in the file's
length unit, occluded samples as NaN; analog channels as ``analogs`` with axes
``(t, channel)`` at their own rate.  ``attrs`` carries ``rate``, ``analog_rate``,
``labels``, ``analog_labels``, ``first_frame`` and ``units``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from pipelines.io.core import CorruptFileError, Dataset, file_checksum

__all__ = ["check_c3d_header", "read_c3d", "read_motion_zarr", "write_c3d", "write_motion_zarr"]

POINT_AXES = ("t", "marker", "xyz")
ANALOG_AXES = ("t", "channel")


def check_c3d_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate the 512-byte C3D header before handing the file to ezc3d.

    Returns the decoded header fields.

    Raises
    ------
    CorruptFileError
        If the file is shorter than its header says, the C3D key byte (0x50) is missing,
        the frame range is reversed, the rate is not positive, or the parameter or data
        section starts beyond the end of the file.
    """
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(512)
        if len(head) < 512:
            raise CorruptFileError(f"{p}: C3D header needs 512 bytes, the file has {len(head)}")
        param_block = head[0]
        if head[1] != 0x50:
            raise CorruptFileError(
                f"{p}: not a C3D file: byte 2 of the header must be 0x50, got {head[1]:#04x}"
            )
        if param_block < 2 or param_block * 512 > size:
            raise CorruptFileError(
                f"{p}: impossible C3D header: parameter section at block {param_block}, file has {size // 512} blocks"
            )
        f.seek((param_block - 1) * 512)
        phead = f.read(4)
    processor = phead[3] if len(phead) == 4 else 84
    if processor not in (84, 85, 86):
        raise CorruptFileError(
            f"{p}: impossible C3D parameter header: processor type {processor} (expected 84 Intel, 85 DEC, 86 MIPS)"
        )
    endian = ">" if processor == 86 else "<"
    n_points, n_analog, first, last = struct.unpack(endian + "4H", head[2:10])
    data_start = struct.unpack(endian + "H", head[16:18])[0]
    scale = struct.unpack(endian + "f", head[12:16])[0] if processor != 85 else None
    rate = struct.unpack(endian + "f", head[20:24])[0] if processor != 85 else None
    if last < first:
        raise CorruptFileError(
            f"{p}: impossible C3D header: last frame {last} < first frame {first}"
        )
    if rate is not None and not (np.isfinite(rate) and rate > 0):
        raise CorruptFileError(
            f"{p}: impossible C3D header: point rate {rate!r} (expected a positive number)"
        )
    if data_start < 2 or (data_start - 1) * 512 > size:
        raise CorruptFileError(
            f"{p}: impossible C3D header: data section at block {data_start}, file has {size // 512} blocks"
        )
    if scale is not None and not np.isfinite(scale):
        raise CorruptFileError(f"{p}: impossible C3D header: point scale {scale!r}")
    return {
        "n_points": n_points,
        "analogs_per_frame": n_analog,
        "first_frame": first,
        "last_frame": last,
        "rate": rate,
        "processor": processor,
    }


def _param(c3d: Any, group: str, name: str, default: Any = None) -> Any:
    try:
        return c3d["parameters"][group][name]["value"]
    except KeyError:
        return default


def read_c3d(path: str | os.PathLike[str]) -> Dataset:
    """Read a C3D file: marker trajectories, analog channels and their metadata.

    Returns
    -------
    Dataset
        ``data = {"points": (t, marker, xyz), "analogs": (t_analog, channel)}``,
        ``modality="biomechanics"``; ``attrs``: ``rate`` (Hz), ``analog_rate`` (Hz),
        ``labels``, ``analog_labels``, ``analog_units``, ``first_frame``,
        ``n_frames``, ``occluded_fraction``.

    Raises
    ------
    CorruptFileError
        For an impossible header (see :func:`check_c3d_header`) or a file ezc3d rejects.
    """
    import ezc3d

    p = Path(path)
    header = check_c3d_header(p)
    try:
        c = ezc3d.c3d(str(p), extract_forceplat_data=False)
    except Exception as exc:
        raise CorruptFileError(f"{p}: ezc3d cannot read the C3D file ({exc})") from exc
    pts = np.asarray(c["data"]["points"], dtype=np.float64)  # (4, marker, frame)
    points = np.ascontiguousarray(pts[:3].transpose(2, 1, 0))
    meta = c["data"].get("meta_points", {})
    residuals = meta.get("residuals") if isinstance(meta, Mapping) else None
    if residuals is not None and np.shape(residuals)[-2:] == pts.shape[1:]:
        occluded = np.asarray(residuals).reshape(pts.shape[1:]).T < 0
        points[occluded] = np.nan
    analogs = np.asarray(c["data"]["analogs"], dtype=np.float64)
    analogs = np.ascontiguousarray(analogs[0].T) if analogs.size else np.zeros((0, 0))
    rate = float(np.ravel(_param(c, "POINT", "RATE", [c["header"]["points"]["frame_rate"]]))[0])
    analog_rate = float(
        np.ravel(_param(c, "ANALOG", "RATE", [c["header"]["analogs"]["frame_rate"]]) or [0.0])[0]
    )
    units = list(_param(c, "POINT", "UNITS", ["mm"]) or ["mm"])
    labels = [str(s).strip() for s in _param(c, "POINT", "LABELS", [])][: points.shape[1]]
    analog_labels = [str(s).strip() for s in _param(c, "ANALOG", "LABELS", [])][: analogs.shape[1]]
    analog_units = [str(s).strip() for s in _param(c, "ANALOG", "UNITS", [])][: analogs.shape[1]]
    first = int(c["header"]["points"]["first_frame"])
    data = {
        "points": da.from_array(points, chunks=(min(len(points), 4096), -1, -1)),
        "analogs": da.from_array(analogs),
    }
    return Dataset(
        data=data,
        axes={"points": POINT_AXES, "analogs": ANALOG_AXES},
        units={
            "xyz": units[0],
            "t": "s",
            "points": units[0],
            **(
                {"analogs": analog_units[0]} if analog_units and len(set(analog_units)) == 1 else {}
            ),
        },
        modality="biomechanics",
        attrs={
            "rate": rate,
            "analog_rate": analog_rate,
            "labels": labels,
            "analog_labels": analog_labels,
            "analog_units": analog_units,
            "first_frame": first,
            "n_frames": points.shape[0],
            "occluded_fraction": float(np.isnan(points).any(axis=2).mean()) if points.size else 0.0,
            "header": {k: v for k, v in header.items() if k != "processor"},
        },
        path=str(p),
        format="c3d",
        provenance={"reader": "pipelines.io.biomechanics.read_c3d", "source": file_checksum(p)},
    )


def write_c3d(
    path: str | os.PathLike[str],
    points: np.ndarray,
    *,
    rate: float,
    labels: Sequence[str] | None = None,
    units: str = "mm",
    analogs: np.ndarray | None = None,
    analog_rate: float | None = None,
    analog_labels: Sequence[str] | None = None,
    analog_units: str = "V",
    first_frame: int = 0,
) -> Path:
    """Write marker trajectories ``(t, marker, xyz)`` (NaN = occluded) and analogs to C3D.

    ``analogs`` has shape ``(t * k, channel)`` with ``analog_rate = k * rate``.
    """
    import ezc3d

    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f"points: expected shape (t, marker, 3), got {pts.shape}")
    n_t, n_m, _ = pts.shape
    labels = list(labels) if labels is not None else [f"M{i:02d}" for i in range(n_m)]
    if len(labels) != n_m:
        raise ValueError(f"labels: expected {n_m} marker labels, got {len(labels)}")
    if not rate > 0:
        raise ValueError(f"rate: expected a positive frame rate in Hz, got {rate!r}")
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = [float(rate)]
    c["parameters"]["POINT"]["LABELS"]["value"] = labels
    c.add_parameter("POINT", "UNITS", [units])
    arr = np.ones((4, n_m, n_t))
    arr[:3] = pts.transpose(2, 1, 0)
    c["data"]["points"] = arr
    if analogs is not None and np.size(analogs):
        an = np.asarray(analogs, dtype=np.float64)
        if analog_rate is None or an.ndim != 2:
            raise ValueError(
                f"analogs: expected shape (samples, channel) with analog_rate, got {an.shape} and {analog_rate!r}"
            )
        ratio = analog_rate / rate
        if abs(ratio - round(ratio)) > 1e-9 or an.shape[0] != round(ratio) * n_t:
            raise ValueError(
                f"analogs: expected {round(ratio) * n_t} samples ({round(ratio)} per frame), got {an.shape[0]}"
            )
        c["parameters"]["ANALOG"]["RATE"]["value"] = [float(analog_rate)]
        c["parameters"]["ANALOG"]["LABELS"]["value"] = list(
            analog_labels or [f"A{i:02d}" for i in range(an.shape[1])]
        )
        c["parameters"]["ANALOG"]["UNITS"]["value"] = [analog_units] * an.shape[1]
        c["data"]["analogs"] = an.T[None]
    if first_frame:
        c["header"]["points"]["first_frame"] = int(first_frame)
    p = Path(path)
    c.write(str(p))
    return p


def write_motion_zarr(
    ds_or_points: Dataset | np.ndarray,
    path: str | os.PathLike[str],
    *,
    rate: float | None = None,
    labels: Sequence[str] | None = None,
    units: str = "mm",
    first_frame: int = 0,
    analogs: np.ndarray | None = None,
    analog_rate: float | None = None,
    analog_labels: Sequence[str] | None = None,
    chunk_frames: int = 4096,
) -> Path:
    """Store motion capture in Zarr v3 with the same metadata as the C3D reader gives.

    Pass a :class:`Dataset` from :func:`read_c3d` or a ``(t, marker, xyz)`` array with
    ``rate`` and ``labels``.
    """
    if isinstance(ds_or_points, Dataset):
        ds = ds_or_points
        points = np.asarray(ds.data["points"])
        an = np.asarray(ds.data["analogs"]) if "analogs" in ds.data else None
        meta = {
            k: ds.attrs.get(k)
            for k in (
                "rate",
                "analog_rate",
                "labels",
                "analog_labels",
                "analog_units",
                "first_frame",
            )
        }
        meta["units"] = ds.units.get("points", units)
    else:
        points = np.asarray(ds_or_points, dtype=np.float64)
        an = None if analogs is None else np.asarray(analogs, np.float64)
        if rate is None:
            raise ValueError("rate: required (frames per second) when writing a bare array")
        meta = {
            "rate": float(rate),
            "analog_rate": analog_rate,
            "labels": list(labels or [f"M{i:02d}" for i in range(points.shape[1])]),
            "analog_labels": list(analog_labels or []),
            "analog_units": [],
            "first_frame": int(first_frame),
            "units": units,
        }
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points: expected shape (t, marker, 3), got {points.shape}")
    group: Any = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["learndock"] = {"kind": "motion", **meta}
    z = group.create_array(
        "points",
        shape=points.shape,
        dtype=points.dtype,
        chunks=(max(1, min(chunk_frames, points.shape[0])), points.shape[1], 3),
        dimension_names=list(POINT_AXES),
        fill_value=np.nan,
    )
    z[:] = points
    if an is not None and an.size:
        za = group.create_array(
            "analogs",
            shape=an.shape,
            dtype=an.dtype,
            chunks=(max(1, min(chunk_frames * 16, an.shape[0])), an.shape[1]),
            dimension_names=list(ANALOG_AXES),
        )
        za[:] = an
    return Path(path)


def read_motion_zarr(path: str | os.PathLike[str]) -> Dataset:
    """Read a motion-capture Zarr group written by :func:`write_motion_zarr`."""
    p = Path(path)
    group: Any = zarr.open_group(str(p), mode="r")
    meta = dict(group.attrs.get("learndock", {}))
    names = {k for k, _ in group.arrays()}
    if "points" not in names:
        raise CorruptFileError(
            f"{p}: motion-capture Zarr group has no 'points' array (has {sorted(names)})"
        )
    data = {"points": da.from_zarr(group["points"])}
    if "analogs" in names:
        data["analogs"] = da.from_zarr(group["analogs"])
    units = meta.pop("units", "mm")
    meta.pop("kind", None)
    pts = data["points"]
    return Dataset(
        data=data,
        axes={"points": POINT_AXES, "analogs": ANALOG_AXES},
        units={"xyz": units, "t": "s", "points": units},
        modality="biomechanics",
        attrs={**meta, "n_frames": int(pts.shape[0])},
        path=str(p),
        format="motion-zarr",
        provenance={
            "reader": "pipelines.io.biomechanics.read_motion_zarr",
            "source": file_checksum(p, full_limit=0),
        },
    )
