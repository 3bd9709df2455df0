"""The imaging geometry, in one shape: :class:`Geometry` (DESIGN.md §3; SI units, names carry them).

What training data, model files, archives and the propagator agree on: the wavelength, the pixel of the
object grid (what H uses), the propagation distance, the pixel of the detector frames (twice the object
pixel for paper §4's cross-resolution models, else the same) and H's padding against wrap-around. Files
carry it as the attributes ``wavelength_m``, ``pixel_size_m``, ``distance_m`` (and, where it differs,
``detector_pixel_size_m``): :meth:`Geometry.from_attrs` / :meth:`Geometry.to_attrs`. "The pixel of a frame
means the detector pixel" is decided here, in :meth:`Geometry.check_against`, and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from phasegan_hpc.errors import DataError
from phasegan_hpc.physics import optics
from phasegan_hpc.physics.propagator import PAD_MODES, FresnelPropagator, contrast_transfer_gains

#: The attributes every data file and model carries (the detector pixel is optional: it defaults to these).
GEOMETRY_ATTRS = ("pixel_size_m", "wavelength_m", "distance_m")


def attr_float(attrs: Mapping, key: str, where: str = "") -> float:
    """``attrs[key]`` as a finite float: a number, or an array or string holding exactly one.

    Raises:
        DataError: anything else (text, an array of several values, nan, inf), naming the attribute.
    """
    value = attrs[key]
    try:
        number = float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) if np.size(value) == 1 else None
    except (TypeError, ValueError):
        number = None
    if number is None or not np.isfinite(number):
        raise DataError(f"attribute {key!r} of {where or 'the file'} is {value!r}, not a finite number")
    return number


@dataclass(frozen=True)
class Geometry:
    """Near-field imaging geometry.

    Attributes:
        wavelength_m: lambda [m].
        pixel_size_m: the object grid's pixel [m] (what H propagates on).
        distance_m: sample-detector distance z [m] (0: contact plane; negative back-propagates).
        detector_pixel_size_m: the detector frames' pixel [m]; 0 (the default) means ``pixel_size_m``.
        pad, pad_mode: H's padding (pixels per side, "edge" or "constant"; FresnelPropagator).
    """

    wavelength_m: float
    pixel_size_m: float
    distance_m: float
    detector_pixel_size_m: float = 0.0
    pad: int = 0
    pad_mode: str = "edge"

    def __post_init__(self) -> None:
        optics.positive("wavelength_m", self.wavelength_m)
        optics.positive("pixel_size_m", self.pixel_size_m)
        optics.check_distance(self.distance_m)
        for name in ("wavelength_m", "pixel_size_m", "distance_m"):
            object.__setattr__(self, name, float(getattr(self, name)))
        det = float(self.detector_pixel_size_m) or self.pixel_size_m
        object.__setattr__(self, "detector_pixel_size_m", optics.positive("detector_pixel_size_m", det))
        if int(self.pad) < 0 or self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad must be >= 0 and pad_mode one of {PAD_MODES}, got {self.pad}, {self.pad_mode!r}")
        object.__setattr__(self, "pad", int(self.pad))

    # ---- files ---------------------------------------------------------------------------------------------

    @classmethod
    def from_attrs(cls, attrs: Mapping, where: str = "", *, detector_pixel_size_m: float | None = None,
                   pad: int = 0, pad_mode: str = "edge") -> Geometry:
        """The geometry an HDF5 file's (or a model's) attributes state.

        Args:
            attrs: with ``pixel_size_m``, ``wavelength_m``, ``distance_m`` and optionally
                ``detector_pixel_size_m``.
            where: the file, for the error message.
            detector_pixel_size_m: overrides the attribute (e.g. from the detector frames' own file).
            pad, pad_mode: H's padding (a training setting, not a property of the data).

        Raises:
            DataError: a missing attribute, named.
        """
        absent = [k for k in GEOMETRY_ATTRS if k not in attrs]
        if absent:
            raise DataError(f"{where or 'the file'} lacks the physics attribute(s) {', '.join(absent)}")
        det = (detector_pixel_size_m if detector_pixel_size_m is not None
               else attr_float(attrs, "detector_pixel_size_m", where) if "detector_pixel_size_m" in attrs else 0.0)
        return cls(attr_float(attrs, "wavelength_m", where), attr_float(attrs, "pixel_size_m", where),
                   attr_float(attrs, "distance_m", where), float(det), pad, pad_mode)

    def to_attrs(self) -> dict[str, float]:
        """Plain floats for HDF5 attributes and ``model.pt`` (the keys :meth:`from_attrs` reads)."""
        return {"pixel_size_m": self.pixel_size_m, "wavelength_m": self.wavelength_m,
                "distance_m": self.distance_m, "detector_pixel_size_m": self.detector_pixel_size_m}

    # ---- derived -------------------------------------------------------------------------------------------

    def with_padding(self, pad: int, pad_mode: str = "edge") -> Geometry:
        """The same geometry with H padded by ``pad`` pixels per side in ``pad_mode``."""
        return replace(self, pad=pad, pad_mode=pad_mode)

    @property
    def upsample(self) -> float:
        """Detector pixel / object pixel (2 for paper §4's cross-resolution models, else 1)."""
        return self.detector_pixel_size_m / self.pixel_size_m

    def propagator(self, shape: tuple[int, int], device: torch.device | str | None = None) -> FresnelPropagator:
        """H on an object grid of ``shape`` (H, W) with this geometry and padding."""
        prop = FresnelPropagator(tuple(shape), pixel_size_m=self.pixel_size_m, distance_m=self.distance_m,
                                 wavelength_m=self.wavelength_m, pad=self.pad, pad_mode=self.pad_mode)
        return prop.to(device) if device is not None else prop

    def ctf_gains(self, shape: tuple[int, int]) -> tuple[float, float]:
        """(attenuation, phase) rms contrast transfer gains on an object grid of ``shape``
        (:func:`~phasegan_hpc.physics.propagator.contrast_transfer_gains`)."""
        return contrast_transfer_gains(tuple(shape), pixel_size_m=self.pixel_size_m, distance_m=self.distance_m,
                                       wavelength_m=self.wavelength_m)

    def check_against(self, attrs: Mapping, where: str, rtol: float = 1e-6) -> None:
        """Refuse frames recorded with another geometry than this one (a model's).

        The frames' ``pixel_size_m`` attribute is their own pixel, so it is compared with this geometry's
        *detector* pixel; attributes the frames do not carry are not checked.

        Raises:
            DataError: ``"{where}: {key} = {theirs}, but the model was trained for {ours}"`` at the first
                mismatch.
        """
        ours = {"pixel_size_m": self.detector_pixel_size_m, "wavelength_m": self.wavelength_m,
                "distance_m": self.distance_m}
        for key, value in ours.items():
            if key in attrs and not math.isclose(theirs := attr_float(attrs, key, where), value, rel_tol=rtol,
                                                 abs_tol=0.0):
                raise DataError(f"{where}: {key} = {theirs:g}, but the model was trained for {value:g}")
