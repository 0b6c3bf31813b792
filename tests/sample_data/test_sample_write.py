"""write_sample_data and the named samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.io import get_lightcurve, open_dataset
from sample_data import cell, hubble_deep_field, load_named, write_sample_data


def test_named_samples():
    img, info = cell()
    assert img.shape == (660, 550) and info["modality"] == "microscopy"
    hub, info = hubble_deep_field()
    assert (
        hub.shape == (872, 1000) and 0 <= hub.min() and hub.max() <= 1 and info["scale"] == "cosmic"
    )
    with pytest.raises(ValueError, match="name"):
        load_named("lena")


def test_write_and_read_back(tmp_path):
    manifest = write_sample_data(tmp_path, samples=["gait", "lightcurves"], seed=1)
    doc = json.loads((tmp_path / "truth.json").read_text())
    assert doc == json.loads(json.dumps(manifest))
    gait = open_dataset(tmp_path / "biomechanics" / "gait.c3d")
    assert gait.attrs["rate"] == 100.0 and gait.attrs["labels"][0] == "SACR"
    arrays = np.load(tmp_path / doc["samples"]["gait"]["truth_arrays"])
    clean = arrays["clean"]
    pts = gait.data["points"].compute()
    occ = np.isnan(pts).any(-1)
    assert np.abs(pts[~occ] - clean[~occ]).max() < 10  # noise of 1 mm, stored as float32
    lc = open_dataset(tmp_path / "light-curves" / "lightcurves.zarr")
    star0 = get_lightcurve(lc, 0)
    assert doc["samples"]["lightcurves"]["truth"]["stars"][0]["kind"] == "transit"
    fits0 = open_dataset(tmp_path / "light-curves" / "fits" / "star_000.fits")
    np.testing.assert_allclose(fits0.attrs["time"], star0["time"], atol=1e-8)
    with pytest.raises(ValueError, match="samples"):
        write_sample_data(tmp_path, samples=["nope"])
