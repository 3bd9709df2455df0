"""Losses (adversarial, cycle, FRC; paper eq. 1-4) and metrics (L2, DSSIM, FRCM)."""

from phasegan_hpc.losses.adversarial import adversarial_loss, cycle_l1, discriminator_loss
from phasegan_hpc.losses.frc import frc, frc_loss, frc_resolution_px
from phasegan_hpc.losses.metrics import METRICS, dssim, frcm, l2, ssim

__all__ = ["METRICS", "adversarial_loss", "cycle_l1", "discriminator_loss", "dssim", "frc", "frc_loss",
           "frc_resolution_px", "frcm", "l2", "ssim"]
