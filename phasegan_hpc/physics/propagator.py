"""Near-field Fresnel propagator H of PhaseGAN (paper §2, Fig. 1c; DESIGN.md §3).

Transfer-function method, object plane -> detector plane:

    psi_z = IFFT2( FFT2(psi) * exp(-i pi lambda z (fx^2 + fy^2)) )

with spatial frequencies ``fftfreq(n, d=pixel_size_m)`` [1/m]. The constant phase exp(i k z) is dropped.
This is the paraxial (Fresnel) propagator for fields written as exp(i k z - i omega t), the convention in
which a refractive index n = 1 - delta + i beta gives an object transmission exp(-i k delta T - k beta T)
(paper eq. 5). The operator is unitary: |psi|^2 summed over the grid is conserved, and propagating by z
and then by -z is the identity (without padding).

Sampling: the transfer function is accurate while N * dx^2 >= lambda * z (paper: N_F = dx^2 / (lambda z)
= 0.1, fine for N >= 10). Optional padding (edge replication, or a constant such as the unit free-space
field) keeps diffraction that leaves the field of view from wrapping around; the result is cropped back.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import optics

PAD_MODES = ("edge", "constant")


def fresnel_kernel(
    shape: tuple[int, int],
    *,
    pixel_size_m: float,
    distance_m: float,
    wavelength_m: float,
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Fresnel transfer function H(fy, fx) = exp(-i pi lambda z (fx^2 + fy^2)) in FFT order.

    The phase is evaluated in float64 and only then cast, so complex64 kernels keep full accuracy even where
    pi lambda z f^2 is many radians.

    Args:
        shape: (H, W) of the (padded) grid.
        pixel_size_m: sampling dx [m].
        distance_m: propagation distance z [m]; negative back-propagates.
        wavelength_m: lambda [m].
        dtype: complex dtype of the result (complex64 or complex128).
        device: device of the result.

    Returns:
        Complex tensor (H, W).
    """
    h, w = shape
    fy = torch.fft.fftfreq(h, d=pixel_size_m, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, d=pixel_size_m, dtype=torch.float64)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2  # |f|^2 [1/m^2]
    phase = -math.pi * wavelength_m * distance_m * f2
    return torch.polar(torch.ones_like(phase), phase).to(dtype=dtype, device=device)


def contrast_transfer_gains(
    shape: tuple[int, int], *, pixel_size_m: float, distance_m: float, wavelength_m: float
) -> tuple[float, float]:
    """rms linear responses of the detector intensity to the object's attenuation and phase, over a grid.

    For a weak object psi = exp(-A / 2 + i phi), the intensity after H is, to first order (the contrast
    transfer function of propagation-based imaging, Guigay 1977)

        FFT(I)(f) = delta(f) - cos(chi) FFT(A)(f) + 2 sin(chi) FFT(phi)(f),   chi = pi lambda z |f|^2

    with f the ``fftfreq`` grid of :func:`fresnel_kernel`. Returns (rms |cos chi|, rms |2 sin chi|) over the
    grid: how much one unit of attenuation [neper] and of phase [rad] of white spectrum move the intensity.
    Phase is nearly invisible where chi << 1 (low frequencies, short distances).

    Args:
        shape: (H, W) of the object grid.
        pixel_size_m, distance_m, wavelength_m: geometry [m].

    Returns:
        (attenuation gain, phase gain), dimensionless floats.
    """
    h, w = optics.check_shape(shape)
    fy = torch.fft.fftfreq(h, d=pixel_size_m, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, d=pixel_size_m, dtype=torch.float64)
    chi = math.pi * wavelength_m * distance_m * (fy[:, None] ** 2 + fx[None, :] ** 2)
    return float(torch.cos(chi).square().mean().sqrt()), float((2 * torch.sin(chi)).square().mean().sqrt())


def pad_field(psi: torch.Tensor, pad: int, mode: str = "edge", value: complex = 1.0) -> torch.Tensor:
    """Pad the last two axes of ``psi`` by ``pad`` pixels on every side.

    Args:
        psi: tensor (..., H, W), real or complex.
        pad: pixels added on each side (>= 0).
        mode: "edge" repeats the border pixels; "constant" fills with ``value``.
        value: fill value for mode "constant" (1.0 = unit free-space illumination).

    Returns:
        Tensor (..., H + 2 pad, W + 2 pad), differentiable with respect to ``psi``.
    """
    if pad == 0:
        return psi
    h, w = psi.shape[-2:]
    if mode == "edge":
        iy = torch.arange(-pad, h + pad, device=psi.device).clamp_(0, h - 1)
        ix = torch.arange(-pad, w + pad, device=psi.device).clamp_(0, w - 1)
        return psi.index_select(-2, iy).index_select(-1, ix)
    if mode == "constant":
        out = psi.new_full((*psi.shape[:-2], h + 2 * pad, w + 2 * pad), value)
        out[..., pad : pad + h, pad : pad + w] = psi
        return out
    raise PhysicsError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")


def crop_field(psi: torch.Tensor, pad: int) -> torch.Tensor:
    """Undo :func:`pad_field`: remove ``pad`` pixels from every side of the last two axes."""
    if pad == 0:
        return psi
    return psi[..., pad:-pad, pad:-pad]


class FresnelPropagator(nn.Module):
    """Differentiable near-field propagator H (no learnable parameters).

    ``prop(psi)`` maps a complex object-plane field (..., H, W) to the complex detector-plane field;
    ``prop.intensity(psi)`` returns |H psi|^2, the noiseless hologram. complex64 and complex128 inputs
    are both supported; the kernel is computed once per (device, dtype) and cached.

    Args:
        shape: (H, W) of the fields, each >= 16.
        pixel_size_m: pixel size dx [m], > 0.
        distance_m: sample-to-detector distance z [m]; 0 is the identity, negative back-propagates.
        wavelength_m: wavelength [m]; give this or ``energy_kev``.
        energy_kev: photon energy [keV]; give this or ``wavelength_m``.
        pad: pixels of padding on each side against wrap-around (0 = periodic field).
        pad_mode: "edge" (replicate the border) or "constant" (fill with ``pad_value``).
        pad_value: fill for "constant" padding; 1.0 is the unit free-space field.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        pixel_size_m: float,
        distance_m: float,
        wavelength_m: float | None = None,
        energy_kev: float | None = None,
        pad: int = 0,
        pad_mode: str = "edge",
        pad_value: complex = 1.0,
    ) -> None:
        super().__init__()
        self.shape = optics.check_shape(tuple(shape))
        self.pixel_size_m = optics.positive("pixel_size_m", pixel_size_m)
        self.distance_m = optics.check_distance(distance_m)
        self.wavelength_m = optics.resolve_wavelength_m(wavelength_m, energy_kev)
        if int(pad) != pad or pad < 0:
            raise PhysicsError(f"pad must be a non-negative integer, got {pad!r}")
        if pad_mode not in PAD_MODES:
            raise PhysicsError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.pad = int(pad)
        self.pad_mode = pad_mode
        self.pad_value = pad_value
        n_min = min(self.shape) + 2 * self.pad
        if self.distance_m != 0 and n_min * self.pixel_size_m**2 < self.wavelength_m * abs(self.distance_m):
            warnings.warn(
                f"Fresnel transfer function under-sampled: N dx^2 = {n_min * self.pixel_size_m**2:.3g} m^2 "
                f"< lambda z = {self.wavelength_m * abs(self.distance_m):.3g} m^2; expect aliasing",
                stacklevel=2,
            )
        self._kernels: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Shape (H + 2 pad, W + 2 pad) of the grid the FFTs run on."""
        return self.shape[0] + 2 * self.pad, self.shape[1] + 2 * self.pad

    @property
    def fresnel_number(self) -> float:
        """Pixel Fresnel number dx^2 / (lambda |z|) (inf for z = 0)."""
        if self.distance_m == 0:
            return math.inf
        return optics.fresnel_number(self.pixel_size_m, self.distance_m, self.wavelength_m)

    def kernel(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The cached transfer function (padded H, padded W) for ``device`` and complex ``dtype``."""
        key = (torch.device(device), dtype)
        k = self._kernels.get(key)
        if k is None:
            k = fresnel_kernel(
                self.padded_shape,
                pixel_size_m=self.pixel_size_m,
                distance_m=self.distance_m,
                wavelength_m=self.wavelength_m,
                dtype=dtype,
                device=key[0],
            )
            self._kernels[key] = k
        return k

    def forward(self, psi: torch.Tensor) -> torch.Tensor:
        """Propagate a complex field.

        Args:
            psi: complex64/complex128 tensor (..., H, W), object-plane field (dimensionless amplitude).

        Returns:
            Complex tensor of the same shape and dtype: the detector-plane field H psi.
        """
        if not torch.is_complex(psi):
            raise TypeError(f"FresnelPropagator expects a complex tensor, got {psi.dtype}")
        if tuple(psi.shape[-2:]) != self.shape:
            raise ValueError(f"field shape {tuple(psi.shape[-2:])} does not match propagator {self.shape}")
        if self.distance_m == 0 or psi.numel() == 0:  # nothing to propagate (MKL's FFT refuses an empty batch)
            return psi
        padded = pad_field(psi, self.pad, self.pad_mode, self.pad_value)
        out = torch.fft.ifft2(torch.fft.fft2(padded) * self.kernel(psi.device, psi.dtype))
        return crop_field(out, self.pad)

    def intensity(self, psi: torch.Tensor) -> torch.Tensor:
        """Noiseless detector intensity |H psi|^2: real tensor (..., H, W), float32 or float64."""
        d = self(psi)
        return d.real.square() + d.imag.square()

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, pixel_size_m={self.pixel_size_m:g}, distance_m={self.distance_m:g}, "
            f"wavelength_m={self.wavelength_m:g}, pad={self.pad}, pad_mode={self.pad_mode!r}"
        )
