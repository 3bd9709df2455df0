"""In-process training: the loop on a :class:`LocalSession` (one CPU or GPU)."""

from __future__ import annotations

from typing import Any

from phasegan_hpc.config import Config
from phasegan_hpc.progress import ProgressFn
from phasegan_hpc.train.loop import run_dir_of, train_loop
from phasegan_hpc.train.session import LocalSession


def train_local(cfg: Config, progress: ProgressFn | None = None, device: str | None = None) -> dict[str, Any]:
    """Train (or resume) ``cfg.train.name`` in this process; returns the final metrics and model path."""
    session = LocalSession(run_dir_of(cfg), keep=cfg.train.keep_checkpoints, device=device)
    return train_loop(cfg, session, progress)
