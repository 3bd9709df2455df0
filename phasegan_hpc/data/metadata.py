"""The geometry an archive states, with its units: this package's root attributes, DXchange's and NXtomo's fields.

Each value is converted to SI and comes with where it was read (:class:`Stated`), so that a mismatch with the
model, and the summary of a run, can name its source. Looked up, first found wins:

    pixel_size_m   root attribute ``pixel_size_m`` [m];
                   DXchange ``/measurement/instrument/detector/actual_pixel_size_x`` (default microns);
                   NXtomo ``ENTRY/instrument/detector/x_pixel_size`` (default m)
    distance_m     root attribute ``distance_m`` [m];
                   DXchange ``/measurement/instrument/detector/distance``,
                   ``/measurement/instrument/sample/setup/sample_detector_distance`` (default mm);
                   NXtomo ``ENTRY/instrument/detector/distance`` (default m)
    wavelength_m   root attribute ``wavelength_m`` [m], else ``energy_kev`` [keV];
                   DXchange ``/measurement/instrument/monochromator/energy`` (default keV);
                   NXtomo ``ENTRY/beam/incident_energy``, ``ENTRY/instrument/beam/incident_energy`` (default keV)

ENTRY is the NXentry holding the frames (the first group of their path). A field's ``units`` attribute
(``m``, ``cm``, ``mm``, ``um``/``µm``/``micron(s)``, ``nm``; ``eV``, ``keV``, ``MeV``) overrides the default;
units this module does not know are refused in one line, never guessed.
Energies become wavelengths by lambda = hc / E (``physics.optics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from phasegan_hpc.errors import DataError
from phasegan_hpc.physics.geometry import attr_float
from phasegan_hpc.physics.optics import HC_KEV_M

#: metres per unit of length
LENGTH_UNITS = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "microns": 1e-6,
                "micrometer": 1e-6, "micrometre": 1e-6, "nm": 1e-9}
#: keV per unit of energy
ENERGY_UNITS = {"ev": 1e-3, "kev": 1.0, "mev": 1e3}

#: (layout, path (ENTRY: the frames' NXentry), kind, default unit) per quantity, in the order looked up.
FIELDS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "pixel_size_m": (("dxchange", "/measurement/instrument/detector/actual_pixel_size_x", "length", "microns"),
                     ("nxtomo", "ENTRY/instrument/detector/x_pixel_size", "length", "m")),
    "distance_m": (("dxchange", "/measurement/instrument/detector/distance", "length", "mm"),
                   ("dxchange", "/measurement/instrument/sample/setup/sample_detector_distance", "length", "mm"),
                   ("nxtomo", "ENTRY/instrument/detector/distance", "length", "m")),
    "wavelength_m": (("dxchange", "/measurement/instrument/monochromator/energy", "energy", "keV"),
                     ("nxtomo", "ENTRY/beam/incident_energy", "energy", "keV"),
                     ("nxtomo", "ENTRY/instrument/beam/incident_energy", "energy", "keV")),
}


@dataclass(frozen=True)
class Stated:
    """A geometry value an archive states: ``value`` in SI (m), and ``source``, where it was read (with the
    value and units as stored)."""

    value: float
    source: str


def _scalar(ds: h5py.Dataset, where: str) -> float:
    value = np.asarray(ds[()], dtype=object).reshape(-1)
    try:
        number = float(value[0]) if len(value) else float("nan")
    except (TypeError, ValueError):
        raise DataError(f"{where}: {ds.name} is not a number ({value[0]!r})") from None
    if not np.isfinite(number) or number <= 0:
        raise DataError(f"{where}: {ds.name} = {number:g} is not a positive number")
    return number


def _units(ds: h5py.Dataset, default: str) -> str:
    units = ds.attrs.get("units", default)
    return units.decode() if isinstance(units, bytes) else str(units)


def _convert(number: float, units: str, kind: str, where: str, name: str) -> float:
    """``number`` in ``units`` -> metres (length) or a wavelength in metres (energy)."""
    if kind == "length":
        factor = LENGTH_UNITS.get(units.strip())
        if factor is None:
            raise DataError(f"{where}: {name} has units {units!r}; known: {', '.join(LENGTH_UNITS)}")
        return number * factor
    factor = ENERGY_UNITS.get(units.strip().lower())
    if factor is None:
        raise DataError(f"{where}: {name} has units {units!r}; known: eV, keV, MeV")
    return HC_KEV_M / (number * factor)


def _root_attribute(attrs: dict, key: str, where: str) -> Stated | None:
    names = [key] + (["energy_kev"] if key == "wavelength_m" else [])
    for name in names:
        if name in attrs:
            value = attr_float(attrs, name, where)
            if value <= 0:
                raise DataError(f"attribute {name!r} of {where} is {value:g}, not a positive number")
            return Stated(HC_KEV_M / value if name == "energy_kev" else value, f"attribute {name} = {value:g}")
    return None


def stated_geometry(f: h5py.File, frames: str, where: str) -> dict[str, Stated]:
    """What the open archive ``f`` states of ``pixel_size_m``, ``distance_m`` and ``wavelength_m`` (absent keys:
    not stated), for frames at HDF5 path ``frames``; ``where`` names the file in errors.

    Raises:
        DataError: a field that is not a positive number, or has units this module does not know.
    """
    attrs = dict(f.attrs)
    entry = "/" + frames.strip("/").split("/")[0]
    out: dict[str, Stated] = {}
    for key, fields in FIELDS.items():
        stated = _root_attribute(attrs, key, where)
        for _, path, kind, default in fields if stated is None else ():
            path = path.replace("ENTRY", entry)
            ds = f.get(path)
            if not isinstance(ds, h5py.Dataset):
                continue
            number, units = _scalar(ds, where), _units(ds, default)
            stated = Stated(_convert(number, units, kind, where, path), f"{path} = {number:g} {units}")
            break
        if stated is not None:
            out[key] = stated
    return out
