"""Reconstruction throughput and memory: end to end per backend vs the model alone, on the same work.

A compressed uint16 archive (bitshuffle-LZ4, DXchange with flats and darks) is generated; a G_O (+ G_D with
``detector``) of ``filters`` base filters is saved as ``model.pt``. Then, in turns over ``repeats`` rounds:

- model-only: the retriever (G_O, H, G_D and the score) on batches already in memory, same device, torch
  threads and batch size: the upper bound;
- end to end: ``reconstruct`` of the whole archive with the local backend (one process) and the Ray and MPI
  backends with ``workers`` actors / ranks sharing the device (one rank runs in-process on COMM_SELF,
  more under ``mpiexec -n``): reading, decompression, flat/dark correction, compute, compression, writing.

Two ratios against model-only: over the whole run, and after the workers' start-up (process, model load,
compilation; the rate a long archive approaches). 1.0: I/O fully hidden. Peak RSS is measured for the
local backend in a fresh process (``os.wait4``) on the archive and on one 4x larger: bounded memory means
the two peaks are close.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.cluster import connect_ray, disconnect_ray
from phasegan_hpc.config import ModelConfig
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.errors import DataError, ResourceError
from phasegan_hpc.models.artifact import PhaseModel
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.reconstruct import BACKENDS, PhaseGAN, ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.backends import backend_named
from phasegan_hpc.reconstruct.methods import build_retriever

#: The geometry of the bench archives and models (the paper's: 1 A, 1 um, 10 cm).
BENCH_GEOMETRY = Geometry(wavelength_m=1e-10, pixel_size_m=1e-6, distance_m=0.1)


def make_archive(path: Path, frames: int, size: int, seed: int = 0, chunk: int = 64) -> Path:
    """Raw uint16 counts (~1000 per pixel, Poisson) of a few moving discs, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    comp = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("exchange/data", shape=(frames, size, size), dtype="uint16",
                              chunks=(min(chunk, frames), size, size), **comp)
        for start in range(0, frames, chunk):
            n = min(chunk, frames - start)
            cx = (start + np.arange(n))[:, None, None] % size
            disc = ((x[None] - cx) ** 2 + (y[None] - size / 2) ** 2) < (size / 6) ** 2
            ds[start:start + n] = rng.poisson(1000.0 * (1.0 - 0.2 * disc)).astype(np.uint16)
        f.create_dataset("exchange/data_white", data=rng.poisson(1000.0, (8, size, size)).astype(np.uint16), **comp)
        f.create_dataset("exchange/data_dark", data=np.zeros((4, size, size), np.uint16), **comp)
        f.attrs.update(BENCH_GEOMETRY.to_attrs())
    return path


def make_model(path: Path, filters: int, detector: bool = True) -> Path:
    """A PhaseGAN ``model.pt`` (G_O and, with ``detector``, G_D; He-initialised) at the bench geometry."""
    torch.manual_seed(0)
    model = ModelConfig(base_filters=filters, init="kaiming")
    norm = Normalisation(1.0, 0.05, (0.98, -0.2), (0.1, 0.1), model.output)
    return PhaseModel.untrained(model, norm, BENCH_GEOMETRY, detector).save(path)


def _model_only(model: Path, size: int, batch: int, frames: int, device: str, threads: int, compile: bool) -> float:
    """Frames/s of the retriever on in-memory batches (the same work per frame as end to end)."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    retriever = build_retriever(PhaseGAN(), str(model), BENCH_GEOMETRY, (size, size), dev, compile=compile)
    x = (1.0 + 0.01 * torch.randn(batch, size, size)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up: compilation, autotuning, the allocator
        retriever(x)
    sync()
    n = max(1, frames // batch)
    t0 = time.perf_counter()
    for _ in range(n):
        retriever(x)
    sync()
    return n * batch / (time.perf_counter() - t0)


def _console_script() -> str:
    return shutil.which("phasegan-hpc", path=str(Path(sys.executable).parent)) or "phasegan-hpc"


def _end_to_end(archive: Path, model: Path, out: Path, backend: str, batch: int, device: str, threads: int,
                shard_frames: int, compile: bool, workers: int, score: str = "all") -> tuple[float, float]:
    """(frames/s over the whole run, frames/s after worker start-up) of one ``reconstruct``."""
    if backend == "mpi" and workers > 1:  # real ranks: mpiexec -n WORKERS of the console script
        return _mpiexec(archive, model, out, batch, device, max(1, threads // workers), shard_frames, compile, workers,
                        score)
    cuda_ray = device.startswith("cuda") and backend == "ray"
    request = ReconstructRequest(archive, model=model, output=out, backend=backend, workers=workers,
                                 cpus_per_worker=max(1, threads // workers) if backend == "ray" else threads,
                                 gpus_per_worker=1.0 / workers if cuda_ray else 0.0, batch_size=batch,
                                 overwrite=True, shard_frames=shard_frames, device=device, preview=False,
                                 compile=compile, score=score)
    runner = None
    if backend == "mpi":  # one rank, in this process
        from mpi4py import MPI  # lazy: importing mpi4py.MPI initialises MPI

        runner = backend_named("mpi", comm=MPI.COMM_SELF)
    s = reconstruct(request, backend=runner)
    return s.frames_per_s, s.pipeline_frames_per_s


def _mpiexec(archive: Path, model: Path, out: Path, batch: int, device: str, threads: int, shard_frames: int,
             compile: bool, ranks: int, score: str = "all") -> tuple[float, float]:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        raise ResourceError("bench reconstruct --workers N with the mpi backend needs mpiexec on PATH")
    report = out.with_suffix(".json")
    proc = subprocess.run([mpiexec, "-n", str(ranks), _console_script(), "reconstruct", str(archive), "--model",
                           str(model), "--output", str(out), "--backend", "mpi", "--batch-size", str(batch),
                           "--cpus-per-worker", str(threads), "--shard-frames", str(shard_frames), "--overwrite",
                           "--no-preview", "--device", device, "--compile" if compile else "--no-compile",
                           "--score", score, "--json", str(report)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mpiexec reconstruct failed: {proc.stderr[-500:]}")
    summary = json.loads(report.read_text())
    return summary["frames_per_s"], summary["pipeline_frames_per_s"]


def _peak_rss_mb(archive: Path, model: Path, out: Path, batch: int, threads: int, shard_frames: int, device: str,
                 compile: bool) -> float:
    """Peak RSS [MB] of a fresh ``phasegan-hpc reconstruct --backend local`` process."""
    proc = subprocess.Popen([_console_script(), "reconstruct", str(archive), "--model", str(model),
                             "--output", str(out), "--backend", "local", "--batch-size", str(batch),
                             "--cpus-per-worker", str(threads),
                             "--shard-frames", str(shard_frames), "--overwrite", "--no-preview", "--device", device,
                             "--compile" if compile else "--no-compile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"reconstruct failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024.0


def _ratios(rates: dict[str, list[float]], model: list[float]) -> dict[str, float]:
    """Median over rounds of each backend's frames/s over the model-only frames/s of the same round."""
    return {b: statistics.median([e / m for e, m in zip(v, model, strict=True)]) for b, v in rates.items()}


def bench_reconstruct(size: int = 128, batch: int = 64, repeats: int = 3, device: str = "cpu", frames: int = 4096,
                      filters: int = 4, threads: int | None = None, backends: tuple[str, ...] = BACKENDS,
                      rss: bool = True, compile: bool | None = None, detector: bool = True, workers: int = 1,
                      score: str = "all", workdir: str | None = None) -> dict[str, Any]:
    """End-to-end frames/s per backend against model-only frames/s, and peak RSS at 1x and 4x frames.

    Args:
        size: frame side [px]. batch: frames per forward pass. repeats: rounds (medians reported).
        device: "cpu" or "cuda". frames: frames of the smaller archive (the larger has 4x).
        filters: base filters of the generators (32 = the paper's size). threads: torch threads per worker
            (default: all cores). backends: which end-to-end backends to time.
        rss: measure peak RSS (the 4x archive is only generated for it). compile: ``torch.compile`` the
            networks (None: as ``reconstruct``, on for CUDA; compiled at each worker's start-up).
        detector: the model carries G_D (the consistency score then runs G_D on |H G_O(I)|^2: twice the
            network work per frame of G_O alone).
        workers: Ray actors or MPI ranks (``mpiexec -n``) sharing the device, each with its own reader and
            writer (the local backend has one); threads are split between them.
        score: ``reconstruct --score`` of the end-to-end runs (the model-only rate always scores every frame).
        workdir: where the archives go (default: a temporary directory, removed afterwards).
    """
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise DataError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    threads = threads or os.cpu_count() or 1
    compile = device.startswith("cuda") if compile is None else compile
    tmp = Path(tempfile.mkdtemp(prefix="bench-reconstruct-", dir=workdir))
    try:
        t0 = time.perf_counter()
        small = make_archive(tmp / "small.h5", frames, size)
        large = make_archive(tmp / "large.h5", 4 * frames, size, seed=1) if rss else None
        generate_s = time.perf_counter() - t0
        model = make_model(tmp / "model.pt", filters, detector)
        shard = max(batch, frames // 8)
        fps: dict[str, list[float]] = {"model_only": [], **{b: [] for b in backends}}
        after: dict[str, list[float]] = {b: [] for b in backends}  # after worker start-up
        started = connect_ray() if "ray" in backends else False  # Ray's own start-up is not the pipeline's
        try:
            for _ in range(repeats):  # in turns, so that load from other processes hits all alike
                fps["model_only"].append(_model_only(model, size, batch, frames if device.startswith("cuda")
                                                     else min(frames, 16 * batch), device, threads, compile))
                for b in backends:
                    e2e, steady = _end_to_end(small, model, tmp / f"out-{b}.h5", b, batch, device, threads, shard,
                                              compile, 1 if b == "local" else workers, score)
                    fps[b].append(e2e)
                    after[b].append(steady)
        finally:
            disconnect_ray(started)
        peak = None
        if rss:
            rss_small, rss_large = (_peak_rss_mb(a, model, tmp / f"rss-{n}.h5", batch, threads, shard, device, compile)
                                    for n, a in (("small", small), ("large", large)))
            peak = {"small": rss_small, "large": rss_large, "large_over_small": rss_large / rss_small}
        medians = {k: statistics.median(v) for k, v in fps.items()}
        return {
            "benchmark": "reconstruct", **machine(device), "h5py": h5py.__version__, "threads": threads,
            "size": size, "batch": batch, "filters": filters, "frames": frames, "repeats": repeats,
            "compile": compile, "detector": detector, "workers": workers, "score": score,
            "archive_mb": {"small": small.stat().st_size / 1e6, "large": large.stat().st_size / 1e6 if rss else None},
            "raw_mb": {"small": frames * size * size * 2 / 1e6, "large": 4 * frames * size * size * 2 / 1e6},
            "generate_s": generate_s,
            "frames_per_s": {k: {"median": medians[k], "min": min(v), "max": max(v)} for k, v in fps.items()},
            "after_startup_frames_per_s": {b: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                           for b, v in after.items()},
            "end_to_end_over_model": _ratios({b: fps[b] for b in backends}, fps["model_only"]),
            "after_startup_over_model": _ratios(after, fps["model_only"]),
            "peak_rss_mb": peak,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
