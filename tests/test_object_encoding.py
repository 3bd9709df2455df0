"""G_O's two output channels: encodings round-trip, and neither channel is inert inside H (issue: the
z-scored attenuation channel got ~1000x less intensity-cycle gradient than phase)."""

import numpy as np
import pytest
import torch

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.data.normalise import (
    OBJECT_OUTPUTS,
    Normalisation,
    compute_normalisation,
    decode_object,
    encode_object,
    object_statistics,
)
from phasegan_hpc.losses import cycle_l1, frc_loss
from phasegan_hpc.physics import FresnelPropagator, contrast_transfer_gains, object_wavefield
from phasegan_hpc.train.step import build_trainables


@pytest.mark.parametrize("output", OBJECT_OUTPUTS)
def test_encoding_round_trips_and_wavefield_matches_physics(output):
    rng = np.random.default_rng(0)
    obj = np.stack([rng.uniform(-2.5, 0.5, (3, 16, 16)), rng.uniform(0, 3e-3, (3, 16, 16))], 1)
    back = decode_object(torch.from_numpy(encode_object(obj, output)), output).numpy()
    np.testing.assert_allclose(back, obj, atol=1e-12)
    # the normalised channels give the same psi as the physics' object_wavefield (float64 reference)
    from phasegan_hpc.data.normalise import Normalisation

    norm = Normalisation(1.0, 0.1, (0.9, -0.3), (0.2, 0.2), output)
    t = torch.from_numpy(obj)
    psi = norm.wavefield(norm.norm_object(t))
    ref = object_wavefield(t[:, 0], t[:, 1])
    assert torch.allclose(psi, ref, atol=1e-12)


def cycle_gradient_ratio(cfg, norm, prop, intensity: np.ndarray) -> float:
    """rms of d(intensity-cycle loss)/d(G_O output channel 0) over that of channel 1, at initialisation."""
    torch.manual_seed(0)
    gens = build_trainables(cfg, "phasegan", prop, norm).generators
    x = norm.norm_intensity(torch.from_numpy(intensity))
    fake = gens.g_o(x)
    fake.retain_grad()
    rec = gens.to_detector(fake)  # G_D |H G_O(I)|^2: the intensity cycle of eq. 3 and 4
    (cfg.loss.alpha_cyc * cycle_l1(rec, x) + cfg.loss.alpha_frc * frc_loss(rec, x)).backward()
    rms = fake.grad.square().mean(dim=(0, 2, 3)).sqrt()
    return float(rms[0] / rms[1])


def channel_gradient_ratio(tiny_data, output: str, scale: str) -> float:
    """:func:`cycle_gradient_ratio` of configs/tiny.toml on the simulated weak-phase data."""
    cfg = with_overrides(load_config("configs/tiny.toml"), {"model.output": output, "model.object_scale": scale})
    inten = FrameStack(tiny_data / "intensities.h5", ("intensity",))
    objects = FrameStack(tiny_data / "objects.h5", ("phase", "attenuation"))
    prop = FresnelPropagator((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    gains = contrast_transfer_gains((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    norm = compute_normalisation(inten, 0, objects, (0, 1), 32, 0, output, scale, gains)
    return cycle_gradient_ratio(cfg, norm, prop, inten[np.arange(8)])


def foam_like(n: int = 8, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, FresnelPropagator]:
    """Strong phase objects at configs/foam-tiny.toml's geometry (phase ~ -10 +- 7 rad, attenuation ~0.02
    +- 0.014: a 25.7 keV foam seen 5 mm behind at 1.6 um) and their detector frames at twice the pixel size
    (float32 (n, 1, size / 2, size / 2))."""
    from scipy.ndimage import gaussian_filter

    from phasegan_hpc.physics.optics import wavelength_m

    rng = np.random.default_rng(seed)
    field = np.stack([gaussian_filter(rng.standard_normal((size, size)), 3, mode="wrap") for _ in range(n)])
    field = (field - field.mean()) / field.std()
    obj = np.stack([-10 + 7 * field, 0.02 + 0.014 * field], 1)
    prop = FresnelPropagator((size, size), pixel_size_m=1.6e-6, distance_m=5e-3, wavelength_m=wavelength_m(25.7))
    t = torch.from_numpy(obj)
    inten = prop.intensity(object_wavefield(t[:, 0], t[:, 1])).numpy()
    detector = inten.reshape(n, size // 2, 2, size // 2, 2).mean(axis=(2, 4))[:, None].astype(np.float32)
    return obj, detector, prop


@pytest.mark.parametrize("scale", ["ctf", "channel"])
def test_ctf_scale_keeps_attenuation_alive_on_a_strong_phase_object(scale):
    """The foam case: at chi <= 0.07 phase barely reaches the detector; per-channel z-scores make
    attenuation inert (ratio >> 10) and the contrast-transfer scale balances the two channels."""
    obj, detector, prop = foam_like()
    cfg = with_overrides(load_config("configs/foam-tiny.toml"), {"model.object_scale": scale})
    gains = contrast_transfer_gains((64, 64), pixel_size_m=prop.pixel_size_m, distance_m=prop.distance_m,
                                    wavelength_m=prop.wavelength_m)
    means, stds = object_statistics(obj, "phase_attenuation", scale, gains)
    norm = Normalisation(float(detector.mean()), float(detector.std()), means, stds, "phase_attenuation")
    ratio = cycle_gradient_ratio(cfg, norm, prop, detector)
    if scale == "ctf":
        assert 0.1 <= ratio <= 10, ratio
    else:
        assert ratio > 10, ratio


def test_shared_scale_refuses_a_strong_phase_object():
    """One scale for (phase, attenuation) of 7 rad phase std would be a 5-neper attenuation unit: exp(-A)
    overflows the intensity cycle at the first step; a clear error names the fix instead."""
    from phasegan_hpc.errors import DataError

    obj, _, _ = foam_like()
    with pytest.raises(DataError, match='object_scale = "ctf"'):
        object_statistics(obj, "phase_attenuation", "shared")


def test_contrast_transfer_gains_match_a_float64_numpy_reference():
    n, dx, z, lam = 48, 1e-6, 0.05, 1e-10
    f = np.fft.fftfreq(n, dx)
    chi = np.pi * lam * z * (f[:, None] ** 2 + f[None, :] ** 2)
    g_att, g_phase = contrast_transfer_gains((n, n), pixel_size_m=dx, distance_m=z, wavelength_m=lam)
    assert g_att == pytest.approx(np.sqrt(np.mean(np.cos(chi) ** 2)), rel=1e-12)
    assert g_phase == pytest.approx(np.sqrt(np.mean(4 * np.sin(chi) ** 2)), rel=1e-12)
    # the linear response it stands for: a small phase of white spectrum through H (exact forward model)
    rng = np.random.default_rng(1)
    phi = 1e-4 * rng.standard_normal((n, n))
    prop = FresnelPropagator((n, n), pixel_size_m=dx, distance_m=z, wavelength_m=lam)
    t = torch.from_numpy(phi)[None]
    di = prop.intensity(object_wavefield(t, torch.zeros_like(t)))[0].numpy() - 1
    assert np.std(di) / np.std(phi) == pytest.approx(g_phase, rel=0.05)


@pytest.mark.parametrize("output", OBJECT_OUTPUTS)
def test_no_output_channel_is_inert_through_H(tiny_data, output):
    ratio = channel_gradient_ratio(tiny_data, output, "shared")
    assert 0.1 <= ratio <= 10, ratio


def test_per_channel_z_scores_make_attenuation_inert(tiny_data):
    """The measurement the test above guards against: the old encoding fails it by orders of magnitude."""
    ratio = channel_gradient_ratio(tiny_data, "phase_attenuation", "channel")
    assert ratio > 100, ratio


def test_real_imag_refuses_phases_it_would_wrap(tmp_path):
    import h5py

    from phasegan_hpc.errors import DataError

    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "o.h5", "w") as f:
        f["phase"] = rng.uniform(-4.0, 0.0, (4, 32, 32)).astype(np.float32)  # beyond -pi: arg psi wraps
        f["attenuation"] = np.zeros((4, 32, 32), np.float32)
        f["intensity"] = np.ones((4, 32, 32), np.float32)
    objects = FrameStack(tmp_path / "o.h5", ("phase", "attenuation"))
    inten = FrameStack(tmp_path / "o.h5", ("intensity",))
    with pytest.raises(DataError, match="phase_attenuation"):
        compute_normalisation(inten, 0, objects, (0, 1), 4, 0, "real_imag", "shared")
    norm = compute_normalisation(inten, 0, objects, (0, 1), 4, 0, "phase_attenuation", "shared")
    assert norm.output == "phase_attenuation" and norm.object_std[0] == norm.object_std[1]
