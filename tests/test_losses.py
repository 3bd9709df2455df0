"""FRC, adversarial and cycle losses; L2, DSSIM and FRCM metrics against independent references."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from phasegan_hpc.losses import adversarial_loss, cycle_l1, discriminator_loss, dssim, frc, frc_loss, frcm, l2, ssim
from phasegan_hpc.losses.frc import frc_reference_loop, frc_resolution_px, ring_sizes


def plain_frc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-ring loop over pixels in numpy float64, for one image pair: the textbook definition."""
    h, w = a.shape
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    n = min(h, w) // 2 + 1
    num, pa, pb = np.zeros(n), np.zeros(n), np.zeros(n)
    for y in range(h):
        for x in range(w):
            fy, fx = np.fft.fftfreq(h)[y], np.fft.fftfreq(w)[x]
            r = int(np.round(math.hypot(fy, fx) * min(h, w)))
            if r < n:
                num[r] += (fa[y, x] * np.conj(fb[y, x])).real
                pa[r] += abs(fa[y, x]) ** 2
                pb[r] += abs(fb[y, x]) ** 2
    return num / np.sqrt(pa * pb + 1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (33, 31)])
def test_frc_matches_plain_per_ring_loop(shape):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, *shape, generator=g)
    b = a + 0.7 * torch.randn(2, 3, *shape, generator=g)
    got = frc(a, b)
    ref = np.stack([plain_frc(a[i, j].double().numpy(), b[i, j].double().numpy())
                    for i in range(2) for j in range(3)]).reshape(2, 3, -1)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)  # float32 vs float64 loop
    np.testing.assert_allclose(frc_reference_loop(a.double(), b.double()).numpy(), ref, atol=1e-12)
    # complex fields take the full-spectrum path and agree too
    np.testing.assert_allclose(frc(a.to(torch.complex64), b.to(torch.complex64)).numpy(), ref, atol=1e-5)


def test_frc_of_identical_images_is_one_and_of_noise_near_zero():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(frc(x, x), torch.ones(4, 33, dtype=torch.float64), rtol=0, atol=1e-12)
    y = torch.randn(4, 64, 64, generator=g, dtype=torch.float64)
    noise = frc(x, y)[:, 4:]  # rings with >= 25 pixels
    sigma = 1 / torch.sqrt(ring_sizes(64, 64)[4:])  # FRC of independent noise ~ N(0, 1/n_ring)
    assert float((noise.abs() / sigma).mean()) < 1.2
    assert float(frc_loss(x, x)) < 1e-20 and float(frc_loss(x, y)) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("shape", [(1, 16, 24), (2, 15, 17)])
def test_frc_loss_analytic_gradient(shape):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = (a.detach() + torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(frc_loss, (a, b))  # the hand-written backward against finite differences
    # ... and against autograd through the plain definition
    ref = (1.0 - frc_reference_loop(a, b)).square().mean()
    ga, gb = torch.autograd.grad(frc_loss(a, b), (a, b))
    ra, rb = torch.autograd.grad(ref, (a, b))
    torch.testing.assert_close(ga, ra, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(gb, rb, rtol=1e-9, atol=1e-15)
    assert float(frc_loss(a, b).detach()) == pytest.approx(float(ref.detach()), rel=1e-12)


def test_halfbit_resolution_tracks_noise_level():
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    img = sum(torch.sin(2 * math.pi * (k * xx + (k % 3) * yy) / 64) for k in range(1, 20)).repeat(2, 1, 1)
    clean = frc_resolution_px(img, img)
    noisy = frc_resolution_px(img, img + 5.0 * torch.randn(2, 64, 64, generator=g))
    assert torch.all(clean == 2.0)  # never drops: Nyquist
    assert torch.all(noisy > 2.0)


def test_dssim_agrees_with_skimage():
    rng = np.random.default_rng(4)
    ref = rng.random((3, 40, 48))
    pred = ref + 0.2 * rng.standard_normal((3, 40, 48))
    expected = [structural_similarity(p, r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=r.max() - r.min()) for p, r in zip(pred, ref, strict=True)]
    got = ssim(torch.from_numpy(pred), torch.from_numpy(ref))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(dssim(torch.from_numpy(pred), torch.from_numpy(ref)).numpy(),
                               (1 - np.array(expected)) / 2, rtol=1e-10)
    assert float(dssim(torch.from_numpy(ref), torch.from_numpy(ref)).max()) < 1e-12


def test_l2_and_frcm():
    a = torch.zeros(2, 8, 16, 16, dtype=torch.float64)
    b = torch.full_like(a, 0.5)
    torch.testing.assert_close(l2(a, b), torch.full((2, 8), 0.25, dtype=torch.float64))
    # Seeded: with an unseeded draw a ring (the DC term) can carry almost no power now and then, and the
    # 1e-12 guard under the square root then moves FRC off 1 by more than rounding.
    x = torch.randn(5, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(frcm(x, x), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-20)
    assert float(frcm(x, -x).mean()) == pytest.approx(4.0)  # FRC = -1 in every ring


def test_adversarial_losses():
    zero = torch.zeros(2, 1, 3, 3)
    assert float(adversarial_loss(zero, True)) == pytest.approx(math.log(2))
    assert float(adversarial_loss(torch.full_like(zero, 20.0), True)) < 1e-8
    assert float(adversarial_loss(torch.full_like(zero, 20.0), False)) == pytest.approx(20.0, rel=1e-6)
    assert float(adversarial_loss(zero, True, "lsgan")) == pytest.approx(1.0)
    assert float(discriminator_loss(zero, zero)) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="adversarial mode"):
        adversarial_loss(zero, True, "wgan")
    assert float(cycle_l1(torch.ones(3), torch.zeros(3))) == 1.0
