"""The model file ``model.pt`` (DESIGN.md §4): G_O weights + architecture + normalisation + physics.

PhaseGAN models also carry G_D (``detector``: |H psi|^2 -> detector frame) and the propagator's padding, so
that ``reconstruct`` can score how well the intensity cycle G_D|H G_O(I)|^2 explains each frame (eq. 3).
The entry is optional: files without it (older files, the paired baselines) load as before.

One ``torch.save`` of plain dicts, lists, numbers, strings and tensors, so ``torch.load(weights_only=True)``
reads it: loading a model never runs code. A file of another kind, or one whose architecture does not
match its weights, is a :class:`DataError` with one clear line.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phasegan_hpc import __version__
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.registry import GENERATORS

FORMAT = "phasegan-hpc/model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedModel:
    """G_O ready for inference, with what is needed to use it."""

    generator: nn.Module
    normalisation: Normalisation
    physics: dict[str, float]
    method: str
    arch: dict[str, Any]
    info: dict[str, Any]
    sha256: str
    detector: nn.Module | None = None
    pad: int = 0
    pad_mode: str = "edge"


def detector_entry(g_d: nn.Module | dict[str, torch.Tensor], arch: dict[str, Any], pad: int,
                   pad_mode: str) -> dict[str, Any]:
    """The optional ``detector`` entry of ``model.pt``: G_D (module or state_dict), its arch, H's padding."""
    state = g_d.state_dict() if isinstance(g_d, nn.Module) else g_d
    return {"arch": dict(arch), "state_dict": {k: v.detach().cpu() for k, v in state.items()},
            "pad": int(pad), "pad_mode": str(pad_mode)}


def _build(arch: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    factory = GENERATORS.get(arch.get("name"))
    if factory is None:
        raise KeyError(f"unknown generator architecture {arch.get('name')!r}")
    net = factory(int(arch["in_channels"]), int(arch["out_channels"]), int(arch["base_filters"]),
                  resize=str(arch.get("resize", "same")))
    net.load_state_dict(state)
    return net


def save_model(path: str | Path, generator: nn.Module, arch: dict[str, Any], norm: Normalisation,
               physics: dict[str, float], method: str, info: dict[str, Any] | None = None,
               detector: dict[str, Any] | None = None) -> Path:
    """Write ``model.pt`` atomically (temporary name, then rename).

    Args:
        generator: G_O (unwrapped).
        arch: {"name": registry key, "in_channels", "out_channels", "base_filters"[, "resize"]}.
        norm: normalisation statistics of the training data.
        physics: pixel_size_m, wavelength_m, distance_m of the training data.
        method: training method.
        info: extra plain data (epoch, step, metrics, config TOML text...).
        detector: optional G_D entry from :func:`detector_entry` (PhaseGAN).
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "software_version": __version__,
        "method": method,
        "arch": dict(arch),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "normalisation": norm.to_dict(),
        "physics": dict(physics),
        "info": dict(info or {}),
    }
    if detector is not None:
        payload["detector"] = detector
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load ``model.pt`` with ``weights_only=True`` and rebuild G_O in eval mode.

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
    arch = payload["arch"]
    if arch.get("name") not in GENERATORS:
        raise DataError(f"{p}: unknown generator architecture {arch.get('name')!r}")
    detector = payload.get("detector")
    try:
        generator = _build(arch, payload["state_dict"])
        norm = Normalisation.from_dict(payload["normalisation"])
        g_d = _build(detector["arch"], detector["state_dict"]) if detector is not None else None
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: architecture does not match the stored weights ({first})") from None
    if g_d is not None:
        g_d.to(device).eval()
    generator.to(device).eval()
    pad = (int(detector.get("pad", 0)), str(detector.get("pad_mode", "edge"))) if detector else (0, "edge")
    return LoadedModel(generator, norm, dict(payload["physics"]), str(payload["method"]), dict(arch),
                       dict(payload.get("info", {})), file_sha256(p), g_d, *pad)
