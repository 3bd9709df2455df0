"""Optics constants and scalar relations (DESIGN.md §3). SI units throughout; names carry the units.

All functions are pure and work on Python floats.
"""

from __future__ import annotations

import math

from phasegan_hpc.errors import PhysicsError

#: h * c in keV * m (CODATA 2018: 12.398 419 84 keV * Angstrom).
HC_KEV_M: float = 12.39841984e-10

#: Smallest image side the propagator and simulator accept (the U-Net's five pools need more anyway).
MIN_SIZE: int = 16


def positive(name: str, value: float) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise :class:`PhysicsError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PhysicsError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0.0:
        raise PhysicsError(f"{name} must be a positive number, got {value!r}")
    return v


def wavelength_m(energy_kev: float) -> float:
    """X-ray wavelength for a photon energy.

    Args:
        energy_kev: photon energy [keV], > 0.

    Returns:
        Wavelength [m]: lambda = h c / E (12.398 keV = 1 Angstrom).
    """
    return HC_KEV_M / positive("energy_kev", energy_kev)


def energy_kev(wavelength_m: float) -> float:
    """Photon energy [keV] for a wavelength [m] (inverse of :func:`wavelength_m`)."""
    return HC_KEV_M / positive("wavelength_m", wavelength_m)


def wavenumber(wavelength_m: float) -> float:
    """Wavenumber k = 2 pi / lambda [rad/m] for a wavelength [m]."""
    return 2.0 * math.pi / positive("wavelength_m", wavelength_m)


def fresnel_number(pixel_size_m: float, distance_m: float, wavelength_m: float) -> float:
    """Fresnel number of one pixel, N_F = dx^2 / (lambda z) (paper §3: 0.1 for the synthetic set).

    Args:
        pixel_size_m: detector/object pixel size dx [m], > 0.
        distance_m: propagation distance z [m], != 0 (its sign is ignored).
        wavelength_m: wavelength lambda [m], > 0.

    Returns:
        Dimensionless N_F. Small values mean strong holographic (near-field) fringes.
    """
    dx = positive("pixel_size_m", pixel_size_m)
    lam = positive("wavelength_m", wavelength_m)
    z = abs(float(distance_m))
    if z == 0.0:
        raise PhysicsError("distance_m must be non-zero for a Fresnel number")
    return dx * dx / (lam * z)


def resolve_wavelength_m(wavelength_m: float | None, energy_kev: float | None) -> float:
    """Return the wavelength [m] given exactly one of ``wavelength_m`` or ``energy_kev``.

    Raises:
        PhysicsError: if neither or both are given, or the value is not positive.
    """
    if (wavelength_m is None) == (energy_kev is None):
        raise PhysicsError("give exactly one of wavelength_m or energy_kev")
    if wavelength_m is not None:
        return positive("wavelength_m", wavelength_m)
    return HC_KEV_M / positive("energy_kev", energy_kev)


def check_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Validate an image shape (H, W): two integers, each >= :data:`MIN_SIZE`."""
    if len(shape) != 2:
        raise PhysicsError(f"shape must be (H, W), got {tuple(shape)!r}")
    h, w = (int(s) for s in shape)
    if h < MIN_SIZE or w < MIN_SIZE:
        raise PhysicsError(f"image size must be at least {MIN_SIZE} x {MIN_SIZE} px, got {h} x {w}")
    return h, w


def check_distance(distance_m: float) -> float:
    """Return ``distance_m`` as a finite float (any sign: negative means back-propagation)."""
    try:
        z = float(distance_m)
    except (TypeError, ValueError):
        raise PhysicsError(f"distance_m must be a number, got {distance_m!r}") from None
    if not math.isfinite(z):
        raise PhysicsError(f"distance_m must be finite, got {distance_m!r}")
    return z
