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
from phasegan_hpc.physics.geometry import Geometry
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

    def geometry(self) -> Geometry:
        """This section as a :class:`Geometry` (what ``simulate`` images with; detector pixel = object pixel)."""
        return Geometry(self.wavelength, self.pixel_size_m, self.distance_m, pad=self.pad, pad_mode=self.pad_mode)

    def padding(self, geometry: Geometry) -> Geometry:
        """``geometry`` (e.g. a data set's) with this section's padding of H: what training propagates with."""
        return geometry.with_padding(self.pad, self.pad_mode)


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

    Difficulty knobs (the paper's defaults are 1 and 0): ``strength`` scales every frame's deviation from a
    flat beam, F = 1 + strength (F - 1); ``field_of_view_m`` > 0 draws the synthetic flats as for a field of
    view that wide [m], of which the frame is the centre, so that their features keep a physical size
    whatever the frame size (0: the frame is the field, features scale with it).
    """

    n_components: int = 15
    n_flats: int = 200
    basis_file: str = ""
    enabled: bool = True
    strength: float = 1.0
    field_of_view_m: float = 0.0

    def __post_init__(self) -> None:
        _require(self.n_components >= 1, "flatfield.n_components", "must be >= 1")
        _require(self.strength >= 0, "flatfield.strength", "must be >= 0")
        _require(self.field_of_view_m >= 0, "flatfield.field_of_view_m", "must be >= 0")
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
    n_paired: int = 0  # paired.h5: a paired training set for the paired / pix2pix baselines
    seed: int = 0
    chunk_frames: int = 32
    workers: int = 0  # 0 = one per CPU core

    def __post_init__(self) -> None:
        _require(self.size >= optics.MIN_SIZE, "simulate.size", f"must be >= {optics.MIN_SIZE}")
        _require(self.n_train >= 1, "simulate.n_train", "must be >= 1")
        _require(self.n_val >= 0 and self.n_paired >= 0, "simulate.n_val", "n_val and n_paired must be >= 0")
        _require(self.seed >= 0, "simulate.seed", "must be >= 0")
        _require(self.chunk_frames >= 1, "simulate.chunk_frames", "must be >= 1")
        _require(self.workers >= 0, "simulate.workers", "must be >= 0")


METHODS = ("phasegan", "cyclegan", "pix2pix", "paired")


@dataclass(frozen=True)
class ModelConfig:
    """Networks (Supplement 1): U-Net generators, PatchGAN discriminators.

    ``base_filters`` = 32 is the paper's 22.9 M-parameter U-Net; ``disc_filters`` = 64 its 2.76 M PatchGAN.
    ``encoder_weights``: a local file with an ImageNet VGG11 state_dict (torchvision layout) to initialise
    G_O's encoder as the paper did. Never downloaded. ``init``: "normal" = N(0, 0.02) for all networks;
    "kaiming" = He-normal generators (discriminators stay N(0, 0.02)): narrow CPU-sized U-Nets learn from
    scratch only with it. ``upsample`` = 2: the two-detector case of paper §4, objects at half the detector
    pixel size (G_O gets an extra transposed-conv stage, G_D a plain conv in place of its last one).
    ``output``: what G_O's two channels are, "real_imag" (Re psi, Im psi; the authors' code) or
    "phase_attenuation"; ``object_scale``: "shared" (one scale for both channels, so neither is inert inside
    H), "ctf" (scales balanced by the geometry's contrast transfer function: strong phase objects such as
    the foam) or "channel" (each z-scored; older models) (see ``phasegan_hpc.data.normalise``). ``disc_norm``:
    "batch" (train-mode BatchNorm), "frozen" (BatchNorm on its initial running statistics: an affine map, as
    the reference code's BN effectively is), "instance" or "none". ``upsampling``: the decoder's
    "transpose" (3x3 stride-2 transposed convs, Supplement 1) or "resize" (nearest x2 + 3x3 conv, free of
    checkerboard artefacts).
    """

    generator: str = "unet"
    base_filters: int = 32
    init: str = "normal"
    discriminator: str = "patchgan"
    disc_filters: int = 64
    disc_norm: str = "batch"
    encoder_weights: str = ""
    upsample: int = 1  # 2: objects at half the detector pixel size (paper §4: G_O 128 -> 256, G_D 256 -> 128)
    output: str = "real_imag"
    object_scale: str = "shared"
    upsampling: str = "transpose"

    def __post_init__(self) -> None:
        _require(self.upsample in (1, 2), "model.upsample", "must be 1 or 2")
        _require(self.generator == "unet", "model.generator", "must be 'unet'")
        _require(self.discriminator == "patchgan", "model.discriminator", "must be 'patchgan'")
        _require(self.base_filters >= 1 and self.disc_filters >= 1, "model.base_filters", "must be >= 1")
        _require(self.init in ("normal", "kaiming"), "model.init", "must be 'normal' or 'kaiming'")
        _require(self.disc_norm in ("batch", "frozen", "instance", "none"), "model.disc_norm",
                 "must be 'batch', 'frozen', 'instance' or 'none'")
        _require(self.output in ("real_imag", "phase_attenuation"), "model.output",
                 "must be 'real_imag' or 'phase_attenuation'")
        _require(self.object_scale in ("shared", "ctf", "channel"), "model.object_scale",
                 "must be 'shared', 'ctf' or 'channel'")
        _require(self.upsampling in ("transpose", "resize"), "model.upsampling", "must be 'transpose' or 'resize'")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights, paper eq. 1 and 6 (synthetic PhaseGAN: alpha_cyc 20, alpha_frc 10; pix2pix alpha_mse 100).

    ``object_cycle_weight`` multiplies the first (object-cycle) terms of eq. 3 and 4: 2.5 for the paper's
    CycleGAN baseline, 1 for PhaseGAN. ``illumination_sigma_px`` > 0 closes the intensity cycle (the second
    terms of eq. 3 and 4) up to a smooth illumination fitted per frame, F = blur(I) / blur(G_D(...)) with a
    Gaussian of that many pixels (``physics.consistency``; not in the paper): a frame's own flat field is
    not a function of the object, and without the fit G_O can close the cycle only by encoding it in psi.
    ``alpha_fresnel`` > 0 (PhaseGAN only; not in the paper) adds that weight times the Fresnel residual of
    G_O's own output, mean |F |H G_O(I)|^2 - I| with the fitted illumination F (sigma
    ``illumination_sigma_px``, else 4 px), in normalised units: H alone, without G_D, must explain the frame.
    """

    adversarial: str = "bce"
    alpha_cyc: float = 20.0
    alpha_frc: float = 10.0
    alpha_mse: float = 100.0
    object_cycle_weight: float = 1.0
    illumination_sigma_px: float = 0.0
    alpha_fresnel: float = 0.0

    def __post_init__(self) -> None:
        _require(self.adversarial in ("bce", "lsgan"), "loss.adversarial", "must be 'bce' or 'lsgan'")
        for key in ("alpha_cyc", "alpha_frc", "alpha_mse", "object_cycle_weight", "illumination_sigma_px",
                    "alpha_fresnel"):
            _require(getattr(self, key) >= 0, f"loss.{key}", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Training (paper §3: Adam, lr_G 2e-4, lr_D 1e-4, betas 0.5/0.999, batch 16, lr / 10 every 30 epochs,
    70 epochs). Checkpoints every ``checkpoint_every`` steps and at every epoch end; ``max_steps`` > 0 stops
    early (a later run with the same name resumes)."""

    method: str = "phasegan"
    data_dir: str = "data/synthetic"
    runs_dir: str = "runs"
    name: str = "synthetic"
    epochs: int = 70
    batch_size: int = 16
    lr_g: float = 2e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_epochs: int = 30
    lr_decay_factor: float = 0.1
    grad_clip: float = 10.0
    augment: bool = True
    amp: str = "off"  # mixed precision of the network passes: "off", "bf16" or "fp16" (fp16: GPUs only)
    norm_frames: int = 1000
    val_frames: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    # TensorBoard event files of rank 0 under RUN/tensorboard (the numbers of metrics.jsonl; a resumed run
    # continues its curves). On by default: they are small (a few hundred bytes per record), cost nothing per
    # step, and live curves are what ML users look for first. MLflow: set MLFLOW_TRACKING_URI (train/logs.py).
    tensorboard: bool = True
    max_steps: int = 0
    seed: int = 0
    # Fine-tuning: start G_O and G_D (same architecture, checked) and the normalisation from this model.pt,
    # with fresh optimisers and discriminators ("": a fresh start); recorded in the new model's info.
    init_from: str = ""
    # Two-detector training (paper §4): random crops matching the fields of view, padded to the network
    # sizes (0 = whole frames, no padding); ``rotate``: random 90-degree rotations besides the flips.
    detector_crop: int = 0
    object_crop: int = 0
    detector_size: int = 0
    object_size: int = 0
    rotate: bool = False

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "train.method", f"must be one of {METHODS}")
        for key in ("detector_crop", "object_crop", "detector_size", "object_size"):
            _require(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        for crop, size in (("detector_crop", "detector_size"), ("object_crop", "object_size")):
            _require(getattr(self, size) == 0 or getattr(self, size) >= getattr(self, crop), f"train.{size}",
                     f"must be 0 or >= train.{crop}")
        _require(self.amp in ("off", "bf16", "fp16"), "train.amp", "must be 'off', 'bf16' or 'fp16'")
        for key in ("epochs", "batch_size", "lr_decay_epochs", "norm_frames", "checkpoint_every",
                    "keep_checkpoints", "log_every"):
            _require(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        for key in ("lr_g", "lr_d"):
            _require(getattr(self, key) > 0, f"train.{key}", "must be > 0")
        _require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)")
        _require(0 < self.lr_decay_factor <= 1, "train.lr_decay_factor", "must be in (0, 1]")
        _require(self.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 = off)")
        _require(self.val_frames >= 0 and self.max_steps >= 0 and self.seed >= 0, "train.val_frames",
                 "val_frames, max_steps and seed must be >= 0")
        _require(bool(self.name) and "/" not in self.name and self.name not in (".", "..", "latest"),
                 "train.name", "must be a plain directory name other than 'latest'")


@dataclass(frozen=True)
class TuneConfig:
    """Search of the loss weights (``phasegan-hpc tune``): log-uniform ranges, ASHA, the tuned metric.

    ``metric`` must exist without paired data and not scale with the alphas: "val_unpaired" (default:
    intensity-cycle FRCM + realism W1 on held-out detector frames), "val_cycle_frcm" or "val_realism_w1".
    ``lr_min``/``lr_max`` > 0 also search a common learning-rate scale (lr_G and lr_D keep their ratio).
    """

    metric: str = "val_unpaired"
    alpha_cyc_min: float = 1.0
    alpha_cyc_max: float = 300.0
    alpha_frc_min: float = 0.1
    alpha_frc_max: float = 100.0
    lr_scale_min: float = 0.0
    lr_scale_max: float = 0.0
    grace_epochs: int = 5
    reduction_factor: int = 3
    max_epochs: int = 0  # 0 = [train] epochs
    max_concurrent: int = 0  # trials at once; 0 = as many as the cluster's resources allow
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.max_concurrent >= 0, "tune.max_concurrent", "must be >= 0")
        _require(self.metric in ("val_unpaired", "val_cycle_frcm", "val_realism_w1"), "tune.metric",
                 "must be 'val_unpaired', 'val_cycle_frcm' or 'val_realism_w1'")
        for lo, hi in (("alpha_cyc_min", "alpha_cyc_max"), ("alpha_frc_min", "alpha_frc_max")):
            _require(0 < getattr(self, lo) <= getattr(self, hi), f"tune.{lo}", f"must satisfy 0 < {lo} <= {hi}")
        _require(self.lr_scale_min == self.lr_scale_max == 0 or 0 < self.lr_scale_min <= self.lr_scale_max,
                 "tune.lr_scale_min", "must be 0 (off) or satisfy 0 < lr_scale_min <= lr_scale_max")
        _require(self.grace_epochs >= 1 and self.reduction_factor >= 2 and self.max_epochs >= 0,
                 "tune.grace_epochs", "grace_epochs >= 1, reduction_factor >= 2, max_epochs >= 0")


@dataclass(frozen=True)
class FoamConfig:
    """The simulated metallic-foam experiment of paper §4 (``phasegan-hpc simulate-foam``).

    Geometry and material come from ``[physics]`` (energy, distance, and ``pixel_size_m`` = the object
    pixel, 1.6 um) and ``[phantom]`` (delta, beta); truth is computed on a grid ``fine_factor`` times finer.
    Photron: 2 um pixels, 31 pulses; Shimadzu: 3.2 um, one pulse, fewer photons, more blur, drifting
    flats. Photon counts are per pixel and pulse in the free beam.
    """

    fine_factor: int = 4
    slab_m: float = 150e-6
    cell_radius_m: float = 40e-6
    cell_radius_spread: float = 0.3
    wall_m: float = 6e-6
    movie_frames: int = 20
    photron_pixel_m: float = 2e-6
    photron_shape: tuple[int, ...] = (200, 480)
    photron_photons: float = 300.0
    photron_pulses: int = 31
    photron_blur_px: float = 0.7
    shimadzu_pixel_m: float = 3.2e-6
    shimadzu_shape: tuple[int, ...] = (128, 128)
    shimadzu_photons: float = 400.0
    shimadzu_blur_px: float = 1.2
    shimadzu_drift: float = 0.05
    dark_counts: float = 100.0
    read_noise: float = 3.0
    photron_frames: int = 2000
    shimadzu_frames: int = 2000
    validation_frames: int = 61  # the paper's movie: 61 frames
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("fine_factor", "movie_frames", "photron_pulses", "photron_frames", "shimadzu_frames",
                    "validation_frames"):
            _require(getattr(self, key) >= 1, f"foam.{key}", "must be >= 1")
        for key in ("slab_m", "cell_radius_m", "wall_m", "photron_pixel_m", "shimadzu_pixel_m", "photron_photons",
                    "shimadzu_photons"):
            _require(getattr(self, key) > 0, f"foam.{key}", "must be > 0")
        for key in ("photron_shape", "shimadzu_shape"):
            shape = getattr(self, key)
            _require(len(shape) == 2 and min(shape) >= 16, f"foam.{key}", "must be [rows, cols], each >= 16")


@dataclass(frozen=True)
class Config:
    """The whole configuration; one attribute per TOML table."""

    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    flatfield: FlatfieldConfig = field(default_factory=FlatfieldConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    foam: FoamConfig = field(default_factory=FoamConfig)


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
        if typing.get_origin(hint) is tuple:
            value = tuple(value)
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
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
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
