"""Explicit registries of the networks and their construction from ``[model]`` config.

The four PhaseGAN networks (paper Fig. 1c): G_O (detector -> object), G_D (|H psi|^2 -> detector; for
CycleGAN: object -> detector, no H), D_O (objects), D_D (detector frames).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from phasegan_hpc.config import ModelConfig
from phasegan_hpc.models.patchgan import PatchGAN
from phasegan_hpc.models.unet import UNet

GENERATORS: dict[str, Callable[..., nn.Module]] = {"unet": UNet}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {"patchgan": PatchGAN}

#: Channels of the object representation (phase, attenuation) and of a detector frame.
OBJECT_CHANNELS, INTENSITY_CHANNELS = 2, 1


def init_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise conv weights N(0, std), norm weights N(1, std), biases 0 (pix2pix / CycleGAN)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module


def init_kaiming(module: nn.Module) -> nn.Module:
    """He-normal conv weights for ReLU networks (fan-in; fan-out for transposed convs), zero biases.

    The deep, BatchNorm-free U-Net barely passes a signal through 19 layers at N(0, 0.02) when it is narrow
    (a CPU-sized model); He initialisation keeps the activations' scale and lets it learn from scratch.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            mode = "fan_out" if isinstance(m, nn.ConvTranspose2d) else "fan_in"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


#: Generator initialisations: "normal" = N(0, 0.02) (pix2pix / CycleGAN), "kaiming" = He normal.
INITS = {"normal": init_normal, "kaiming": init_kaiming}


def build_generator(name: str, in_channels: int, out_channels: int, base_filters: int,
                    init: str = "normal", resize: str = "same", upsampling: str = "transpose") -> nn.Module:
    """A generator from :data:`GENERATORS`, initialised by :data:`INITS` [init]; ``resize`` as in
    :data:`phasegan_hpc.models.unet.RESIZES` (cross-resolution G_O / G_D of paper §4), ``upsampling`` as in
    :data:`phasegan_hpc.models.unet.UPSAMPLINGS`."""
    return INITS[init](GENERATORS[name](in_channels, out_channels, base_filters, resize=resize,
                                        upsampling=upsampling))


def generator_arch(model: ModelConfig, role: str, method: str = "phasegan") -> dict[str, Any]:
    """The architecture dict (as stored in ``model.pt``) of G_O (``role`` "g_o") or G_D ("g_d").

    With ``[model] upsample = 2`` (paper §4: objects at half the detector pixel size) G_O doubles the size
    ("up2") and G_D halves it ("down2"). G_D reads |H psi|^2 (1 channel) for PhaseGAN, the object (2
    channels) for CycleGAN.
    """
    up = model.upsample == 2
    if role == "g_o":
        channels, resize = (INTENSITY_CHANNELS, OBJECT_CHANNELS), "up2" if up else "same"
    elif role == "g_d":
        channels = (INTENSITY_CHANNELS if method == "phasegan" else OBJECT_CHANNELS, INTENSITY_CHANNELS)
        resize = "down2" if up else "same"
    else:
        raise ValueError(f"role must be 'g_o' or 'g_d', got {role!r}")
    return {"name": model.generator, "in_channels": channels[0], "out_channels": channels[1],
            "base_filters": model.base_filters, "resize": resize, "upsampling": model.upsampling}


def build_from_arch(arch: dict[str, Any], init: str = "normal") -> nn.Module:
    """A generator from an architecture dict of :func:`generator_arch` (older files lack "upsampling")."""
    return build_generator(str(arch["name"]), int(arch["in_channels"]), int(arch["out_channels"]),
                           int(arch["base_filters"]), init, str(arch.get("resize", "same")),
                           str(arch.get("upsampling", "transpose")))


def build_discriminator(name: str, in_channels: int, base_filters: int, norm: str) -> nn.Module:
    """A discriminator from :data:`DISCRIMINATORS`, initialised N(0, 0.02)."""
    return init_normal(DISCRIMINATORS[name](in_channels, base_filters, norm))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def load_encoder_weights(generator: UNet, path: str) -> None:
    """Initialise ``generator``'s encoder from a local VGG11 ImageNet state_dict file (never downloaded).

    The file is read with ``weights_only=True``: it cannot run code.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    generator.load_vgg11_encoder(state)
