"""OME-Zarr, sharded Zarr v3 and TIFF round trips: values, axes, units, scales, levels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from pipelines.io import open_dataset, read_ome_zarr, tiff_to_ome_zarr, write_ome_zarr, write_zarr
from pipelines.io.core import CorruptFileError


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, size=(3, 2, 4, 48, 40)).astype(np.uint16)


def test_ome_zarr_round_trip(image, tmp_path):
    scale = {"t": 5.0, "z": 0.5, "y": 0.108, "x": 0.108}
    p = write_ome_zarr(
        image, tmp_path / "a.ome.zarr", axes="tczyx", scale=scale, units={"t": "second"}, n_levels=3
    )
    ds = open_dataset(p)
    assert ds.format == "ome-zarr" and ds.modality == "microscopy"
    assert ds.axes == "tczyx"
    np.testing.assert_array_equal(ds.data.compute(), image)
    assert ds.data.dtype == np.uint16
    assert ds.scale == pytest.approx({"t": 5.0, "c": 1.0, "z": 0.5, "y": 0.108, "x": 0.108})
    assert ds.units == {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
    levels = ds.attrs["levels"]
    assert [lv.shape[-2:] for lv in levels] == [(48, 40), (24, 20), (12, 10)]
    assert ds.attrs["level_scales"][1]["y"] == pytest.approx(0.216)
    # level 1 is the 2x2 local mean (rounded for integers)
    want = np.rint(
        image.astype(np.float64).reshape(3, 2, 4, 24, 2, 20, 2).mean(axis=(4, 6))
    ).astype(np.uint16)
    np.testing.assert_array_equal(levels[1].compute(), want)
    # NGFF 0.5 metadata on disk, level paths read from it (not assumed)
    meta = json.loads((p / "zarr.json").read_text())["attributes"]["ome"]
    assert meta["version"] == "0.5"
    paths = [d["path"] for d in meta["multiscales"][0]["datasets"]]
    assert ds.attrs["level_paths"] == paths
    lvl2 = read_ome_zarr(p, level=2)
    assert lvl2.data.shape == (3, 2, 4, 12, 10) and lvl2.scale["x"] == pytest.approx(0.432)


def test_ome_zarr_ngff04_layout_and_custom_paths(tmp_path):
    # a hand-written NGFF 0.4-style group (multiscales at the top, level named "full")
    g = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    arr = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    g.create_array("full", shape=arr.shape, dtype=arr.dtype, chunks=(1, 16, 16))[:] = arr
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [
                {
                    "path": "full",
                    "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}],
                }
            ],
        }
    ]
    ds = open_dataset(tmp_path / "v04.zarr")
    assert ds.format == "ome-zarr" and ds.axes == "zyx"
    np.testing.assert_array_equal(ds.data.compute(), arr)
    assert ds.scale == {"z": 2.0, "y": 0.5, "x": 0.5}


def test_ome_zarr_missing_level_is_reported(image, tmp_path):
    p = write_ome_zarr(image[0, 0], tmp_path / "b.ome.zarr", axes="zyx", n_levels=2)
    doc = json.loads((p / "zarr.json").read_text())
    doc["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] = "nope"
    (p / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match=r"b\.ome\.zarr.*'nope'"):
        open_dataset(p)


def test_ome_zarr_bad_axes(image, tmp_path):
    with pytest.raises(ValueError, match="axes"):
        write_ome_zarr(image[0], tmp_path / "c.zarr", axes="zcyx")
    with pytest.raises(ValueError, match="axes"):
        write_ome_zarr(image[0, 0], tmp_path / "c.zarr", axes="zyq")


def test_sharded_zarr_round_trip(image, tmp_path):
    x = image[:, 0]
    p = write_zarr(
        x,
        tmp_path / "s.zarr",
        axes="tzyx",
        chunks=(1, 2, 16, 20),
        shards=(1, 4, 48, 40),
        scale={"z": 0.5},
        units={"z": "micrometer"},
    )
    ds = open_dataset(p)
    assert ds.format == "zarr" and ds.axes == "tzyx"
    np.testing.assert_array_equal(ds.data.compute(), x)
    assert ds.attrs["scale"] == {"z": 0.5} and ds.units == {"z": "micrometer"}
    z = zarr.open_array(str(p / "data"), mode="r")
    assert z.shards == (1, 4, 48, 40) and z.chunks == (1, 2, 16, 20)
    # one file per shard
    assert len(list((p / "data" / "c").rglob("*"))) > 0
    with pytest.raises(ValueError, match="shards"):
        write_zarr(x, tmp_path / "t.zarr", chunks=(1, 3, 16, 20), shards=(1, 4, 48, 40))


def test_tiff_stack_to_ome_zarr(image, tmp_path):
    stack = image[0, 0]
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(
        tif,
        stack,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZYX", "spacing": 0.8, "unit": "um"},
    )
    ds = open_dataset(tif)
    assert ds.format == "tiff" and ds.axes == "zyx"
    assert ds.data.numblocks[0] == stack.shape[0]  # lazy: one page per block
    np.testing.assert_array_equal(ds.data.compute(), stack)
    assert ds.scale == pytest.approx({"z": 0.8, "y": 0.2, "x": 0.2})
    assert ds.units["x"] == "micrometer"
    out = tiff_to_ome_zarr(tif, tmp_path / "stack.ome.zarr")
    ome = open_dataset(out)
    np.testing.assert_array_equal(ome.data.compute(), stack)
    assert ome.axes == "zyx" and ome.scale == pytest.approx({"z": 0.8, "y": 0.2, "x": 0.2})


def test_corrupt_tiff(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\xff" * 20)
    with pytest.raises(CorruptFileError, match=r"bad\.tif"):
        open_dataset(bad)


@pytest.mark.real_data
def test_trackpy_frames_to_ome_zarr(shared_data, tmp_path):
    frame = np.load(shared_data / "trackpy-colloids" / "bulk-water_frame0.npy")
    assert frame.shape == (424, 640) and frame.dtype == np.uint8
    p = write_ome_zarr(frame[None], tmp_path / "colloids.ome.zarr", axes="tyx", n_levels=2)
    ds = open_dataset(p)
    np.testing.assert_array_equal(ds.data[0].compute(), frame)
    assert ds.attrs["levels"][1].shape == (1, 212, 320)
