"""The dataset object returned by every reader, the IO errors, and format detection.

``open_dataset(path)`` looks at what is on disk (a Zarr store's metadata, a FITS header,
a C3D header, a TIFF's magic bytes, a CSV header) and hands the path to the reader of
that format.  Every reader returns a :class:`Dataset`: lazy dask arrays with named axes,
units, physical scale, modality and provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

__all__ = [
    "CorruptFileError",
    "Dataset",
    "DatasetError",
    "UnknownFormatError",
    "detect_format",
    "file_checksum",
    "open_dataset",
]

MODALITIES = ("microscopy", "light-curve", "biomechanics")


class DatasetError(ValueError):
    """Base class of the IO errors; the message names the file and what is wrong."""


class UnknownFormatError(DatasetError):
    """The file is not in a format learndock can read."""


class CorruptFileError(DatasetError):
    """The file claims a known format but its content is inconsistent or truncated."""


@dataclasses.dataclass
class Dataset:
    """Arrays read from disk, with their axes, units, modality and provenance.

    Attributes
    ----------
    data : dask.array.Array or dict of dask.array.Array
        The values, lazily loaded.  Images: one array (the full-resolution level);
        light curves: ``{"flux", "flux_err", "time", "quality", ...}``; motion capture:
        ``{"points", "analogs"}``.
    axes : str or dict of str
        Axis names of ``data`` (``"tczyx"`` subsets, ``"t"``, ``"t marker xyz"`` written
        without spaces as ``"tmk"``... see each reader); a dict when ``data`` is a dict.
    units : dict
        Unit per axis name and per quantity (``{"x": "micrometer", "flux": "e-/s"}``).
    modality : str
        ``"microscopy"``, ``"light-curve"`` or ``"biomechanics"``.
    attrs : dict
        Format-specific metadata: ``scale`` (physical pixel size per axis), ``levels``
        (pyramid of dask arrays) for images; ``time`` (BJD), ``cadence`` for light
        curves; ``rate``, ``labels``, ``first_frame`` for C3D.
    path : str or None
        Where it was read from.
    format : str
        Name of the on-disk format (``"ome-zarr"``, ``"zarr"``, ``"tiff"``, ``"fits"``,
        ``"csv"``, ``"c3d"``, ``"lightcurve-zarr"``, ``"motion-zarr"``).
    provenance : dict
        Reader name, path, size and checksum of the source.
    """

    data: Any
    axes: Any
    units: dict[str, str]
    modality: str
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str | None = None
    format: str = ""
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def scale(self) -> dict[str, float]:
        """Physical size of one sample along each axis (empty when unknown)."""
        return dict(self.attrs.get("scale", {}))

    def __repr__(self) -> str:
        if isinstance(self.data, Mapping):
            body = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in self.data.items())
        else:
            body = f"{tuple(self.data.shape)} {self.data.dtype}"
        return f"Dataset({self.modality}, {self.format}, axes={self.axes!r}, {body}, path={self.path!r})"


def file_checksum(path: str | os.PathLike[str], *, full_limit: int = 256 * 2**20) -> dict[str, Any]:
    """Checksum of a file or a directory store, cheap enough for archives.

    Files (and directories whose total size is at most ``full_limit`` bytes) get a full
    SHA-256 of their bytes.  Larger directory stores get a SHA-256 over their metadata
    files' bytes and every other file's relative path and size (``kind="manifest"``):
    it detects re-chunking, re-shaping and truncation without reading terabytes.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        with p.open("rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        return {"path": str(p), "bytes": p.stat().st_size, "sha256": h.hexdigest(), "kind": "full"}
    if not p.is_dir():
        return {"path": str(p), "bytes": None, "sha256": None, "kind": "missing"}
    files = sorted(
        q for q in p.rglob("*") if q.is_file() and ".batch" not in q.relative_to(p).parts
    )
    total = sum(q.stat().st_size for q in files)
    kind = "full" if total <= full_limit else "manifest"
    for q in files:
        rel = q.relative_to(p).as_posix()
        h.update(rel.encode())
        meta = q.name in ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
        if kind == "full" or meta:
            h.update(q.read_bytes())
        else:
            h.update(str(q.stat().st_size).encode())
    return {"path": str(p), "bytes": total, "sha256": h.hexdigest(), "kind": kind}


def _zarr_kind(p: Path) -> str | None:
    """Zarr metadata flavour of a directory, None if it has none."""
    if (p / "zarr.json").is_file():
        return "v3"
    if (p / ".zgroup").is_file() or (p / ".zarray").is_file():
        return "v2"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the format of ``path`` (see :class:`Dataset.format`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CorruptFileError
        If a Zarr store lacks its metadata, or a Zarr metadata document is not JSON.
    UnknownFormatError
        If nothing matches.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir():
        kind = _zarr_kind(p)
        if kind is None:
            has_chunks = any(
                q.name == "c" or q.name.replace(".", "").isdigit() for q in p.iterdir()
            )
            if p.suffix == ".zarr" or has_chunks:
                raise CorruptFileError(
                    f"{p}: Zarr store is missing its metadata: expected zarr.json (Zarr v3) or "
                    f".zgroup/.zarray (Zarr v2), found {sorted(q.name for q in p.iterdir())[:10]}"
                )
            raise UnknownFormatError(
                f"{p}: directory is not a Zarr store (no zarr.json, .zgroup or .zarray)"
            )
        attrs = _read_zarr_attrs(p)
        ld = attrs.get("learndock", {}) if isinstance(attrs.get("learndock"), dict) else {}
        if ld.get("kind") == "lightcurves":
            return "lightcurve-zarr"
        if ld.get("kind") == "motion":
            return "motion-zarr"
        if "multiscales" in attrs or "multiscales" in attrs.get("ome", {}):
            return "ome-zarr"
        return "zarr"
    with p.open("rb") as f:
        head = f.read(512)
    name = p.name.lower()
    if head.startswith(b"SIMPLE  =") or name.endswith((".fits", ".fit", ".fts")):
        if not head.startswith(b"SIMPLE  ="):
            raise CorruptFileError(
                f"{p}: named like a FITS file but does not start with 'SIMPLE  ='"
            )
        return "fits"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if name.endswith((".tif", ".tiff")):
        raise CorruptFileError(
            f"{p}: named like a TIFF file but has no TIFF magic bytes (got {head[:4]!r})"
        )
    if name.endswith(".c3d") or (len(head) == 512 and head[1] == 0x50 and 2 <= head[0] <= 64):
        return "c3d"
    if name.endswith((".csv", ".txt", ".tsv")):
        return "csv"
    raise UnknownFormatError(
        f"{p}: unknown format (first bytes {head[:8]!r}); learndock reads OME-Zarr, Zarr, "
        "TIFF, FITS (Kepler/TESS), CSV light curves and C3D"
    )


def _read_zarr_attrs(p: Path) -> dict[str, Any]:
    for name in ("zarr.json", ".zattrs"):
        f = p / name
        if f.is_file():
            try:
                doc = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CorruptFileError(f"{f}: Zarr metadata is not valid JSON ({exc})") from exc
            if not isinstance(doc, dict):
                raise CorruptFileError(
                    f"{f}: Zarr metadata must be a JSON object, got {type(doc).__name__}"
                )
            return dict(doc.get("attributes", {})) if name == "zarr.json" else doc
    return {}


def open_dataset(
    path: str | os.PathLike[str], *, modality: str | None = None, **options: Any
) -> Dataset:
    """Open a dataset of any supported format, lazily.

    Parameters
    ----------
    path : str or path-like
        A Zarr/OME-Zarr store (directory), FITS, TIFF, CSV or C3D file.
    modality : str, optional
        ``"microscopy"``, ``"light-curve"`` or ``"biomechanics"``.  Default: deduced
        from the format.  Required only to read a plain Zarr array as a modality other
        than microscopy; when given, it must agree with the format.
    **options
        Passed to the format's reader (e.g. ``quality_bitmask="hard"`` or
        ``flux_column="sap_flux"`` for FITS, ``level=1`` for OME-Zarr).

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnknownFormatError, CorruptFileError
        Unknown or damaged files; the message names the file and what is wrong.
    ValueError
        If ``modality`` is not a known modality or contradicts the file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pipelines.io import write_zarr
    >>> d = tempfile.mkdtemp()
    >>> _ = write_zarr(np.zeros((4, 8, 8), "uint16"), d + "/a.zarr", axes="tyx")
    >>> ds = open_dataset(d + "/a.zarr")
    >>> ds.axes, ds.modality, ds.data.shape
    ('tyx', 'microscopy', (4, 8, 8))
    """
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality: expected one of {MODALITIES} or None, got {modality!r}")
    fmt = detect_format(path)
    from pipelines.io import biomechanics, lightcurves, microscopy

    readers: dict[str, Any] = {
        "ome-zarr": microscopy.read_ome_zarr,
        "zarr": microscopy.read_zarr,
        "tiff": microscopy.read_tiff,
        "fits": lightcurves.read_fits,
        "csv": lightcurves.read_csv,
        "lightcurve-zarr": lightcurves.read_lightcurve_zarr,
        "c3d": biomechanics.read_c3d,
        "motion-zarr": biomechanics.read_motion_zarr,
    }
    ds = readers[fmt](path, **options)
    if modality is not None and modality != ds.modality:
        if fmt == "zarr":
            ds.modality = modality
        else:
            raise ValueError(
                f"modality: {path} is {fmt} data of modality {ds.modality!r}, but modality={modality!r} was requested"
            )
    return ds


def as_dask(x: Any, chunks: Any = "auto") -> da.Array:
    """``x`` as a dask array (numpy arrays are wrapped, dask arrays returned as-is)."""
    if isinstance(x, da.Array):
        return x
    return da.from_array(np.asarray(x), chunks=chunks)
