"""Object <-> wavefield conversions in the projection approximation (paper eq. 5; DESIGN.md §3).

    psi_O = exp(i k n T) -> (dropping the vacuum phase exp(i k T))  exp(-i k delta T) exp(-k beta T)
    phase       phi = -k delta T               [rad]
    attenuation A   = mu T = 2 k beta T = -ln |psi|^2   [dimensionless]
    psi         = exp(-A / 2 + i phi)
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from phasegan_hpc.physics import optics

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def thickness_to_phase_attenuation(
    thickness_m: ArrayT, *, delta: float, beta: float, wavelength_m: float
) -> tuple[ArrayT, ArrayT]:
    """Phase and attenuation of a single-material object of projected thickness T.

    Args:
        thickness_m: projected thickness T [m], any shape, numpy array or torch tensor.
        delta: refractive index decrement (n = 1 - delta + i beta), >= 0.
        beta: absorption index, >= 0.
        wavelength_m: lambda [m].

    Returns:
        (phase [rad] = -k delta T, attenuation = 2 k beta T), same type, shape and dtype as the input.
    """
    k = optics.wavenumber(wavelength_m)
    return thickness_m * (-k * delta), thickness_m * (2.0 * k * beta)


def object_wavefield(phase: torch.Tensor, attenuation: torch.Tensor) -> torch.Tensor:
    """Complex object wavefield psi = exp(-attenuation / 2 + i phase).

    Args:
        phase: phi [rad], float32/float64 tensor (..., H, W).
        attenuation: mu T = -ln |psi|^2 (dimensionless), same shape and dtype as ``phase``.

    Returns:
        complex64 (from float32) or complex128 (from float64) tensor (..., H, W). Differentiable.
    """
    return torch.polar(torch.exp(-0.5 * attenuation), phase)


def phase_attenuation(psi: torch.Tensor, *, eps: float = 1e-30) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`object_wavefield`.

    Args:
        psi: complex tensor (..., H, W).
        eps: floor on |psi|^2 so a zero field gives a large finite attenuation, not inf.

    Returns:
        (phase [rad] wrapped to (-pi, pi], attenuation = -ln |psi|^2), real tensors (..., H, W).
        Phases of real objects outside (-pi, pi] come back wrapped.
    """
    intensity = psi.real.square() + psi.imag.square()
    return torch.angle(psi), -torch.log(intensity.clamp_min(eps))
