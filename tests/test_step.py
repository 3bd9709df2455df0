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
