import math

import pytest

from phasegan_hpc.errors import PhysicsError
from phasegan_hpc.physics import energy_kev, fresnel_number, wavelength_m, wavenumber


def test_wavelength_of_12_4_kev_is_one_angstrom():
    assert wavelength_m(12.39841984) == pytest.approx(1e-10, rel=1e-12)
    assert wavelength_m(25.7) == pytest.approx(12.39841984e-10 / 25.7, rel=1e-12)  # paper §4 energy
    assert energy_kev(wavelength_m(17.0)) == pytest.approx(17.0, rel=1e-12)


def test_wavenumber_and_paper_fresnel_number():
    assert wavenumber(1e-10) == pytest.approx(2 * math.pi * 1e10)
    # Paper §3: 1 um pixels, 1 A, 10 cm -> N_F = 0.1; the sign of z does not matter.
    assert fresnel_number(1e-6, 0.1, 1e-10) == pytest.approx(0.1)
    assert fresnel_number(1e-6, -0.1, 1e-10) == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_non_positive_inputs_are_rejected(bad):
    with pytest.raises(PhysicsError):
        wavelength_m(bad)
    with pytest.raises(PhysicsError):
        wavenumber(bad)
    with pytest.raises(PhysicsError):
        fresnel_number(bad, 0.1, 1e-10)


def test_fresnel_number_needs_a_distance():
    with pytest.raises(PhysicsError, match="distance"):
        fresnel_number(1e-6, 0.0, 1e-10)
