"""A simulated acquisition: an archive's frames written into a new file at a fixed rate, as a detector's
writer does (``phasegan-hpc acquire``), for ``reconstruct --follow`` (``reconstruct/live.py``).

The file is written the way the follower's convention asks (DXchange, HDF5's SWMR mode): the flats, darks,
attributes, the frames dataset (unlimited first axis, the source's chunk rows) and the empty end marker
``/process/acquisition/end_date`` are created first; then SWMR mode; then whole chunk rows, each written and
flushed at the time the rate gives it; then the end time in the marker. A writer killed on the way leaves a
file that never says it ended, as a dead detector writer would.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from phasegan_hpc.data.archive import open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.progress import ProgressFn, Tally

#: The end marker this writer fills when it is done (one of ``reconstruct.live.END_MARKERS``).
END_MARKER = "/process/acquisition/end_date"


def acquire(source: str | Path, output: str | Path, rate: float, *, overwrite: bool = False, delay: float = 0.0,
            progress: ProgressFn | None = None) -> Path:
    """Write the frames of the archive ``source`` (DXchange or a plain stack) into ``output`` at ``rate``
    frames/s, a chunk row at a time, in SWMR mode, the first ``delay`` s after the file is ready (the
    detector's trigger: a follower can be started and warm before the first frame).

    Raises:
        DataError: an unreadable source, a non-positive rate, ``output`` existing (without ``overwrite``) or
            being the source.
    """
    source, output = Path(source), Path(output)
    if not (rate > 0 and np.isfinite(rate)):
        raise DataError(f"--rate must be a positive number of frames per second, not {rate}")
    if not (delay >= 0 and np.isfinite(delay)):
        raise DataError(f"--delay must be a number of seconds >= 0, not {delay}")
    archive = open_archive(source)
    if archive.select is not None or len(archive.lead_shape) != 1:
        raise DataError(f"acquire replays a stack of frames (N, H, W); {source}:{archive.dataset} is "
                        f"{archive.layout} with shape {archive.shape}")
    if output.resolve() == archive.path:
        raise DataError(f"output {output} is the source itself; choose another --output")
    if os.path.lexists(output):
        if not overwrite:
            raise DataError(f"{output} exists; add --overwrite to replace it")
        output.unlink()
    with h5py.File(archive.path, "r") as src:
        frames = src[archive.dataset]
        n, shape = frames.shape[0], frames.shape[1:]
        rows = int(frames.chunks[0]) if frames.chunks else 1
        tally = Tally(progress, n)
        with h5py.File(output, "x", libver="latest") as f:  # SWMR needs the latest file format
            f.attrs.update(dict(src.attrs))
            comp = dict(hdf5plugin.Bitshuffle(cname="lz4"))
            for what, ref in (("data_white", archive.flats), ("data_dark", archive.darks)):
                if ref is not None:
                    stack = src[ref[0]][()] if ref[1] is None else src[ref[0]][ref[1]]
                    f.create_dataset(f"exchange/{what}", data=stack, **comp)
            data = f.create_dataset("exchange/data", shape=(0, *shape), maxshape=(None, *shape),
                                    chunks=(rows, *shape), dtype=frames.dtype, **comp)
            marker = f.create_dataset(END_MARKER, shape=(), dtype="S32", data=b"")
            f.swmr_mode = True
            t0 = time.monotonic() + delay
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                block = frames[start:stop]
                wait = t0 + stop / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                data.resize(stop, axis=0)
                data[start:stop] = block
                data.flush()
                tally.add(stop - start)
            marker[()] = time.strftime("%Y-%m-%dT%H:%M:%S").encode()
            marker.flush()
    return output
