"""Reading an archive's frames: chunks decoded in Python (data/chunks.py) against h5py's own reading of the same
rows, in turns, per filter; and the cost of the stored-bytes digest a shard records (resume's check).

The archive is written to a temporary directory (page cache warm after the first read, as a re-read on a
node with enough memory is): this measures decoding and copying, not the disk.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from phasegan_hpc.bench import interleaved_times, machine
from phasegan_hpc.data.chunks import ChunkRows
from phasegan_hpc.errors import DataError

#: The filters compared (name -> create_dataset keywords).
CODECS = {
    "bitshuffle-lz4": lambda: dict(hdf5plugin.Bitshuffle(cname="lz4")),
    "blosc-lz4": lambda: dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
    "zstd": lambda: dict(hdf5plugin.Zstd()),
    "gzip": lambda: dict(compression="gzip"),
    "none": dict,
}


def _frames(n: int, size: int) -> np.ndarray:
    """Detector-like uint16 frames: Poisson counts over a smooth illumination with fringes."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size] / size
    mean = 2000 * (1 + 0.3 * np.cos(40 * x) * np.cos(30 * y)) * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2))
    return rng.poisson(mean, (n, size, size)).astype(np.uint16)


def _time_reads(path: Path, data: np.ndarray, batch: int, repeats: int) -> dict[str, list[float]]:
    """Times [s] of reading all of ``path``'s frames in blocks of ``batch``: h5py, ChunkRows, digest only."""
    with h5py.File(path, "r") as f:
        ds = f["frames"]
        reader = ChunkRows(ds)
        assert reader.read(np.arange(len(data)))[0].tobytes() == data.tobytes()  # byte-identical
        spans = [(r, min(len(data), r + batch)) for r in range(0, len(data), batch)]

        def h5py_read() -> None:
            for r0, r1 in spans:
                ds[r0:r1]

        def chunk_read() -> None:
            for r0, r1 in spans:
                reader.read(np.arange(r0, r1))

        def digest() -> None:
            h = hashlib.sha256()
            for r0, r1 in spans:
                reader.digest(np.arange(r0, r1), h.update)

        return interleaved_times({"h5py": h5py_read, "chunks": chunk_read, "digest": digest}, repeats)


def bench_read(size: int = 256, batch: int = 32, repeats: int = 5, frames: int = 256, device: str = "cpu",
               codecs: tuple[str, ...] | None = None, chunk_frames: int = 8) -> dict[str, Any]:
    """Median MB/s (decoded bytes) of reading ``frames`` frames in blocks of ``batch``: h5py vs ChunkRows, and
    ChunkRows.digest alone. ``*_vs_h5py``: h5py's time over theirs, pair by pair (above 1: faster than h5py)."""
    names = codecs or tuple(CODECS)
    unknown = sorted(set(names) - set(CODECS))
    if unknown:
        raise DataError(f"unknown codec {unknown[0]}; choose from {', '.join(CODECS)}")
    data = _frames(frames, size)
    mb = data.nbytes / 1e6
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="phasegan-bench-read-") as tmp:
        for name in names:
            path = Path(tmp) / f"{name}.h5"
            with h5py.File(path, "w") as f:
                f.create_dataset("frames", data=data, chunks=(chunk_frames, size, size), **CODECS[name]())
            times = _time_reads(path, data, batch, repeats)
            results[name] = {
                "stored_mb": round(path.stat().st_size / 1e6, 2),
                **{f"{k}_mb_s": mb / statistics.median(v) for k, v in times.items()},
                "chunks_vs_h5py": statistics.median(h / c for h, c in zip(times["h5py"], times["chunks"],
                                                                          strict=True)),
                "digest_vs_h5py": statistics.median(h / d for h, d in zip(times["h5py"], times["digest"],
                                                                          strict=True)),
            }
    return {"benchmark": "read", **machine(device), "size": size, "batch": batch, "frames": frames,
            "chunk_frames": chunk_frames, "repeats": repeats, "decoded_mb": mb, "codecs": results}
