"""Backends that run the plan's pending shards: ``local`` (this process), ``ray`` (a pool of Ray actors)
and ``mpi`` (mpi4py ranks). All run :class:`phasegan_hpc.reconstruct.worker.ShardRunner` on the same shards
with the same batches, so they write identical shard files.

Every backend takes ``(job, pending, progress)`` and returns the workers' summary rows; ``progress(n)``
advances the driver's bar by ``n`` frames. Ray is imported here (inside functions) and nowhere else in
``reconstruct``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from phasegan_hpc.cluster import check_resources, connect_ray, disconnect_ray
from phasegan_hpc.errors import DataError, PhaseganError, ResourceError
from phasegan_hpc.reconstruct.plan import Shard
from phasegan_hpc.reconstruct.worker import Job, ShardRunner

Progress = Callable[[int], None]
#: How often a worker process that died (node lost, OOM kill) is replaced and its shard retried.
MAX_RESTARTS = 3


def run_local(job: Job, pending: list[Shard], progress: Progress) -> list[dict[str, Any]]:
    """All shards in this process, one after another."""
    runner = ShardRunner(job)
    try:
        return [runner.run(s, progress) for s in pending]
    finally:
        runner.close()


class _RayWorker:
    """A Ray actor wrapping one ShardRunner (threaded: ``frames_done`` answers while ``run`` works)."""

    def __init__(self, job: Job) -> None:
        self.runner = ShardRunner(job)

    def run(self, shard: Shard) -> dict[str, Any]:
        return self.runner.run(shard)

    def frames_done(self) -> int:
        return self.runner.frames_done


def default_workers(cpus_per_worker: float, gpus_per_worker: float) -> int:
    """One worker per GPU (or per ``cpus_per_worker`` CPUs without GPUs) of the connected Ray cluster."""
    import ray

    total = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(total.get("GPU", 0) // gpus_per_worker))
    return max(1, int(total.get("CPU", 1) // cpus_per_worker))


def run_ray(job: Job, pending: list[Shard], progress: Progress, *, workers: int | None, cpus_per_worker: float,
            gpus_per_worker: float) -> list[dict[str, Any]]:
    """A pool of Ray actors (``RAY_ADDRESS`` or a local Ray), each opening the archive itself.

    An actor that dies is restarted and its shard retried (up to :data:`MAX_RESTARTS` times); the retry
    rewrites the shard from its start under the temporary name, so the result is identical.
    """
    import ray

    if cpus_per_worker <= 0 or gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise ResourceError("need --workers >= 1, CPUs per worker > 0 and GPUs per worker >= 0")
    started = connect_ray()
    actors: list = []
    try:
        n = min(workers or default_workers(cpus_per_worker, gpus_per_worker), max(1, len(pending)))
        check_resources(n, cpus_per_worker, gpus_per_worker)
        remote = ray.remote(_RayWorker).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS, max_concurrency=2)
        actors = [remote.remote(job) for _ in range(n)]
        todo = list(pending)
        in_flight: dict[Any, tuple[Any, Shard]] = {}  # call -> (actor, the shard it carries)
        for actor in actors:
            if todo:
                shard = todo.pop(0)
                in_flight[actor.run.remote(shard)] = (actor, shard)
        rows: list[dict[str, Any]] = []
        shown = 0
        done_frames = 0
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, shard = in_flight.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise _ray_failure(exc, shard) from None
                rows.append(row)
                done_frames += shard.frames
                if todo:
                    nxt = todo.pop(0)
                    in_flight[actor.run.remote(nxt)] = (actor, nxt)
            now = done_frames + _in_flight_frames(in_flight)
            if now > shown:
                progress(now - shown)
                shown = now
        return rows
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        disconnect_ray(started)


def _in_flight_frames(in_flight: dict) -> int:
    """Frames already done inside the running shards (best effort: a restarting actor counts 0)."""
    import ray

    refs = [actor.frames_done.remote() for actor, _ in in_flight.values()]
    ready, not_ready = ray.wait(refs, num_returns=len(refs), timeout=0.2)
    total = 0
    for ref in ready:
        try:
            total += int(ray.get(ref))
        except ray.exceptions.RayError:
            pass
    for ref in not_ready:
        ray.cancel(ref)
    return total


def _ray_failure(exc: BaseException, shard: Shard) -> PhaseganError:
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, PhaseganError):
        return cause
    text = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
    return DataError(f"shard {shard.index} (frames {shard.start}-{shard.stop - 1}) failed: {text}; "
                     "rerun the same command to resume")


def run_mpi(job: Job, pending: list[Shard], progress: Progress, comm) -> list[dict[str, Any]]:
    """This rank's share of the shards (round robin); rows of all ranks are gathered to rank 0.

    A rank that fails reports its error to rank 0 instead of leaving the others waiting.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = pending[rank::size]
    rows: list[dict[str, Any]] = []
    error: str | None = None
    stop = threading.Event()
    watcher = None
    if rank == 0:  # rank 0 shows everyone's progress from the shard files that appear
        watcher = threading.Thread(target=_watch_files, args=(job, pending, progress, stop), daemon=True)
        watcher.start()
    try:
        runner = ShardRunner(job)
        try:
            for s in mine:
                rows.append(runner.run(s))
        finally:
            runner.close()
    except Exception as exc:  # noqa: BLE001 - reported through rank 0
        error = f"rank {rank}: {exc}" if not isinstance(exc, PhaseganError) else str(exc)
    gathered = comm.gather((rows, error), root=0)
    stop.set()
    if watcher is not None:
        watcher.join()
    if rank != 0:
        return []
    errors = [e for _, e in gathered if e]
    if errors:
        raise DataError(f"{errors[0]}; rerun the same command to resume")
    return [r for part, _ in gathered for r in part]


def _watch_files(job: Job, pending: list[Shard], progress: Progress, stop: threading.Event) -> None:
    from phasegan_hpc.reconstruct.worker import shard_path

    left = list(pending)
    while left:
        final = stop.is_set()
        for s in [s for s in left if shard_path(job, s).is_file()]:
            progress(s.frames)
            left.remove(s)
        if final:
            return
        stop.wait(0.5)
