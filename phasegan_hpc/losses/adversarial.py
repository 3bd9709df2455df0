"""Adversarial losses on discriminator logits (paper eq. 2; LSGAN as an option)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ADVERSARIAL_MODES = ("bce", "lsgan")


def adversarial_loss(logits: torch.Tensor, real: bool, mode: str = "bce") -> torch.Tensor:
    """Loss of patch logits against an all-real or all-fake target.

    Args:
        logits: discriminator output (B, 1, h, w), no sigmoid applied.
        real: target label.
        mode: "bce" (log-likelihood of eq. 2, as BCE with logits) or "lsgan" (least squares).

    Returns:
        Scalar mean over all patches.
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    raise ValueError(f"adversarial mode must be one of {ADVERSARIAL_MODES}, got {mode!r}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: str = "bce") -> torch.Tensor:
    """The discriminator's half of eq. 2: real judged real, fake judged fake, averaged (x 0.5)."""
    return 0.5 * (adversarial_loss(real_logits, True, mode) + adversarial_loss(fake_logits, False, mode))


def cycle_l1(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """One term of the cycle-consistency loss, eq. 3: mean absolute error, scalar."""
    return (reconstructed - original).abs().mean()
