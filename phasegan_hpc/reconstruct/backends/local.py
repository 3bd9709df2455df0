"""The local backend: one worker in this process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from phasegan_hpc.reconstruct.backends import Advance, local_device
from phasegan_hpc.reconstruct.source import ShardSource
from phasegan_hpc.reconstruct.worker import Job, TaskRunner

T = TypeVar("T")
#: How long the worker waits for a growing source's next shard before asking again [s].
POLL_S = 0.5


class LocalBackend:
    """All shards in this process, one after another."""

    name = "local"
    replaced = 0
    lost: list[str] = []  # never replaces a worker: always empty

    def is_driver(self) -> bool:
        return True

    def prepare(self, setup: Callable[[], T]) -> T:
        return setup()

    def device(self, requested: str | None) -> str:
        return local_device(requested)

    def run(self, jobs: list[Job], source: ShardSource, progress: Advance) -> list[dict[str, Any]]:
        runner = TaskRunner(jobs)
        rows = []
        try:
            while not source.exhausted():
                task = source.take(POLL_S)
                if task is not None:
                    rows.append(runner.run(task, progress))
            return rows
        finally:
            runner.close()
