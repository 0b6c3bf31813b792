"""Seeded generators of sample data with exact ground truth, plus named real samples.

================================  ==========================================  ============
generator                         returns                                     modality
================================  ==========================================  ============
``microscopy.fluorescence_timelapse``  (t, y, x) uint16 + spots/flashes/background  microscopy
``microscopy.blurred_volume``     (z, y, x) float32 + object and PSF          microscopy
``biomechanics.gait_markers``     (t, marker, xyz) mm + joint model           biomechanics
``lightcurves.light_curves``      time, (star, t) flux + injected signals     light-curve
``named.cell``, ``named.hubble_deep_field``  scikit-image's bundled images     micro/cosmic
================================  ==========================================  ============

Every generator is ``f(seed=0, size="small", **model) -> (data, truth)``; ``size`` is a
preset (``"small"``: a few MB, ``"large"``) or an explicit shape.
:func:`write_sample_data` writes them all (OME-Zarr, Zarr, FITS, C3D) with
``truth.json``.
"""

from sample_data import biomechanics, lightcurves, microscopy, named
from sample_data.biomechanics import gait_markers
from sample_data.lightcurves import light_curves, transit_model
from sample_data.microscopy import blurred_volume, fluorescence_timelapse, write_timelapse_zarr
from sample_data.named import cell, hubble_deep_field, load_named
from sample_data.write import SAMPLES, write_sample_data

__all__ = [
    "SAMPLES",
    "biomechanics",
    "blurred_volume",
    "cell",
    "fluorescence_timelapse",
    "gait_markers",
    "hubble_deep_field",
    "light_curves",
    "lightcurves",
    "load_named",
    "microscopy",
    "named",
    "transit_model",
    "write_sample_data",
    "write_timelapse_zarr",
]
