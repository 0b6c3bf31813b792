"""Format detection and the errors of open_dataset."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.io import (
    CorruptFileError,
    UnknownFormatError,
    detect_format,
    file_checksum,
    open_dataset,
    write_zarr,
)


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing"):
        open_dataset(tmp_path / "nothing.zarr")


def test_zarr_store_missing_metadata(tmp_path):
    p = write_zarr(np.zeros((4, 4), np.float32), tmp_path / "a.zarr")
    (p / "zarr.json").unlink()
    with pytest.raises(CorruptFileError, match=r"a\.zarr: Zarr store is missing its metadata"):
        open_dataset(p)


def test_zarr_metadata_not_json(tmp_path):
    p = write_zarr(np.zeros((4, 4), np.float32), tmp_path / "b.zarr")
    (p / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"zarr\.json: Zarr metadata is not valid JSON"):
        open_dataset(p)


def test_unknown_format(tmp_path):
    f = tmp_path / "thing.bin"
    f.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(UnknownFormatError, match=r"thing\.bin: unknown format"):
        open_dataset(f)
    d = tmp_path / "plain_dir"
    d.mkdir()
    with pytest.raises(UnknownFormatError, match="not a Zarr store"):
        open_dataset(d)


def test_modality_argument(tmp_path):
    p = write_zarr(np.zeros((10,), np.float64), tmp_path / "c.zarr", axes="t")
    assert open_dataset(p, modality="light-curve").modality == "light-curve"
    with pytest.raises(ValueError, match="modality"):
        open_dataset(p, modality="radio")


def test_detect_and_checksum(tmp_path):
    p = write_zarr(np.ones((8, 8), np.uint8), tmp_path / "d.zarr")
    assert detect_format(p) == "zarr"
    a = file_checksum(p)
    assert a["kind"] == "full" and len(a["sha256"]) == 64
    write_zarr(np.zeros((8, 8), np.uint8), tmp_path / "d.zarr")
    assert file_checksum(p)["sha256"] != a["sha256"]
    assert file_checksum(p, full_limit=0)["kind"] == "manifest"
