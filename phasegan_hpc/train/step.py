"""One optimisation step per method: discriminators first, then generators (paper eq. 1-4 and 6).

Methods (all train the same G_O):
    phasegan  L_GAN + alpha_cyc L_cyc + alpha_frc L_FRC with H in both cycles; G_D learns detector effects
    cyclegan  the same without H (G_D maps objects straight to detector frames)
    pix2pix   adversarial (D_O) + alpha_mse * L2 on paired data (eq. 6)
    paired    L2 on paired data

Every step returns its named loss terms, detached (``dict[str, Tensor]``): that dict is what gets logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from phasegan_hpc.config import Config, LossConfig
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.losses import adversarial_loss, cycle_l1, discriminator_loss, frc_loss
from phasegan_hpc.models.cycle import DetectorModel, DiscriminatorPair, GeneratorPair
from phasegan_hpc.models.registry import (
    INTENSITY_CHANNELS,
    OBJECT_CHANNELS,
    build_discriminator,
    build_from_arch,
    generator_arch,
    load_encoder_weights,
)
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.physics.consistency import SIGMA_PX, illumination_matched, onto_frames

PAIRED_METHODS = ("pix2pix", "paired")


@dataclass
class Batch:
    """A training batch in normalised units: detector frames (B, 1, H, W), objects (B, 2, H, W).

    Paired methods get matching rows; unpaired methods get independent draws."""

    intensity: torch.Tensor
    obj: torch.Tensor


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Trainables:
    """Networks (possibly DDP-wrapped), their two optimisers, and mixed precision.

    ``amp_dtype`` (bf16 / fp16, or None) runs the network forward passes under autocast; the physics (H)
    and the FRC stay float32. fp16 uses one gradient scaler per optimiser.
    """

    generators: nn.Module
    discriminators: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    amp_dtype: torch.dtype | None = None
    device_type: str = "cpu"
    scaler_g: torch.amp.GradScaler | None = None
    scaler_d: torch.amp.GradScaler | None = None
    norm: Normalisation | None = None  # the run's normalisation (the intensity cycle's illumination fit)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


def build_trainables(cfg: Config, method: str, propagator: FresnelPropagator, norm: Normalisation,
                     wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
                     device: torch.device | str = "cpu") -> Trainables:
    """Networks for ``method``, initialised N(0, 0.02) (G_O's encoder from VGG11 if configured), wrapped by
    ``wrap`` (DDP under Ray Train), Adam optimisers with the paper's settings from ``cfg.train``, and
    ``cfg.train.amp`` mixed precision on ``device``."""
    m, t = cfg.model, cfg.train
    g_o = build_from_arch(generator_arch(m, "g_o"), m.init)
    if m.encoder_weights:
        load_encoder_weights(g_o, m.encoder_weights)
    g_d = d_d = None
    if method == "phasegan":
        g_d = build_from_arch(generator_arch(m, "g_d", method), m.init)
        gens = GeneratorPair(g_o, g_d, DetectorModel(propagator, norm))
    elif method == "cyclegan":
        g_d = build_from_arch(generator_arch(m, "g_d", method), m.init)
        gens = GeneratorPair(g_o, g_d, None)
    else:
        gens = GeneratorPair(g_o)
    discs = None
    if method != "paired":
        d_o = build_discriminator(m.discriminator, OBJECT_CHANNELS, m.disc_filters, m.disc_norm)
        if g_d is not None:
            d_d = build_discriminator(m.discriminator, INTENSITY_CHANNELS, m.disc_filters, m.disc_norm)
        discs = DiscriminatorPair(d_o, d_d)
    betas = (t.beta1, t.beta2)
    gens = wrap(gens)
    opt_g = torch.optim.Adam(gens.parameters(), lr=t.lr_g, betas=betas)
    opt_d = None
    if discs is not None:
        discs = wrap(discs)
        opt_d = torch.optim.Adam(discs.parameters(), lr=t.lr_d, betas=betas)
    device_type = torch.device(device).type
    amp_dtype = AMP_DTYPES[t.amp]
    fp16 = amp_dtype is torch.float16
    return Trainables(gens, discs, opt_g, opt_d, amp_dtype, device_type,
                      torch.amp.GradScaler(device_type) if fp16 else None,
                      torch.amp.GradScaler(device_type) if fp16 and opt_d is not None else None, norm)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _apply(opt: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor, grad_clip: float,
           scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Backward, clip the gradient norm (if > 0), step; returns the pre-clip gradient norm."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)  # skipped when the scaled gradients overflowed
        scaler.update()
    return norm.detach()


def step_cycle(t: Trainables, batch: Batch, loss: LossConfig, grad_clip: float) -> dict[str, torch.Tensor]:
    """PhaseGAN (with H) or CycleGAN (without): the generator pair decides. Eq. 1-4."""
    real_i, real_o = batch.intensity, batch.obj
    with t.autocast():
        out = t.generators(real_i, real_o)
    discs = unwrap(t.discriminators)

    # Discriminators: real vs (detached) fake, both domains (eq. 2, maximised over D_O, D_D).
    _set_requires_grad(discs, True)
    with t.autocast():
        lo_real, lo_fake, ld_real, ld_fake = t.discriminators(real_o, out.fake_object.detach(), real_i,
                                                              out.fake_intensity.detach())
        d_o = discriminator_loss(lo_real, lo_fake, loss.adversarial)
        d_d = discriminator_loss(ld_real, ld_fake, loss.adversarial)
    d_grad = _apply(t.opt_d, discs, d_o + d_d, grad_clip, t.scaler_d)

    # Generators: fool the (frozen) discriminators, close both cycles (eq. 2-4).
    _set_requires_grad(discs, False)
    with t.autocast():
        adv_o = adversarial_loss(discs.d_o(out.fake_object), True, loss.adversarial)
        adv_d = adversarial_loss(discs.d_d(out.fake_intensity), True, loss.adversarial)
    rec_i = out.reconstructed_intensity.float()
    if loss.illumination_sigma_px > 0:  # close the intensity cycle up to a smooth per-frame illumination
        n = t.norm
        rec_i = n.norm_intensity(illumination_matched(n.denorm_intensity(rec_i[:, 0]), n.denorm_intensity(
            real_i[:, 0]), loss.illumination_sigma_px))[:, None]
    cyc_o = cycle_l1(out.reconstructed_object.float(), real_o)
    cyc_i = cycle_l1(rec_i, real_i)
    frc_o = frc_loss(out.reconstructed_object.float(), real_o)
    frc_i = frc_loss(rec_i, real_i)
    w = loss.object_cycle_weight
    total = adv_o + adv_d + loss.alpha_cyc * (w * cyc_o + cyc_i) + loss.alpha_frc * (w * frc_o + frc_i)
    extra = {}
    detector_model = unwrap(t.generators).detector_model
    if loss.alpha_fresnel > 0 and detector_model is not None:  # H alone must explain the frame (no G_D)
        n = t.norm
        # |H psi|^2 on the object grid, binned onto the frames' (paper §4's models: 2 x 2 object pixels each)
        hologram = onto_frames(n.denorm_intensity(detector_model(out.fake_object)[:, 0]), real_i.shape[-2:])
        matched = illumination_matched(hologram, n.denorm_intensity(real_i[:, 0]), loss.illumination_sigma_px or
                                       SIGMA_PX)
        extra["fresnel"] = cycle_l1(n.norm_intensity(matched)[:, None], real_i)
        total = total + loss.alpha_fresnel * extra["fresnel"]
    g_grad = _apply(t.opt_g, t.generators, total, grad_clip, t.scaler_g)
    _set_requires_grad(discs, True)
    terms = {"loss_g": total, "loss_d": d_o + d_d, "adv_o": adv_o, "adv_d": adv_d, "cyc_o": cyc_o,
             "cyc_i": cyc_i, "frc_o": frc_o, "frc_i": frc_i, "d_o": d_o, "d_d": d_d,
             "grad_g": g_grad, "grad_d": d_grad, **extra}
    return {k: v.detach() for k, v in terms.items()}


def step_pix2pix(t: Trainables, batch: Batch, loss: LossConfig, grad_clip: float) -> dict[str, torch.Tensor]:
    """pix2pix (eq. 6): D_O on objects, G_O adversarial + alpha_mse * L2 to the paired object."""
    with t.autocast():
        out = t.generators(batch.intensity)
    discs = unwrap(t.discriminators)
    _set_requires_grad(discs, True)
    with t.autocast():
        lo_real, lo_fake = t.discriminators(batch.obj, out.fake_object.detach())
        d_o = discriminator_loss(lo_real, lo_fake, loss.adversarial)
    d_grad = _apply(t.opt_d, discs, d_o, grad_clip, t.scaler_d)
    _set_requires_grad(discs, False)
    with t.autocast():
        adv_o = adversarial_loss(discs.d_o(out.fake_object), True, loss.adversarial)
    mse = (out.fake_object.float() - batch.obj).square().mean()
    total = adv_o + loss.alpha_mse * mse
    g_grad = _apply(t.opt_g, t.generators, total, grad_clip, t.scaler_g)
    _set_requires_grad(discs, True)
    terms = {"loss_g": total, "loss_d": d_o, "adv_o": adv_o, "mse": mse, "grad_g": g_grad, "grad_d": d_grad}
    return {k: v.detach() for k, v in terms.items()}


def step_paired(t: Trainables, batch: Batch, loss: LossConfig, grad_clip: float) -> dict[str, torch.Tensor]:
    """Supervised baseline: L2 between G_O(I) and the paired object."""
    with t.autocast():
        out = t.generators(batch.intensity)
    mse = (out.fake_object.float() - batch.obj).square().mean()
    g_grad = _apply(t.opt_g, t.generators, mse, grad_clip, t.scaler_g)
    return {"loss_g": mse.detach(), "mse": mse.detach(), "grad_g": g_grad}


STEPS: dict[str, Callable[[Trainables, Batch, LossConfig, float], dict[str, torch.Tensor]]] = {
    "phasegan": step_cycle,
    "cyclegan": step_cycle,
    "pix2pix": step_pix2pix,
    "paired": step_paired,
}
