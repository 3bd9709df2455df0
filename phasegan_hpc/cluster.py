"""Where the Ray cluster comes from, and the checks made before anything is asked of it.

``train``, ``tune`` and ``reconstruct --backend ray`` (and the benchmarks that use Ray) all start the same
way: prove the storage writable, :func:`connect_ray` (``RAY_ADDRESS`` if set, else a quiet local Ray of our
own), :func:`check_resources`, and :func:`disconnect_ray` at the end. :func:`interrupt_on_sigterm` is the
one SIGTERM handler: Slurm's SIGTERM (preemption, ``scancel``, requeue) unwinds like Ctrl-C, so Ray is shut
down and the next run resumes.

Importing this module imports neither Ray nor torch (the CLI imports it at start-up); Ray is imported
inside the functions that need it.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from phasegan_hpc.errors import DataError, ResourceError

#: Set (unless already set) before Ray starts: no usage statistics, no token auth on a local cluster,
#: deduplicated worker logs, and no Tune warning about slow experiment-state syncs on shared storage.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "1",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


def _raise_interrupt(signum: int, frame: object) -> None:
    # Once: Slurm signals every process of a step, so the command gets SIGTERM from Slurm and again from its
    # supervisor (phasegan_hpc.supervise); a second KeyboardInterrupt must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt  # SIGTERM (Slurm preemption, scancel) unwinds like Ctrl-C: nothing half-written


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (a no-op in any other thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)


def check_storage(storage: Path) -> Path:
    """Create the storage directory and prove it writable; returns the absolute path."""
    storage = storage.expanduser().resolve()
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise DataError(f"storage {storage} is not writable ({exc.strerror or exc})") from None
    return storage


def _sees(tokens: dict[str, str], files: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """On a node: (its host name and address, what it reads at each token path ("" for a missing file), the
    ``files`` it cannot read)."""
    import socket

    import ray

    seen = {}
    for path in tokens:
        try:
            seen[path] = Path(path).read_text()
        except OSError:
            seen[path] = ""
    unreadable = []
    for path in files:
        try:
            with open(path, "rb") as f:
                f.read(8)
        except OSError:
            unreadable.append(path)
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})", seen, unreadable


def check_shared(directories: list[Path], files: list[Path] = (), what: str = "directory") -> None:
    """Prove that every alive node of the connected Ray cluster sees each of ``directories`` as this process
    does (a token file written here must be read back, byte for byte, by a task pinned to each node) and can
    read each of ``files`` (input that must not be written to, such as raw data). A cluster of one node on this
    machine is not asked: it sees what this process sees.

    Raises:
        DataError: a node does not see one of them (not on a shared file system there, or another file system
            mounted at that path); the message names the node and the path.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1 and all(n.get("NodeManagerAddress") == ray.util.get_node_ip_address() for n in nodes):
        return
    tokens: dict[str, str] = {}
    try:
        for d in dict.fromkeys(Path(d).resolve() for d in directories):
            token = uuid.uuid4().hex
            path = d / f".visible-{token}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(token)
            tokens[str(path)] = token
        probe = ray.remote(num_cpus=0)(_sees)
        names = [str(Path(f).resolve()) for f in files]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(tokens, names) for n in nodes]
        for where, seen, unreadable in ray.get(refs, timeout=120):
            for path, token in tokens.items():
                if seen.get(path) != token:
                    raise DataError(f"{what} {Path(path).parent} is not the same on node {where} as here: put it on "
                                    "a file system every node of the Ray cluster shares")
            if unreadable:
                raise DataError(f"{unreadable[0]} cannot be read on node {where}: put it on a file system every "
                                "node of the Ray cluster shares")
    finally:
        for path in tokens:
            Path(path).unlink(missing_ok=True)


def connect_ray(num_cpus: int | None = None) -> bool:
    """Connect to ``RAY_ADDRESS`` if set, else start a local Ray quietly. Returns True if we started it."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    # Workers' own output stays in Ray's session logs; the driver shows progress from metrics.jsonl.
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": "warning", "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # address="local": always a fresh Ray of our own; never silently join another cluster on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    # ray.init installs a SIGTERM handler that kills the driver outright; restore the unwinding one so that
    # Slurm's SIGTERM (preemption, scancel, requeue) shuts Ray down cleanly and the run can be resumed.
    interrupt_on_sigterm()
    return not address


def disconnect_ray(started: bool) -> None:
    """Shut Ray down if :func:`connect_ray` started it (a cluster we only connected to keeps running)."""
    if started:
        import ray

        ray.shutdown()


class HeadWatch:
    """Watches the head node of the connected Ray cluster from a daemon thread: a plain TCP connect to its GCS
    every ``period_s`` seconds. Ray itself waits 60 s for a GCS that went away, then ends the process with a
    message of its own; a driver that calls :meth:`check` in its loop ends instead with one clear line
    (:class:`HeadLost`) a few seconds after the head stops answering, and what it saved stays for a rerun.

    :meth:`start` it (or use it as a context manager) after :func:`connect_ray`.
    """

    def __init__(self, period_s: float = 1.0, misses: int = 3) -> None:
        self.period_s, self.misses = period_s, misses
        self.address: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()

    def start(self) -> None:
        import ray

        self.address = ray.get_runtime_context().gcs_address
        threading.Thread(target=self._watch, name="ray-head-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> HeadWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        import socket

        host, _, port = str(self.address).rpartition(":")
        missed = 0
        while not self._stop.wait(self.period_s):
            try:
                with socket.create_connection((host, int(port)), timeout=self.period_s):
                    missed = 0
            except OSError:
                missed += 1
                if missed >= self.misses:
                    self.lost.set()
                    return

    def check(self, what: str) -> None:
        """Raise :class:`HeadLost` (``what`` says what was saved) once the head stopped answering."""
        if self.lost.is_set():
            raise HeadLost(f"lost the Ray head node: its GCS at {self.address} does not answer; {what}; rerun the "
                           "same command on a running Ray cluster to resume")


class HeadLost(ResourceError):
    """The Ray cluster's head node stopped answering (:class:`HeadWatch`)."""


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Fail fast (not hang) when the connected Ray cluster cannot host the workers."""
    import ray

    total = ray.cluster_resources()
    need_cpu, need_gpu = workers * cpus_per_worker, workers * gpus_per_worker
    have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if need_cpu > have_cpu:
        raise ResourceError(f"{workers} worker(s) x {cpus_per_worker:g} CPU need {need_cpu:g} CPUs; "
                            f"the Ray cluster has {have_cpu:g}")
    if need_gpu > have_gpu:
        raise ResourceError(f"{workers} worker(s) x {gpus_per_worker:g} GPU need {need_gpu:g} GPUs; "
                            f"the Ray cluster has {have_gpu:g}")
