"""Where backends get their shards: a :class:`ShardSource`.

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
from typing import Protocol

from phasegan_hpc.reconstruct.plan import Shard


class ShardSource(Protocol):
    """The shards a backend runs. Thread-safe: a backend's workers may take and give back concurrently."""

    def take(self, timeout: float = 0.0) -> Shard | None:
        """The next shard to run, waiting up to ``timeout`` s for one; None if none is ready (yet)."""
        ...

    def give_back(self, shard: Shard) -> None:
        """A shard whose worker was lost before finishing it: it is taken again before any other."""
        ...

    def exhausted(self) -> bool:
        """True when no shard is ready and none will come (every shard was taken and none given back)."""
        ...

    def pending(self) -> int | None:
        """How many shards are still to be taken; None where that is not known yet (a growing source)."""
        ...


class FixedShards:
    """A :class:`ShardSource` over a known list of shards, taken in order."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self._todo = deque(shards)
        self._ready = threading.Condition()

    def take(self, timeout: float = 0.0) -> Shard | None:
        with self._ready:
            if not self._todo and timeout > 0:
                self._ready.wait(timeout)
            return self._todo.popleft() if self._todo else None

    def give_back(self, shard: Shard) -> None:
        with self._ready:
            self._todo.appendleft(shard)
            self._ready.notify()

    def exhausted(self) -> bool:
        with self._ready:
            return not self._todo

    def pending(self) -> int:
        with self._ready:
            return len(self._todo)
