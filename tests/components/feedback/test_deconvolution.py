"""Richardson-Lucy deconvolution: skimage parity, boundaries, tiling, PSF refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.feedback import _reference as ref
from components.feedback.deconvolution import (
    Deconvolution,
    GaussianPSF,
    blur,
    gaussian_psf,
    refine_psf,
    richardson_lucy,
    richardson_lucy_tiled,
    widefield_psf,
)


@pytest.mark.parametrize(
    ("shape", "sigma", "dtype"),
    [((40, 50), 1.7, np.float64), ((12, 20, 22), (1.0, 1.5, 1.5), np.float32)],
)
def test_equals_skimage_with_zero_padding(shape: tuple[int, ...], sigma, dtype) -> None:
    from skimage.restoration import richardson_lucy as sk_rl

    img = np.random.default_rng(0).uniform(0.1, 1, shape).astype(dtype)
    psf = gaussian_psf(sigma, ndim=len(shape), dtype=torch.float64).numpy().astype(dtype)
    want = sk_rl(img, psf, num_iter=15, clip=False)
    got = richardson_lucy(
        torch.from_numpy(img), torch.from_numpy(psf), iterations=15, padding="zero", init=0.5
    )
    assert got.dtype == torch.from_numpy(img).dtype
    rel = np.abs(got.numpy() - want).max() / np.abs(want).max()
    assert rel < 1e-5, rel


@pytest.mark.parametrize("padding", ["zero", "reflect", "periodic"])
@pytest.mark.parametrize(
    ("shape", "sigma", "dtype", "tol"),
    [
        ((2, 33, 40), (1.3, 1.8), torch.float64, 1e-12),  # batch of 2-D images
        ((2, 10, 24, 21), (1.0, 1.6, 0.8), torch.float32, 1e-5),  # batch of 3-D stacks
    ],
)
def test_separable_path_equals_fft_path(shape, sigma, dtype, tol, padding: str) -> None:
    g = torch.Generator().manual_seed(3)
    img = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype) + 0.1
    psf = gaussian_psf(sigma, dtype=dtype)
    kw = {"iterations": 12, "padding": padding}
    sep = richardson_lucy(img, psf, method="separable", **kw)
    fft = richardson_lucy(img, psf, method="fft", **kw)
    assert sep.dtype == dtype and sep.shape == img.shape
    assert float((sep - fft).abs().max() / fft.abs().max()) < tol
    # the batch is processed item by item: same result as one call per item
    one = richardson_lucy(img[1], psf, method="separable", **kw)
    assert float((sep[1] - one).abs().max() / one.abs().max()) < tol
    # the separable operator (used by masked / TV / accelerated RL) also equals the FFT one
    m = torch.rand(shape, generator=g) > 0.2
    a = richardson_lucy(img, psf, method="separable", mask=m, accelerate=True, **kw)
    b = richardson_lucy(img, psf, method="fft", mask=m, accelerate=True, **kw)
    assert float((a - b).abs().max() / b.abs().max()) < 10 * tol


def test_separable_path_equals_skimage() -> None:
    from skimage.restoration import richardson_lucy as sk_rl

    img = np.random.default_rng(4).uniform(0.1, 1, (20, 40, 36)).astype(np.float32)
    psf = gaussian_psf((2.0, 1.5, 1.5), dtype=torch.float32)
    want = sk_rl(img, psf.numpy(), num_iter=20, clip=False)
    got = richardson_lucy(
        torch.from_numpy(img), psf, iterations=20, padding="zero", init=0.5, method="separable"
    )
    assert float(np.abs(got.numpy() - want).max() / np.abs(want).max()) < 1e-5


def test_separable_method_errors() -> None:
    psf = gaussian_psf(1.0, ndim=2, dtype=torch.float64)
    ring = psf.clone()
    ring[3, 3] = 0.0
    ring = ring / ring.sum()
    with pytest.raises(ValueError, match="method: 'separable' needs a separable PSF"):
        richardson_lucy(torch.ones(16, 16, dtype=torch.float64), ring, method="separable")
    s = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="require grad"):
        richardson_lucy(torch.ones(16, 16), gaussian_psf(s, size=5), method="separable")
    with pytest.raises(ValueError, match="method: expected one of"):
        richardson_lucy(torch.ones(16, 16), psf.float(), method="direct")
    # 'auto' with a non-separable PSF quietly takes the FFT path
    out = richardson_lucy(torch.ones(16, 16, dtype=torch.float64), ring, iterations=3)
    assert bool(torch.isfinite(out).all())


def test_recovers_point_sources_and_preserves_flux() -> None:
    obj = torch.zeros(48, 48, dtype=torch.float64)
    obj[12, 15] = obj[30, 33] = 500.0
    psf = gaussian_psf(2.0, ndim=2, dtype=torch.float64)
    y = blur(obj, psf, padding="periodic") + 1.0
    x = richardson_lucy(y, psf, iterations=200, padding="periodic")
    assert float(x[12, 15]) > 8 * float(y[12, 15])
    assert abs(float(x.sum()) / float(y.sum()) - 1) < 1e-6


def test_tv_regularisation_smooths_noise() -> None:
    g = np.random.default_rng(1)
    y = torch.from_numpy(g.poisson(20.0, (40, 40)).astype(np.float64))
    psf = gaussian_psf(1.5, ndim=2, dtype=torch.float64)
    plain = richardson_lucy(y, psf, iterations=40)
    tv = richardson_lucy(y, psf, iterations=40, tv=0.01)
    assert float(tv.std()) < 0.8 * float(plain.std())


def test_tiled_matches_untiled_in_3d() -> None:
    y = torch.from_numpy(ref.bead_image(2, shape=(16, 40, 40), sigma=1.5, beads=20)) + 1
    psf = gaussian_psf(1.2, ndim=3)
    full = richardson_lucy(y, psf, iterations=8)
    tiled = richardson_lucy_tiled(y, psf, tile=(16, 20, 20), halo=8, iterations=8)
    assert float((tiled - full).abs().max() / full.abs().max()) < 2e-3


def test_refine_psf_moves_toward_planted_width() -> None:
    y = torch.from_numpy(ref.bead_image(0, shape=(24, 24), sigma=2.0, beads=3, photons=5000))
    res = refine_psf(
        y, GaussianPSF(1.4, ndim=2, size=13, isotropic=True), steps=3, iterations=20, lr=0.08
    )
    assert float(res.psf_model.sigma.detach()[0]) > 1.5  # every step moved toward 2.0
    assert res.deconvolved.shape == y.shape


@pytest.mark.slow
@pytest.mark.parametrize("start", [1.6, 2.4])
def test_refine_psf_recovers_planted_width_within_5_percent(start: float) -> None:
    # from too narrow and too wide starts (the wide side used to overshoot to ~1.6 px)
    y = torch.from_numpy(ref.bead_image(0, shape=(32, 32), sigma=2.0, beads=4, photons=5000))
    res = refine_psf(
        y, GaussianPSF(start, ndim=2, size=15, isotropic=True), steps=25, iterations=200, lr=0.08
    )
    assert abs(float(res.psf_model.sigma.detach()[0]) / 2.0 - 1) < 0.05
    assert min(res.losses) <= res.losses[0]


def test_gradcheck_psf_width() -> None:
    y = torch.rand(10, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    s = torch.tensor([1.1, 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: richardson_lucy(y, gaussian_psf(s, size=5), iterations=4), (s,), fast_mode=True
    )


def test_module_parameter_and_self_supervised_loss() -> None:
    m = Deconvolution(sigma=1.2, iterations=5).double()
    y = torch.from_numpy(ref.bead_image(1, shape=(24, 24), sigma=1.2)).double() + 1
    out = m(y)
    loss = m.self_supervised_loss({"image": y}, out)
    loss.backward()
    assert m.log_sigma.grad is not None and bool(torch.isfinite(m.log_sigma.grad).all())


def test_psf_models() -> None:
    sz, sy, sx = widefield_psf(
        na=1.4, wavelength=0.52, pixel_size=0.065, refractive_index=1.518, z_step=0.2
    )
    assert sz > sy == sx
    with pytest.raises(ValueError, match="na: expected a numerical aperture below"):
        widefield_psf(na=1.6, wavelength=0.5, pixel_size=0.1, refractive_index=1.518)


@pytest.mark.parametrize(
    ("psf", "match"),
    [
        (np.ones((41, 3)) / 123, r"psf: expected a PSF no larger than the image \(32, 32\)"),
        (np.ones((3, 3)), "psf: expected a normalised PSF .sum 1., got sum=9"),
        (-np.ones((3, 3)) / 9 * np.array([[1, 1, 1], [1, -11, 1], [1, 1, 1]]), "non-negative"),
    ],
)
def test_bad_psf(psf: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        richardson_lucy(torch.ones(32, 32), torch.from_numpy(psf))


def test_bad_options() -> None:
    psf = gaussian_psf(1.0, ndim=2)
    with pytest.raises(ValueError, match="padding: expected one of"):
        richardson_lucy(torch.ones(8, 8), psf, padding="mirror")
    with pytest.raises(ValueError, match="iterations"):
        richardson_lucy(torch.ones(16, 16), psf, iterations=-1)
