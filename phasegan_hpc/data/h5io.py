"""Conventions shared by every writer: compression, chunking, and safe atomic publication.

A file is written under a hidden temporary name and renamed into place only when complete, so a crash
never leaves a file that looks finished (DESIGN.md §4). Temporary files are always created exclusively
(``O_CREAT | O_EXCL``, which never follows a symbolic link): a link planted at a temporary name, as anyone
sharing a group-writable beamline directory could, is never written through. Every writer of the package
(HDF5 files here; ``model.pt``, figures, JSON and TOML records through
:func:`phasegan_hpc.files.atomic_file`) creates its files so.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from phasegan_hpc.errors import DataError, storage_error


def compression() -> dict[str, Any]:
    """Dataset keyword arguments for fast lossless compression: Blosc LZ4 with byte shuffle.

    Readers need the filter registered, which ``import hdf5plugin`` does (a dependency of this package).
    """
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


#: Bytes per chunk of a written stack of frames: big enough that HDF5's per-chunk cost is spread over many
#: frames (one frame of 128 x 128 float32 per chunk wrote ~2,700-3,000 frames/s), small enough that reading
#: one frame decompresses little more than it (see docs/benchmarks.md, "Writing").
CHUNK_BYTES = 2 << 20


def frame_chunks(rows: int, lead_tail: tuple[int, ...], frame: tuple[int, ...], itemsize: int,
                 frames: int | None = None) -> tuple[int, ...]:
    """The chunk shape of a (rows, *lead_tail, *frame) stack: about :data:`CHUNK_BYTES` (or ``frames``) of
    whole frames along the last leading axis (rows when there is no lead tail), one index of the axes before
    it, whole frames."""
    per_frame = itemsize * max(1, int(np.prod(frame)))
    along = frames or max(1, CHUNK_BYTES // per_frame)
    if not lead_tail:
        return (min(max(1, rows), along), *frame)
    return (1, *(1,) * (len(lead_tail) - 1), min(lead_tail[-1], along), *frame)


def create_frames(
    f: h5py.File, name: str, n: int, shape: tuple[int, int], *, units: str, description: str
) -> h5py.Dataset:
    """Create a float32 stack (n, H, W), one frame per chunk, compressed, with ``units`` attribute.

    The first axis is extendible (``maxshape`` None), which also allows an empty stack (n = 0).
    """
    ds = f.create_dataset(name, shape=(n, *shape), maxshape=(None, *shape), dtype="float32", chunks=(1, *shape),
                          **compression())
    ds.attrs["units"] = units
    ds.attrs["description"] = description
    return ds


def partial_path(path: Path) -> Path:
    """The hidden name a file is written under until it is complete."""
    return path.with_name(f".{path.name}.partial")


#: Disk blocks reserved for every HDF5 file besides its estimated data (metadata, chunk indices).
RESERVE_SLACK = 1 << 20
_FALLOC_FL_KEEP_SIZE = 1


def reserve_space(path: Path, nbytes: int) -> bool:
    """Reserve ``nbytes`` of disk blocks for the file at ``path`` without changing its size (Linux
    ``fallocate(FALLOC_FL_KEEP_SIZE)``); :func:`atomic_h5` truncates the closed file to its size, which gives
    back what the data did not use. Returns False where the file system cannot reserve (then nothing is reserved).

    Why: HDF5 cannot recover from a failed write (a full disk); closing such a file crashes the process
    (h5py 3, HDF5 1.14). A write into reserved blocks cannot fail for want of space, so a full disk shows
    here, before any data is written, where it is one clear error.

    Raises:
        OSError: ENOSPC or EDQUOT (the space is not there).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        fallocate = libc.fallocate
        fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, int(nbytes)) != 0:
            err = ctypes.get_errno()
            if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return False
            raise OSError(err, os.strerror(err), str(path))
        return True
    finally:
        os.close(fd)


@contextmanager
def atomic_h5(path: str | Path, reserve: int = 0) -> Iterator[h5py.File]:
    """Create ``path``'s partial name for writing; on clean exit rename it to ``path``, on error delete it.

    The partial name is predictable (a resumed run and its tests can see which shard is being written), so
    whatever stands there first (a crashed run's leftover, or a planted link) is removed, never opened, and the
    file is created exclusively (h5py mode "x").

    ``reserve``: the bytes the file is expected to take (an upper bound: uncompressed data); they and
    :data:`RESERVE_SLACK` are reserved on disk before the file is handed out (:func:`reserve_space`).

    Raises:
        DataError: something reappeared at the partial name between removal and creation; the disk is full
            or read-only (nothing half-written is left).
    """
    path = Path(path)
    tmp = partial_path(path)
    if os.path.lexists(tmp):
        tmp.unlink()  # a link is removed itself; its target is not touched
    try:
        f = h5py.File(tmp, "x")
    except FileExistsError:
        raise DataError(f"{tmp} appeared while it was being created (another run on this output, or a planted "
                        "file); remove it and rerun") from None
    except OSError as exc:
        raise storage_error(exc, path) or exc from None
    try:
        reserve_space(tmp, int(reserve) + RESERVE_SLACK)
    except OSError as exc:
        _discard(f, tmp)  # nothing was written: closing is safe
        raise storage_error(exc, path) or exc from None
    try:
        yield f
        f.close()  # flushes: a full disk may only show here
    except BaseException as exc:
        _discard(f, tmp)
        err = storage_error(exc, path)
        if err is not None:
            raise err from None
        raise
    os.truncate(tmp, os.path.getsize(tmp))  # gives back the reserved blocks the data did not use
    os.replace(tmp, path)


def _discard(f: h5py.File, tmp: Path) -> None:
    """Close a file whose writing failed and delete it. A file is closed at most once: HDF5 crashes the
    process when a file whose close failed (a full disk) is closed again."""
    if f.id.valid:
        try:
            f.close()
        except Exception:  # noqa: BLE001 - the first error is the one reported
            pass
    tmp.unlink(missing_ok=True)
