"""Microscopy images: OME-Zarr (NGFF 0.4/0.5), plain Zarr v3 with sharding, TIFF stacks.

Images come back as dask arrays whose axes are a subset of ``t c z y x`` with their
physical scale and units.  OME-Zarr pyramids are written with ome-zarr-py; reading
takes the level paths and scales from the ``multiscales`` metadata (NGFF 0.5 keeps it
under ``attributes.ome``, 0.4 at the top of ``.zattrs``), never from guessed names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from pipelines.io.core import CorruptFileError, Dataset, file_checksum

__all__ = [
    "read_ome_zarr",
    "read_tiff",
    "read_zarr",
    "tiff_to_ome_zarr",
    "write_ome_zarr",
    "write_zarr",
]

AXIS_ORDER = "tczyx"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_DEFAULT_UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}


def _check_axes(axes: str, ndim: int, name: str = "axes") -> str:
    if not isinstance(axes, str) or len(axes) != ndim or len(set(axes)) != ndim:
        raise ValueError(
            f"{name}: expected {ndim} distinct axis letters from {AXIS_ORDER!r}, got {axes!r}"
        )
    bad = [a for a in axes if a not in AXIS_ORDER]
    if bad:
        raise ValueError(f"{name}: unknown axis letters {bad} in {axes!r}; allowed: {AXIS_ORDER!r}")
    order = [AXIS_ORDER.index(a) for a in axes]
    if order != sorted(order):
        raise ValueError(f"{name}: axes must follow the NGFF order t, c, z, y, x; got {axes!r}")
    return axes


def _default_axes(ndim: int) -> str:
    return {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}.get(ndim) or ""


def _pyramid(image: da.Array, axes: str, n_levels: int) -> list[da.Array]:
    """Level k is the 2**k local mean over the spatial axes y, x (and z when larger than 1)."""
    levels = [image]
    for _ in range(1, n_levels):
        prev = levels[-1]
        factors = {i: (2 if a in "yx" and prev.shape[i] >= 2 else 1) for i, a in enumerate(axes)}
        if all(f == 1 for f in factors.values()):
            break
        trimmed = prev[
            tuple(slice(0, (s // factors[i]) * factors[i]) for i, s in enumerate(prev.shape))
        ]
        coarse = da.coarsen(np.mean, trimmed.astype(np.float64), factors, trim_excess=True)
        if np.issubdtype(image.dtype, np.integer):
            coarse = da.round(coarse)
        levels.append(coarse.astype(image.dtype))
    return levels


def write_ome_zarr(
    image: Any,
    path: str | os.PathLike[str],
    *,
    axes: str | None = None,
    scale: Mapping[str, float] | None = None,
    units: Mapping[str, str] | None = None,
    chunks: Sequence[int] | None = None,
    n_levels: int = 3,
    name: str = "image",
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write an image as an OME-Zarr (NGFF 0.5, Zarr v3) multiscale pyramid.

    Parameters
    ----------
    image : array_like or dask array
        Image with axes ``axes`` (a subset of ``t c z y x``, in that order).
    path : path-like
        Output store (created or overwritten).
    axes : str, optional
        Default by dimension: ``yx``, ``zyx``, ``tzyx``, ``tczyx``.
    scale : dict, optional
        Physical size of one sample of the full-resolution level per axis (default 1).
    units : dict, optional
        Unit per axis (default: ``second`` for t, ``micrometer`` for z, y, x).
    chunks : sequence of int, optional
        Chunk shape of every level (default: one frame/plane per chunk, y/x up to 256).
    n_levels : int
        Number of pyramid levels (level k is a 2**k local mean over y, x).
    name : str
        Name of the multiscale image.
    attrs : dict, optional
        Extra JSON attributes stored under ``attributes["learndock"]``.

    Returns
    -------
    pathlib.Path
    """
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscale

    arr = image if isinstance(image, da.Array) else da.from_array(np.asarray(image))
    axes = _check_axes(axes or _default_axes(arr.ndim), arr.ndim)
    if n_levels < 1:
        raise ValueError(f"n_levels: expected an integer >= 1, got {n_levels!r}")
    scale = dict(scale or {})
    unknown = set(scale) - set(axes)
    if unknown:
        raise ValueError(f"scale: axes {sorted(unknown)} are not in axes={axes!r}")
    units = {**{a: u for a, u in _DEFAULT_UNITS.items() if a in axes}, **dict(units or {})}
    if chunks is None:
        chunks = tuple(1 if a in "tcz" else min(s, 256) for a, s in zip(axes, arr.shape))
    chunks = tuple(int(c) for c in chunks)
    levels = _pyramid(arr, axes, n_levels)
    transforms = []
    for k in range(len(levels)):
        s = [float(scale.get(a, 1.0)) * (2**k if a in "yx" else 1) for a in axes]
        transforms.append([{"type": "scale", "scale": s}])
    ax_meta = []
    for a in axes:
        entry = {"name": a, "type": _AXIS_TYPES[a]}
        if a in units and a != "c":
            entry["unit"] = units[a]
        ax_meta.append(entry)
    p = Path(path)
    group: Any = zarr.open_group(str(p), mode="w", zarr_format=3)
    storage = [{"chunks": tuple(min(c, s) for c, s in zip(chunks, lv.shape))} for lv in levels]
    write_multiscale(
        levels,
        group,
        axes=ax_meta,
        coordinate_transformations=transforms,
        storage_options=storage,
        fmt=FormatV05(),
        name=name,
    )
    if attrs:
        group.attrs["learndock"] = dict(attrs)
    return p


def _multiscales(attrs: Mapping[str, Any], p: Path) -> dict[str, Any]:
    ms = attrs.get("ome", {}).get("multiscales") if isinstance(attrs.get("ome"), Mapping) else None
    if ms is None:
        ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], Mapping):
        raise CorruptFileError(
            f"{p}: OME-Zarr 'multiscales' metadata is missing or not a non-empty list"
        )
    first = ms[0]
    if not isinstance(first.get("datasets"), list) or not first["datasets"]:
        raise CorruptFileError(f"{p}: OME-Zarr multiscales[0] has no 'datasets' (pyramid levels)")
    return dict(first)


def _scale_of(transforms: Any, ndim: int) -> list[float]:
    for t in transforms or []:
        if isinstance(t, Mapping) and t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            return [float(v) for v in t["scale"]]
    return [1.0] * ndim


def read_ome_zarr(path: str | os.PathLike[str], *, level: int = 0) -> Dataset:
    """Read an OME-Zarr image (NGFF 0.4 or 0.5) lazily.

    Parameters
    ----------
    path : path-like
        The OME-Zarr group.
    level : int
        Pyramid level returned as ``data`` (0 = full resolution).  All levels are in
        ``attrs["levels"]`` and their scales in ``attrs["level_scales"]``.

    Returns
    -------
    Dataset
        ``modality="microscopy"``, ``format="ome-zarr"``.

    Raises
    ------
    CorruptFileError
        If the multiscales metadata is missing or names a level that is not there.
    """
    p = Path(path)
    try:
        group: Any = zarr.open_group(str(p), mode="r")
    except Exception as exc:
        raise CorruptFileError(f"{p}: cannot open as a Zarr group ({exc})") from exc
    attrs = dict(group.attrs)
    ms = _multiscales(attrs, p)
    axes_meta = ms.get("axes") or [{"name": a} for a in _default_axes(len(ms["datasets"]))]
    axes = "".join(a["name"] if isinstance(a, Mapping) else str(a) for a in axes_meta)
    units = {a["name"]: a["unit"] for a in axes_meta if isinstance(a, Mapping) and a.get("unit")}
    levels, level_scales = [], []
    for d in ms["datasets"]:
        key = d.get("path")
        try:
            arr = group[key]
        except KeyError as exc:
            raise CorruptFileError(
                f"{p}: multiscales lists level path {key!r} but the store has no such array"
            ) from exc
        levels.append(da.from_zarr(arr))
        level_scales.append(
            dict(zip(axes, _scale_of(d.get("coordinateTransformations"), len(axes))))
        )
    if not 0 <= level < len(levels):
        raise ValueError(f"level: expected 0 <= level < {len(levels)} for {p}, got {level}")
    if levels[level].ndim != len(axes):
        raise CorruptFileError(
            f"{p}: level {level} has {levels[level].ndim} dims but metadata names axes {axes!r}"
        )
    ld: Any = attrs.get("learndock")
    extra: dict[str, Any] = dict(ld) if isinstance(ld, Mapping) else {}
    return Dataset(
        data=levels[level],
        axes=axes,
        units=units,
        modality=str(extra.get("modality", "microscopy")),
        attrs={
            "scale": level_scales[level],
            "levels": levels,
            "level_scales": level_scales,
            "level_paths": [d.get("path") for d in ms["datasets"]],
            "name": ms.get("name"),
            **extra,
        },
        path=str(p),
        format="ome-zarr",
        provenance={
            "reader": "pipelines.io.microscopy.read_ome_zarr",
            "source": file_checksum(p, full_limit=0),
        },
    )


def write_zarr(
    array: Any,
    path: str | os.PathLike[str],
    *,
    axes: str | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | None = None,
    scale: Mapping[str, float] | None = None,
    units: Mapping[str, str] | None = None,
    modality: str = "microscopy",
    attrs: Mapping[str, Any] | None = None,
    name: str = "data",
) -> Path:
    """Write an array into a plain Zarr v3 group, sharded, with axes and units as attributes.

    Parameters
    ----------
    array : array_like or dask array
        The values.
    path : path-like
        Output group (created or overwritten); the array is stored under ``name``.
    axes : str, optional
        Axis letters (default by dimension, as for OME-Zarr).
    chunks : sequence of int, optional
        Inner chunk shape (the unit of compression).  Default: zarr's choice.
    shards : sequence of int, optional
        Shard shape (a multiple of ``chunks``; one file per shard).  Default: no sharding.
    scale, units : dict, optional
        Physical sample size and unit per axis.
    modality : str
        Stored so that :func:`~pipelines.io.open_dataset` knows what it reads.
    attrs : dict, optional
        Extra JSON attributes.
    name : str
        Array name inside the group.

    Returns
    -------
    pathlib.Path
    """
    arr = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    axes = axes or _default_axes(arr.ndim) or "".join(f"d{i}" for i in range(arr.ndim))
    if len(axes) != arr.ndim:
        raise ValueError(
            f"axes: expected {arr.ndim} axis letters for an array of shape {arr.shape}, got {axes!r}"
        )
    if shards is not None and chunks is None:
        raise ValueError(
            "chunks: sharding needs an inner chunk shape; pass chunks= together with shards="
        )
    if chunks is not None and len(chunks) != arr.ndim:
        raise ValueError(f"chunks: expected {arr.ndim} entries, got {tuple(chunks)}")
    if shards is not None:
        if len(shards) != arr.ndim or any(int(s) % int(c) for s, c in zip(shards, chunks or ())):
            raise ValueError(
                f"shards: expected {arr.ndim} entries, each a multiple of chunks={tuple(chunks or ())}, got {tuple(shards)}"
            )
    p = Path(path)
    group: Any = zarr.open_group(str(p), mode="w", zarr_format=3)
    group.attrs["learndock"] = {
        "kind": "array",
        "array": name,
        "axes": axes,
        "modality": modality,
        "scale": {k: float(v) for k, v in (scale or {}).items()},
        "units": dict(units or {}),
        **dict(attrs or {}),
    }
    z = group.create_array(
        name,
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=tuple(int(c) for c in chunks) if chunks is not None else "auto",
        shards=tuple(int(s) for s in shards) if shards is not None else None,
        dimension_names=list(axes)
        if len(axes) == arr.ndim and all(len(a) == 1 for a in axes)
        else None,
    )
    write_chunks = tuple(int(s) for s in (shards or z.chunks))
    da.store(arr.rechunk(write_chunks), z, lock=False)
    return p


def read_zarr(path: str | os.PathLike[str], *, array: str | None = None) -> Dataset:
    """Read a plain Zarr array (v2 or v3), or the array of a learndock Zarr group.

    Parameters
    ----------
    path : path-like
        A Zarr array, or a group holding one array (or ``array=`` naming it).
    array : str, optional
        Name of the array inside the group.

    Raises
    ------
    CorruptFileError
        If the group has no array or its metadata cannot be parsed.
    """
    p = Path(path)
    try:
        node: Any = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise CorruptFileError(f"{p}: cannot open as Zarr ({type(exc).__name__}: {exc})") from exc
    meta: dict[str, Any] = {}
    if isinstance(node, zarr.Group):
        meta = dict(node.attrs.get("learndock", {}) or {})  # type: ignore[arg-type]
        key = array or meta.get("array")
        if key is None:
            names = sorted(k for k, _ in node.arrays())
            if len(names) != 1:
                raise CorruptFileError(
                    f"{p}: Zarr group holds {len(names)} arrays {names[:10]}; pass array= to choose one"
                )
            key = names[0]
        try:
            z: Any = node[key]
        except KeyError as exc:
            raise CorruptFileError(f"{p}: Zarr group has no array {key!r}") from exc
    else:
        z = node
        meta = dict(z.attrs.get("learndock", {}) or {})
    dims = getattr(z.metadata, "dimension_names", None)
    axes = meta.get("axes") or (
        "".join(dims) if dims and all(d and len(d) == 1 for d in dims) else _default_axes(z.ndim)
    )
    return Dataset(
        data=da.from_zarr(z),
        axes=axes,
        units=dict(meta.get("units", {})),
        modality=meta.get("modality", "microscopy"),
        attrs={k: v for k, v in meta.items() if k not in ("axes", "units", "modality", "kind")},
        path=str(p),
        format="zarr",
        provenance={
            "reader": "pipelines.io.microscopy.read_zarr",
            "source": file_checksum(p, full_limit=0),
        },
    )


def _tiff_axes(series_axes: str, ndim: int) -> str:
    mapping = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x", "I": "t", "Q": "t"}
    out = "".join(mapping.get(a, "") for a in series_axes.upper())
    if len(out) != ndim or len(set(out)) != ndim:
        return _default_axes(ndim)
    return out


def read_tiff(path: str | os.PathLike[str], *, series: int = 0) -> Dataset:
    """Read a TIFF stack (ImageJ, OME-TIFF or plain multi-page) lazily.

    Axes come from the TIFF series (``TZCYX`` letters mapped to ``tczyx``, pages of an
    unlabelled stack become ``t``), pixel sizes from ImageJ/OME metadata when present.

    Raises
    ------
    CorruptFileError
        If tifffile cannot parse the file.
    """
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(str(p)) as tif:
            s = tif.series[series]
            shape, series_axes = s.shape, s.axes
            ij = tif.imagej_metadata or {}
            page = tif.pages.first
            res = page.tags.get("XResolution")
            yres = page.tags.get("YResolution")
    except (tifffile.TiffFileError, ValueError, IndexError, OSError) as exc:
        raise CorruptFileError(f"{p}: not a readable TIFF ({exc})") from exc
    axes = _tiff_axes(series_axes, len(shape))
    scale: dict[str, float] = {}
    if res is not None and res.value[0]:
        scale["x"] = float(res.value[1]) / float(res.value[0])
    if yres is not None and yres.value[0]:
        scale["y"] = float(yres.value[1]) / float(yres.value[0])
    if "spacing" in ij and "z" in axes:
        scale["z"] = float(ij["spacing"])
    unit = ij.get("unit")
    units = {
        a: ("micrometer" if unit in ("micron", "um", "\\u00B5m", "µm") else unit)
        for a in "zyx"
        if a in axes and unit
    }
    data = _lazy_tiff(p, series, arr_shape=shape)
    if data is None:  # not addressable as chunks (e.g. compressed strips): in memory
        data = da.from_array(
            tifffile.imread(str(p), series=series),
            chunks=tuple(1 if a in "tc" else -1 for a in axes),
        )
    return Dataset(
        data=data,
        axes=axes,
        units={k: v for k, v in units.items() if v},
        modality="microscopy",
        attrs={"scale": {k: v for k, v in scale.items() if k in axes}, "tiff_axes": series_axes},
        path=str(p),
        format="tiff",
        provenance={"reader": "pipelines.io.microscopy.read_tiff", "source": file_checksum(p)},
    )


def _lazy_tiff(p: Path, series: int, arr_shape: tuple[int, ...]) -> da.Array | None:
    """The TIFF series as a dask array over tifffile's Zarr view (pages read on demand)."""
    import tifffile

    try:
        node: Any = zarr.open(tifffile.imread(str(p), aszarr=True, series=series), mode="r")
        if isinstance(node, zarr.Group):  # pyramidal TIFF: the full-resolution level
            node = node[sorted(k for k, _ in node.arrays())[0]]
        arr = da.from_zarr(node)
    except Exception:
        return None
    return arr if tuple(arr.shape) == tuple(arr_shape) else None


def tiff_to_ome_zarr(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    scale: Mapping[str, float] | None = None,
    units: Mapping[str, str] | None = None,
    n_levels: int = 3,
) -> Path:
    """Convert a TIFF stack to OME-Zarr, keeping axes and pixel sizes (overridable)."""
    ds = read_tiff(path)
    merged_scale = {**ds.scale, **dict(scale or {})}
    return write_ome_zarr(
        ds.data,
        out,
        axes=ds.axes,
        scale=merged_scale,
        units={**ds.units, **dict(units or {})},
        n_levels=n_levels,
        attrs={"converted_from": str(path)},
    )
