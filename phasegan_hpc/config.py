"""Configuration: frozen dataclasses loaded from ``configs/*.toml``.

Each TOML table is one section dataclass; the defaults are the paper's §3 synthetic experiment, and
``configs/synthetic.toml`` spells them out (a test keeps the two equal). Loading is strict: an unknown
section or key, or a value of the wrong type, is a :class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from phasegan_hpc.errors import ConfigError, PhysicsError
from phasegan_hpc.physics import optics
from phasegan_hpc.physics.propagator import PAD_MODES


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


@dataclass(frozen=True)
class PhysicsConfig:
    """Imaging geometry (paper §3: lambda = 1 A, 1 um pixels, z = 10 cm). Give wavelength or energy."""

    wavelength_m: float | None = 1e-10
    energy_kev: float | None = None
    pixel_size_m: float = 1e-6
    distance_m: float = 0.1
    pad: int = 0
    pad_mode: str = "edge"

    # Keys that exclude each other: setting one in a file clears the others' defaults.
    _exclusive: typing.ClassVar[tuple[tuple[str, ...], ...]] = (("wavelength_m", "energy_kev"),)

    def __post_init__(self) -> None:
        try:
            optics.resolve_wavelength_m(self.wavelength_m, self.energy_kev)
            optics.positive("pixel_size_m", self.pixel_size_m)
            optics.check_distance(self.distance_m)
        except PhysicsError as exc:
            raise ConfigError(f"physics: {exc}") from None
        _require(self.pad >= 0, "physics.pad", "must be >= 0")
        _require(self.pad_mode in PAD_MODES, "physics.pad_mode", f"must be one of {PAD_MODES}")

    @property
    def wavelength(self) -> float:
        """The wavelength [m], from ``wavelength_m`` or ``energy_kev``."""
        return optics.resolve_wavelength_m(self.wavelength_m, self.energy_kev)


@dataclass(frozen=True)
class PhantomConfig:
    """Random circles and rectangles of one material (paper §3: delta 1e-3, beta 1e-6, t_max 10 nm).

    Each shape gets a thickness drawn uniformly from [0, t_max_m]; overlapping shapes add up. Shape sizes
    (radius, half side) are drawn uniformly between ``min_size`` and ``max_size`` times the image side.
    """

    delta: float = 1e-3
    beta: float = 1e-6
    t_max_m: float = 10e-9
    min_objects: int = 1
    max_objects: int = 25
    min_size: float = 0.02
    max_size: float = 0.15

    def __post_init__(self) -> None:
        _require(self.delta >= 0 and self.beta >= 0, "phantom.delta/beta", "must be >= 0")
        _require(self.t_max_m > 0, "phantom.t_max_m", "must be > 0")
        _require(1 <= self.min_objects <= self.max_objects, "phantom.min_objects",
                 "must satisfy 1 <= min_objects <= max_objects")
        _require(0 < self.min_size <= self.max_size <= 0.5, "phantom.min_size",
                 "must satisfy 0 < min_size <= max_size <= 0.5")


@dataclass(frozen=True)
class FlatfieldConfig:
    """Flat-field variation from a PCA basis (paper §3: 15 components from European XFEL flats).

    With ``basis_file`` empty the basis is built from ``n_flats`` synthetic flat fields (smooth beam
    profile, stripes, blobs, drifting intensity). Otherwise it is read from an HDF5 file with datasets
    ``/mean`` (H, W), ``/components`` (K, H, W) and ``/std`` (K,), as written by
    :func:`phasegan_hpc.simulate.flatfields.save_basis`.
    """

    n_components: int = 15
    n_flats: int = 200
    basis_file: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        _require(self.n_components >= 1, "flatfield.n_components", "must be >= 1")
        _require(self.n_flats >= self.n_components, "flatfield.n_flats", "must be >= n_components")


@dataclass(frozen=True)
class DetectorConfig:
    """Photon-counting detector (paper §3: about 6.6e7 photons per 256 x 256 frame, Poisson noise)."""

    photons_per_frame: float = 6.6e7

    def __post_init__(self) -> None:
        _require(math.isfinite(self.photons_per_frame) and self.photons_per_frame > 0,
                 "detector.photons_per_frame", "must be > 0")


@dataclass(frozen=True)
class SimulateConfig:
    """Size of the synthetic data set (paper §3: 10,000 + 10,000 unpaired frames at 256 x 256)."""

    size: int = 256
    n_train: int = 10000
    n_val: int = 1000
    seed: int = 0
    chunk_frames: int = 32
    workers: int = 0  # 0 = one per CPU core

    def __post_init__(self) -> None:
        _require(self.size >= optics.MIN_SIZE, "simulate.size", f"must be >= {optics.MIN_SIZE}")
        _require(self.n_train >= 1, "simulate.n_train", "must be >= 1")
        _require(self.n_val >= 0, "simulate.n_val", "must be >= 0")
        _require(self.seed >= 0, "simulate.seed", "must be >= 0")
        _require(self.chunk_frames >= 1, "simulate.chunk_frames", "must be >= 1")
        _require(self.workers >= 0, "simulate.workers", "must be >= 0")


@dataclass(frozen=True)
class Config:
    """The whole configuration; one attribute per TOML table."""

    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    flatfield: FlatfieldConfig = field(default_factory=FlatfieldConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a dataclass field's type hint (int is a float; bool is not an int)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    return isinstance(value, hint)


def _build_section(cls: type, default: Any, data: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown key '{section}.{key}' (known: {', '.join(sorted(names))})")
        hint = hints[key]
        if not _type_ok(value, hint):
            raise ConfigError(f"{section}.{key} must be {getattr(hint, '__name__', hint)}, got {value!r}")
        values[key] = float(value) if hint is float or hint == (float | None) else value
    for group in getattr(cls, "_exclusive", ()):
        if any(k in data for k in group):
            values.update({k: None for k in group if k not in data})
    return dataclasses.replace(default, **values)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts (a parsed TOML document), strictly.

    Raises:
        ConfigError: unknown section or key, wrong type, or an invalid value.
    """
    base = Config()
    sections = {f.name: f for f in dataclasses.fields(Config)}
    values = {}
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section [{name}] (known: {', '.join(sections)})")
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        values[name] = _build_section(type(getattr(base, name)), getattr(base, name), table, name)
    return dataclasses.replace(base, **values)


def load_config(path: str | Path | None = None) -> Config:
    """Load a TOML config file; ``None`` gives the defaults (the paper's §3 settings).

    Raises:
        ConfigError: one line naming the file and the offending key.
    """
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        return config_from_dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return ``cfg`` with dotted keys replaced, e.g. ``{"simulate.n_train": 100}``; ``None`` values skip.

    The replaced sections are validated again.
    """
    by_section: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        by_section.setdefault(section, {})[key] = value
    changes = {s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in by_section.items()}
    return dataclasses.replace(cfg, **changes)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_to_toml(cfg: Config) -> str:
    """Serialise a :class:`Config` as TOML text that :func:`load_config` reads back to an equal object."""
    lines: list[str] = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        lines.append(f"[{sec.name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)
