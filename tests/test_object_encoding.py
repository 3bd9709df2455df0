"""G_O's two output channels: encodings round-trip, and neither channel is inert inside H (issue: the
z-scored attenuation channel got ~1000x less intensity-cycle gradient than phase)."""

import numpy as np
import pytest
import torch

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.data.normalise import OBJECT_OUTPUTS, compute_normalisation, decode_object, encode_object
from phasegan_hpc.losses import cycle_l1, frc_loss
from phasegan_hpc.physics import FresnelPropagator, object_wavefield
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


def channel_gradient_ratio(tiny_data, output: str, scale: str) -> float:
    """rms of d(intensity-cycle loss)/d(G_O output channel 0) over that of channel 1, at initialisation."""
    cfg = with_overrides(load_config("configs/tiny.toml"), {"model.output": output, "model.object_scale": scale})
    inten = FrameStack(tiny_data / "intensities.h5", ("intensity",))
    objects = FrameStack(tiny_data / "objects.h5", ("phase", "attenuation"))
    norm = compute_normalisation(inten, 0, objects, (0, 1), 32, 0, output, scale)
    prop = FresnelPropagator((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    torch.manual_seed(0)
    gens = build_trainables(cfg, "phasegan", prop, norm).generators
    x = norm.norm_intensity(torch.from_numpy(inten[np.arange(8)]))
    fake = gens.g_o(x)
    fake.retain_grad()
    rec = gens.to_detector(fake)  # G_D |H G_O(I)|^2: the intensity cycle of eq. 3 and 4
    (cfg.loss.alpha_cyc * cycle_l1(rec, x) + cfg.loss.alpha_frc * frc_loss(rec, x)).backward()
    rms = fake.grad.square().mean(dim=(0, 2, 3)).sqrt()
    return float(rms[0] / rms[1])


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
