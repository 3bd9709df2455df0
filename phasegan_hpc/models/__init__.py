"""Networks of PhaseGAN: the U-Net generator, the PatchGAN discriminator, registries, the model file."""

from phasegan_hpc.models.patchgan import PatchGAN
from phasegan_hpc.models.registry import (
    DISCRIMINATORS,
    GENERATORS,
    build_discriminator,
    build_generator,
    count_parameters,
)
from phasegan_hpc.models.unet import UNet

__all__ = ["DISCRIMINATORS", "GENERATORS", "PatchGAN", "UNet", "build_discriminator", "build_generator",
           "count_parameters"]
