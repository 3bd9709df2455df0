"""The Ray backend: a pool of Ray actors (``RAY_ADDRESS`` or a local Ray), each opening the archive itself.

A free actor takes the next shard from the source. An actor that dies (its process killed, its node lost)
is replaced by a new one, up to :data:`MAX_REPLACEMENTS` times per run, and its shard is given back to the
source, so that the next free actor rewrites it from its start under the temporary name: the result is
identical to an uninterrupted run. Each loss is one line on stderr (which host, which shard is redone) and a
line of ``RayBackend.lost``. An actor is given work only once it has started (it answered :meth:`_RayWorker.host`):
a replacement for a lost node's actor may find no room on the nodes left and wait for one to return, while
the actors still alive go on with the run.

Why not ``ray.util.ActorPool``: it does not say which shard a failed call carried (the error must name it),
it hides which actors are busy (progress polls them for frames inside running shards), and it cannot take
out a dead actor and push in its replacement while calls are pending. The loop here is those three things.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ray
import torch

from phasegan_hpc.cluster import HeadWatch, check_resources, check_shared, connect_ray, disconnect_ray
from phasegan_hpc.errors import DataError, PhaseganError, ResourceError
from phasegan_hpc.reconstruct.backends import Advance, check_device
from phasegan_hpc.reconstruct.plan import Shard
from phasegan_hpc.reconstruct.source import ShardSource, Task
from phasegan_hpc.reconstruct.worker import Job, TaskRunner
from phasegan_hpc.ui import notice

T = TypeVar("T")
#: How many lost actors (killed process, lost node, OOM kill) a run replaces before it gives up.
MAX_REPLACEMENTS = 3
#: How long the driver waits for a result (or a growing source's next shard) before polling progress [s].
POLL_S = 0.5


class _RayWorker:
    """A Ray actor wrapping one TaskRunner (threaded: ``frames_done`` answers while ``run`` works)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.runner = TaskRunner(jobs)

    def run(self, task: Task) -> dict[str, Any]:
        return self.runner.run(task)

    def frames_done(self) -> int:
        return self.runner.frames_done

    def host(self) -> str:
        """Where this actor runs (its node's host name and address)."""
        return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


#: Ray actors sharing one GPU by default (``--gpus-per-worker`` 1/2; ``slurm/reconstruct.sh`` likewise, with
#: CUDA MPS): with the correction on the device, the parallel reader and the pooled writer, one process's host
#: side measured ~3x the earlier pipeline on a CPU (docs/benchmarks.md), where the earlier one fed a GPU at
#: ~2,400 frames/s from one process and needed 8 for ~13,000. Not yet measured on a GPU (issue 15's GPU step).
DEFAULT_WORKERS_PER_GPU = 2


def cluster_gpus() -> float:
    """GPUs of the Ray cluster the backend will run on: a running or ``RAY_ADDRESS`` cluster's (connected to, the
    connection kept for the run), else this machine's (the local Ray the run starts sees them)."""
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        connect_ray()  # a cluster we only connect to: returns False, nothing to shut down later
        return float(ray.cluster_resources().get("GPU", 0))
    return float(torch.cuda.device_count())


class RayBackend:
    """``workers`` actors (None: one per GPU share, or per ``cpus_per_worker`` CPUs, of the cluster) with
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs each (> 0: CUDA; None: 1 /
    :data:`DEFAULT_WORKERS_PER_GPU` where the cluster has GPUs, else 0)."""

    name = "ray"

    def __init__(self, workers: int | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float | None = None,
                 max_replacements: int = MAX_REPLACEMENTS) -> None:
        self.workers, self.cpus_per_worker, self._gpus_per_worker = workers, cpus_per_worker, gpus_per_worker
        self.max_replacements = max_replacements
        self.replaced = 0  # actors replaced in the last run
        self.lost: list[str] = []  # one line per actor lost in the last run: where, and which shard is redone

    def is_driver(self) -> bool:
        return True

    @property
    def gpus_per_worker(self) -> float:
        """As given, else resolved once from :func:`cluster_gpus`."""
        if self._gpus_per_worker is None:
            self._gpus_per_worker = 1.0 / DEFAULT_WORKERS_PER_GPU if cluster_gpus() > 0 else 0.0
        return self._gpus_per_worker

    def prepare(self, setup: Callable[[], T]) -> T:
        return setup()

    def device(self, requested: str | None) -> str:
        """``requested`` as given (the actors' machines are checked by Ray's GPU accounting), else CUDA exactly
        when the actors have GPUs."""
        if requested:
            return check_device(requested)
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def run(self, jobs: list[Job], source: ShardSource, progress: Advance) -> list[dict[str, Any]]:
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0 or (self.workers is not None and self.workers < 1):
            raise ResourceError("need --workers >= 1, CPUs per worker > 0 and GPUs per worker >= 0")
        started = connect_ray()
        remote = ray.remote(_RayWorker).options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                                max_restarts=0, max_concurrency=2)
        actors: list = []
        self.replaced, self.lost = 0, []
        head = HeadWatch()
        try:
            n = self.workers or default_workers(self.cpus_per_worker, self.gpus_per_worker)
            if (known := source.pending()) is not None:
                n = min(n, max(1, known))  # no idle actors holding resources
            check_resources(n, self.cpus_per_worker, self.gpus_per_worker)
            # every node must write its shards where the driver assembles them and read the archive we read
            check_shared([Path(j.shards_dir) for j in jobs], [f for j in jobs for f in _archive_files(j)],
                         "the output's shard directory")
            head.start()
            starting: dict[Any, Any] = {}  # host() call -> actor: given work once it answers
            hosts: dict[Any, str] = {}  # actor -> where it runs

            def start_actor() -> None:
                actor = remote.remote(jobs)
                actors.append(actor)
                starting[actor.host.remote()] = actor

            for _ in range(n):
                start_actor()
            idle: list = []
            in_flight: dict[Any, tuple[Any, Task]] = {}  # call -> (actor, the task it carries)
            rows: list[dict[str, Any]] = []
            shown = done_frames = 0
            while in_flight or not source.exhausted():
                head.check(f"the {len(rows)} shard(s) finished in this run are saved")
                if starting:  # actors that have started join the idle ones
                    up, _ = ray.wait(list(starting), num_returns=len(starting),
                                     timeout=0 if (idle or in_flight) else POLL_S)
                    for ref in up:
                        actor = starting.pop(ref)
                        try:
                            hosts[actor] = ray.get(ref)
                        except ray.exceptions.RayError as exc:  # it died while starting: the model, a lost node
                            if getattr(exc, "actor_init_failed", False) or self.replaced >= self.max_replacements:
                                raise _ray_failure(exc, None) from None
                            actors.remove(actor)
                            self._lose(None, "a host not yet known", exc)
                            start_actor()
                            continue
                        idle.append(actor)
                wait_s = 0.0 if in_flight else POLL_S  # nothing running: wait on the source instead
                while idle and (task := source.take(wait_s)) is not None:
                    actor = idle.pop()
                    in_flight[actor.run.remote(task)] = (actor, task)
                    wait_s = 0.0
                if not in_flight:
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    actor, task = in_flight.pop(ref)
                    try:
                        rows.append(ray.get(ref))
                    except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError) as exc:
                        if getattr(exc, "actor_init_failed", False) or self.replaced >= self.max_replacements:
                            raise _ray_failure(exc, task.shard) from None
                        ray.kill(actor, no_restart=True)  # unreachable is as good as dead: never two writers
                        source.give_back(task)  # its partial file is rewritten from the start
                        actors.remove(actor)
                        self._lose(task.shard, hosts.get(actor, "an unknown host"), exc)
                        start_actor()
                        continue
                    except ray.exceptions.RayError as exc:
                        raise _ray_failure(exc, task.shard) from None
                    done_frames += task.shard.frames
                    idle.append(actor)
                now = done_frames + _in_flight_frames(in_flight)
                if now > shown:
                    progress(now - shown)
                    shown = now
            return rows
        finally:
            head.stop()
            if not head.lost.is_set():  # without a head, ray.kill would wait for it; the actors die with it
                for actor in actors:
                    ray.kill(actor, no_restart=True)
                disconnect_ray(started)

    def _lose(self, shard: Shard | None, where: str, exc: BaseException) -> None:
        """Count a lost actor and say so (one line on stderr, kept in :attr:`lost`)."""
        self.replaced += 1
        why = "its node died" if "node" in str(exc).lower() and "died" in str(exc).lower() else "its process died"
        what = (f"shard {shard.index} (frames {shard.start}-{shard.stop - 1}) is redone by another worker"
                if shard is not None else "it had no shard yet")
        line = f"lost a worker on {where} ({why}): {what}; a replacement is started ({self.replaced} of at most " \
               f"{self.max_replacements})"
        self.lost.append(line)
        notice(line)


def _archive_files(job: Job) -> list[Path]:
    """The files of a job's archive (a sequence has several)."""
    return [Path(f) for f, _ in job.archive.parts] if job.archive.parts else [Path(job.archive.path)]


def default_workers(cpus_per_worker: float, gpus_per_worker: float) -> int:
    """One worker per GPU (or per ``cpus_per_worker`` CPUs without GPUs) of the connected Ray cluster."""
    total = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(total.get("GPU", 0) // gpus_per_worker))
    return max(1, int(total.get("CPU", 1) // cpus_per_worker))


def _in_flight_frames(in_flight: dict) -> int:
    """Frames already done inside the running shards (best effort: a dying actor counts 0)."""
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


def _ray_failure(exc: BaseException, shard: Shard | None) -> PhaseganError:
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, PhaseganError):
        return cause
    text = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[-1]
    what = f"shard {shard.index} (frames {shard.start}-{shard.stop - 1})" if shard is not None else "a worker"
    return DataError(f"{what} failed: {text}; rerun the same command to resume")
