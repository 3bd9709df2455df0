"""The physics of PhaseGAN: optics relations, the Fresnel propagator H, object <-> wavefield, Paganin
phase retrieval and flat-field correction. Pure functions with documented shapes, dtypes and SI units.
"""

from phasegan_hpc.physics.flatfield import (
    DynamicFlatfieldCorrector,
    FlatfieldCorrector,
    flatfield_correct,
    principal_components,
)
from phasegan_hpc.physics.optics import energy_kev, fresnel_number, wavelength_m, wavenumber
from phasegan_hpc.physics.paganin import paganin
from phasegan_hpc.physics.propagator import FresnelPropagator, contrast_transfer_gains, fresnel_kernel
from phasegan_hpc.physics.wavefield import object_wavefield, phase_attenuation, thickness_to_phase_attenuation

__all__ = [
    "DynamicFlatfieldCorrector",
    "FlatfieldCorrector",
    "FresnelPropagator",
    "contrast_transfer_gains",
    "energy_kev",
    "flatfield_correct",
    "fresnel_kernel",
    "fresnel_number",
    "object_wavefield",
    "paganin",
    "phase_attenuation",
    "principal_components",
    "thickness_to_phase_attenuation",
    "wavelength_m",
    "wavenumber",
]
