"""Write every sample to disk in its modality's format, with a ``truth.json``.

Layout under ``out``::

    microscopy/timelapse.ome.zarr    fluorescence time-lapse (t y x, uint16)
    microscopy/volume.ome.zarr       PSF-blurred volume (z y x, float32)
    microscopy/cell.ome.zarr         scikit-image's cell
    astronomy/hubble_deep_field.ome.zarr
    biomechanics/gait.c3d            markers (+ the same in gait.zarr)
    light-curves/lightcurves.zarr    all stars, ragged Zarr archive
    light-curves/fits/star_NNN.fits  the first stars as TESS-layout FITS
    truth.json                       the truth of every sample; large arrays in
                                     <sample>_truth.npz, referenced from the JSON
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAMPLES", "write_sample_data"]

SAMPLES = ("timelapse", "volume", "gait", "lightcurves", "cell", "hubble_deep_field")
_INLINE = 512  # arrays with at most this many elements go into truth.json itself


def _jsonify(obj: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonify(v, arrays, f"{prefix}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonify(v, arrays, f"{prefix}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        if obj.size <= _INLINE:
            return obj.tolist()
        key = prefix.split(".", 1)[-1]
        arrays[key] = obj
        return {"npz_key": key, "shape": list(obj.shape), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_sample_data(
    out: str | os.PathLike[str],
    *,
    size: str = "small",
    seed: int = 0,
    samples: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Generate the samples and write them under ``out`` with ``truth.json``.

    Parameters
    ----------
    out : path-like
        Output directory (created).
    size : {"small", "large"}
        Preset of every generator.
    seed : int
        Seed of every generator.
    samples : iterable of str, optional
        Subset of :data:`SAMPLES` (default: all).

    Returns
    -------
    dict
        The content of ``truth.json``: per sample its files, format, modality and truth.
    """
    from pipelines.io import (
        write_c3d,
        write_fits,
        write_lightcurve_zarr,
        write_motion_zarr,
        write_ome_zarr,
    )
    from sample_data import biomechanics, lightcurves, microscopy, named

    if size not in ("small", "large"):
        raise ValueError(f"size: expected 'small' or 'large', got {size!r}")
    chosen = list(samples) if samples is not None else list(SAMPLES)
    bad = [s for s in chosen if s not in SAMPLES]
    if bad:
        raise ValueError(f"samples: unknown {bad}; expected some of {SAMPLES}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"size": size, "seed": seed, "samples": {}}

    def record(
        name: str, files: list[Path], fmt: str, modality: str, truth: Mapping[str, Any]
    ) -> None:
        arrays: dict[str, np.ndarray] = {}
        jt = _jsonify(dict(truth), arrays, name)
        entry = {
            "files": [str(f.relative_to(root)) for f in files],
            "format": fmt,
            "modality": modality,
            "truth": jt,
        }
        if arrays:
            npz = root / f"{name}_truth.npz"
            np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]
            entry["truth_arrays"] = npz.name
        manifest["samples"][name] = entry

    if "timelapse" in chosen:
        data, truth = microscopy.fluorescence_timelapse(seed, size)
        p = write_ome_zarr(
            data,
            root / "microscopy" / "timelapse.ome.zarr",
            axes="tyx",
            scale={"t": 0.05, "y": 0.108, "x": 0.108},
            chunks=(1, 256, 256),
            n_levels=2,
            attrs={"sample": "timelapse", "seed": seed},
        )
        record(
            "timelapse",
            [p],
            "ome-zarr",
            "microscopy",
            {
                **truth,
                "physical_scale": {"t": 0.05, "y": 0.108, "x": 0.108},
                "physical_units": {"t": "second", "y": "micrometer", "x": "micrometer"},
            },
        )
    if "volume" in chosen:
        data, truth = microscopy.blurred_volume(seed, size)
        p = write_ome_zarr(
            data,
            root / "microscopy" / "volume.ome.zarr",
            axes="zyx",
            scale={"z": 0.3, "y": 0.1, "x": 0.1},
            chunks=(8, 128, 128),
            n_levels=2,
            attrs={"sample": "volume", "seed": seed},
        )
        record("volume", [p], "ome-zarr", "microscopy", truth)
    if "cell" in chosen:
        img, info = named.cell()
        p = write_ome_zarr(
            img,
            root / "microscopy" / "cell.ome.zarr",
            axes="yx",
            n_levels=2,
            attrs={"sample": "cell"},
        )
        record("cell", [p], "ome-zarr", "microscopy", info)
    if "hubble_deep_field" in chosen:
        img, info = named.hubble_deep_field()
        p = write_ome_zarr(
            img,
            root / "astronomy" / "hubble_deep_field.ome.zarr",
            axes="yx",
            units={"y": "pixel", "x": "pixel"},
            n_levels=2,
            attrs={"sample": "hubble_deep_field", "modality": "astronomy-image"},
        )
        record("hubble_deep_field", [p], "ome-zarr", "astronomy-image", info)
    if "gait" in chosen:
        pts, truth = biomechanics.gait_markers(seed, size)
        (root / "biomechanics").mkdir(parents=True, exist_ok=True)
        c3d = write_c3d(
            root / "biomechanics" / "gait.c3d",
            pts,
            rate=truth["rate"],
            labels=truth["labels"],
            units="mm",
        )
        zp = write_motion_zarr(
            pts,
            root / "biomechanics" / "gait.zarr",
            rate=truth["rate"],
            labels=truth["labels"],
            units="mm",
        )
        record("gait", [c3d, zp], "c3d", "biomechanics", truth)
    if "lightcurves" in chosen:
        lc_data, truth = lightcurves.light_curves(seed, size)
        d = root / "light-curves"
        (d / "fits").mkdir(parents=True, exist_ok=True)
        n = lc_data["flux"].shape[0]
        curves = [
            {
                "time": lc_data["time"],
                "flux": lc_data["flux"][i],
                "flux_err": lc_data["flux_err"][i],
                "quality": lc_data["quality"][i],
            }
            for i in range(n)
        ]
        names = [f"SIM {seed}-{i:04d}" for i in range(n)]
        zp = write_lightcurve_zarr(
            curves,
            d / "lightcurves.zarr",
            targets=names,
            attrs={"sample": "lightcurves", "seed": seed},
        )
        files = [zp]
        for i in range(min(n, 16)):
            files.append(
                write_fits(
                    d / "fits" / f"star_{i:03d}.fits",
                    lc_data["time"],
                    lc_data["flux"][i],
                    lc_data["flux_err"][i],
                    quality=lc_data["quality"][i],
                    mission="TESS",
                    target=names[i],
                )
            )
        record(
            "lightcurves", files, "lightcurve-zarr+fits", "light-curve", {**truth, "targets": names}
        )
    (root / "truth.json").write_text(json.dumps(manifest, indent=1))
    return manifest
