"""Named samples that ship with dependencies (scikit-image's bundled images).

These are real images without planted ground truth; their ``info`` dict records what
is known about them (source, licence, pixel meaning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NAMED_SAMPLES", "cell", "hubble_deep_field", "load_named"]


def cell() -> tuple[np.ndarray, dict[str, Any]]:
    """scikit-image's ``cell``: a 660 x 550 uint8 phase-contrast/fluorescence cell image.

    Examples
    --------
    >>> img, info = cell()
    >>> img.shape, img.dtype.name, info["modality"]
    ((660, 550), 'uint8', 'microscopy')
    """
    from skimage import data

    return data.cell(), {
        "name": "cell",
        "modality": "microscopy",
        "scale": "micro",
        "axes": "yx",
        "source": "skimage.data.cell (bundled with scikit-image)",
        "licence": "CC0 (scikit-image data)",
    }


def hubble_deep_field() -> tuple[np.ndarray, dict[str, Any]]:
    """scikit-image's ``hubble_deep_field`` as a grey image (luminance, float32 in [0, 1]).

    The RGB original (872 x 1000 x 3 uint8) is kept in ``info["rgb_shape"]``; grey is
    what the point-source detectors consume.

    Examples
    --------
    >>> img, info = hubble_deep_field()
    >>> img.shape, img.dtype.name, info["scale"]
    ((872, 1000), 'float32', 'cosmic')
    """
    from skimage import data
    from skimage.color import rgb2gray

    rgb = data.hubble_deep_field()
    return rgb2gray(rgb).astype(np.float32), {
        "name": "hubble_deep_field",
        "modality": "astronomy-image",
        "scale": "cosmic",
        "axes": "yx",
        "rgb_shape": list(rgb.shape),
        "source": "skimage.data.hubble_deep_field (NASA/ESA, public domain)",
        "licence": "public domain (NASA)",
    }


NAMED_SAMPLES = {"cell": cell, "hubble_deep_field": hubble_deep_field}


def load_named(name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A named sample by name (``"cell"`` or ``"hubble_deep_field"``)."""
    if name not in NAMED_SAMPLES:
        raise ValueError(f"name: expected one of {sorted(NAMED_SAMPLES)}, got {name!r}")
    return NAMED_SAMPLES[name]()
