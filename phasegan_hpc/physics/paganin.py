"""Paganin single-material phase retrieval (transport of intensity; Paganin et al. 2002, DESIGN.md §3).

    T   = -(1 / mu) ln IFFT2[ FFT2(I / I0) / (1 + pi lambda z (delta / beta) |f|^2) ]
    A   = mu T                         (attenuation, dimensionless)
    phi = -k delta T = -(delta / beta) A / 2   [rad]

with |f|^2 = fx^2 + fy^2 from ``fftfreq(n, d=pixel_size_m)`` [1/m^2] (cycles per metre, the same grid as
the Fresnel propagator). Valid in the near field for a homogeneous material (one delta/beta ratio). It is
the classical baseline PhaseGAN is compared with, and builds the foam object domain of paper §4 from a
clean camera.

Padding. The FFT makes the frame periodic, so without padding the low-pass mixes the left border into the
right one (and top into bottom): an object touching one border leaves a ghost on the opposite one. By
default every axis of length n is padded by edge replication (as tomopy) to

    n_pad = next_fast_len(n + 2 * ceil(pi lambda z / dx^2))      (scipy.fft.next_fast_len, 2^a 3^b 5^c)

split evenly (the odd pixel after), filtered and cropped back (:func:`paganin_pad_width`). The
Fresnel-length term is tomopy's (``_calc_pad_width``), but here it is guaranteed on *each* side: with edge
padding the only discontinuity left is the seam where the two replicated borders meet, one pad width away
from the data. tomopy adds it once in total and rounds up to a power of two, which overshoots by up to 2x
per axis (4x the FFT area). The filter's own length, sqrt(lambda z (delta/beta) / (4 pi)) (28 px for
1 um, 1 A, 10 cm, delta/beta = 1000), is comparable, so the seam still leaks at the level of exp(-pad /
length): a wider explicit ``pad`` cuts it further (tests). ``pad_mode="constant"`` fills with 1.0, the free
beam: right for an isolated object in a flat field, where edge replication would stretch any fringe that
reaches the border into a stripe. Frames that are periodic by construction (simulated with an unpadded
propagator, ``[physics] pad = 0``) are inverted consistently only with ``pad=False``.

Mapping from tomopy (``tomopy.prep.phase.retrieve_phase(tomo, pixel_size [cm], dist [cm], energy [keV],
alpha, pad=True)``, tomopy 1.15.2, source/tomopy/prep/phase.py). tomopy returns the *filtered intensity*
``crop(Re IFFT2[FFT2(edge_pad(I)) * g / max g])``, g = 1 / (lambda z w^2 / (4 pi) + alpha), no logarithm:

    pixel_size_m = pixel_size * 1e-2        distance_m = dist * 1e-2
    wavelength_m = optics.wavelength_m(energy)   (tomopy's own constants agree to 4e-8 relative)
    delta_beta   = 1 / (4 pi^2 alpha)       (not 1 / alpha: tomopy's w is in cycles/cm, while its
                                             lambda z w^2 / (4 pi) is Paganin's z delta k^2 / mu only for
                                             the angular frequency k = 2 pi f; so alpha = beta/delta in
                                             tomopy smooths 4 pi^2 = 39.5x too little in |f|^2)
    pad          = (py, pz) from tomopy's _calc_pad_width (ours pads to fast sizes, not powers of two)
    attenuation  = -ln(tomopy output),      phase = -(delta_beta / 2) * attenuation

This is exact (tests/test_paganin.py, 1e-10) once tomopy's reciprocal grid is replaced by fftfreq.
tomopy's own grid (``_reciprocal_coord``: ``arange(-n, N, 2) * 0.5 / (n dx)``, n = N - 1, then
``fftshift``) is not fftfreq: its spacing is 1 / ((N - 1) dx) instead of 1 / (N dx), and for even N (its
power-of-two pads) it has no zero: bin j holds (j + 1/2) / ((N - 1) dx) for the signed FFT index j, so its
filter is not even in f (tomopy keeps the real part, i.e. applies (g(j) + g(-j)) / 2). Dividing by max g
makes the DC gain 1 but raises every other frequency by about 1 + pi lambda z (delta/beta) / (2 (N - 1)^2
dx^2): 1.02 at tomopy's default alpha = 1e-3 (delta/beta = 25) for N = 128, 1 um, 10 cm, 12.4 keV, but
1.97 at delta/beta = 1000. For odd N (odd frame sides, padded to 2^k - 1) the grid is rolled by one bin
and the DC gain is < 1 (a uniform frame comes back at 0.91 for N = 127, alpha = 1e-3). No alpha correction absorbs
this (scaling delta_beta by (N / (N - 1))^2 makes it worse). This module follows the fftfreq grid, the
DFT's own frequencies and the propagator's (propagator.py): the filter is even, exactly 1 at DC for any N,
and inverts the TIE forward model exactly (test). tomopy's ``pad=False`` path overwrites the whole frame
with its last pixel (``prj[-0:] = prj[-1]``); it is no reference.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import scipy.fft
import torch

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import optics

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Padding modes of :func:`paganin`: replicate the border pixels, or fill with 1.0 (the free beam).
PAD_MODES = ("edge", "constant")


def paganin_filter(
    shape: tuple[int, int],
    *,
    pixel_size_m: float,
    distance_m: float,
    wavelength_m: float,
    delta_beta: float,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    onesided: bool = False,
) -> torch.Tensor:
    """The Paganin low-pass 1 / (1 + pi lambda z (delta/beta) |f|^2) in FFT order.

    Evaluated in float64 and only then cast to ``dtype``.

    Args:
        shape: (H, W) of the (padded) grid the FFTs run on.
        pixel_size_m: sampling dx [m].
        distance_m: propagation distance z [m].
        wavelength_m: lambda [m].
        delta_beta: delta / beta of the material.
        dtype: real dtype of the result.
        device: device of the result.
        onesided: give the half-spectrum of ``torch.fft.rfft2``, (H, W // 2 + 1), instead of (H, W).

    Returns:
        Real tensor (H, W), or (H, W // 2 + 1) if ``onesided``; 1.0 at f = 0.
    """
    h, w = shape
    fy = torch.fft.fftfreq(h, d=pixel_size_m, dtype=torch.float64)
    if onesided:
        fx = torch.fft.rfftfreq(w, d=pixel_size_m, dtype=torch.float64)
    else:
        fx = torch.fft.fftfreq(w, d=pixel_size_m, dtype=torch.float64)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2  # |f|^2 [1/m^2]
    return (1.0 / (1.0 + math.pi * wavelength_m * distance_m * delta_beta * f2)).to(dtype=dtype, device=device)


def paganin_pad_width(n: int, *, pixel_size_m: float, distance_m: float, wavelength_m: float) -> tuple[int, int]:
    """Default padding (before, after) of one axis of length ``n`` against FFT wrap-around.

    Each side gets at least the Fresnel-length width p = ceil(pi lambda z / dx^2) px (tomopy's
    ``_calc_pad_width`` term), and the padded length n + before + after is the next 5-smooth FFT size
    (``scipy.fft.next_fast_len(n + 2 p, real=True)``) rather than tomopy's next power of two. The extra
    pixels are split evenly, the odd one after.

    Args:
        n: length of the axis [px], > 0.
        pixel_size_m: dx [m], > 0.
        distance_m: z [m], > 0.
        wavelength_m: lambda [m], > 0.

    Returns:
        (before, after) [px], both >= p. Example: n = 64, dx = 1 um, lambda = 1 A, z = 0.1 m gives
        pi lambda z / dx^2 = 31.4 -> p = 32 and 64 + 64 = 128 -> (32, 32); n = 100 gives 164 -> 180 (2^2 3^2 5)
        -> (40, 40).
    """
    if int(n) != n or n < 1:
        raise PhysicsError(f"n must be a positive integer, got {n!r}")
    dx = optics.positive("pixel_size_m", pixel_size_m)
    z = optics.positive("distance_m", distance_m)
    lam = optics.positive("wavelength_m", wavelength_m)
    # round() first so an exact integer such as 31.000000000000004 from float arithmetic is not bumped.
    p = math.ceil(round(math.pi * lam * z / (dx * dx), 9))
    extra = scipy.fft.next_fast_len(int(n) + 2 * p, real=True) - int(n)
    return extra // 2, extra - extra // 2


def _pad_widths(
    shape: tuple[int, int], pad: bool | int | tuple[int, int], dx: float, z: float, lam: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve :func:`paganin`'s ``pad`` into ((top, bottom), (left, right)) [px]."""
    if isinstance(pad, bool):
        if not pad:
            return (0, 0), (0, 0)
        return tuple(  # type: ignore[return-value]
            paganin_pad_width(n, pixel_size_m=dx, distance_m=z, wavelength_m=lam) for n in shape
        )
    if isinstance(pad, (int, np.integer)):
        per_axis: tuple = (pad, pad)
    else:
        per_axis = tuple(pad) if isinstance(pad, (tuple, list)) else ()
    if len(per_axis) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0
                                 for p in per_axis):
        raise PhysicsError(f"pad must be a bool, a non-negative int or a pair (pad_y, pad_x), got {pad!r}")
    py, px = (int(p) for p in per_axis)
    return (py, py), (px, px)


def _pad(t: torch.Tensor, widths: tuple[tuple[int, int], tuple[int, int]], mode: str) -> torch.Tensor:
    """Pad the last two axes of ``t`` (..., H, W) by ``widths`` = ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = widths
    if top == bottom == left == right == 0:
        return t
    h, w = t.shape[-2:]
    # Fill value 1.0 is the free beam I / I0 = 1 ("constant"); "edge" overwrites it below.
    out = t.new_full((*t.shape[:-2], h + top + bottom, w + left + right), 1.0)
    out[..., top : top + h, left : left + w] = t
    if mode == "edge":  # np.pad(mode="edge"): rows first, then whole columns (which fills the corners)
        out[..., :top, left : left + w] = t[..., :1, :]
        out[..., top + h :, left : left + w] = t[..., -1:, :]
        out[..., :, :left] = out[..., :, left : left + 1]
        out[..., :, left + w :] = out[..., :, left + w - 1 : left + w]
    return out


def paganin(
    intensity: ArrayT,
    *,
    pixel_size_m: float,
    distance_m: float,
    delta_beta: float,
    wavelength_m: float | None = None,
    energy_kev: float | None = None,
    eps: float = 1e-6,
    pad: bool | int | tuple[int, int] = True,
    pad_mode: str = "edge",
) -> tuple[ArrayT, ArrayT]:
    """Retrieve phase and attenuation from flat-field-corrected intensities (module docstring).

    A = -ln crop( IRFFT2[ RFFT2(pad(I / I0)) / (1 + pi lambda z (delta/beta) |f|^2) ] ), phi = -(delta/beta) A / 2,
    on the input's device.

    Args:
        intensity: I / I0 (1.0 = free beam), (..., H, W), numpy array or torch tensor (any device).
        pixel_size_m: pixel size [m], > 0.
        distance_m: sample-to-detector distance z [m], > 0.
        delta_beta: delta / beta of the single material, > 0.
        wavelength_m: wavelength [m]; give this or ``energy_kev``.
        energy_kev: photon energy [keV].
        eps: floor on the filtered intensity before the logarithm.
        pad: padding against FFT wrap-around. True: :func:`paganin_pad_width` on each axis (the
            Fresnel-length rule, padded sides rounded up to fast FFT sizes); an int: that many pixels on
            every side; a pair (pad_y, pad_x): per axis, both sides; False or 0: none (periodic frame).
        pad_mode: "edge" replicates the border pixels (as tomopy); "constant" fills with 1.0, the free beam.

    Returns:
        (phase [rad], attenuation = mu T), each (..., H, W), the input's array type and device; float64 input
        stays float64 (and is computed in float64), anything else comes back float32 (numpy input is
        computed in float64, torch input in float32).
    """
    dx = optics.positive("pixel_size_m", pixel_size_m)
    z = optics.positive("distance_m", distance_m)
    db = optics.positive("delta_beta", delta_beta)
    lam = optics.resolve_wavelength_m(wavelength_m, energy_kev)
    if pad_mode not in PAD_MODES:
        raise PhysicsError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if intensity.ndim < 2:
        raise PhysicsError(f"intensity must have shape (..., H, W), got {tuple(intensity.shape)}")
    shape = optics.check_shape(tuple(intensity.shape[-2:]))
    widths = _pad_widths(shape, pad, dx, z, lam)

    as_numpy = not isinstance(intensity, torch.Tensor)
    t = torch.from_numpy(np.asarray(intensity)) if as_numpy else intensity
    out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    work = torch.float64 if (as_numpy or t.dtype == torch.float64) else torch.float32
    t = _pad(t.to(work), widths, pad_mode)
    padded = tuple(t.shape[-2:])
    filt = paganin_filter(
        padded, pixel_size_m=dx, distance_m=z, wavelength_m=lam, delta_beta=db,
        dtype=work, device=t.device, onesided=True,
    )
    # DESIGN.md §3: IFFT2[FFT2(I / I0) / (1 + pi lambda z (delta/beta) |f|^2)]; the filter is even in f, so
    # the half-spectrum transforms give the same real result at half the work.
    filtered = torch.fft.irfft2(torch.fft.rfft2(t) * filt, s=padded)
    (top, _), (left, _) = widths
    filtered = filtered[..., top : top + shape[0], left : left + shape[1]]
    attenuation = -torch.log(filtered.clamp_min(eps))
    phase = attenuation * (-0.5 * db)
    phase, attenuation = phase.to(out_dtype), attenuation.to(out_dtype)
    if as_numpy:
        return phase.numpy(), attenuation.numpy()
    return phase, attenuation
