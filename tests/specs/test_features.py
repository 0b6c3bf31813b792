"""Featurizers: shapes, determinism, invariances, NaN handling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specs.features import (
    default_featurizer,
    featurize,
    get_featurizer,
    known_featurizers,
    register_featurizer,
)


def test_builtin_featurizers_are_versioned() -> None:
    ids = set(known_featurizers())
    assert {
        "microscopy-tiles/1",
        "light-curve-windows/1",
        "trajectory-windows/1",
        "tabular/1",
    } <= ids
    assert default_featurizer("microscopy").id == "microscopy-tiles/1"
    assert get_featurizer("tabular").id == "tabular/1"
    with pytest.raises(ValueError, match="unknown featurizer"):
        get_featurizer("nope/3")
    with pytest.raises(ValueError, match="no featurizer is registered"):
        default_featurizer("sonar")


@pytest.mark.parametrize("shape", [(96, 128), (3, 64, 64), (2, 3, 48, 40)])
def test_microscopy_shapes_and_determinism(shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(0).poisson(20, size=shape).astype(np.uint16)
    f1 = featurize(img, modality="microscopy")
    f2 = featurize(img.copy(), modality="microscopy")
    assert f1.dtype == torch.float32 and f1.shape[1] == 16 and f1.shape[0] >= 1
    assert torch.equal(f1, f2)
    assert torch.isfinite(f1).all()


def test_microscopy_gain_offset_invariance_and_spots_differ() -> None:
    rng = np.random.default_rng(1)
    bg = rng.normal(100, 5, size=(128, 128))
    a = featurize(bg, modality="microscopy")
    b = featurize(bg * 3 + 50, modality="microscopy")
    torch.testing.assert_close(a[:, :15], b[:, :15], atol=1e-3, rtol=1e-3)
    spots = bg.copy()
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in rng.uniform(8, 120, size=(30, 2)):
        spots += 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    c = featurize(spots, modality="microscopy")
    assert (c[:, 8].mean() - a[:, 8].mean()) > 0.2  # blob response


def test_light_curve_nan_masked_and_transit_tail() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(4096) / 720.0
    flux = 1000 * (1 + 1e-3 * rng.normal(size=t.size))
    flux[500:700] = np.nan
    f = featurize({"time": t, "flux": flux}, modality="light-curve")
    assert f.shape[1] == 14 and torch.isfinite(f).all()
    dipped = flux.copy()
    for p in range(100, 4096, 400):
        dipped[p : p + 20] *= 0.99
    g = featurize({"time": t, "flux": dipped}, modality="light-curve")
    assert g[:, 3].min() < f[:, 3].min() - 0.5  # deep low tail in units of the scatter
    # 2-D (star, time) gives rows from every star
    two = featurize(np.stack([flux, dipped]), modality="light-curve")
    assert two.shape[0] == f.shape[0] + g.shape[0]


def test_trajectory_gaps_and_rate() -> None:
    rng = np.random.default_rng(3)
    pos = np.cumsum(rng.normal(size=(400, 6, 3)), 0) + 1000.0
    pos[50:90, 2] = np.nan
    f = featurize({"positions": pos, "rate": 200.0}, modality="biomechanics")
    assert f.shape[1] == 12 and torch.isfinite(f).all()
    assert f[:, 4].max() > 0  # gap fraction seen
    # unit change (mm -> m) does not change the body-size normalised features
    g = featurize({"positions": pos / 1000.0, "rate": 200.0}, modality="biomechanics")
    torch.testing.assert_close(f, g, atol=1e-4, rtol=1e-4)


def test_tabular_drops_nan_rows() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    x[1, 2] = np.nan
    f = featurize(x, modality="tabular")
    assert f.shape == (3, 3) and f.dtype == torch.float32


@pytest.mark.parametrize(
    ("data", "modality", "match"),
    [
        (np.zeros((0, 3)), "tabular", "non-empty"),
        (np.zeros(10), "microscopy", "microscopy array"),
        (np.zeros((2, 8)), "light-curve", "at least 16"),
        (np.zeros((20, 3)), "biomechanics", r"\(t, marker, 3\)"),
        ({"time": np.arange(5)}, "light-curve", "'flux'"),
        (np.array(["a", "b"]), "tabular", "numeric"),
    ],
)
def test_bad_input_names_the_problem(data: object, modality: str, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        featurize(data, modality=modality)


def test_dataset_duck_typing_and_registration() -> None:
    class DS:
        modality = "tabular"
        data = np.ones((5, 2))

    assert featurize(DS()).shape == (5, 2)
    with pytest.raises(ValueError, match="modality"):
        featurize(np.ones((3, 3)))

    def fn(x: object) -> torch.Tensor:
        return torch.ones(2, 2)

    register_featurizer("test-ones", fn, version=1, modality="tabular")
    assert get_featurizer("test-ones/1").fn is fn
    with pytest.raises(ValueError, match="new version"):
        register_featurizer("test-ones", lambda x: x, version=1, modality="tabular")
    assert default_featurizer("tabular").id == "tabular/1"


@pytest.mark.real_data
def test_real_data_featurizes(shared_data) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pipelines.io")
    from pipelines.io import open_dataset

    lc = open_dataset(shared_data / "kepler-hatp7-sc" / "kplr010666592-2009131110544_slc.fits")
    f = featurize(lc)
    assert f.shape[1] == 14 and f.shape[0] > 20
    mo = open_dataset(shared_data / "c3d" / "pyomeca_markers_analogs.c3d")
    assert featurize(mo).shape[1] == 12
    img = np.load(shared_data / "trackpy-colloids" / "bulk-water_frame0.npy")
    assert featurize(img, modality="microscopy").shape[1] == 16
