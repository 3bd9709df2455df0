"""Paganin single-material phase retrieval (transport of intensity; DESIGN.md §3).

    T   = -(1 / mu) ln IFFT2[ FFT2(I / I0) / (1 + pi lambda z (delta / beta) |f|^2) ]
    A   = mu T                         (attenuation, dimensionless)
    phi = -k delta T = -(delta / beta) A / 2   [rad]

Valid in the near field for a homogeneous material (one delta/beta ratio). It is the classical baseline
PhaseGAN is compared with, and builds the foam object domain of paper §4 from a clean camera.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import optics

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def paganin_filter(
    shape: tuple[int, int],
    *,
    pixel_size_m: float,
    distance_m: float,
    wavelength_m: float,
    delta_beta: float,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The low-pass 1 / (1 + pi lambda z (delta/beta) |f|^2) in FFT order, real tensor (H, W)."""
    h, w = shape
    fy = torch.fft.fftfreq(h, d=pixel_size_m, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, d=pixel_size_m, dtype=torch.float64)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    return (1.0 / (1.0 + math.pi * wavelength_m * distance_m * delta_beta * f2)).to(dtype=dtype, device=device)


def paganin(
    intensity: ArrayT,
    *,
    pixel_size_m: float,
    distance_m: float,
    delta_beta: float,
    wavelength_m: float | None = None,
    energy_kev: float | None = None,
    eps: float = 1e-6,
) -> tuple[ArrayT, ArrayT]:
    """Retrieve phase and attenuation from flat-field-corrected intensities.

    Args:
        intensity: I / I0 (1.0 = free beam), (..., H, W), numpy array or torch tensor.
        pixel_size_m: pixel size [m], > 0.
        distance_m: sample-to-detector distance z [m], > 0.
        delta_beta: delta / beta of the single material, > 0.
        wavelength_m: wavelength [m]; give this or ``energy_kev``.
        energy_kev: photon energy [keV].
        eps: floor on the filtered intensity before the logarithm.

    Returns:
        (phase [rad], attenuation = mu T), each (..., H, W), the input's array type; float64 input stays
        float64, anything else comes back float32.
    """
    dx = optics.positive("pixel_size_m", pixel_size_m)
    z = optics.positive("distance_m", distance_m)
    db = optics.positive("delta_beta", delta_beta)
    lam = optics.resolve_wavelength_m(wavelength_m, energy_kev)
    if intensity.ndim < 2:
        raise PhysicsError(f"intensity must have shape (..., H, W), got {tuple(intensity.shape)}")
    optics.check_shape(tuple(intensity.shape[-2:]))

    as_numpy = not isinstance(intensity, torch.Tensor)
    t = torch.from_numpy(np.asarray(intensity)) if as_numpy else intensity
    out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    work = torch.float64 if (as_numpy or t.dtype == torch.float64) else torch.float32
    t = t.to(work)
    filt = paganin_filter(
        tuple(t.shape[-2:]), pixel_size_m=dx, distance_m=z, wavelength_m=lam, delta_beta=db,
        dtype=work, device=t.device,
    )
    filtered = torch.fft.ifft2(torch.fft.fft2(t) * filt).real
    attenuation = -torch.log(filtered.clamp_min(eps))
    phase = attenuation * (-0.5 * db)
    phase, attenuation = phase.to(out_dtype), attenuation.to(out_dtype)
    if as_numpy:
        return phase.numpy(), attenuation.numpy()
    return phase, attenuation
