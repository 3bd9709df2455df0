"""Where the training loop runs: rank, device, DDP wrapping, checkpoints and reporting.

The loop (``loop.py``) talks only to a :class:`Session`, so the same loop runs in-process
(:class:`LocalSession`) and as Ray Train's per-worker function (the Ray session in ``fit.py``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from phasegan_hpc.errors import DataError

CHECKPOINT_FILE = "checkpoint.pt"


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """Read the training state in a checkpoint directory (weights only: loading never runs code).

    Raises:
        DataError: the file is missing or unreadable.
    """
    try:
        return torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"checkpoint {directory} cannot be read ({type(exc).__name__}: {exc})") from None


class Session(Protocol):
    """What the training loop needs from its environment."""

    rank: int
    world_size: int
    device: torch.device

    def wrap(self, module: nn.Module) -> nn.Module:
        """Move to the device and, with several workers, wrap for data-parallel training."""

    def restore(self) -> dict[str, Any] | None:
        """The training state of the latest checkpoint (see :func:`load_checkpoint`), or None: fresh start."""

    def staging_dir(self) -> Path:
        """Where rank 0 writes a checkpoint before handing it to :meth:`report`."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Publish metrics (every rank calls this at the same points) and, from rank 0, a checkpoint
        directory holding :data:`CHECKPOINT_FILE`."""


class LocalSession:
    """One process, CPU or one GPU; checkpoints kept under ``run_dir/checkpoints/step_NNNNNNNN``."""

    rank = 0
    world_size = 1

    def __init__(self, run_dir: str | Path, keep: int = 2, device: str | torch.device | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.last_metrics: dict[str, Any] = {}

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def wrap(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def staging_dir(self) -> Path:
        return self.checkpoint_root  # same file system: the final rename is atomic

    def restore(self) -> dict[str, Any] | None:
        done = sorted(p for p in self.checkpoint_root.glob("step_*") if (p / CHECKPOINT_FILE).is_file())
        return load_checkpoint(done[-1]) if done else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.last_metrics = dict(metrics)
        if checkpoint_dir is None:
            return
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        final = self.checkpoint_root / f"step_{int(metrics['step']):08d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(checkpoint_dir, final)  # a checkpoint appears whole or not at all
        for old in sorted(self.checkpoint_root.glob("step_*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
