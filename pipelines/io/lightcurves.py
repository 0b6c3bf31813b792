"""Light curves: Kepler/TESS FITS, CSV, and many light curves in one ragged Zarr group.

Every reader returns ``data = {"time", "flux", "flux_err", "quality"}`` as 1-D dask
arrays over the cadence axis ``t``; ``time`` is in BJD_TDB (days, full Julian date),
``flux`` and ``flux_err`` in the file's flux unit.  Cadences flagged by the quality
bitmask keep their place in the series (so gaps stay visible) but get ``flux = NaN``;
``attrs["gaps"]`` lists the time intervals without valid data longer than 1.5 cadences.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from pipelines.io.core import CorruptFileError, Dataset, file_checksum

__all__ = [
    "KEPLER_BITMASKS",
    "KEPLER_QUALITY_FLAGS",
    "TESS_BITMASKS",
    "TESS_QUALITY_FLAGS",
    "find_gaps",
    "get_lightcurve",
    "quality_mask",
    "read_csv",
    "read_fits",
    "read_lightcurve_zarr",
    "write_csv",
    "write_fits",
    "write_lightcurve_zarr",
]

# Kepler Archive Manual (KDMC-10008), table 2.3: bit values of the QUALITY column.
KEPLER_QUALITY_FLAGS: dict[str, int] = {
    "AttitudeTweak": 1,
    "SafeMode": 2,
    "CoarsePoint": 4,
    "EarthPoint": 8,
    "ZeroCrossing": 16,
    "Desat": 32,
    "Argabrightening": 64,
    "ApertureCosmic": 128,
    "ManualExclude": 256,
    "SensitivityDropout": 1024,
    "ImpulsiveOutlier": 2048,
    "ArgabrighteningOnCCD": 4096,
    "CollateralCosmic": 8192,
    "DetectorAnomaly": 16384,
    "NoFinePoint": 32768,
    "NoData": 65536,
    "RollingBandInAperture": 131072,
    "RollingBandInMask": 262144,
    "PossibleThrusterFiring": 524288,
    "ThrusterFiring": 1048576,
}
_K = KEPLER_QUALITY_FLAGS
#: Cadences that are certainly unusable (the convention of the Kepler mission and lightkurve).
KEPLER_DEFAULT_BITMASK = (
    _K["AttitudeTweak"] | _K["SafeMode"] | _K["CoarsePoint"] | _K["EarthPoint"] | _K["Desat"]
    | _K["ManualExclude"] | _K["DetectorAnomaly"] | _K["NoData"] | _K["ThrusterFiring"]
)  # fmt: skip
KEPLER_BITMASKS: dict[str, int] = {
    "none": 0,
    "default": KEPLER_DEFAULT_BITMASK,
    "hard": KEPLER_DEFAULT_BITMASK
    | _K["SensitivityDropout"]
    | _K["ApertureCosmic"]
    | _K["CollateralCosmic"]
    | _K["PossibleThrusterFiring"],
    "hardest": (1 << 21) - 1,
}

# TESS Science Data Products Description Document (EXP-TESS-ARC-ICD-0014), QUALITY bits.
TESS_QUALITY_FLAGS: dict[str, int] = {
    "AttitudeTweak": 1,
    "SafeMode": 2,
    "CoarsePoint": 4,
    "EarthPoint": 8,
    "Argabrightening": 16,
    "Desat": 32,
    "ApertureCosmic": 64,
    "ManualExclude": 128,
    "Discontinuity": 256,
    "ImpulsiveOutlier": 512,
    "CollateralCosmic": 1024,
    "Straylight": 2048,
    "Straylight2": 4096,
    "PlanetSearchExclude": 8192,
    "BadCalibrationExclude": 16384,
    "InsufficientTargets": 32768,
}
_T = TESS_QUALITY_FLAGS
TESS_DEFAULT_BITMASK = (
    _T["AttitudeTweak"] | _T["SafeMode"] | _T["CoarsePoint"] | _T["EarthPoint"] | _T["Argabrightening"]
    | _T["Desat"] | _T["ManualExclude"] | _T["ImpulsiveOutlier"] | _T["BadCalibrationExclude"]
)  # fmt: skip
TESS_BITMASKS: dict[str, int] = {
    "none": 0,
    "default": TESS_DEFAULT_BITMASK,
    "hard": TESS_DEFAULT_BITMASK
    | _T["ApertureCosmic"]
    | _T["CollateralCosmic"]
    | _T["Straylight"]
    | _T["Straylight2"],
    "hardest": 65535,
}


def quality_mask(
    quality: np.ndarray, bitmask: int | str = "default", *, mission: str = "TESS"
) -> np.ndarray:
    """True where a cadence is good: ``quality & bitmask == 0``.

    Parameters
    ----------
    quality : ndarray of int
        The QUALITY column.
    bitmask : int or {"none", "default", "hard", "hardest"}
        Bits that disqualify a cadence; names resolve per mission.
    mission : {"Kepler", "K2", "TESS"}
        Which flag table resolves a named bitmask.

    Examples
    --------
    >>> quality_mask(np.array([0, 1, 16]), "default", mission="Kepler").tolist()
    [True, False, True]
    """
    table = KEPLER_BITMASKS if mission.upper() in ("KEPLER", "K2") else TESS_BITMASKS
    if isinstance(bitmask, str):
        if bitmask not in table:
            raise ValueError(
                f"quality_bitmask: expected an int or one of {sorted(table)}, got {bitmask!r}"
            )
        bits = table[bitmask]
    elif isinstance(bitmask, int | np.integer) and bitmask >= 0:
        bits = int(bitmask)
    else:
        raise ValueError(f"quality_bitmask: expected a non-negative int or a name, got {bitmask!r}")
    return (np.asarray(quality).astype(np.int64) & bits) == 0


def find_gaps(
    time: np.ndarray, valid: np.ndarray | None = None, *, cadence: float | None = None
) -> list[tuple[float, float]]:
    """Intervals ``(last valid time, next valid time)`` separated by more than 1.5 cadences."""
    t = np.asarray(time, dtype=np.float64)
    ok = np.isfinite(t) if valid is None else (np.asarray(valid, bool) & np.isfinite(t))
    tv = t[ok]
    if tv.size < 2:
        return []
    dt = np.diff(tv)
    cad = float(np.median(dt)) if cadence is None else float(cadence)
    idx = np.nonzero(dt > 1.5 * cad)[0]
    return [(float(tv[i]), float(tv[i + 1])) for i in idx]


def _hdu_sizes_ok(hdul: Any, p: Path) -> None:
    size = p.stat().st_size
    for i, hdu in enumerate(hdul):
        info = hdu.fileinfo()
        end = info["datLoc"] + info["datSpan"]
        if end > size:
            raise CorruptFileError(
                f"{p}: truncated FITS file: HDU {i} ({hdu.name}) needs {end} bytes, the file has {size}"
            )


def read_fits(
    path: str | os.PathLike[str],
    *,
    flux_column: str = "pdcsap_flux",
    quality_bitmask: int | str = "default",
) -> Dataset:
    """Read a Kepler, K2 or TESS light-curve FITS file (SPOC/Ames pipeline layout).

    Parameters
    ----------
    path : path-like
        The ``*_lc.fits``/``*_slc.fits`` file.
    flux_column : {"pdcsap_flux", "sap_flux"}
        Which flux to return as ``flux`` (both are always in ``data``).
    quality_bitmask : int or {"none", "default", "hard", "hardest"}
        Cadences with any of these QUALITY bits set get ``flux = NaN``; the default is
        the mission's documented "definitely unusable" set (see ``KEPLER_BITMASKS`` and
        ``TESS_BITMASKS``).

    Returns
    -------
    Dataset
        ``data``: ``time`` (BJD_TDB, days), ``flux``, ``flux_err``, ``sap_flux``,
        ``sap_flux_err``, ``pdcsap_flux``, ``pdcsap_flux_err``, ``quality``, ``good``;
        ``attrs``: ``time`` (numpy BJD), ``time_system`` ("TDB"), ``time_format``
        ("bjd"), ``bjd_reference``, ``cadence`` (days), ``mission``, ``target``,
        ``gaps``, ``quality_bitmask`` (the int applied), header cards.

    Raises
    ------
    CorruptFileError
        Truncated files, files without a light-curve table or without TIME/flux columns.
    """
    from astropy.io import fits

    p = Path(path)
    col = flux_column.lower()
    if col not in ("pdcsap_flux", "sap_flux"):
        raise ValueError(f"flux_column: expected 'pdcsap_flux' or 'sap_flux', got {flux_column!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(str(p), memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, IndexError) as exc:
        raise CorruptFileError(f"{p}: cannot parse FITS ({exc})") from exc
    with hdul:
        _hdu_sizes_ok(hdul, p)
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
            raise CorruptFileError(
                f"{p}: no light-curve binary table in HDU 1 (found {[h.name for h in hdul]})"
            )
        h0, h1 = hdul[0].header, hdul[1].header
        try:
            table = hdul[1].data
            names = [n.upper() for n in table.columns.names]
        except Exception as exc:
            raise CorruptFileError(f"{p}: cannot read the light-curve table ({exc})") from exc
        missing = [c for c in ("TIME", "SAP_FLUX", "PDCSAP_FLUX") if c not in names]
        if missing:
            raise CorruptFileError(f"{p}: light-curve table lacks columns {missing} (has {names})")
        qcol = (
            "QUALITY" if "QUALITY" in names else ("SAP_QUALITY" if "SAP_QUALITY" in names else None)
        )
        cols = {
            c.lower(): np.array(table[c], dtype=np.float64)
            for c in ("TIME", "SAP_FLUX", "SAP_FLUX_ERR", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR")
            if c in names
        }
        quality = np.array(table[qcol], dtype=np.int32) if qcol else np.zeros(len(table), np.int32)
        mission = str(h0.get("TELESCOP") or h0.get("MISSION") or "TESS").strip()
        bjd_ref = float(
            h1.get("BJDREFI", 2457000 if mission.upper() == "TESS" else 2454833)
        ) + float(h1.get("BJDREFF", 0.0))
        header = {
            k: h0.get(k)
            for k in (
                "OBJECT",
                "KEPLERID",
                "TICID",
                "QUARTER",
                "CAMPAIGN",
                "SECTOR",
                "CAMERA",
                "CCD",
                "TESSMAG",
                "KEPMAG",
                "TEFF",
                "RADIUS",
                "RA_OBJ",
                "DEC_OBJ",
            )
            if h0.get(k) is not None
        }
        time_sys = str(h1.get("TIMESYS", "TDB")).strip()
        timedel = h1.get("TIMEDEL")
        flux_unit = str(h1.get("TUNIT4", "e-/s")).strip() or "e-/s"
    good = quality_mask(quality, quality_bitmask, mission=mission)
    bits = int(
        KEPLER_BITMASKS[quality_bitmask]
        if isinstance(quality_bitmask, str) and mission.upper() in ("KEPLER", "K2")
        else TESS_BITMASKS[quality_bitmask]
        if isinstance(quality_bitmask, str)
        else quality_bitmask
    )
    time = cols["time"] + bjd_ref
    flux = np.where(good, cols[col], np.nan)
    flux_err = np.where(good, cols.get(col + "_err", np.full_like(flux, np.nan)), np.nan)
    valid = good & np.isfinite(flux) & np.isfinite(time)
    t_valid = time[np.isfinite(time)]
    cadence = (
        float(timedel)
        if timedel
        else float(np.median(np.diff(t_valid)))
        if t_valid.size > 1
        else float("nan")
    )
    data = {
        "time": da.from_array(time),
        "flux": da.from_array(flux),
        "flux_err": da.from_array(flux_err),
        "quality": da.from_array(quality),
        "good": da.from_array(valid),
        **{k: da.from_array(v) for k, v in cols.items() if k != "time"},
    }
    return Dataset(
        data=data,
        axes={k: "t" for k in data},
        units={"t": "d", "time": "d", "flux": flux_unit, "flux_err": flux_unit},
        modality="light-curve",
        attrs={
            "time": time,
            "time_system": time_sys,
            "time_format": "bjd",
            "bjd_reference": bjd_ref,
            "cadence": cadence,
            "mission": mission,
            "target": str(header.get("OBJECT", "")).strip(),
            "flux_column": col,
            "quality_bitmask": bits,
            "gaps": find_gaps(time, valid, cadence=cadence),
            "header": header,
        },
        path=str(p),
        format="fits",
        provenance={"reader": "pipelines.io.lightcurves.read_fits", "source": file_checksum(p)},
    )


def write_fits(
    path: str | os.PathLike[str],
    time: np.ndarray,
    flux: np.ndarray,
    flux_err: np.ndarray | None = None,
    *,
    quality: np.ndarray | None = None,
    mission: str = "TESS",
    target: str = "SIM 0",
    sap_flux: np.ndarray | None = None,
    header: Mapping[str, Any] | None = None,
) -> Path:
    """Write a light curve in the Kepler/TESS SPOC layout (TIME in BJD - BJDREF, TDB).

    ``time`` is full BJD_TDB; it is stored relative to the mission's reference (2457000
    for TESS, 2454833 for Kepler) like the archive files.
    """
    from astropy.io import fits

    n = len(time)
    flux = np.asarray(flux, np.float64)
    if flux.shape != (n,):
        raise ValueError(f"flux: expected shape ({n},) like time, got {flux.shape}")
    err = np.full(n, np.nan) if flux_err is None else np.asarray(flux_err, np.float64)
    q = np.zeros(n, np.int32) if quality is None else np.asarray(quality, np.int32)
    ref = 2457000 if mission.upper() == "TESS" else 2454833
    cols = [
        fits.Column("TIME", "D", unit=f"BJD - {ref}", array=np.asarray(time, np.float64) - ref),
        fits.Column(
            "SAP_FLUX", "E", unit="e-/s", array=flux if sap_flux is None else np.asarray(sap_flux)
        ),
        fits.Column("SAP_FLUX_ERR", "E", unit="e-/s", array=err),
        fits.Column("PDCSAP_FLUX", "E", unit="e-/s", array=flux),
        fits.Column("PDCSAP_FLUX_ERR", "E", unit="e-/s", array=err),
        fits.Column("QUALITY", "J", array=q),
    ]
    prim = fits.PrimaryHDU()
    prim.header["TELESCOP"] = mission
    prim.header["OBJECT"] = target
    for k, v in (header or {}).items():
        prim.header[k[:8].upper()] = v
    tab = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    tab.header["TIMESYS"] = "TDB"
    tab.header["TIMEREF"] = "SOLARSYSTEM"
    tab.header["BJDREFI"] = ref
    tab.header["BJDREFF"] = 0.0
    tab.header["TIMEUNIT"] = "d"
    if n > 1:
        tab.header["TIMEDEL"] = float(np.median(np.diff(time)))
    p = Path(path)
    fits.HDUList([prim, tab]).writeto(str(p), overwrite=True)
    return p


_ALIASES = {
    "time": ("time", "bjd", "btjd", "bkjd", "jd", "mjd", "t"),
    "flux": ("flux", "pdcsap_flux", "sap_flux", "f", "mag"),
    "flux_err": (
        "flux_err",
        "flux_error",
        "pdcsap_flux_err",
        "sap_flux_err",
        "err",
        "error",
        "sigma",
        "mag_err",
    ),
    "quality": ("quality", "sap_quality", "flag", "flags"),
}


def read_csv(path: str | os.PathLike[str], *, time_offset: float = 0.0) -> Dataset:
    """Read a CSV light curve with a header naming at least time and flux columns.

    Column names are matched case-insensitively (``time``/``bjd``/``btjd``...,
    ``flux``/``pdcsap_flux``..., ``flux_err``..., ``quality``).  ``time_offset`` is
    added to the time column (e.g. 2457000 for BTJD).

    Raises
    ------
    CorruptFileError
        Without a header, without time/flux columns, or with unparsable rows.
    """
    p = Path(path)
    text = p.read_text(errors="replace").splitlines()
    lines = [ln for ln in text if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise CorruptFileError(f"{p}: empty CSV (no header, no rows)")
    delim = "\t" if "\t" in lines[0] else ","
    header = [h.strip().lower() for h in lines[0].split(delim)]
    idx: dict[str, int] = {}
    for key, aliases in _ALIASES.items():
        for a in aliases:
            if a in header:
                idx[key] = header.index(a)
                break
    if "time" not in idx or "flux" not in idx:
        raise CorruptFileError(f"{p}: CSV header must name a time and a flux column, got {header}")
    try:
        rows = np.array(
            [[float(v) if v.strip() else np.nan for v in ln.split(delim)] for ln in lines[1:]],
            dtype=np.float64,
        )
    except ValueError as exc:
        raise CorruptFileError(f"{p}: CSV has a non-numeric value ({exc})") from exc
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != len(header):
        raise CorruptFileError(
            f"{p}: CSV rows must have {len(header)} numeric fields like the header"
        )
    time = rows[:, idx["time"]] + time_offset
    flux = rows[:, idx["flux"]]
    err = rows[:, idx["flux_err"]] if "flux_err" in idx else np.full_like(flux, np.nan)
    quality = (
        rows[:, idx["quality"]].astype(np.int32)
        if "quality" in idx
        else np.zeros(len(flux), np.int32)
    )
    valid = np.isfinite(flux) & np.isfinite(time) & (quality == 0)
    data = {
        k: da.from_array(v)
        for k, v in {
            "time": time,
            "flux": flux,
            "flux_err": err,
            "quality": quality,
            "good": valid,
        }.items()
    }
    return Dataset(
        data=data,
        axes={k: "t" for k in data},
        units={"t": "d", "time": "d"},
        modality="light-curve",
        attrs={
            "time": time,
            "time_format": "as-written",
            "cadence": float(np.median(np.diff(time))) if len(time) > 1 else float("nan"),
            "gaps": find_gaps(time, valid),
            "columns": header,
        },
        path=str(p),
        format="csv",
        provenance={"reader": "pipelines.io.lightcurves.read_csv", "source": file_checksum(p)},
    )


def write_csv(
    path: str | os.PathLike[str],
    time: np.ndarray,
    flux: np.ndarray,
    flux_err: np.ndarray | None = None,
) -> Path:
    """Write ``time,flux[,flux_err]`` with full float64 precision (``repr`` digits)."""
    p = Path(path)
    cols = [np.asarray(time, np.float64), np.asarray(flux, np.float64)]
    names = ["time", "flux"]
    if flux_err is not None:
        cols.append(np.asarray(flux_err, np.float64))
        names.append("flux_err")
    with p.open("w") as f:
        f.write(",".join(names) + "\n")
        for row in zip(*cols):
            f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n")
    return p


def write_lightcurve_zarr(
    curves: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    targets: Sequence[str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    chunk: int = 2**20,
) -> Path:
    """Store many light curves of different lengths together in one Zarr v3 group.

    Layout (ragged by target): 1-D arrays ``time``, ``flux``, ``flux_err``,
    ``quality`` hold all cadences back to back; ``offsets`` (int64, n+1) marks where
    target ``i`` starts and ends; ``targets`` holds the names.

    Parameters
    ----------
    curves : sequence of dict
        Each with ``time`` and ``flux`` and optionally ``flux_err``, ``quality``.
    path : path-like
        Output group (overwritten).
    targets : sequence of str, optional
        Target names (default ``"0", "1", ...``).
    chunk : int
        Chunk length of the concatenated arrays.
    """
    n = len(curves)
    if n == 0:
        raise ValueError("curves: expected at least one light curve, got an empty sequence")
    names = [str(t) for t in (targets if targets is not None else range(n))]
    if len(names) != n:
        raise ValueError(f"targets: expected {n} names (one per curve), got {len(names)}")
    lengths = []
    for i, c in enumerate(curves):
        if "time" not in c or "flux" not in c:
            raise ValueError(f"curves[{i}]: expected keys 'time' and 'flux', got {sorted(c)}")
        if np.shape(c["time"]) != np.shape(c["flux"]) or np.ndim(c["time"]) != 1:
            raise ValueError(
                f"curves[{i}]: time and flux must be 1-D of equal length, got {np.shape(c['time'])} and {np.shape(c['flux'])}"
            )
        lengths.append(len(c["time"]))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    group: Any = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs["learndock"] = {
        "kind": "lightcurves",
        "n_targets": n,
        "time_format": "bjd",
        **dict(attrs or {}),
    }
    total = int(offsets[-1])
    ck = max(1, min(chunk, total))
    for key, dtype, fill in (
        ("time", np.float64, np.nan),
        ("flux", np.float64, np.nan),
        ("flux_err", np.float64, np.nan),
        ("quality", np.int32, 0),
    ):
        z = group.create_array(
            key, shape=(total,), dtype=dtype, chunks=(ck,), dimension_names=["t"]
        )
        buf = np.concatenate(
            [np.asarray(c.get(key, np.full(len(c["time"]), fill)), dtype=dtype) for c in curves]
        )
        z[:] = buf
    group.create_array("offsets", shape=(n + 1,), dtype=np.int64, chunks=(n + 1,))[:] = offsets
    group.create_array("targets", shape=(n,), dtype=str, chunks=(n,))[:] = np.array(names)
    return Path(path)


def read_lightcurve_zarr(path: str | os.PathLike[str]) -> Dataset:
    """Read a ragged light-curve archive written by :func:`write_lightcurve_zarr`.

    ``data`` holds the concatenated dask arrays; ``attrs["offsets"]`` and
    ``attrs["targets"]`` index them (see :func:`get_lightcurve`).
    """
    p = Path(path)
    group: Any = zarr.open_group(str(p), mode="r")
    need = ("time", "flux", "offsets", "targets")
    present = {k for k, _ in group.arrays()}
    missing = [k for k in need if k not in present]
    if missing:
        raise CorruptFileError(f"{p}: light-curve archive lacks arrays {missing}")
    offsets = np.asarray(group["offsets"][:])
    targets = [str(t) for t in group["targets"][:]]
    if (
        offsets.shape != (len(targets) + 1,)
        or offsets[0] != 0
        or np.any(np.diff(offsets) < 0)
        or offsets[-1] != group["time"].shape[0]
    ):
        raise CorruptFileError(
            f"{p}: offsets are inconsistent with {len(targets)} targets and {group['time'].shape[0]} cadences"
        )
    data = {
        k: da.from_zarr(group[k]) for k in ("time", "flux", "flux_err", "quality") if k in present
    }
    meta = dict(group.attrs.get("learndock", {}))
    return Dataset(
        data=data,
        axes={k: "t" for k in data},
        units={"t": "d", "time": "d"},
        modality="light-curve",
        attrs={
            **{k: v for k, v in meta.items() if k != "kind"},
            "offsets": offsets,
            "targets": targets,
        },
        path=str(p),
        format="lightcurve-zarr",
        provenance={
            "reader": "pipelines.io.lightcurves.read_lightcurve_zarr",
            "source": file_checksum(p, full_limit=0),
        },
    )


def get_lightcurve(ds: Dataset, target: int | str) -> dict[str, np.ndarray]:
    """One target's arrays from a ragged archive (by index or name)."""
    targets = ds.attrs["targets"]
    i = targets.index(target) if isinstance(target, str) else int(target)
    if not 0 <= i < len(targets):
        raise IndexError(f"target: expected 0 <= index < {len(targets)}, got {target!r}")
    a, b = int(ds.attrs["offsets"][i]), int(ds.attrs["offsets"][i + 1])
    return {k: np.asarray(v[a:b].compute()) for k, v in ds.data.items()}
