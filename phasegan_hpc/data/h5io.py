"""HDF5 conventions shared by every writer: compression, chunking, atomic publication.

A file is written under a hidden temporary name and renamed into place only when complete, so a crash
never leaves a file that looks finished (DESIGN.md §4).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin


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
    """Open ``path``'s partial name for writing; on clean exit rename it to ``path``, on error delete it."""
    path = Path(path)
    tmp = partial_path(path)
    f = h5py.File(tmp, "w")
    try:
        yield f
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    f.close()
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a small text file (JSON, Markdown) atomically: a temporary file of a unique name beside it
    (created exclusively, so a planted symlink is never followed), then renamed over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
