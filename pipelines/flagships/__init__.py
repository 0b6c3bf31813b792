"""The three flagship pipelines: glue, sample data with ground truth, and scores.

==========================  =======  ====================================================
flagship                    scale    stages and scores
==========================  =======  ====================================================
``microscopy-transients``   micro    (deconvolution) -> RPCA background separation ->
                                     matched-filter spot and flash detection -> tracking
                                     -> diffusion law.  Scores: detection F1 vs truth,
                                     recovered diffusion coefficient.
``gait-dynamics``           macro    C3D markers -> Kalman/RTS gap filling and smoothing
                                     -> joint-angle series -> SINDy law of the joint.
                                     Scores: marker RMSE in the gaps, law coefficients.
``lightcurve-transits``     cosmic   light curves -> detrending with systematics removal
                                     -> BLS transit search (+ low-rank anomaly scores for
                                     flares) -> symbolic shape law of periodic variables.
                                     Scores: period within 0.1 %, false-alarm rate on
                                     planet-free stars.
==========================  =======  ====================================================

Each flagship module provides ``sample(seed, size) -> RunData`` (seeded generator with
exact ground truth) and ``run(cfg, data, device) -> RunOutcome``; the stages that are
components are built from the Hydra config (``pipeline.stages``) through the dock's
allow-list, so any stage can be swapped by an override.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FLAGSHIPS", "load_sample", "run_flagship"]

FLAGSHIPS: dict[str, str] = {
    "microscopy-transients": "pipelines.flagships.microscopy",
    "gait-dynamics": "pipelines.flagships.gait",
    "lightcurve-transits": "pipelines.flagships.lightcurves",
}


def _module(name: str) -> Any:
    if name not in FLAGSHIPS:
        raise ValueError(f"flagship: expected one of {sorted(FLAGSHIPS)}, got {name!r}")
    return importlib.import_module(FLAGSHIPS[name])


def load_sample(name: str, *, seed: int = 0, size: str = "small") -> Any:
    """Generate the sample data set of flagship ``name`` (inputs + ground truth)."""
    if size not in ("small", "large"):
        raise ValueError(f"data.size: expected 'small' or 'large', got {size!r}")
    return _module(name).sample(seed=seed, size=size)


def run_flagship(name: str, cfg: dict[str, Any], *, device: Any = None) -> Any:
    """Run flagship ``name`` with the resolved run config ``cfg`` (plain dict)."""
    from pipelines.cli_run import load_data

    mod = _module(name)
    data_cfg = dict(cfg.get("data") or {})
    if not data_cfg.get("path") and not data_cfg.get("sample"):
        data_cfg["sample"] = name
    data = load_data(data_cfg, list((cfg.get("pipeline") or {}).get("inputs") or []))
    return mod.run(cfg, data, device=device)
