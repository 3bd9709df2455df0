"""The I/O pipeline alone: ``correct`` (``reconstruct --method flatfield``: read, decompress, flat/dark correct,
sanitise, count, compress, write, verify; no network) in one process against a bare "h5py read + decompress
+ astype" loop over the same archive, and against the pipeline of earlier versions (``--reader h5py`` and one
output frame per chunk), in turns; also with the correction done by torch (``--correct-on device``, here on
``device``) and with float16 output.

The archive is ``bench reconstruct``'s (bitshuffle-LZ4 uint16 DXchange with flats and darks), in a temporary
directory (page cache warm after the first round: decoding, copying and writing, not the disk).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.bench.reconstruct import make_archive
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

#: The variants timed, by name: ReconstructRequest options of ``correct``.
VARIANTS: dict[str, dict[str, Any]] = {
    "pipeline": {},  # today's: chunks decoded in Python (threads), output chunks of ~2 MiB
    "h5py_reader": {"reader": "h5py"},
    "earlier": {"reader": "h5py", "output_chunk_frames": 1},  # the reader and writer before issue 15
    "torch_prepare": {"correct_on": "device"},  # raw frames corrected by torch on --device (the CUDA default)
    "float16": {"output_dtype": "float16"},  # half the output bytes
}


def _bare(path: Path, batch: int) -> None:
    with h5py.File(path, "r") as f:
        ds = f["exchange/data"]
        for r in range(0, ds.shape[0], batch):
            ds[r:r + batch].astype(np.float32)


def _correct(archive: Path, output: Path, batch: int, threads: int, device: str,
             options: dict[str, Any]) -> Callable[[], object]:
    """``correct`` of ``archive`` into ``output`` with ``options``, as a call."""
    request = ReconstructRequest(archive, method="flatfield", output=output, backend="local", batch_size=batch,
                                 overwrite=True, preview=False, cpus_per_worker=threads, device=device, **options)
    return lambda: reconstruct(request)


def bench_pipeline(size: int = 128, batch: int = 64, repeats: int = 3, frames: int = 2048, device: str = "cpu",
                   threads: int | None = None) -> dict[str, Any]:
    """Median frames/s of the bare loop and of each of :data:`VARIANTS`, and their ratios, pair by pair."""
    threads = threads or torch.get_num_threads()
    times: dict[str, list[float]] = {"bare": [], **{k: [] for k in VARIANTS}}
    with tempfile.TemporaryDirectory(prefix="phasegan-bench-pipeline-") as tmp:
        archive = make_archive(Path(tmp) / "a.h5", frames, size)
        runs = {name: _correct(archive, Path(tmp) / f"{name}.h5", batch, threads, device, options)
                for name, options in VARIANTS.items()}
        _bare(archive, batch)  # warm the page cache
        for _ in range(repeats):
            t0 = time.perf_counter()
            _bare(archive, batch)
            times["bare"].append(time.perf_counter() - t0)
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        with h5py.File(Path(tmp) / "pipeline.h5") as a, h5py.File(Path(tmp) / "earlier.h5") as b, \
                h5py.File(Path(tmp) / "torch_prepare.h5") as c:
            identical = bool(np.array_equal(a["intensity"][()], b["intensity"][()], equal_nan=True))
            torch_identical = bool(np.array_equal(a["intensity"][()], c["intensity"][()], equal_nan=True))
    rate = {k: frames / statistics.median(v) for k, v in times.items()}
    ratio = {f"{k}_vs_bare": statistics.median(b / t for b, t in zip(times["bare"], v, strict=True))
             for k, v in times.items() if k != "bare"}
    ratio["pipeline_vs_earlier"] = statistics.median(e / p for e, p in zip(times["earlier"], times["pipeline"],
                                                                           strict=True))
    return {"benchmark": "pipeline", **machine(device), "size": size, "batch": batch, "frames": frames,
            "repeats": repeats, "decode_threads": threads, "frames_per_s": rate, "ratios": ratio,
            "identical_to_earlier": identical, "torch_prepare_identical": torch_identical}
