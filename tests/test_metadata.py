"""Geometry from the archive (data/metadata.py): DXchange and NXtomo fields with their units, checked against
the model for PhaseGAN (a mismatch refused, --force-geometry), flag > archive > model for Paganin."""

import h5py
import numpy as np
import pytest
from movies import write_dxchange

from phasegan_hpc.data.metadata import stated_geometry
from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

HC_KEV_M = 12.39841984e-10  # written out: lambda [m] = hc / E [keV]


def _dxchange_fields(path, pixel=(1.0, "microns"), distance=(100.0, "mm"), energy=(HC_KEV_M / 1e-10, "keV")):
    with h5py.File(path, "a") as f:
        for name, (value, units) in {"detector/actual_pixel_size_x": pixel, "detector/distance": distance,
                                     "monochromator/energy": energy}.items():
            ds = f.create_dataset(f"measurement/instrument/{name}", data=value)
            ds.attrs["units"] = units
    return path


def test_dxchange_and_nxtomo_fields_are_read_with_their_units(tmp_path):
    dx = _dxchange_fields(tmp_path / "dx.h5", pixel=(0.65, "um"), distance=(25.0, "cm"), energy=(20000.0, "eV"))
    with h5py.File(dx) as f:
        got = stated_geometry(f, "/exchange/data", str(dx))
    assert got["pixel_size_m"].value == pytest.approx(0.65e-6, rel=1e-12)
    assert got["distance_m"].value == pytest.approx(0.25, rel=1e-12)
    assert got["wavelength_m"].value == pytest.approx(HC_KEV_M / 20.0, rel=1e-12)
    assert got["pixel_size_m"].source == "/measurement/instrument/detector/actual_pixel_size_x = 0.65 um"
    nx = tmp_path / "nx.h5"
    with h5py.File(nx, "w") as f:
        f["entry/instrument/detector/x_pixel_size"] = np.float32(0.0013)
        f["entry/instrument/detector/x_pixel_size"].attrs["units"] = "mm"
        f["entry/instrument/detector/distance"] = 0.35  # no units attribute: NeXus' default, m
        f["entry/beam/incident_energy"] = [17.5]
        f["entry/beam/incident_energy"].attrs["units"] = b"keV"
    with h5py.File(nx) as f:
        got = stated_geometry(f, "/entry/data/data", str(nx))
    assert got["pixel_size_m"].value == pytest.approx(1.3e-6, rel=1e-6)
    assert got["distance_m"].value == 0.35 and got["distance_m"].source.endswith("= 0.35 m")
    assert got["wavelength_m"].value == pytest.approx(HC_KEV_M / 17.5, rel=1e-12)
    with h5py.File(tmp_path / "ours.h5", "w") as f:  # this package's root attributes win over the fields
        f.attrs["energy_kev"] = 10.0
        _dxchange_fields(tmp_path / "ours.h5")
    with h5py.File(tmp_path / "ours.h5") as f:
        assert stated_geometry(f, "/exchange/data", "")["wavelength_m"].source == "attribute energy_kev = 10"
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["measurement/instrument/detector/distance"] = 3.0
        f["measurement/instrument/detector/distance"].attrs["units"] = "furlong"
    with h5py.File(tmp_path / "bad.h5") as f, pytest.raises(DataError, match="has units 'furlong'; known: m, cm"):
        stated_geometry(f, "/exchange/data", "bad.h5")


@pytest.mark.slow
def test_phasegan_checks_the_archive_and_the_flags_against_the_model(movie_model, movie, tmp_path):
    common = dict(model=movie_model, backend="local", batch_size=4, preview=False)
    agrees = _dxchange_fields(write_dxchange(tmp_path / "agrees.h5", movie, n=4))
    s = reconstruct(ReconstructRequest(agrees, **common))
    assert s.geometry_sources["pixel_size_m"] == ("model (/measurement/instrument/detector/actual_pixel_size_x = 1 "
                                                  "microns agrees)")
    other = _dxchange_fields(write_dxchange(tmp_path / "other.h5", movie, n=4), pixel=(2.0, "microns"))
    with pytest.raises(DataError, match=r"pixel_size_m = 2e-06 \(/measurement/instrument/detector/actual_pixel_size_x "
                                        r"= 2 microns\), but the model was trained for 1e-06; --force-geometry"):
        reconstruct(ReconstructRequest(other, **common))
    assert not (tmp_path / "other_phasegan.h5").exists()
    with pytest.raises(DataError, match=r"distance_m = 0.5 \(--distance-m\), but the model was trained for 0.1"):
        reconstruct(ReconstructRequest(agrees, physics={"distance_m": 0.5}, overwrite=True, **common))
    forced = reconstruct(ReconstructRequest(other, force_geometry=True, **common))
    assert forced.geometry_sources["pixel_size_m"].startswith("model (forced over /measurement/")
    with h5py.File(forced.output) as f:
        assert f.attrs["detector_pixel_size_m"] == pytest.approx(1e-6)


@pytest.mark.slow
def test_paganin_takes_the_flag_then_the_archive_then_the_model(movie_model, movie, tmp_path):
    archive = _dxchange_fields(write_dxchange(tmp_path / "a.h5", movie, n=4), distance=(25.0, "cm"))
    common = dict(method="paganin", backend="local", batch_size=4, preview=False, overwrite=True)
    s = reconstruct(ReconstructRequest(archive, physics={"delta_beta": 100.0, "distance_m": 0.2}, **common))
    assert s.geometry_sources["distance_m"] == "--distance-m"
    with h5py.File(s.output) as f:
        assert f.attrs["distance_m"] == 0.2
    s = reconstruct(ReconstructRequest(archive, physics={"delta_beta": 100.0}, **common))
    assert s.geometry_sources["distance_m"] == "/measurement/instrument/detector/distance = 25 cm"
    with h5py.File(s.output) as f:
        assert f.attrs["distance_m"] == pytest.approx(0.25)
    bare = write_dxchange(tmp_path / "bare.h5", movie, n=4)  # states nothing: the model's
    s = reconstruct(ReconstructRequest(bare, model=movie_model, physics={"delta_beta": 100.0}, **common))
    assert s.geometry_sources == {"pixel_size_m": "model", "wavelength_m": "model", "distance_m": "model"}
