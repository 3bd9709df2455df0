"""Where the training loop runs: rank, device, DDP wrapping, checkpoints and reporting.

The loop (``loop.py``) talks only to a :class:`Session`, so the same loop runs in-process
(:class:`LocalSession`), as Ray Train's per-worker function and as a single-device Ray Tune trial (one
:class:`RaySession`, parameterised by the Ray API it reports through). Ray is imported inside
:class:`RaySession`'s methods only (lazy: ray takes seconds to import, and :class:`LocalSession`, which
``train_local`` and ``bench table1`` use, needs none); connecting to Ray is :mod:`phasegan_hpc.cluster`'s.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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


class RaySession:
    """The Session of a loop that Ray runs, reporting through ``api``: ``ray.train`` (one worker of a
    ``TorchTrainer``, see :meth:`train_worker`) or ``ray.tune`` (a single-device trial, :meth:`tune_trial`).

    Both APIs offer the same ``report(metrics, checkpoint=...)``, ``get_checkpoint()`` and
    ``Checkpoint.from_directory``; checkpoints are staged in the node-local temp dir and Ray copies them to
    storage. With several workers, :meth:`wrap` prepares DDP through Ray Train.
    """

    def __init__(self, api: ModuleType, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None) -> None:
        self.api = api
        self.rank = rank
        self.world_size = world_size
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def train_worker(cls) -> RaySession:
        """The Session of this Ray Train worker (call inside ``train_loop_per_worker``)."""
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        return cls(ray.train, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())

    @classmethod
    def tune_trial(cls) -> RaySession:
        """The Session of this single-device Ray Tune trial: one rank, CUDA if present."""
        from ray import tune

        return cls(tune)

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module.to(self.device)
        import ray.train.torch

        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs=_no_buffer_sync())

    def restore(self) -> dict[str, Any] | None:
        ckpt = self.api.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_checkpoint(Path(d))

    def staging_dir(self) -> Path:
        return Path(tempfile.gettempdir())  # node-local; Ray copies the checkpoint to storage

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = self.api.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        self.api.report(dict(metrics), checkpoint=checkpoint)
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # Ray has copied it to storage


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that stops the per-forward broadcast of buffers (PatchGAN BatchNorm statistics stay per
    rank, DESIGN.md §5): ``forward_sync_buffers`` on newer torch, ``broadcast_buffers`` before it."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
