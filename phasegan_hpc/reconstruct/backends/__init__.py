"""Backends: where the workers of a reconstruction run (DESIGN.md §4-5).

    local.py       one worker in this process
    ray_actors.py  a pool of Ray actors (``RAY_ADDRESS`` or a local Ray); lost actors are replaced
    mpi.py         one worker per mpi4py rank; rank 0 checks, assembles and reports

Every backend implements :class:`Backend` and runs :class:`phasegan_hpc.reconstruct.worker.ShardRunner` on
the same shards with the same batches, so all of them write identical shard files. A backend takes its
shards from a :class:`phasegan_hpc.reconstruct.source.ShardSource` (which may grow while it runs) and gives
back the shard of a worker it lost. Ray is imported in ``ray_actors.py`` only, mpi4py in ``mpi.py`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct.source import ShardSource
from phasegan_hpc.reconstruct.worker import Job

BACKENDS = ("ray", "mpi", "local")
#: ``progress(n)``: n more frames are done (the driver's :class:`phasegan_hpc.progress.Tally`).
Advance = Callable[[int], None]
T = TypeVar("T")


class Backend(Protocol):
    """Runs workers over a shard source. Construction checks nothing and starts nothing."""

    name: str
    replaced: int  # workers lost and replaced during the last run (0 where a backend cannot replace them)
    lost: list[str]  # one line per worker lost in the last run: where, and which shard is redone

    def is_driver(self) -> bool:
        """Whether this process assembles the output and reports (False on MPI ranks other than 0)."""
        ...

    def prepare(self, setup: Callable[[], T]) -> T:
        """Run the driver's checks and set-up once and give every process its result (MPI: rank 0 runs it and
        broadcasts it, or its error; the other ranks then exit quietly)."""
        ...

    def device(self, requested: str | None) -> str:
        """The torch device of the workers: ``requested``, else this backend's default.

        Raises:
            DataError: CUDA requested where this process can see none.
        """
        ...

    def run(self, jobs: list[Job], source: ShardSource, progress: Advance) -> list[dict[str, Any]]:
        """Run every task ``source`` gives (a shard of ``jobs[task.job]``) until it is exhausted, on one pool
        of workers for all the jobs; returns the workers' summary rows, each with its ``job`` (on the driver;
        other MPI ranks get [])."""
        ...


def backend_named(name: str, *, workers: int | None = None, cpus_per_worker: float = 1.0,
                  gpus_per_worker: float | None = None, comm=None) -> Backend:
    """The backend called ``name`` ("ray", "mpi" on ``comm`` (None: ``COMM_WORLD``), "local"). Ray and mpi4py
    are imported only here, when chosen: importing Ray takes seconds, and importing ``mpi4py.MPI`` initialises
    MPI.

    Raises:
        DataError: an unknown name.
    """
    if name == "local":
        from phasegan_hpc.reconstruct.backends.local import LocalBackend

        return LocalBackend()
    if name == "ray":
        from phasegan_hpc.reconstruct.backends.ray_actors import RayBackend

        return RayBackend(workers, cpus_per_worker, gpus_per_worker)
    if name == "mpi":
        from phasegan_hpc.reconstruct.backends.mpi import MpiBackend

        return MpiBackend(comm)
    raise DataError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def check_device(requested: str) -> str:
    """``requested`` if torch can parse it as a device ("cpu", "cuda", "cuda:1", ...).

    Raises:
        DataError: not a device name.
    """
    try:
        torch.device(requested)
    except (RuntimeError, ValueError):
        raise DataError(f"--device {requested!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    return requested


def local_device(requested: str | None) -> str:
    """``requested`` (CUDA only where this process sees it), else CUDA if present, else the CPU."""
    if requested:
        check_device(requested)
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise DataError(f"device {requested} requested but this machine has no CUDA device")
        index = torch.device(requested).index
        if requested.startswith("cuda") and index is not None and index >= torch.cuda.device_count():
            raise DataError(f"device {requested} requested but this machine has no such CUDA device "
                            f"({torch.cuda.device_count()} visible)")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"
