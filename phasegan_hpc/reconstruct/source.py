"""Where backends get their shards: a :class:`ShardSource` of :class:`Task` (a shard of one of the jobs a
backend runs at once: ``reconstruct A.h5 B.h5`` is one job per archive over one pool of workers).

A backend never holds the list of shards. It asks its source for the next one whenever a worker is free,
and hands a shard back when the worker carrying it was lost, so that another worker redoes it. This is
what lets one backend serve both a finished archive (:class:`FixedShards`, the plan's pending shards) and,
later, an archive that is still being written (a source whose shards appear as its frames arrive: it
answers None to :meth:`ShardSource.take` until the next shard is complete, and is exhausted only when
acquisition ends).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from phasegan_hpc.reconstruct.plan import Shard


@dataclass(frozen=True)
class Task:
    """Shard ``shard`` of job ``job`` (an index into the jobs a backend was given)."""

    job: int
    shard: Shard


def tasks(shards: Iterable[Shard], job: int = 0) -> list[Task]:
    """The shards of job ``job`` as tasks."""
    return [Task(job, s) for s in shards]


class ShardSource(Protocol):
    """The shards a backend runs. Thread-safe: a backend's workers may take and give back concurrently."""

    def take(self, timeout: float = 0.0) -> Task | None:
        """The next shard to run, waiting up to ``timeout`` s for one; None if none is ready (yet)."""
        ...

    def give_back(self, task: Task) -> None:
        """A shard whose worker was lost before finishing it: it is taken again before any other."""
        ...

    def exhausted(self) -> bool:
        """True when no shard is ready and none will come (every shard was taken and none given back)."""
        ...

    def pending(self) -> int | None:
        """How many shards are still to be taken; None where that is not known yet (a growing source)."""
        ...


class FixedShards:
    """A :class:`ShardSource` over a known list of tasks, taken in order."""

    def __init__(self, todo: Iterable[Task]) -> None:
        self._todo = deque(todo)
        self._ready = threading.Condition()

    def take(self, timeout: float = 0.0) -> Task | None:
        with self._ready:
            if not self._todo and timeout > 0:
                self._ready.wait(timeout)
            return self._todo.popleft() if self._todo else None

    def give_back(self, task: Task) -> None:
        with self._ready:
            self._todo.appendleft(task)
            self._ready.notify()

    def exhausted(self) -> bool:
        with self._ready:
            return not self._todo

    def pending(self) -> int:
        with self._ready:
            return len(self._todo)
