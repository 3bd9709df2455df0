"""The MPI backend: one worker per mpi4py rank (``mpiexec -n N phasegan-hpc reconstruct --backend mpi``).

Rank 0 runs the checks and the set-up and broadcasts the result (or the user's error: rank 0 prints it,
the others exit quietly). For a finished archive every rank reads the same source and runs every size-th
shard it gives (round robin: no messages per shard). A growing source (``reconstruct --follow``: only rank
0 watches the archive) is dispatched instead: each rank asks rank 0 for its next shard when it is free, and
rank 0 answers as shards appear (a thread of its own). Rank 0 shows everyone's progress from the shard files
that appear and gathers the rows. A rank that fails reports its error to rank 0 instead of leaving the others waiting.
MPI cannot replace a lost rank: a run that loses one fails, and the same command resumes it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from mpi4py import MPI

from phasegan_hpc.errors import DataError, PhaseganError
from phasegan_hpc.reconstruct.backends import Advance, local_device
from phasegan_hpc.reconstruct.source import ShardSource, Task
from phasegan_hpc.reconstruct.worker import Job, TaskRunner, shard_path

T = TypeVar("T")
#: How often rank 0 looks for finished shard files, and a rank waits on a growing source [s].
POLL_S = 0.5


class MpiBackend:
    """The ranks of ``comm`` (None: ``MPI.COMM_WORLD``); call :func:`phasegan_hpc.reconstruct.reconstruct` on
    every rank."""

    name = "mpi"
    replaced = 0
    lost: list[str] = []  # never replaces a worker: always empty

    def __init__(self, comm=None) -> None:
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def is_driver(self) -> bool:
        return self.rank == 0

    def prepare(self, setup: Callable[[], T]) -> T:
        result: Any = None
        if self.rank == 0:
            try:
                result = setup()
            except PhaseganError as exc:
                result = exc
        result = self.comm.bcast(result, root=0)
        if isinstance(result, PhaseganError):
            if self.rank == 0:
                raise result
            raise SystemExit(1)  # rank 0 prints the one error line
        return result

    def device(self, requested: str | None) -> str:
        return local_device(requested)

    def run(self, jobs: list[Job], source: ShardSource, progress: Advance) -> list[dict[str, Any]]:
        if self.size > 1:  # one GPU per rank, round robin over the node's
            gpu = f"cuda:{self.rank % max(1, torch.cuda.device_count())}"
            jobs = [dataclasses.replace(j, device=gpu) if j.device.startswith("cuda") else j for j in jobs]
        rows: list[dict[str, Any]] = []
        error: str | None = None
        seen: list[Task] = []  # every task taken so far, for rank 0's progress
        stop = threading.Event()
        watcher = None
        if self.rank == 0:
            watcher = threading.Thread(target=_watch_files, args=(jobs, seen, progress, stop), daemon=True)
            watcher.start()
        growing = self.comm.bcast(source.pending() is None if self.rank == 0 else None, root=0)
        dispatch = _Dispatcher(self.comm, source, seen) if growing and self.size > 1 else None
        try:
            runner = TaskRunner(jobs)
            try:
                if dispatch is not None:
                    while (task := dispatch.next()) is not None:
                        rows.append(runner.run(task))
                else:
                    k = 0
                    while not source.exhausted():
                        task = source.take(POLL_S)
                        if task is None:
                            continue
                        seen.append(task)
                        if k % self.size == self.rank:
                            rows.append(runner.run(task))
                        k += 1
            finally:
                runner.close()
        except Exception as exc:  # noqa: BLE001 - reported through rank 0
            error = f"rank {self.rank}: {exc}" if not isinstance(exc, PhaseganError) else str(exc)
        if dispatch is not None:
            dispatch.close()
        gathered = self.comm.gather((rows, error), root=0)
        stop.set()
        if watcher is not None:
            watcher.join()
        if self.rank != 0:
            return []
        errors = [e for _, e in gathered if e]
        if errors:
            raise DataError(f"{errors[0]}; rerun the same command to resume")
        return [r for part, _ in gathered for r in part]


#: Tags of the dispatch messages: a rank asks (its rank, or None: it leaves), rank 0 answers (a task or None).
_ASK, _ANSWER = 11, 12


class _Dispatcher:
    """Shards of a growing source handed out by rank 0 on request (``comm`` is duplicated: the dispatch never
    mixes with the backend's own collectives). Rank 0 takes its own shards from the source directly, and a
    thread answers the other ranks until every one of them has left."""

    def __init__(self, comm, source: ShardSource, seen: list[Task]) -> None:
        self.comm, self.source, self.seen = comm.Dup(), source, seen
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._thread = None
        self._left = False
        if self.rank == 0:
            self._thread = threading.Thread(target=self._serve, name="dispatch", daemon=True)
            self._thread.start()

    def _take(self) -> Task | None:
        """The source's next task, waiting for one; None once it is exhausted."""
        while not self.source.exhausted():
            task = self.source.take(POLL_S)
            if task is not None:
                self.seen.append(task)
                return task
        return None

    def _serve(self) -> None:
        active = self.size - 1
        while active:
            status = MPI.Status()
            who = self.comm.recv(source=MPI.ANY_SOURCE, tag=_ASK, status=status)
            if who is None:  # it failed and leaves
                active -= 1
                continue
            task = self._take()
            self.comm.send(task, dest=status.Get_source(), tag=_ANSWER)
            if task is None:
                active -= 1

    def next(self) -> Task | None:
        """This rank's next shard (None: no more)."""
        if self.rank == 0:
            return self._take()
        self.comm.send(self.rank, dest=0, tag=_ASK)
        task = self.comm.recv(source=0, tag=_ANSWER)
        self._left = task is None
        return task

    def close(self) -> None:
        """Leave (after an error, rank 0 is told) and, on rank 0, wait for every other rank to have left."""
        if self.rank != 0 and not self._left:
            self.comm.send(None, dest=0, tag=_ASK)
            self._left = True
        if self._thread is not None:
            self._thread.join()
        self.comm.Free()


def _watch_files(jobs: list[Job], seen: list[Task], progress: Advance, stop: threading.Event) -> None:
    """Advance ``progress`` by each task of ``seen`` (which grows) whose shard file has appeared, until ``stop``."""
    counted: set[tuple[int, int]] = set()
    while True:
        final = stop.is_set()
        for t in list(seen):
            key = (t.job, t.shard.index)
            if key not in counted and shard_path(jobs[t.job], t.shard).is_file():
                progress(t.shard.frames)
                counted.add(key)
        if final:
            return
        stop.wait(POLL_S)
