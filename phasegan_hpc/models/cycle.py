"""The PhaseGAN cycle as modules (paper Fig. 1c and Fig. 2), shaped for DDP.

DDP synchronises gradients only through a wrapped module's ``forward``, and the generators and the
discriminators have separate optimisers; so the two generators are one module whose forward runs both
cycles, and the two discriminators another (DESIGN.md §5).

Everything here works in normalised units (:class:`phasegan_hpc.data.normalise.Normalisation`);
the object channels are (Re psi, Im psi) or (phase, attenuation) (``Normalisation.output``);
:class:`DetectorModel` turns them into psi, applies the physics (|H psi|^2) and normalises the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.physics import FresnelPropagator


class DetectorModel(nn.Module):
    """Normalised object (B, 2, H, W) -> normalised noiseless intensity |H psi|^2 (B, 1, H, W). No parameters."""

    def __init__(self, propagator: FresnelPropagator, norm: Normalisation) -> None:
        super().__init__()
        self.propagator = propagator
        self.norm = norm

    def forward(self, obj: torch.Tensor) -> torch.Tensor:
        psi = self.norm.wavefield(obj.float())  # eq. 5 without the vacuum phase, in the model's encoding
        return self.norm.norm_intensity(self.propagator.intensity(psi)[:, None])


@dataclass
class CycleOutputs:
    """Tensors of one generator pass (all normalised, (B, C, H, W))."""

    fake_object: torch.Tensor  # G_O(I)
    reconstructed_intensity: torch.Tensor | None = None  # G_D |H G_O(I)|^2   (intensity cycle)
    fake_intensity: torch.Tensor | None = None  # G_D |H psi|^2
    reconstructed_object: torch.Tensor | None = None  # G_O(G_D |H psi|^2)   (object cycle)


class GeneratorPair(nn.Module):
    """G_O and, for the cycle methods, G_D with the forward model between them.

    Args:
        g_o: detector (1 ch) -> object (2 ch).
        g_d: PhaseGAN: |H psi|^2 (1 ch) -> detector (1 ch); CycleGAN: object (2 ch) -> detector; None for
            the paired methods.
        detector_model: H (PhaseGAN) or None (CycleGAN: no physics).
    """

    def __init__(self, g_o: nn.Module, g_d: nn.Module | None = None, detector_model: DetectorModel | None = None):
        super().__init__()
        self.g_o, self.g_d, self.detector_model = g_o, g_d, detector_model

    def to_detector(self, obj: torch.Tensor) -> torch.Tensor:
        """G_D |H obj|^2 (PhaseGAN) or G_D(obj) (CycleGAN)."""
        assert self.g_d is not None
        return self.g_d(self.detector_model(obj) if self.detector_model is not None else obj)

    def forward(self, intensity: torch.Tensor, obj: torch.Tensor | None = None) -> CycleOutputs:
        fake_object = self.g_o(intensity)
        if self.g_d is None:
            return CycleOutputs(fake_object)
        fake_intensity = self.to_detector(obj)
        return CycleOutputs(
            fake_object=fake_object,
            reconstructed_intensity=self.to_detector(fake_object),
            fake_intensity=fake_intensity,
            reconstructed_object=self.g_o(fake_intensity),
        )


class DiscriminatorPair(nn.Module):
    """D_O (objects) and D_D (detector frames, None for pix2pix). Real and fake are judged separately, so
    BatchNorm statistics never mix them."""

    def __init__(self, d_o: nn.Module, d_d: nn.Module | None = None) -> None:
        super().__init__()
        self.d_o, self.d_d = d_o, d_d

    def forward(self, real_object: torch.Tensor, fake_object: torch.Tensor, real_intensity: torch.Tensor | None = None,
                fake_intensity: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = (self.d_o(real_object), self.d_o(fake_object))
        if self.d_d is not None:
            out += (self.d_d(real_intensity), self.d_d(fake_intensity))
        return out
