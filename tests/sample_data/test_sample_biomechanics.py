"""Gait generator: the markers obey the joint model exactly (before noise and gaps)."""

from __future__ import annotations

import numpy as np
import pytest

from sample_data.biomechanics import gait_markers


def test_gait_shapes_noise_and_gaps():
    pts, truth = gait_markers(seed=0, size=600, noise_mm=1.0, gap_fraction=0.05)
    assert pts.shape == (600, 16, 3) and truth["rate"] == 100.0
    occ = truth["occluded"]
    np.testing.assert_array_equal(np.isnan(pts).any(-1), occ)
    assert 0.04 < occ.mean() < 0.08
    for m, a, b in truth["gaps"]:
        assert np.isnan(pts[a:b, m]).all()
    resid = (pts - truth["clean"])[~occ]
    assert resid.std() == pytest.approx(1.0, rel=0.1)


def test_gait_follows_the_pendulum_model():
    _, truth = gait_markers(seed=1, size=800)
    P, labels = truth["clean"], truth["labels"]
    hip, knee = P[:, labels.index("LHIP")], P[:, labels.index("LKNE")] - np.array([0.0, 40.0, 0.0])
    seg = knee - hip
    # rigid thigh of the declared length; its angle is the truth's thigh angle
    np.testing.assert_allclose(
        np.linalg.norm(seg, axis=1), truth["segment_lengths"]["thigh"], rtol=1e-9
    )
    theta = np.arctan2(seg[:, 0], -seg[:, 2])
    np.testing.assert_allclose(theta, truth["thigh_angle"][:, 0], atol=1e-9)
    # the angle satisfies the driven damped pendulum ODE (central differences)
    m = truth["model"]
    dt = 1.0 / truth["rate"]
    t = np.arange(len(theta)) * dt
    d1 = (theta[2:] - theta[:-2]) / (2 * dt)
    d2 = (theta[2:] - 2 * theta[1:-1] + theta[:-2]) / dt**2
    rhs = (
        -(m["g"] / m["L1"]) * np.sin(theta[1:-1])
        - m["damping"] * d1
        + m["drive"] * np.cos(m["omega"] * t[1:-1])
    )
    assert np.abs(d2 - rhs).max() < 0.02 * np.abs(d2).max()
    # the two legs are half a stride apart
    assert truth["thigh_angle"][:, 1].max() == pytest.approx(
        truth["thigh_angle"][:, 0].max(), rel=0.01
    )


def test_gait_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        gait_markers(size=10, rate=0)
    with pytest.raises(ValueError, match="gap_fraction"):
        gait_markers(size=10, gap_fraction=0.7)
    with pytest.raises(ValueError, match="size"):
        gait_markers(size="medium")
