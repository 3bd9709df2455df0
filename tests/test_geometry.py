"""physics.geometry.Geometry: the one shape of the imaging geometry (files, models, H)."""

import numpy as np
import pytest
import torch

from phasegan_hpc.errors import DataError, PhysicsError
from phasegan_hpc.physics import FresnelPropagator, contrast_transfer_gains
from phasegan_hpc.physics.geometry import Geometry

PAPER = {"wavelength_m": 1e-10, "pixel_size_m": 1e-6, "distance_m": 0.1}


def test_attrs_round_trip_and_the_detector_pixel_defaults_to_the_object_pixel():
    g = Geometry(**PAPER)
    assert g.detector_pixel_size_m == 1e-6 and g.upsample == 1
    assert Geometry.from_attrs(g.to_attrs()) == g
    two = Geometry.from_attrs({**PAPER, "pixel_size_m": 1.6e-6}, detector_pixel_size_m=3.2e-6, pad=4)
    assert two.upsample == pytest.approx(2) and two.pad == 4
    assert Geometry.from_attrs(two.to_attrs()).with_padding(4) == two
    with pytest.raises(DataError, match=r"x\.h5 lacks the physics attribute\(s\) distance_m"):
        Geometry.from_attrs({"pixel_size_m": 1e-6, "wavelength_m": 1e-10}, "x.h5")
    with pytest.raises(PhysicsError):
        Geometry(wavelength_m=-1.0, pixel_size_m=1e-6, distance_m=0.1)


def test_check_against_compares_the_frames_pixel_with_the_detector_pixel():
    g = Geometry(wavelength_m=1e-10, pixel_size_m=1.6e-6, distance_m=5e-3, detector_pixel_size_m=3.2e-6)
    g.check_against({"pixel_size_m": 3.2e-6, "wavelength_m": 1e-10}, "f.h5")  # frames at the detector pixel
    g.check_against({}, "f.h5")  # nothing stated, nothing to refuse
    with pytest.raises(DataError, match=r"f\.h5: pixel_size_m = 1\.6e-06, but the model was trained for 3\.2e-06"):
        g.check_against({"pixel_size_m": 1.6e-6}, "f.h5")
    with pytest.raises(DataError, match="distance_m = 0.01"):
        g.check_against({"distance_m": 0.01}, "f.h5")


def test_propagator_and_gains_are_those_of_the_physics_functions():
    g = Geometry(**PAPER, pad=3, pad_mode="constant")
    psi = torch.exp(1j * torch.rand(2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    ref = FresnelPropagator((32, 32), **PAPER, pad=3, pad_mode="constant")
    np.testing.assert_array_equal(g.propagator((32, 32))(psi).numpy(), ref(psi).numpy())
    assert g.ctf_gains((32, 32)) == contrast_transfer_gains((32, 32), pixel_size_m=1e-6, distance_m=0.1,
                                                          wavelength_m=1e-10)
