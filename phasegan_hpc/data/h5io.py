"""Conventions shared by every writer: compression, chunking, and safe atomic publication.

A file is written under a hidden temporary name and renamed into place only when complete, so a crash
never leaves a file that looks finished (DESIGN.md §4). Temporary files are always created exclusively
(``O_CREAT | O_EXCL``, which never follows a symbolic link): a link planted at a temporary name, as anyone
sharing a group-writable beamline directory could, is never written through. Every writer of the package
(HDF5 files here; ``model.pt``, figures, JSON and TOML records through
:func:`phasegan_hpc.files.atomic_file`) creates its files so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin

from phasegan_hpc.errors import DataError


def compression() -> dict[str, Any]:
    """Dataset keyword arguments for fast lossless compression: Blosc LZ4 with byte shuffle.

    Readers need the filter registered, which ``import hdf5plugin`` does (a dependency of this package).
    """
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


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


@contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """Create ``path``'s partial name for writing; on clean exit rename it to ``path``, on error delete it.

    The partial name is predictable (a resumed run and its tests can see which shard is being written), so
    whatever stands there first (a crashed run's leftover, or a planted link) is removed, never opened, and the
    file is created exclusively (h5py mode "x").

    Raises:
        DataError: something reappeared at the partial name between removal and creation.
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
    try:
        yield f
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    f.close()
    os.replace(tmp, path)
