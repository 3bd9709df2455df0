"""Live reconstruction of an archive that is still being written (``reconstruct --follow``, DESIGN.md §4).

The detector writes one HDF5 file in SWMR mode (single writer, multiple readers). The follower opens it as
an SWMR reader and, every :data:`POLL_S`, refreshes the frames dataset (``Dataset.refresh()``: ``id.refresh()``
does not update the shape) and the end marker. A shard is handed to the workers as soon as all of its rows
are written, whole chunk rows; the shards are the batch plan's (``plan.make_plan`` of the finished archive:
the same boundaries, the same batches, so the end result is bit for bit a batch run's).

The writer's side of the convention (it cannot create datasets or attributes once in SWMR mode):

- before ``swmr_mode = True``: the flats and darks (if any), the frames dataset with an unlimited first axis
  (``maxshape=(None, H, W)``), and the end marker, a scalar string dataset ``/entry/end_time`` (NeXus) or
  ``/process/acquisition/end_date`` (DXchange) holding "" (:data:`END_MARKERS`);
- then, for each block of frames: ``resize``, write, ``flush()``; whole chunk rows at a time (a chunk row
  counts as written when the shape covers it and its chunks are stored);
- at the end: the end time written into the marker, ``flush()``.

The follow ends when the marker is non-empty, or after ``idle_timeout`` s without new frames (a writer that
died), and then finishes like a batch run, including a short last shard.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from phasegan_hpc.data.archive import Archive, LiveFile, open_live
from phasegan_hpc.reconstruct.plan import Shard, make_plan, rows_per_shard
from phasegan_hpc.reconstruct.source import Task

#: Where a writer marks the end of the acquisition: a scalar dataset, empty ("" or 0) until it ends.
END_MARKERS = ("/entry/end_time", "/process/acquisition/end_date")
#: How often the follower looks at the archive [s].
POLL_S = 0.2
#: The default shard size of a live run [frames]: small, so a frame's phase is visible soon after it is
#: written (about 2 shard durations), large enough to hold a few batches.
LIVE_SHARD_FRAMES = 64


def ended(marker: h5py.Dataset | None) -> bool:
    """Whether the end marker says the acquisition has ended (a non-empty string, or a non-zero number)."""
    if marker is None:
        return False
    marker.refresh()
    value = marker[()]
    if isinstance(value, bytes | str):
        return bool(value.strip())
    return bool(np.isfinite(value) and value != 0)


def end_marker(f: h5py.File) -> h5py.Dataset | None:
    """The archive's end marker (:data:`END_MARKERS`), None where it has none."""
    for name in END_MARKERS:
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset) and obj.shape == ():
            return obj
    return None


def written_rows(ds: h5py.Dataset) -> int:
    """Rows of the frames dataset that are written whole: the shape, less a last chunk row whose chunks are
    not all stored yet (a writer resizes before it writes)."""
    n = int(ds.shape[0])
    c = int(ds.chunks[0]) if ds.chunks else 1
    if not ds.chunks or n == 0:
        return n
    last = (n - 1) // c * c
    if n - last < c:
        return last  # a partly filled last chunk row waits for the rest
    grid = [range(0, s, k) for s, k in zip(ds.shape[1:], ds.chunks[1:], strict=True)]
    for inner in itertools.product(*grid):
        if ds.id.get_chunk_info_by_coord((last, *inner)).byte_offset is None:
            return last
    return n


@dataclass
class Live:
    """What a follow saw: when each frame was first seen, when it was published, and how it ended."""

    seen: list[tuple[int, float]] = field(default_factory=list)  # (frames known, time first seen) in order
    published: dict[int, float] = field(default_factory=dict)  # shard index -> when its frames became visible
    backlog: int = 0  # most frames seen but not yet visible at once
    ended_by: str = ""  # "end marker", "idle timeout"
    republished: int = 0  # times the growing output was published

    def first_seen(self, frame: int) -> float:
        i = bisect.bisect_right([n for n, _ in self.seen], frame)
        return self.seen[i][1] if i < len(self.seen) else float("nan")

    def latencies(self, shards: list[Shard]) -> np.ndarray:
        """Seconds from a frame first seen to its phase visible in the output, for every frame published."""
        out = [self.published[s.index] - self.first_seen(f) for s in shards if s.index in self.published
               for f in range(s.start, s.stop)]
        return np.asarray([x for x in out if np.isfinite(x)], np.float64)


class LiveShards:
    """A :class:`~phasegan_hpc.reconstruct.source.ShardSource` over a growing archive: the batch plan's shards
    of ``job``, each given once all of its rows are written; exhausted once the acquisition has ended (or
    been idle for ``idle_timeout`` s) and every shard was taken.

    Args:
        archive: opened live (``Archive.live``).
        job: the job index of the tasks.
        batch_size, shard_frames: of the plan (``plan.make_plan``).
        done: shard indices finished already (a resumed follow): never given.
        idle_timeout: seconds without new frames after which a writer is taken for dead.
        on_plan: called with the plan each time it changes (the archive grew).
    """

    def __init__(self, archive: Archive, job: int, batch_size: int, shard_frames: int | None, done: set[int],
                 idle_timeout: float, on_plan: Callable[[list[Shard]], None] | None = None) -> None:
        self.archive, self.job, self.batch_size, self.shard_frames = archive, job, batch_size, shard_frames
        self.idle_timeout, self.on_plan = idle_timeout, on_plan
        self.issued = set(done)
        self.live = Live()
        self._todo: list[Task] = []
        self._back: list[Task] = []
        self._lock = threading.Condition()
        self._file: LiveFile | None = open_live(archive.path)  # shared with this process's readers (LiveFile)
        self._ds = self._file.dataset(archive.dataset)
        self._marker = end_marker(self._file.file)
        self.rows = 0  # rows of the first axis written whole
        self.declared = 0  # rows the frames dataset's shape holds
        self._last_growth = time.monotonic()
        self._last_poll = -1e9
        self.plan: list[Shard] = []
        self._rows_per_shard = rows_per_shard(archive, batch_size, shard_frames)
        with self._lock:
            self._poll()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.release()
                self._file = None

    @property
    def finished(self) -> bool:
        return bool(self.live.ended_by)

    def _poll(self) -> None:
        """Look at the archive (at most every :data:`POLL_S`) and queue the shards now complete (holding the
        lock)."""
        now = time.monotonic()
        if self.finished or now - self._last_poll < POLL_S:
            return
        self._last_poll = now
        is_over = ended(self._marker)  # read before the rows: rows written before the marker are all counted
        self._ds.refresh()
        self.declared = int(self._ds.shape[0])
        rows = self.declared if is_over else written_rows(self._ds)
        if rows > self.rows:
            self.live.seen.append((rows * self.archive.frames_per_row, time.time()))
            self.rows, self._last_growth = rows, now
        elif not is_over and now - self._last_growth > self.idle_timeout:
            is_over, self.live.ended_by = True, "idle timeout"
        if is_over and not self.live.ended_by:
            self.live.ended_by = "end marker"
        grown = replace(self.archive, shape=(self.rows, *self.archive.shape[1:]),
                        lead_shape=(self.rows, *self.archive.lead_shape[1:]))
        plan = make_plan(grown, self.batch_size, self.shard_frames) if self.rows else []
        # a shard is given when all its rows are written: it has the plan's full size, or the acquisition ended
        ready = [s for s in plan if s.index not in self.issued
                 and (is_over or s.row_stop - s.row_start == self._rows_per_shard)]
        if plan != self.plan:
            self.plan = plan
            if self.on_plan is not None:
                self.on_plan(plan)
        for s in ready:
            self.issued.add(s.index)
            self._todo.append(Task(self.job, s))
        if ready or self.finished:
            self._lock.notify_all()

    def take(self, timeout: float = 0.0) -> Task | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if self._back:
                    return self._back.pop()
                self._poll()
                if self._todo:
                    return self._todo.pop(0)
                left = deadline - time.monotonic()
                if left <= 0 or self.finished:
                    return None
                self._lock.wait(min(left, POLL_S))

    def give_back(self, task: Task) -> None:
        with self._lock:
            self._back.append(task)
            self._lock.notify_all()

    def exhausted(self) -> bool:
        with self._lock:
            self._poll()
            return self.finished and not self._todo and not self._back

    def pending(self) -> int | None:
        return None


def finished_shards(shards_dir: Path, plan: list[Shard]) -> list[Shard]:
    """The shards of ``plan`` whose file is in place (written whole and renamed: never a partial one)."""
    return [s for s in plan if (shards_dir / s.name).is_file()]


class Publisher:
    """The driver's thread that republishes a follow's output whenever more shards have finished, and keeps
    :class:`Live`'s record of when each shard became visible and of the backlog.

    Args:
        source: the follow's shards.
        shards_dir: where the workers put finished shards.
        publish: ``publish(finished shards, rows the archive holds)``: the output over them, complete = false.
        reused: shard indices finished before this follow began (not counted in the latencies).
    """

    def __init__(self, source: LiveShards, shards_dir: Path, publish: Callable[[list[Shard], int], None],
                 reused: set[int]) -> None:
        self.source, self.shards_dir, self.publish, self.reused = source, shards_dir, publish, reused
        self._stop = threading.Event()
        self._shown: set[int] = set()
        self._thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a failed republish leaves the previous one; the run goes on
                self.error = exc

    def step(self) -> None:
        """Republish if more shards have finished; record when they became visible and the backlog."""
        plan, rows = self.source.plan, self.source.rows
        done = finished_shards(self.shards_dir, plan)
        new = [s for s in done if s.index not in self._shown]
        live = self.source.live
        visible = sum(s.frames for s in done)
        live.backlog = max(live.backlog, rows * self.source.archive.frames_per_row - visible)
        if not new:
            return
        self.publish(done, rows)
        t = time.time()
        for s in new:
            self._shown.add(s.index)
            if s.index not in self.reused:
                live.published[s.index] = t
        live.republished += 1
