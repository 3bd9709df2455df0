"""Safe atomic publication of any file (no HDF5 here; see ``data/h5io.atomic_h5`` for HDF5 files).

A file is written to a new temporary file of an unpredictable name beside it, created exclusively
(``mkstemp``: ``O_CREAT | O_EXCL``, which never follows a symbolic link), and renamed over its final name
only when complete: a crash never leaves a file that looks finished, and a link planted at a temporary
name (anyone sharing a group-writable beamline directory could plant one) is never written through.
Light on purpose: the CLI imports it at start-up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from phasegan_hpc.errors import DataError, storage_error


def _umask_mode() -> int:
    """0o666 without this process's umask: the mode ``open()`` would give a new file (mkstemp gives 0o600)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object on a new temporary file of an unpredictable name beside ``path`` (created exclusively:
    never a planted file or link), renamed over ``path`` on a clean exit and deleted on an error. The file
    gets the mode a plain ``open()`` would give it.

    Args:
        mode: "wb" or "w" (text, UTF-8), or with ``newline`` handling as :func:`os.fdopen` takes it.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, path) or exc from None
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        err = storage_error(exc, path)
        if err is not None:
            raise err from None
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a small text file (JSON, Markdown, TOML) atomically through :func:`atomic_file`, making its
    directory if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def check_writable(path: str | Path, what: str = "output") -> Path:
    """``path`` as a file that can be written: not a directory itself, and its directory either exists and is
    writable or can be made (its nearest existing ancestor is a writable directory). Checked before long
    work, so that a report is not lost after hours of it; :func:`atomic_write_text` makes the directory.

    Raises:
        DataError: naming the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path}: directory {parent} is not writable")
    return path
