"""One worker's work: stream shards of the archive through the retriever into shard files.

Every backend (Ray actors, MPI ranks, one local process) runs a :class:`ShardRunner`. For each shard it
reads chunk-aligned blocks of frames in a background thread (prefetching the next batch while the current
one computes), sanitises non-finite pixels, retrieves phase and attenuation in batches, and writes the
shard under a temporary name that is renamed only when the shard is complete. Memory is a few batches,
whatever the archive's size. Only a small summary row is returned. Nothing here imports Ray.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phasegan_hpc.data.archive import Archive, FrameReader
from phasegan_hpc.data.checksum import Checksum, ContentHash
from phasegan_hpc.data.chunks import ChunkWriter, direct_writable
from phasegan_hpc.data.h5io import atomic_h5, compression, frame_chunks
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.reconstruct.methods import Method, build_retriever
from phasegan_hpc.reconstruct.plan import Shard
from phasegan_hpc.reconstruct.prepare import (
    correct_on_device,
    count_negative,
    count_negative_tensor,
    fill_index,
    inpaint,
    inpaint_tensor,
    remove_zingers,
    remove_zingers_tensor,
    sanitise,
    sanitise_tensor,
)
from phasegan_hpc.reconstruct.source import Task

#: Per-frame scalar datasets of every shard (besides the method's frames: see ``Method.layout``).
SCALAR_DATASETS = {
    "consistency": ("1", "physics-consistency score per frame (see attribute score)"),
    "fresnel_residual": ("1", "Fresnel residual per frame: |H psi|^2 times a fitted smooth illumination vs "
                              "the frame, no network (see attribute score)"),
    "nonfinite_pixels": ("1", "non-finite input pixels per frame (replaced by the frame's median)"),
    "negative_pixels": ("1", "input pixels below zero per frame, after the flat-field correction (kept as they are)"),
    "zinger_pixels": ("1", "pixels replaced by their 3 x 3 median as zingers per frame (--zinger-threshold; 0: off)"),
    "scored": ("1", "1 where the frame's scores were computed, 0 where they were not (--score; their scores are NaN)"),
}
#: Per-frame integers among SCALAR_DATASETS (int64; the rest are float32 scores).
COUNT_DATASETS = ("nonfinite_pixels", "negative_pixels", "zinger_pixels", "scored")


@dataclass(frozen=True)
class Job:
    """Everything a worker needs, small and picklable (it travels to Ray actors and MPI ranks)."""

    archive: Archive
    shards_dir: str
    method: Method
    model_path: str | None
    geometry: Geometry
    delta_beta: float | None
    batch_size: int
    device: str = "cpu"
    threads: int = 1
    lead_tail: tuple[int, ...] = field(default=())  # leading axes after the first (e.g. pulses)
    compile: bool = False  # torch.compile G_O and G_D (the CUDA default; see bench inference)
    plan_id: str = ""  # sha256 of the plan's manifest: every shard records it (``output.verify_shard``)
    reader: str = "chunks"  # ``data.archive.READERS``; ``threads`` chunk rows decoded at once
    chunk_frames: int | None = None  # frames per chunk of the frame datasets (None: ``h5io.frame_chunks``)
    score_every: int = 1  # score the frames whose index is a multiple of this (1: all; 0: none; ``--score``)
    correct_on: str = "auto"  # flat/dark correction and sanitising on the "host" or the "device" (``prepare``)
    output_dtype: str = "float32"  # of the method's frame datasets (``--output-dtype``; scores stay float32)
    zinger_threshold: float = 0.0  # replace pixels this far above their 3 x 3 median (0: off; ``prepare``)
    mask: np.ndarray | None = field(default=None, compare=False)  # (H, W) bool, True: inpainted (``--mask``)


def frame_bytes(layout: Any, output_dtype: str) -> int:
    """Uncompressed bytes a shard stores per frame: the method's frames in ``output_dtype`` and the per-frame
    values (an upper bound of what compression leaves)."""
    return (np.dtype(output_dtype).itemsize * len(layout.outputs) * int(np.prod(layout.shape))
            + 8 * len(SCALAR_DATASETS))


def shard_path(job: Job, shard: Shard) -> Path:
    return Path(job.shards_dir) / shard.name


def _batches(reader: FrameReader, shard: Shard, batch: int, sink: Callable[[bytes], object] | None = None,
             corrected: bool = True) -> Iterator[np.ndarray]:
    """Frames of ``shard`` in batches of ``batch`` (the last one smaller): the same on every backend; corrected
    or raw (``FrameReader.blocks``). ``sink`` receives the archive's stored bytes read
    (``FrameReader.input_checksum``)."""
    buf: list[np.ndarray] = []
    held = 0
    for block in reader.blocks(shard.start, shard.stop, batch, sink, corrected):
        buf.append(block)
        held += len(block)
        while held >= batch:
            joined = np.concatenate(buf) if len(buf) > 1 else buf[0]
            yield joined[:batch]
            rest = joined[batch:]
            buf, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield np.concatenate(buf) if len(buf) > 1 else buf[0]


def _prefetch(it: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """Run ``it`` in a background thread, ``depth`` items ahead (reading overlaps computing)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class FlatWriter:
    """Writes per-frame results at flat frame offsets into datasets shaped (rows, *lead_tail[, H, W]), a run of
    whole rows per call (partial rows of trains x pulses: a slice of the last axis where there is one), and
    feeds what it writes to a :class:`ContentHash`. Frame stacks without a lead tail go through a
    :class:`~phasegan_hpc.data.chunks.ChunkWriter` (compressed in ``pool``, stored as whole chunks), which
    needs frames in order; per-frame values are kept in memory and written once. A context manager: leaving it
    waits for every chunk and writes the per-frame values (after a failure it only waits)."""

    def __init__(self, datasets: dict[str, Any], lead_tail: tuple[int, ...],
                 pool: ThreadPoolExecutor | None = None) -> None:
        self.datasets = datasets
        self.lead_tail = lead_tail
        self.per_row = int(np.prod(lead_tail))
        self.hash = ContentHash()
        frame_axes = 1 + len(lead_tail)
        self._direct = {k: ChunkWriter(ds, pool) for k, ds in datasets.items()
                        if not lead_tail and ds.ndim > frame_axes and direct_writable(ds)}
        # Per-frame values (scores, counts): a few bytes a frame, kept here and written once at the end.
        self._scalars = {k: np.zeros(int(np.prod(ds.shape)), ds.dtype) for k, ds in datasets.items()
                         if ds.ndim == frame_axes}
        self._written = 0

    def __enter__(self) -> FlatWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        for w in self._direct.values():
            if kind is None:
                w.close()
            else:
                w.wait(raise_errors=False)
        if kind is None:
            for k, values in self._scalars.items():
                self.datasets[k][...] = values.reshape(self.datasets[k].shape)

    def write(self, offset: int, arrays: dict[str, np.ndarray]) -> None:
        arrays = {k: np.asarray(a, dtype=self.datasets[k].dtype) for k, a in arrays.items()}
        for k, a in arrays.items():  # frames arrive in flat order, which is the datasets' C order
            self.hash.update(k, a)
        n = len(next(iter(arrays.values())))
        if self._direct and offset != self._written:
            raise ValueError(f"frames must come in order: {offset} written after {self._written}")
        self._written = offset + n
        for k in self._direct:
            self._direct[k].write(arrays[k])
        for k in self._scalars:
            self._scalars[k][offset:offset + n] = arrays[k]
        arrays = {k: a for k, a in arrays.items() if k not in self._direct and k not in self._scalars}
        per_row, done = self.per_row, 0
        while done < n and arrays:
            row, inner = divmod(offset + done, per_row)
            take = min(n - done, per_row - inner) if inner else (n - done) // per_row * per_row or n - done
            for k, a in arrays.items():
                self._put(self.datasets[k], row, inner, a[done:done + take])
            done += take

    def _put(self, ds: Any, row: int, inner: int, a: np.ndarray) -> None:
        """Frames ``a`` (flat) from flat position ``inner`` of ``row``: whole rows, or part of one row."""
        tail, per_row = self.lead_tail, self.per_row
        if inner == 0 and len(a) % per_row == 0:
            ds[row:row + len(a) // per_row] = a.reshape(len(a) // per_row, *tail, *a.shape[1:])
        elif len(tail) == 1:  # part of one train: a slice of pulses
            ds[row, inner:inner + len(a)] = a
        else:
            for j in range(len(a)):  # deeper layouts: frame by frame within the partial row
                ds[(row, *np.unravel_index(inner + j, tail))] = a[j]


class ShardRunner:
    """A worker: holds the archive reader and the retriever, and processes shards one after another."""

    def __init__(self, job: Job) -> None:
        t0 = time.perf_counter()
        torch.set_num_threads(max(1, job.threads))
        self.job = job
        self.device = torch.device(job.device)
        self.reader = FrameReader(job.archive, threads=max(1, job.threads), reader=job.reader)
        self.retriever = build_retriever(job.method, job.model_path, job.geometry, job.archive.frame_shape,
                                         self.device, job.compile, job.delta_beta)
        self.frames_done = 0  # frames of the current shard, for progress polling
        self._pinned: dict[int, torch.Tensor] = {}
        # Raw frames copied to the device and corrected there (CUDA by default), or corrected on the host.
        self.on_device = correct_on_device(job.correct_on, self.device)
        self._fill = fill_index(job.mask) if job.mask is not None and job.mask.any() else None
        self._fill_t = torch.from_numpy(self._fill).to(self.device) if self._fill is not None else None
        self._out_dtype = getattr(torch, job.output_dtype)
        # Output chunks are compressed and stored here while the next batch computes.
        self._pool = ThreadPoolExecutor(max(1, job.threads), thread_name_prefix="write")
        self._compiled = job.compile and self.retriever.model is not None  # the networks run compiled
        if self._compiled:  # compile now, for the one batch shape every call will have (see _padded)
            self.retriever(torch.ones(job.batch_size, *job.archive.frame_shape, device=self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        #: worker start-up (archive handles, model, compilation): reported once, with the first shard
        self.setup_seconds: float | None = time.perf_counter() - t0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.reader.close()

    def run(self, shard: Shard, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Process ``shard`` (whatever stands at its file is replaced when the new one is complete); returns its
        summary row."""
        path = shard_path(self.job, shard)
        row: dict[str, Any] = {"shard": shard.index, "frames": shard.frames,
                               "worker": f"{os.uname().nodename}:{os.getpid()}"}
        row["setup_seconds"], self.setup_seconds = self.setup_seconds or 0.0, None
        t0 = time.perf_counter()
        self.frames_done = 0
        nonfinite: list[int] = []  # per batch, its frames with non-finite pixels (the row carries their sum)
        layout = self.retriever.layout
        rows = shard.row_stop - shard.row_start
        tail = self.job.lead_tail
        reserve = shard.frames * frame_bytes(layout, self.job.output_dtype)
        with atomic_h5(path, reserve=reserve) as f:  # a full disk fails here, cleanly
            ds = {}
            for name, (units, desc) in {**layout.outputs, **SCALAR_DATASETS}.items():
                spatial = layout.shape if name in layout.outputs else ()
                dtype = "int64" if name in COUNT_DATASETS else self.job.output_dtype if spatial else "float32"
                ds[name] = f.create_dataset(name, shape=(rows, *tail, *spatial), dtype=dtype,
                                            chunks=(frame_chunks(rows, tail, spatial, np.dtype(dtype).itemsize,
                                                                 self.job.chunk_frames) if spatial else None),
                                            **(compression() if spatial else {}))
                ds[name].attrs["units"], ds[name].attrs["description"] = units, desc
            f.attrs["shard"], f.attrs["start"], f.attrs["stop"] = shard.index, shard.start, shard.stop
            with FlatWriter(ds, tail, self._pool) as writer:  # leaving it waits for every chunk
                inputs = Checksum()  # what was read: the archive's chunks as stored (verified on resume)
                offset, first = 0, shard.start  # frames written, output index of the next batch's first frame
                pending = None  # the previous batch, its results on their way back while this one computes
                batches = _batches(self.reader, shard, self.job.batch_size, inputs.update, not self.on_device)
                for i, batch in enumerate(_prefetch(batches)):
                    clean, counts = self._prepared(batch, i % 2)
                    scored = self._scored(first, len(clean))
                    first += len(clean)
                    mask = None if self.job.score_every == 1 else torch.from_numpy(self._padded_mask(scored))
                    frames, scores = self.retriever(self._padded(clean), mask)
                    n = len(clean)  # views without the padding's results
                    frames = {k: v[:n].to(self._out_dtype) for k, v in frames.items()}  # cast on the device
                    launched = (self._to_host({**frames, **{k: v[:n] for k, v in scores.items()}, **counts}), scored)
                    if pending is not None:
                        offset = self._write(writer, shard, offset, *pending, nonfinite, progress)
                    pending = launched
                if pending is not None:
                    offset = self._write(writer, shard, offset, *pending, nonfinite, progress)
            # Written last: the shard's identity in its plan, what it read, and its content checksum
            # (output.verify_shard).
            f.attrs.update({"plan_sha256": self.job.plan_id, "frames": offset, "input_checksum": inputs.hexdigest(),
                            "checksum": writer.hash.hexdigest()})
        row.update(seconds=time.perf_counter() - t0, nonfinite_frames=sum(nonfinite),
                   checksum=writer.hash.hexdigest())
        return row

    def _scored(self, first: int, n: int) -> np.ndarray:
        """Which of frames [first, first + n) (output indices) are scored: bool (n,)."""
        every = self.job.score_every
        return (np.arange(first, first + n) % every == 0) if every else np.zeros(n, bool)

    def _padded_mask(self, scored: np.ndarray) -> np.ndarray:
        """``scored`` for the batch :meth:`_padded` makes (the padding is not scored)."""
        missing = self.job.batch_size - len(scored)
        return np.concatenate([scored, np.zeros(missing, bool)]) if self._compiled and missing > 0 else scored

    def _prepared(self, batch: np.ndarray, slot: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A batch read (corrected on the host, or raw for the device) -> (clean frames on the device, their
        per-frame counts: nonfinite_pixels, negative_pixels, zinger_pixels) (``prepare``: the mask inpainted
        first, then counted, sanitised, zingers removed)."""
        zinger = self.job.zinger_threshold
        if self.on_device:
            x = self.reader.correct(self._to_device(batch, slot))
            x = inpaint_tensor(x, self._fill_t) if self._fill_t is not None else x  # masked: neither counted
            negative = count_negative_tensor(x)
            clean, nonfinite = sanitise_tensor(x)
            clean, zingers = (remove_zingers_tensor(clean, zinger) if zinger > 0
                              else (clean, torch.zeros_like(nonfinite)))
            return clean, {"nonfinite_pixels": nonfinite, "negative_pixels": negative, "zinger_pixels": zingers}
        batch = inpaint(batch, self._fill) if self._fill is not None else batch  # masked: neither counted
        negative = count_negative(batch)
        clean, nonfinite = sanitise(batch)
        clean, zingers = remove_zingers(clean, zinger) if zinger > 0 else (clean, np.zeros_like(nonfinite))
        return self._to_device(clean, slot), {"nonfinite_pixels": torch.from_numpy(nonfinite),
                                              "negative_pixels": torch.from_numpy(negative),
                                              "zinger_pixels": torch.from_numpy(zingers)}

    def _padded(self, clean: torch.Tensor) -> torch.Tensor:
        """A short last batch padded with flat frames (1.0) to the batch size when the networks are compiled,
        so that every call has the shape compiled at start-up (no recompilation per shard); the padding's
        results are dropped. Every frame is retrieved independently, so the real frames' results are the same."""
        missing = self.job.batch_size - len(clean)
        if not self._compiled or missing <= 0:
            return clean
        return torch.cat([clean, clean.new_ones((missing, *clean.shape[1:]))])

    def _to_device(self, batch: np.ndarray, slot: int) -> torch.Tensor:
        """The batch (any dtype) on the device. On CUDA through one of two reused pinned host buffers (a buffer
        is refilled only after the batch that used it has come back) and a non-blocking copy."""
        x = torch.from_numpy(batch)
        if self.device.type != "cuda":
            return x
        buf = self._pinned.get(slot)
        if buf is None or buf.shape[0] < len(x) or buf.shape[1:] != x.shape[1:] or buf.dtype != x.dtype:
            buf = self._pinned[slot] = torch.empty(x.shape, dtype=x.dtype).pin_memory()
        staged = buf[: len(x)]
        staged.copy_(x)
        return staged.to(self.device, non_blocking=True)

    def _to_host(self, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """Start copying results back (non-blocking into pinned memory on CUDA); returns them and an event
        that marks their arrival (None on the CPU, where they are there already)."""
        if self.device.type != "cuda":
            return tensors, None
        host = {k: v.to("cpu", non_blocking=True) for k, v in tensors.items()}
        event = torch.cuda.Event()
        event.record()
        return host, event

    def _write(self, writer: FlatWriter, shard: Shard, offset: int, results: tuple[dict[str, torch.Tensor], Any],
               scored: np.ndarray, nonfinite: list[int], progress: Callable[[int], None] | None) -> int:
        """Wait for a batch's results (the only synchronisation per batch), write them; returns the new offset."""
        tensors, event = results
        if event is not None:
            event.synchronize()
        arrays = {k: v.numpy() for k, v in tensors.items()}
        counts = arrays["nonfinite_pixels"]
        empty = counts == int(np.prod(self.job.archive.frame_shape))  # no finite pixel: no result
        if empty.any():  # its frames and scores are NaN (the counts stay)
            for k in [k for k in arrays if k not in COUNT_DATASETS]:
                arrays[k] = arrays[k].copy()
                arrays[k][empty] = np.nan
        writer.write(offset, arrays | {"scored": scored.astype(np.int64)})
        nonfinite.append(int(np.count_nonzero(counts)))  # a count, not the frames: rows go to the driver
        offset += len(counts)
        self.frames_done = offset
        if progress is not None:
            progress(len(counts))
        return offset


class TaskRunner:
    """Runs the tasks of several jobs (``reconstruct A.h5 B.h5``: one job per archive) in one worker: one
    :class:`ShardRunner` open at a time, replaced (the old one closed) when a task of another job comes. Tasks
    come job by job, so a worker changes jobs about once per archive."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = list(jobs)
        self._job: int | None = None
        self._runner: ShardRunner | None = None

    @property
    def frames_done(self) -> int:
        """Frames of the current shard, for progress polling (0 before the first)."""
        return self._runner.frames_done if self._runner is not None else 0

    def run(self, task: Task, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run ``task``'s shard with its job's runner; its summary row, with the job's index as ``job``."""
        if task.job != self._job:
            self.close()
            self._runner = ShardRunner(self.jobs[task.job])
            self._job = task.job
        assert self._runner is not None
        return {**self._runner.run(task.shard, progress), "job": task.job}

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner, self._job = None, None

