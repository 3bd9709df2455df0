"""Each method's optimisation step lowers its loss when overfitting one tiny batch."""

import pytest
import torch

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.train.step import STEPS, Batch, build_trainables

# The loss a method optimises, without the adversarial terms (which move with the discriminators).
OBJECTIVE = {
    "phasegan": lambda t: t["cyc_o"] + t["cyc_i"] + t["frc_o"] + t["frc_i"],
    "cyclegan": lambda t: t["cyc_o"] + t["cyc_i"] + t["frc_o"] + t["frc_i"],
    "pix2pix": lambda t: t["mse"],
    "paired": lambda t: t["mse"],
}


@pytest.mark.parametrize("method", list(STEPS))
def test_step_overfits_one_batch(method, tiny_data):
    from phasegan_hpc.data.frames import FrameStack

    cfg = with_overrides(load_config("configs/tiny.toml"), {"train.lr_g": 1e-3, "train.lr_d": 1e-4})
    pairs = FrameStack(tiny_data / "paired.h5", ("intensity", "phase", "attenuation"))[slice(0, 4)]
    norm = Normalisation(float(pairs[:, 0].mean()), float(pairs[:, 0].std()),
                         tuple(float(pairs[:, c].mean()) for c in (1, 2)),
                         tuple(float(pairs[:, c].std()) for c in (1, 2)))
    inten = norm.norm_intensity(torch.from_numpy(pairs[:, :1]))
    obj = norm.norm_object(torch.from_numpy(pairs[:, 1:]))
    batch = Batch(inten, obj)
    prop = FresnelPropagator((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    torch.manual_seed(0)
    tr = build_trainables(cfg, method, prop, norm)
    losses = [float(OBJECTIVE[method](STEPS[method](tr, batch, cfg.loss, cfg.train.grad_clip))) for _ in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert end < 0.7 * start, (method, losses[:3], losses[-3:])


def test_bf16_autocast_step_runs_and_keeps_physics_in_fp32(tiny_data):
    from phasegan_hpc.data.frames import FrameStack

    cfg = with_overrides(load_config("configs/tiny.toml"), {"train.amp": "bf16"})
    pairs = FrameStack(tiny_data / "paired.h5", ("intensity", "phase", "attenuation"))[slice(0, 2)]
    norm = Normalisation(1.0, 0.1, (-0.3, 3e-4), (0.3, 3e-4))
    batch = Batch(norm.norm_intensity(torch.from_numpy(pairs[:, :1])), norm.norm_object(torch.from_numpy(pairs[:, 1:])))
    prop = FresnelPropagator((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    torch.manual_seed(0)
    tr = build_trainables(cfg, "phasegan", prop, norm)
    assert tr.amp_dtype is torch.bfloat16 and tr.scaler_g is None
    with tr.autocast():
        out = tr.generators(batch.intensity, batch.obj)
        assert out.fake_object.dtype == torch.bfloat16  # the networks ran in bf16
        assert tr.generators.detector_model(out.fake_object).dtype == torch.float32  # H did not
    terms = STEPS["phasegan"](tr, batch, cfg.loss, 10.0)
    assert all(torch.isfinite(v) for v in terms.values())
    assert all(p.dtype == torch.float32 for p in tr.generators.parameters())  # master weights stay fp32


@pytest.mark.parametrize("config", ["tiny", "foam-tiny"])
def test_fresnel_residual_loss_trains_at_both_detector_scales(config):
    """alpha_fresnel: H alone (binned onto the frames for paper §4's 2x models) must explain the frame. The
    term is finite and falls when one batch is overfitted, at 1x (tiny) and 2x (foam-tiny: 32 px frames,
    64 px objects; this once failed on 64 vs 128 px)."""
    from phasegan_hpc.physics import object_wavefield
    from phasegan_hpc.physics.consistency import gaussian_blur, onto_frames

    cfg = with_overrides(load_config(f"configs/{config}.toml"), {"loss.alpha_fresnel": 100.0, "train.lr_g": 1e-3})
    s, n = cfg.model.upsample, 32
    g = torch.Generator().manual_seed(0)
    phase = 0.5 * gaussian_blur(torch.randn(4, s * n, s * n, generator=g, dtype=torch.float64), 2.0)
    prop = FresnelPropagator((s * n, s * n), pixel_size_m=cfg.physics.pixel_size_m,
                             distance_m=cfg.physics.distance_m, wavelength_m=cfg.physics.wavelength)
    inten = onto_frames(prop.intensity(object_wavefield(phase, torch.zeros_like(phase))), (n, n)).float()
    obj = torch.stack([phase, torch.zeros_like(phase)], 1).float()
    means = (1.0, 0.0) if cfg.model.output == "real_imag" else (0.0, 0.0)
    norm = Normalisation(float(inten.mean()), float(inten.std()), means, (0.3, 0.3), cfg.model.output)
    torch.manual_seed(0)
    tr = build_trainables(cfg, "phasegan", prop.float(), norm)
    batch = Batch(norm.norm_intensity(inten[:, None]), norm.norm_object(obj))
    terms = [STEPS["phasegan"](tr, batch, cfg.loss, cfg.train.grad_clip)["fresnel"] for _ in range(15)]
    assert all(torch.isfinite(t) for t in terms)
    assert float(sum(terms[-3:])) < 0.8 * float(sum(terms[:3])), [float(t) for t in terms]


def test_onto_frames_bins_like_a_plain_loop():
    from phasegan_hpc.physics.consistency import onto_frames

    x = torch.rand(2, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.zeros(2, 4, 6, dtype=torch.float64)
    for i in range(4):
        for j in range(6):
            ref[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(1, 2))
    torch.testing.assert_close(onto_frames(x, (4, 6)), ref)
    assert onto_frames(x, (8, 12)) is x
    with pytest.raises(ValueError, match="do not bin"):
        onto_frames(x, (3, 6))
