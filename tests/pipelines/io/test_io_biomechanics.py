"""C3D: the real pyomeca file, round trips through C3D and Zarr, impossible headers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.io import open_dataset, write_c3d, write_motion_zarr
from pipelines.io.core import CorruptFileError

C3D = "c3d/pyomeca_markers_analogs.c3d"


@pytest.mark.real_data
def test_pyomeca_c3d_known_facts(shared_data, tmp_path):
    ds = open_dataset(shared_data / C3D)
    assert ds.format == "c3d" and ds.modality == "biomechanics"
    pts = ds.data["points"].compute()
    assert pts.shape == (580, 51, 3)
    assert ds.axes["points"] == ("t", "marker", "xyz")
    assert ds.attrs["rate"] == 100.0 and ds.attrs["analog_rate"] == 2000.0
    assert ds.units["points"] == "mm"
    assert len(ds.attrs["labels"]) == 51
    assert sum(lab.startswith("boite:") for lab in ds.attrs["labels"]) == 8
    assert sum(lab.startswith("Daphnee:") for lab in ds.attrs["labels"]) == 43
    assert ds.attrs["first_frame"] == 0
    # about 1 % of coordinates are occluded -> NaN
    assert 0.005 < np.isnan(pts).mean() < 0.02
    an = ds.data["analogs"].compute()
    assert an.shape == (580 * 20, 38)
    # Zarr twin keeps values and metadata
    zp = write_motion_zarr(ds, tmp_path / "m.zarr")
    back = open_dataset(zp)
    assert back.format == "motion-zarr"
    np.testing.assert_array_equal(back.data["points"].compute(), pts)
    np.testing.assert_array_equal(back.data["analogs"].compute(), an)
    for key in ("rate", "analog_rate", "labels", "analog_labels", "first_frame"):
        assert back.attrs[key] == ds.attrs[key]


def test_c3d_round_trip_with_gaps_and_analogs(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.normal(0, 300, size=(120, 4, 3))
    pts[10:20, 2] = np.nan
    an = rng.normal(size=(120 * 10, 2))
    p = write_c3d(
        tmp_path / "t.c3d",
        pts,
        rate=200.0,
        labels=["A", "B", "C", "D"],
        analogs=an,
        analog_rate=2000.0,
        analog_labels=["EMG1", "EMG2"],
    )
    ds = open_dataset(p)
    got = ds.data["points"].compute()
    assert np.isnan(got[10:20, 2]).all() and not np.isnan(got[:10]).any()
    np.testing.assert_allclose(got, pts, rtol=1e-6, atol=1e-3)  # C3D stores float32
    assert ds.attrs["labels"] == ["A", "B", "C", "D"]
    assert ds.attrs["rate"] == 200.0 and ds.attrs["analog_rate"] == 2000.0
    assert ds.attrs["analog_labels"] == ["EMG1", "EMG2"]
    np.testing.assert_allclose(ds.data["analogs"].compute(), an, rtol=1e-6, atol=1e-6)


def test_c3d_impossible_headers(tmp_path):
    p = write_c3d(tmp_path / "ok.c3d", np.zeros((10, 2, 3)), rate=100.0)
    raw = bytearray(p.read_bytes())
    nokey = bytearray(raw)
    nokey[1] = 0x00
    (tmp_path / "nokey.c3d").write_bytes(bytes(nokey))
    with pytest.raises(CorruptFileError, match=r"nokey\.c3d.*0x50"):
        open_dataset(tmp_path / "nokey.c3d")
    reversed_frames = bytearray(raw)
    reversed_frames[6:10] = (50).to_bytes(2, "little") + (3).to_bytes(2, "little")
    (tmp_path / "frames.c3d").write_bytes(bytes(reversed_frames))
    with pytest.raises(CorruptFileError, match=r"frames\.c3d.*last frame 3 < first frame 50"):
        open_dataset(tmp_path / "frames.c3d")
    far = bytearray(raw)
    far[0] = 200
    (tmp_path / "far.c3d").write_bytes(bytes(far))
    with pytest.raises(CorruptFileError, match=r"far\.c3d.*parameter section"):
        open_dataset(tmp_path / "far.c3d")
    (tmp_path / "short.c3d").write_bytes(bytes(raw[:100]))
    with pytest.raises(CorruptFileError, match=r"short\.c3d.*512 bytes"):
        open_dataset(tmp_path / "short.c3d")


def test_write_c3d_validates(tmp_path):
    with pytest.raises(ValueError, match="points"):
        write_c3d(tmp_path / "x.c3d", np.zeros((10, 3)), rate=100.0)
    with pytest.raises(ValueError, match="rate"):
        write_c3d(tmp_path / "x.c3d", np.zeros((10, 2, 3)), rate=0.0)
    with pytest.raises(ValueError, match="labels"):
        write_c3d(tmp_path / "x.c3d", np.zeros((10, 2, 3)), rate=100.0, labels=["a"])
