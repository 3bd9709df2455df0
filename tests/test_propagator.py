"""The Fresnel propagator H against independent references (DESIGN.md §3)."""

import math

import numpy as np
import pytest
import torch

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import FresnelPropagator

PAPER = dict(pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)


def numpy_reference(psi: np.ndarray, dx: float, z: float, lam: float) -> np.ndarray:
    """float64 numpy transfer-function propagation, written independently of the module."""
    h, w = psi.shape[-2:]
    fy, fx = np.meshgrid(np.fft.fftfreq(h, dx), np.fft.fftfreq(w, dx), indexing="ij")
    return np.fft.ifft2(np.fft.fft2(psi) * np.exp(-1j * np.pi * lam * z * (fx**2 + fy**2)))


def random_field(shape, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    re, im = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    return torch.complex(re, im).to(dtype)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_matches_float64_numpy_reference(shape):
    psi = random_field((3, *shape))
    ref = numpy_reference(psi.numpy(), **{"dx": 1e-6, "z": 0.1, "lam": 1e-10})
    prop = FresnelPropagator(shape, **PAPER)
    np.testing.assert_allclose(prop(psi).numpy(), ref, rtol=0, atol=1e-12)
    out64 = prop(psi.to(torch.complex64))
    assert out64.dtype == torch.complex64
    np.testing.assert_allclose(out64.numpy(), ref, rtol=0, atol=2e-5)
    inten = prop.intensity(psi)
    assert inten.dtype == torch.float64
    np.testing.assert_allclose(inten.numpy(), np.abs(ref) ** 2, rtol=1e-10, atol=1e-12)


def test_gaussian_beam_matches_paraxial_analytic_solution():
    # u(r, z) = 1 / (1 + i z / zR) exp(-r^2 / (w0^2 (1 + i z / zR))) for fields ~ exp(i k z - i w t).
    n, dx, lam, w0, z = 128, 1e-6, 1e-10, 3e-6, 0.5
    zr = math.pi * w0**2 / lam
    c = (np.arange(n) - n / 2) * dx
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    psi0 = torch.from_numpy(np.exp(-r2 / w0**2).astype(np.complex128))
    out = FresnelPropagator((n, n), pixel_size_m=dx, distance_m=z, wavelength_m=lam)(psi0).numpy()
    q = 1 + 1j * z / zr
    analytic = np.exp(-r2 / (w0**2 * q)) / q
    np.testing.assert_allclose(out, analytic, rtol=0, atol=1e-9)
    # The beam width w(z) = w0 sqrt(1 + (z / zR)^2) from the intensity's second moment <r^2> = w^2 / 2.
    i = np.abs(out) ** 2
    w_measured = math.sqrt(2 * (r2 * i).sum() / i.sum())
    assert w_measured == pytest.approx(w0 * math.sqrt(1 + (z / zr) ** 2), rel=1e-6)
    assert w_measured > 1.9 * w0  # it really spread


@pytest.mark.parametrize("z", [0.01, 0.1, -0.3])
def test_energy_is_conserved(z):
    psi = random_field((2, 32, 32), seed=1)
    prop = FresnelPropagator((32, 32), pixel_size_m=1e-6, distance_m=z, wavelength_m=1e-10)
    e_in = (psi.abs() ** 2).sum(dim=(-2, -1))
    torch.testing.assert_close(prop.intensity(psi).sum(dim=(-2, -1)), e_in, rtol=1e-12, atol=0)


def test_zero_distance_and_round_trip_are_identity():
    psi = random_field((32, 32), seed=2)
    assert torch.equal(FresnelPropagator((32, 32), pixel_size_m=1e-6, distance_m=0.0, wavelength_m=1e-10)(psi), psi)
    fwd = FresnelPropagator((32, 32), **PAPER)
    back = FresnelPropagator((32, 32), pixel_size_m=1e-6, distance_m=-0.1, wavelength_m=1e-10)
    torch.testing.assert_close(back(fwd(psi)), psi, rtol=0, atol=1e-12)
    assert not torch.allclose(fwd(psi), psi, atol=1e-3)  # and the forward step did something


def test_weak_phase_object_obeys_tie_sign_convention():
    # TIE: I(z) = 1 - (z / k) laplacian(phi) for a weak, smooth phase object. A thicker region has a more
    # negative phase (phi = -k delta T), i.e. a phase minimum with laplacian > 0: it darkens at its centre.
    n, dx, lam, z = 64, 1e-6, 1e-10, 0.2
    c = (np.arange(n) - n / 2) * dx
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    s = 6e-6
    phi = -0.1 * np.exp(-r2 / (2 * s * s))
    lap = phi * (r2 / s**4 - 2 / s**2)
    k = 2 * math.pi / lam
    tie = 1 - z / k * lap
    psi = torch.from_numpy(np.exp(1j * phi))
    inten = FresnelPropagator((n, n), pixel_size_m=dx, distance_m=z, wavelength_m=lam).intensity(psi).numpy()
    assert inten[n // 2, n // 2] < 0.99
    np.testing.assert_allclose(inten, tie, atol=0.05 * np.abs(tie - 1).max())


def _disk_near_edge(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    disk = (yy - 12) ** 2 + (xx - n // 2) ** 2 <= 5**2
    return np.exp(1j * 0.8 * disk)  # unit field, a strong phase disk 7 px from the top edge


def test_padding_suppresses_wraparound_against_large_grid_reference():
    n, big, z = 64, 256, 0.5
    psi = _disk_near_edge(n)
    embedded = np.ones((big, big), complex)
    o = (big - n) // 2
    embedded[o : o + n, o : o + n] = psi
    ref = numpy_reference(embedded, 1e-6, z, 1e-10)[o : o + n, o : o + n]
    kw = dict(pixel_size_m=1e-6, distance_m=z, wavelength_m=1e-10)
    err = {}
    for pad, mode in [(0, "edge"), (48, "edge"), (48, "constant")]:
        out = FresnelPropagator((n, n), pad=pad, pad_mode=mode, **kw)(torch.from_numpy(psi)).numpy()
        err[pad, mode] = np.abs(out - ref).max()
    assert err[0, "edge"] > 0.05  # wrap-around is real here
    assert err[48, "edge"] < 0.1 * err[0, "edge"]
    assert err[48, "constant"] < 0.1 * err[0, "edge"]


def test_gradcheck_complex128_with_padding():
    prop = FresnelPropagator((16, 16), pad=3, **PAPER)
    psi = random_field((16, 16), seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(prop, (psi,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(prop.intensity, (psi,), eps=1e-6, atol=1e-6)


def test_kernel_is_cached_per_device_and_dtype():
    prop = FresnelPropagator((16, 16), **PAPER)
    k64 = prop.kernel(torch.device("cpu"), torch.complex64)
    assert prop.kernel(torch.device("cpu"), torch.complex64) is k64
    k128 = prop.kernel(torch.device("cpu"), torch.complex128)
    assert k128.dtype == torch.complex128 and k64.dtype == torch.complex64
    assert prop.kernel(torch.device("cpu"), torch.complex128) is k128
    assert list(prop.parameters()) == [] and prop.state_dict() == {}


def test_energy_kev_is_accepted_and_batches_broadcast():
    a = FresnelPropagator((16, 16), pixel_size_m=1e-6, distance_m=0.1, energy_kev=12.39841984)
    b = FresnelPropagator((16, 16), **PAPER)
    psi = random_field((2, 3, 16, 16), seed=4)
    torch.testing.assert_close(a(psi), b(psi), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a(psi)[1, 2], a(psi[1, 2]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pixel_size_m=0.0, distance_m=0.1, wavelength_m=1e-10), "pixel_size_m"),
        (dict(pixel_size_m=-1e-6, distance_m=0.1, wavelength_m=1e-10), "pixel_size_m"),
        (dict(pixel_size_m=1e-6, distance_m=0.1, wavelength_m=0.0), "wavelength_m"),
        (dict(pixel_size_m=1e-6, distance_m=0.1, energy_kev=-3.0), "energy_kev"),
        (dict(pixel_size_m=1e-6, distance_m=0.1), "exactly one"),
        (dict(pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10, energy_kev=12.0), "exactly one"),
        (dict(pixel_size_m=1e-6, distance_m=float("nan"), wavelength_m=1e-10), "distance_m"),
        (dict(pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10, pad=-1), "pad"),
        (dict(pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10, pad_mode="wrap"), "pad_mode"),
    ],
)
def test_invalid_physics_is_rejected(kwargs, match):
    with pytest.raises(PhysicsError, match=match):
        FresnelPropagator((32, 32), **kwargs)


def test_small_grid_and_wrong_input_are_rejected():
    with pytest.raises(PhysicsError, match="at least 16"):
        FresnelPropagator((8, 32), **PAPER)
    prop = FresnelPropagator((16, 16), **PAPER)
    with pytest.raises(TypeError, match="complex"):
        prop(torch.ones(16, 16))
    with pytest.raises(ValueError, match="shape"):
        prop(torch.ones(16, 17, dtype=torch.complex64))


def test_undersampling_warns():
    with pytest.warns(UserWarning, match="under-sampled"):
        FresnelPropagator((16, 16), pixel_size_m=1e-6, distance_m=1.0, wavelength_m=1e-10)
