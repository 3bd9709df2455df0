"""Paganin single-material retrieval recovers a phantom's phase in the TIE regime (DESIGN.md §3)."""

import numpy as np
import pytest
import torch

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import FresnelPropagator, object_wavefield, paganin, thickness_to_phase_attenuation

GEOM = dict(pixel_size_m=1e-6, wavelength_m=1e-10)
DELTA, BETA = 1e-3, 1e-6


def smooth_phantom(n: int = 64) -> np.ndarray:
    """Thickness [m] of three overlapping smooth blobs of one material (zero at the borders)."""
    yy, xx = np.mgrid[:n, :n].astype(float)
    t = np.zeros((n, n))
    for cy, cx, s, t0 in [(24, 28, 5.0, 8e-9), (40, 36, 7.0, 6e-9), (30, 44, 4.0, 5e-9)]:
        t += t0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return t


def hologram(thickness: np.ndarray, distance_m: float) -> np.ndarray:
    phase, att = thickness_to_phase_attenuation(thickness, delta=DELTA, beta=BETA, wavelength_m=1e-10)
    psi = object_wavefield(torch.from_numpy(phase), torch.from_numpy(att))
    return FresnelPropagator(thickness.shape, distance_m=distance_m, **GEOM).intensity(psi).numpy()


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_recovers_single_material_phase_and_catches_flipped_sign():
    t = smooth_phantom()
    true_phase, true_att = thickness_to_phase_attenuation(t, delta=DELTA, beta=BETA, wavelength_m=1e-10)
    z = 0.1
    phase, att = paganin(hologram(t, z), distance_m=z, delta_beta=DELTA / BETA, **GEOM)
    assert rel_err(phase, true_phase) < 0.03
    assert rel_err(att, true_att) < 0.03
    # A propagator with the opposite sign convention (equivalently z -> -z) gives a hologram Paganin
    # cannot explain: the retrieval is then far off.
    phase_flipped, _ = paganin(hologram(t, -z), distance_m=z, delta_beta=DELTA / BETA, **GEOM)
    assert rel_err(phase_flipped, true_phase) > 0.5


def test_array_types_and_dtypes_round_trip():
    inten = hologram(smooth_phantom(32), 0.1)
    p_np, a_np = paganin(inten.astype(np.float32), distance_m=0.1, delta_beta=1000.0, **GEOM)
    assert isinstance(p_np, np.ndarray) and p_np.dtype == np.float32 and a_np.dtype == np.float32
    p64, _ = paganin(inten, distance_m=0.1, delta_beta=1000.0, **GEOM)
    assert p64.dtype == np.float64
    p_t, a_t = paganin(torch.from_numpy(inten), distance_m=0.1, delta_beta=1000.0, **GEOM)
    assert isinstance(p_t, torch.Tensor) and p_t.dtype == torch.float64
    np.testing.assert_allclose(p_t.numpy(), p64, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p_np, p64, rtol=1e-4, atol=1e-6)
    # Batches are retrieved frame by frame.
    batch = np.stack([inten, inten[::-1]])
    pb, _ = paganin(batch, distance_m=0.1, delta_beta=1000.0, **GEOM)
    np.testing.assert_allclose(pb[1], paganin(inten[::-1].copy(), distance_m=0.1, delta_beta=1000.0, **GEOM)[0])


def test_uniform_beam_gives_zero_phase():
    p, a = paganin(np.ones((16, 16)), distance_m=0.1, delta_beta=100.0, energy_kev=20.0, pixel_size_m=1e-6)
    assert np.abs(p).max() < 1e-12 and np.abs(a).max() < 1e-12


@pytest.mark.parametrize("bad", [dict(distance_m=0.0), dict(delta_beta=-1.0), dict(pixel_size_m=0.0)])
def test_invalid_parameters(bad):
    kw = dict(distance_m=0.1, delta_beta=100.0, pixel_size_m=1e-6, wavelength_m=1e-10) | bad
    with pytest.raises(PhysicsError):
        paganin(np.ones((16, 16)), **kw)
    with pytest.raises(PhysicsError, match="at least 16"):
        paganin(np.ones((8, 16)), distance_m=0.1, delta_beta=100.0, pixel_size_m=1e-6, wavelength_m=1e-10)
