"""The model file ``model.pt`` (DESIGN.md §4): G_O weights + architecture + normalisation + physics.

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


def save_model(path: str | Path, generator: nn.Module, arch: dict[str, Any], norm: Normalisation,
               physics: dict[str, float], method: str, info: dict[str, Any] | None = None) -> Path:
    """Write ``model.pt`` atomically (temporary name, then rename).

    Args:
        generator: G_O (unwrapped).
        arch: {"name": registry key, "in_channels", "out_channels", "base_filters"}.
        norm: normalisation statistics of the training data.
        physics: pixel_size_m, wavelength_m, distance_m of the training data.
        method: training method.
        info: extra plain data (epoch, step, metrics, config TOML text...).
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
    factory = GENERATORS.get(arch.get("name"))
    if factory is None:
        raise DataError(f"{p}: unknown generator architecture {arch.get('name')!r}")
    try:
        generator = factory(int(arch["in_channels"]), int(arch["out_channels"]), int(arch["base_filters"]))
        generator.load_state_dict(payload["state_dict"])
        norm = Normalisation.from_dict(payload["normalisation"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: architecture does not match the stored weights ({first})") from None
    generator.to(device).eval()
    return LoadedModel(generator, norm, dict(payload["physics"]), str(payload["method"]), dict(arch),
                       dict(payload.get("info", {})), file_sha256(p))
