"""The model file ``model.pt`` (DESIGN.md §4) and inference with it: :class:`PhaseModel`.

A trained model is G_O (detector frame -> object) with its architecture, the normalisation statistics
(which also say how G_O's two channels encode the object: ``phasegan_hpc.data.normalise``), the geometry
of the training data, and for PhaseGAN G_D (``detector``: |H psi|^2 -> detector frame) with the
propagator's padding, so that ``reconstruct`` can score how well the intensity cycle G_D|H G_O(I)|^2
explains each frame (eq. 3). :class:`PhaseModel` is the only writer and the only reader of the file, and
the one place where "normalise I, run G_O, denormalise the object" is written: training's export, tune's
best model, the benchmarks' models (and Table 1's patch figure), evaluate and reconstruct all go through it.

One ``torch.save`` of plain dicts, lists, numbers, strings and tensors, so ``torch.load(weights_only=True)``
reads it: loading a model never runs code. A file of another kind, or one whose architecture does not
match its weights, is a :class:`DataError` with one clear line. Files written before the object encodings
existed (no ``output`` in the normalisation) load as "phase_attenuation" with per-channel scales.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phasegan_hpc import __version__
from phasegan_hpc.config import Config, ModelConfig
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.errors import DataError, PhysicsError
from phasegan_hpc.files import atomic_file
from phasegan_hpc.models.registry import GENERATORS, build_from_arch, generator_arch
from phasegan_hpc.physics import FresnelPropagator, object_wavefield
from phasegan_hpc.physics.consistency import SIGMA_PX, fresnel_residual, onto_frames, relative_l1
from phasegan_hpc.physics.geometry import Geometry

FORMAT = "phasegan-hpc/model"
FORMAT_VERSION = 1


def _cpu_state(module_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    return {k: v.detach().cpu() for k, v in state.items()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build(arch: dict[str, Any], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The network of ``arch`` with the weights ``state``. The architecture is first built on torch's "meta"
    device (shapes, no memory) and its parameter shapes compared with the stored ones, so that a small file
    declaring a huge network is refused before anything is allocated."""
    if not isinstance(arch, dict) or arch.get("name") not in GENERATORS:
        raise KeyError(f"unknown generator architecture {arch.get('name') if isinstance(arch, dict) else arch!r}")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TypeError("the weights are not a dict of tensors")
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_from_arch(arch).state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != stored:
        diff = sorted(set(shapes) ^ set(stored)) or [k for k in shapes if shapes[k] != stored[k]]
        raise ValueError(f"{len(diff)} tensors differ, first {diff[0]}: architecture {shapes.get(diff[0])}, "
                         f"stored {stored.get(diff[0])}")
    net = build_from_arch(arch)
    net.load_state_dict(state)
    return net


class PhaseModel:
    """G_O (and for PhaseGAN G_D) ready for inference, with everything needed to use them.

    Args:
        generator: G_O, detector frame (B, 1, H, W) -> object channels (B, 2, sH, sW), s = 1 or 2.
        arch: G_O's architecture dict (``models.registry.generator_arch``).
        normalisation: the training data's statistics and the object encoding.
        geometry: of the training data, with H's padding during training.
        method: the training method (phasegan, cyclegan, pix2pix, paired).
        info: plain data (step, epochs, metrics, the config as TOML text...).
        detector, detector_arch: G_D and its architecture (PhaseGAN), or None.
        sha256: of the file it was loaded from ("" for a model not yet saved).
    """

    def __init__(self, generator: nn.Module, arch: dict[str, Any], normalisation: Normalisation,
                 geometry: Geometry, method: str, info: dict[str, Any] | None = None,
                 detector: nn.Module | None = None, detector_arch: dict[str, Any] | None = None,
                 sha256: str = "") -> None:
        if (detector is None) != (detector_arch is None):
            raise ValueError("detector and detector_arch go together")
        self.generator, self.arch, self.normalisation = generator, dict(arch), normalisation
        self.geometry, self.method, self.info = geometry, str(method), dict(info or {})
        self.detector, self.detector_arch = detector, (dict(detector_arch) if detector_arch else None)
        self.sha256 = sha256
        self._nets: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        self._cuda_fast = False
        self._propagators: dict[tuple[tuple[int, int], str], FresnelPropagator] = {}

    # ---- construction --------------------------------------------------------------------------------------

    @classmethod
    def for_run(cls, cfg: Config, generators: nn.Module | Mapping[str, torch.Tensor], normalisation: Normalisation,
                geometry: Geometry, info: dict[str, Any] | None = None) -> PhaseModel:
        """The model of a training run of ``cfg``: from its ``models.cycle.GeneratorPair``.

        A module is used as it is (its live G_O and G_D, no copy: what validation and the export see); a
        state_dict (keys ``g_o.*`` / ``g_d.*``, e.g. from a checkpoint) is rebuilt on the CPU. G_D is kept for
        PhaseGAN only: CycleGAN's maps objects straight to frames, without H, and the paired methods have none.
        """
        arch = generator_arch(cfg.model, "g_o")
        d_arch = generator_arch(cfg.model, "g_d", "phasegan") if cfg.train.method == "phasegan" else None
        if isinstance(generators, nn.Module):
            g_o, g_d = generators.g_o, generators.g_d if d_arch is not None else None
        else:
            full = _cpu_state(generators)
            g_o = _build(arch, {k[4:]: v for k, v in full.items() if k.startswith("g_o.")}).eval()
            g_d = None
            if d_arch is not None:
                g_d = _build(d_arch, {k[4:]: v for k, v in full.items() if k.startswith("g_d.")}).eval()
        return cls(g_o, arch, normalisation, cfg.physics.padding(geometry), cfg.train.method, info, g_d, d_arch)

    @classmethod
    def untrained(cls, model: ModelConfig, normalisation: Normalisation, geometry: Geometry,
                  detector: bool = True) -> PhaseModel:
        """A freshly initialised PhaseGAN model of ``model``'s architecture (``model.init``; seed torch first
        for reproducible weights): G_O and, with ``detector``, G_D. For benchmarks and tests."""
        arch = generator_arch(model, "g_o")
        d_arch = generator_arch(model, "g_d", "phasegan") if detector else None
        g_o = build_from_arch(arch, model.init).eval()  # G_O first: the weights bench models always had
        g_d = build_from_arch(d_arch, model.init).eval() if d_arch is not None else None
        return cls(g_o, arch, normalisation, geometry, "phasegan", {}, g_d, d_arch)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> PhaseModel:
        """Load ``model.pt`` with ``weights_only=True`` and rebuild the networks in eval mode on ``device``.

        Raises:
            DataError: missing file, not a weights-only file (e.g. a pickle that would run code), another
                format or version, or an architecture that does not match the weights.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"model file {p} not found")
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise DataError(f"{p}: refused: not a weights-only model file (loading it would run code)") from None
        except Exception as exc:  # torch raises assorted errors on non-torch files
            raise DataError(f"{p}: not a phasegan-hpc model file ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise DataError(f"{p}: not a phasegan-hpc model file (no '{FORMAT}' format tag)")
        if payload.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{p}: model format version {payload.get('format_version')!r}, this software reads "
                            f"{FORMAT_VERSION}")
        arch, detector = payload.get("arch"), payload.get("detector")
        if not isinstance(arch, dict) or arch.get("name") not in GENERATORS:
            raise DataError(f"{p}: unknown generator architecture "
                            f"{arch.get('name') if isinstance(arch, dict) else type(arch).__name__!r}")
        if detector is not None and not isinstance(detector, dict):
            raise DataError(f"{p}: malformed detector entry ({type(detector).__name__})")
        if not isinstance(payload.get("physics"), dict):
            raise DataError(f"{p}: no geometry (physics) in the model file")
        try:
            generator = _build(arch, payload["state_dict"])
            norm = Normalisation.from_dict(payload["normalisation"])
            g_d = _build(detector["arch"], detector["state_dict"]) if detector is not None else None
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{p}: architecture does not match the stored weights ({first})") from None
        try:
            geometry = Geometry.from_attrs(payload["physics"], str(p)).with_padding(
                int(detector.get("pad", 0)) if detector else 0, str(detector.get("pad_mode", "edge")) if detector
                else "edge")
        except (PhysicsError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{p}: unusable geometry ({exc})") from None
        model = cls(generator, arch, norm, geometry, str(payload["method"]), dict(payload.get("info", {})), g_d,
                    dict(detector["arch"]) if detector else None, file_sha256(p))
        return model.to(device)

    def save(self, path: str | Path) -> Path:
        """Write ``model.pt`` atomically (temporary name, then rename); sets :attr:`sha256`."""
        path = Path(path)
        payload: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "software_version": __version__,
            "method": self.method,
            "arch": dict(self.arch),
            "state_dict": _cpu_state(self.generator),
            "normalisation": self.normalisation.to_dict(),
            "physics": self.geometry.to_attrs(),
            "info": dict(self.info),
        }
        if self.detector is not None:
            payload["detector"] = {"arch": dict(self.detector_arch), "state_dict": _cpu_state(self.detector),
                                   "pad": self.geometry.pad, "pad_mode": self.geometry.pad_mode}
        with atomic_file(path) as f:
            torch.save(payload, f)
        self.sha256 = file_sha256(path)
        return path

    # ---- device and speed ----------------------------------------------------------------------------------

    def to(self, device: str | torch.device) -> PhaseModel:
        """Move the networks to ``device`` (eval mode); returns self."""
        self.generator.to(device).eval()
        if self.detector is not None:
            self.detector.to(device).eval()
        self._nets, self._propagators = {}, {}
        return self

    def accelerate(self, compile: bool = False) -> PhaseModel:
        """On CUDA: bf16 autocast and channels_last for the networks; ``compile``: ``torch.compile`` them
        (one compilation per batch shape). H and the normalisation stay float32. Returns self."""
        self._cuda_fast = next(self.generator.parameters()).device.type == "cuda"
        nets = {"g_o": self.generator, **({"g_d": self.detector} if self.detector is not None else {})}
        for name, net in nets.items():
            if self._cuda_fast:
                net.to(memory_format=torch.channels_last)
            self._nets[name] = torch.compile(net) if compile else net
        return self

    def _run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        net = self._nets[name] if name in self._nets else self.generator if name == "g_o" else self.detector
        if self._cuda_fast:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self._cuda_fast else nullcontext()
        with ctx:
            return net(x).float()

    # ---- what the model is ---------------------------------------------------------------------------------

    @property
    def output(self) -> str:
        """How G_O's channels encode the object ("real_imag" or "phase_attenuation")."""
        return self.normalisation.output

    @property
    def scale(self) -> int:
        """Object grid / frame grid: 2 for paper §4's cross-resolution models, else 1."""
        return 2 if self.arch.get("resize") == "up2" else 1

    def propagator(self, shape: tuple[int, int], device: torch.device) -> FresnelPropagator:
        """H on the object grid ``shape`` with the model's geometry and padding (cached per shape, device)."""
        key = (tuple(shape), str(device))
        if key not in self._propagators:
            self._propagators[key] = self.geometry.propagator(tuple(shape), device)
        return self._propagators[key]

    # ---- inference -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def retrieve(self, intensity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase retrieval: detector frames -> (phase [rad], attenuation mu T).

        Args:
            intensity: (B, H, W) frames in the training data's units (flat-field corrected or not, as the
                model was trained), float32, on the model's device.

        Returns:
            (phase, attenuation), each (B, sH, sW) float32 (s = :attr:`scale`). With "real_imag" the phase is
            arg psi, in (-pi, pi].
        """
        norm = self.normalisation
        obj = norm.denorm_object(self._run("g_o", norm.norm_intensity(intensity[:, None].float())))
        return obj[:, 0].contiguous(), obj[:, 1].contiguous()

    @torch.no_grad()
    def hologram(self, phase: torch.Tensor, attenuation: torch.Tensor) -> torch.Tensor:
        """|H psi|^2 of objects (B, h, w) on the object grid, with the model's geometry and padding."""
        return self.propagator(tuple(phase.shape[-2:]), phase.device).intensity(object_wavefield(phase, attenuation))

    @torch.no_grad()
    def predict_intensity(self, phase: torch.Tensor, attenuation: torch.Tensor,
                          frame_shape: tuple[int, int] | None = None,
                          hologram: torch.Tensor | None = None) -> torch.Tensor:
        """The detector frame the model predicts for an object: G_D|H psi|^2 (eq. 3's intensity cycle) when
        the model has G_D, else |H psi|^2 average-pooled onto the frame grid.

        Args:
            phase, attenuation: (B, h, w) float32 on the model's device, the object grid.
            frame_shape: (H, W) of the frames (default (h, w) / :attr:`scale`).
            hologram: :meth:`hologram` of the same objects, if already computed.

        Returns:
            (B, H, W) float32 in the frames' units.
        """
        shape = tuple(phase.shape[-2:])
        hologram = self.hologram(phase, attenuation) if hologram is None else hologram
        if self.detector is not None:  # G_D works in normalised units, as in training (models.cycle)
            norm = self.normalisation
            return norm.denorm_intensity(self._run("g_d", norm.norm_intensity(hologram[:, None])))[:, 0]
        return onto_frames(hologram, frame_shape or (shape[0] // self.scale, shape[1] // self.scale))

    @torch.no_grad()
    def fresnel_residual(self, frames: torch.Tensor, phase: torch.Tensor, attenuation: torch.Tensor,
                         sigma_px: float = SIGMA_PX, hologram: torch.Tensor | None = None) -> torch.Tensor:
        """The trust score that does not rest on G_D (``physics.consistency``): how well |H psi|^2 alone, times
        a smooth illumination fitted per frame, explains each frame.

        Args:
            frames: (B, H, W) the frames the object was retrieved from; phase, attenuation: (B, h, w) objects.
            hologram: :meth:`hologram` of the same objects, if already computed.

        Returns:
            (B,) float32.
        """
        hologram = self.hologram(phase, attenuation) if hologram is None else hologram
        return fresnel_residual(frames, onto_frames(hologram, tuple(frames.shape[-2:])), sigma_px)

    @torch.no_grad()
    def scores(self, frames: torch.Tensor, phase: torch.Tensor, attenuation: torch.Tensor,
               region: tuple[slice, slice] | None = None) -> dict[str, torch.Tensor]:
        """Both per-frame trust scores of retrieved objects, from one propagation: ``consistency`` (relative L1
        of :meth:`predict_intensity` against the frames) and ``fresnel_residual``; each (B,) float32.

        ``region`` (rows, columns of the frame grid): compare only there (frames padded to the networks'
        multiple are scored on their own pixels; the propagation runs over the whole padded object)."""
        shape = tuple(frames.shape[-2:])
        hologram = self.hologram(phase, attenuation)
        predicted = self.predict_intensity(phase, attenuation, shape, hologram)
        on_frames = onto_frames(hologram, shape)
        if region is not None:
            frames, predicted, on_frames = (x[..., region[0], region[1]] for x in (frames, predicted, on_frames))
        return {"consistency": relative_l1(predicted, frames), "fresnel_residual": fresnel_residual(frames, on_frames)}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> PhaseModel:
    """:meth:`PhaseModel.load` (the short name the callers use)."""
    return PhaseModel.load(path, device)
