"""Where the training loop runs: rank, device, DDP wrapping, checkpoints and reporting.

The loop (``loop.py``) talks only to a :class:`Session`, so the same loop runs in-process
(:class:`LocalSession`), as Ray Train's per-worker function and as a single-device Ray Tune trial (one
:class:`RaySession`, parameterised by the Ray API it reports through). Ray is imported inside
:class:`RaySession`'s methods only (lazy: ray takes seconds to import, and :class:`LocalSession`, which
``train_local`` and ``bench table1`` use, needs none); connecting to Ray is :mod:`phasegan_hpc.cluster`'s.

Checkpoints of a run have one name, in-process and under Ray Train alike: ``RUN/checkpoint_step_NNNNNNNN/``
(:func:`checkpoint_name`; Ray Train gets it as ``checkpoint_dir_name``) holding :data:`CHECKPOINT_FILE`, and
one lookup, :func:`run_checkpoints` / :func:`latest_checkpoint`, which also knows the older names (Ray's
``checkpoint_<timestamp>``, in-process ``checkpoints/step_NNNNNNNN``) so that older runs still resume.
"""

from __future__ import annotations

import inspect
import os
import re
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
CHECKPOINT_PREFIX = "checkpoint_step_"
_STEP_NAMES = (re.compile(rf"{CHECKPOINT_PREFIX}(\d+)"), re.compile(r"checkpoints/step_(\d+)"))  # new, old


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint at ``step`` in a run directory (Ray and in-process runs)."""
    return f"{CHECKPOINT_PREFIX}{int(step):08d}"


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoint directories of a run that hold :data:`CHECKPOINT_FILE`, oldest first.

    ``checkpoint_step_N`` and the in-process runs' older ``checkpoints/step_N`` are ordered by step (at one
    step the new name last); Ray's older ``checkpoint_<timestamp>`` (by name) come before any of them.
    """
    run_dir = Path(run_dir)

    def key(path: Path) -> tuple[int, int, int, str]:
        rel = path.relative_to(run_dir).as_posix()
        for newness, pattern in zip((1, 0), _STEP_NAMES, strict=True):
            match = pattern.fullmatch(rel)
            if match:
                return 1, int(match.group(1)), newness, rel
        return 0, 0, 0, rel

    found = [*run_dir.glob("checkpoint_*"), *run_dir.glob("checkpoints/step_*")]
    return sorted((p for p in found if (p / CHECKPOINT_FILE).is_file()), key=key)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint directory of a run (see :func:`run_checkpoints`), or None."""
    found = run_checkpoints(run_dir)
    return found[-1] if found else None


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
    """One process, CPU or one GPU; checkpoints kept as ``run_dir/checkpoint_step_NNNNNNNN``, the newest
    ``keep`` of them (older-named ones included)."""

    rank = 0
    world_size = 1

    def __init__(self, run_dir: str | Path, keep: int = 2, device: str | torch.device | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.last_metrics: dict[str, Any] = {}

    def wrap(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def staging_dir(self) -> Path:
        return self.run_dir  # same file system: the final rename is atomic

    def restore(self) -> dict[str, Any] | None:
        latest = latest_checkpoint(self.run_dir)
        return load_checkpoint(latest) if latest is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.last_metrics = dict(metrics)
        if checkpoint_dir is None:
            return
        final = self.run_dir / checkpoint_name(metrics["step"])
        if final.exists():
            shutil.rmtree(final)
        os.replace(checkpoint_dir, final)  # a checkpoint appears whole or not at all
        for old in run_checkpoints(self.run_dir)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        legacy = self.run_dir / "checkpoints"  # older runs' folder, once its checkpoints have gone
        if legacy.is_dir() and not any(legacy.iterdir()):
            legacy.rmdir()


class RaySession:
    """The Session of a loop that Ray runs, reporting through ``api``: ``ray.train`` (one worker of a
    ``TorchTrainer``, see :meth:`train_worker`) or ``ray.tune`` (a single-device trial, :meth:`tune_trial`).

    Both APIs offer the same ``report(metrics, checkpoint=...)``, ``get_checkpoint()`` and
    ``Checkpoint.from_directory``; checkpoints are staged in the node-local temp dir and Ray copies them to
    storage (Ray Train: as ``STORAGE/NAME/checkpoint_step_NNNNNNNN``, :func:`checkpoint_name`). With several
    workers, :meth:`wrap` prepares DDP through Ray Train.
    """

    def __init__(self, api: ModuleType, rank: int = 0, world_size: int = 1,
                 device: torch.device | None = None) -> None:
        self.api = api
        self.rank = rank
        self.world_size = world_size
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # Ray Train V2 names a checkpoint's directory as asked (every rank asks the same); Tune's report keeps
        # its trials' checkpoints in its own directories and takes no name
        self.names_checkpoints = "checkpoint_dir_name" in inspect.signature(api.report).parameters

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
        name = {"checkpoint_dir_name": checkpoint_name(metrics["step"])} if self.names_checkpoints else {}
        self.api.report(dict(metrics), checkpoint=checkpoint, **name)
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # Ray has copied it to storage


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that stops the per-forward broadcast of buffers (PatchGAN BatchNorm statistics stay per
    rank, DESIGN.md §5): ``forward_sync_buffers`` on newer torch, ``broadcast_buffers`` before it."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
