import math

import numpy as np
import torch

from phasegan_hpc.physics import object_wavefield, phase_attenuation, thickness_to_phase_attenuation


def test_paper_thickness_gives_expected_phase_and_attenuation():
    # T = 10 nm, delta = 1e-3, beta = 1e-6, lambda = 1 A: phi = -2 pi / lambda * delta * T = -0.2 pi.
    t = np.array([0.0, 10e-9])
    phase, att = thickness_to_phase_attenuation(t, delta=1e-3, beta=1e-6, wavelength_m=1e-10)
    np.testing.assert_allclose(phase, [0.0, -0.2 * math.pi], rtol=1e-12)
    mu = 4 * math.pi * 1e-6 / 1e-10  # mu = 4 pi beta / lambda
    np.testing.assert_allclose(att, [0.0, mu * 10e-9], rtol=1e-12)


def test_object_wavefield_matches_formula_and_inverts():
    g = torch.Generator().manual_seed(0)
    phase = (torch.rand(3, 16, 16, generator=g, dtype=torch.float64) - 0.5) * 6.0  # within (-pi, pi]
    att = torch.rand(3, 16, 16, generator=g, dtype=torch.float64) * 3.0
    psi = object_wavefield(phase, att)
    assert psi.dtype == torch.complex128
    ref = np.exp(-att.numpy() / 2 + 1j * phase.numpy())
    np.testing.assert_allclose(psi.numpy(), ref, rtol=1e-13, atol=1e-15)
    p2, a2 = phase_attenuation(psi)
    torch.testing.assert_close(p2, phase, rtol=0, atol=1e-12)
    torch.testing.assert_close(a2, att, rtol=0, atol=1e-12)
    assert object_wavefield(phase.float(), att.float()).dtype == torch.complex64


def test_phase_attenuation_of_zero_field_is_finite():
    _, att = phase_attenuation(torch.zeros(2, 2, dtype=torch.complex64))
    assert torch.isfinite(att).all() and (att > 60).all()
