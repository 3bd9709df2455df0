"""Movie archives (DESIGN.md §4): find the frames, their flats and darks, and read corrected frames.

The frames dataset is found by ``--dataset``, else DXchange (``/exchange/data`` with ``data_white`` and
``data_dark``), else NeXus NXtomo (a ``data`` dataset beside an ``image_key``: 0 projections, 1 flats,
2 darks), else the only dataset with ndim >= 3. Any leading shape (frames, or trains x pulses), the last two
axes are (H, W); any real dtype, chunking and ``hdf5plugin`` filter.

The archive is only ever opened read-only (``h5py.File(path, "r")``). Nothing here imports Ray.
"""

from __future__ import annotations

import glob
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle, Blosc, LZ4, Zstd... for reading)
import numpy as np

from phasegan_hpc.data.checksum import Checksum
from phasegan_hpc.data.chunks import ChunkRows
from phasegan_hpc.data.metadata import Stated, stated_geometry
from phasegan_hpc.errors import DataError
from phasegan_hpc.physics.flatfield import ArrayT, DynamicFlatfieldCorrector, FlatfieldCorrector
from phasegan_hpc.supervise import note

#: NXtomo image_key values (NeXus).
PROJECTION, FLAT, DARK = 0, 1, 2
#: How frames are read (:class:`FrameReader`): chunks decoded in Python (``data/chunks.py``), or h5py's own
#: reading through HDF5's filters (the baseline, and a fallback).
READERS = ("chunks", "h5py")


@dataclass(frozen=True)
class Archive:
    """Where the frames of a movie archive are and how they map to output frames.

    Attributes:
        path: the archive (absolute).
        dataset: HDF5 path of the frames dataset.
        layout: how it was found: "given", "dxchange", "nxtomo" or "single".
        shape: the dataset's full shape.
        dtype: its dtype name.
        chunk_rows: rows along axis 0 per HDF5 chunk (1 for a contiguous dataset).
        lead_shape: the output's leading shape (NXtomo: number of projections).
        frame_shape: (H, W) of the frames read: the region of interest's, if one is set.
        select: the dataset rows (along the first axis, sorted) that are the output's rows: NXtomo's
            projections, and/or those ``--frames`` picks (:meth:`with_frames`); None: every row.
        flats, darks: (dataset path, rows or None for all) of the reference frames, or None.
        attrs: the file's root attributes (plain values).
        roi: (y0, y1, x0, x1) of the stored frames that are read (:meth:`with_roi`), or None: all.
        stated: the geometry the file states, with its sources (``data.metadata``; absent keys: not stated).
        flats_file, darks_file: the file holding ``flats`` / ``darks`` when it is not the archive
            (:meth:`with_references`).
        reduction: how the reference stacks are reduced, one of :data:`REDUCTIONS`.
        eigenflats: ``reduction`` "pca": the eigen-flats K (None: :func:`default_eigenflats`).
        frames: (start, stop, step) of ``--frames`` along the first leading axis (of the projections, for
            NXtomo), or None: all.
        parts: a sequence of files read as one movie (:func:`open_sequence`): (file, rows along the first axis)
            of each, in order (``path`` is the first); None: one file.
        live: the file is still being written (``reconstruct --follow``): it is opened in SWMR mode (single
            writer, multiple readers) and its frames dataset refreshed before rows beyond the known ones are
            read; ``shape`` and ``lead_shape`` are what it held when it was opened.
    """

    path: Path
    dataset: str
    layout: str
    shape: tuple[int, ...]
    dtype: str
    chunk_rows: int
    lead_shape: tuple[int, ...]
    frame_shape: tuple[int, int]
    select: np.ndarray | None = field(default=None, compare=False)
    flats: tuple[str, list[int] | None] | None = None
    darks: tuple[str, list[int] | None] | None = None
    attrs: dict = field(default_factory=dict, compare=False)
    roi: tuple[int, int, int, int] | None = None
    stated: dict[str, Stated] = field(default_factory=dict, compare=False)
    flats_file: Path | None = None
    darks_file: Path | None = None
    reduction: str = "mean"
    eigenflats: int | None = None
    frames: tuple[int, int, int] | None = None
    parts: tuple[tuple[Path, int], ...] | None = None
    live: bool = field(default=False, compare=False)

    @property
    def stored_frame_shape(self) -> tuple[int, int]:
        """(H, W) of the frames as stored (``frame_shape`` is the region read)."""
        return int(self.shape[-2]), int(self.shape[-1])

    def with_roi(self, roi: tuple[int, int, int, int] | None) -> Archive:
        """This archive read only in ``roi`` = (y0, y1, x0, x1) of its stored frames (None: all of them).

        Raises:
            DataError: a region that is empty or outside the frames.
        """
        if roi is None:
            return self
        y0, y1, x0, x1 = roi
        h, w = self.stored_frame_shape
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise DataError(f"--roi {y0}:{y1},{x0}:{x1} is not a region of the {h} x {w} frames of "
                            f"{self.path}:{self.dataset}")
        return replace(self, roi=(y0, y1, x0, x1), frame_shape=(y1 - y0, x1 - x0))

    def with_frames(self, frames: tuple[int | None, int | None, int | None] | None) -> Archive:
        """This archive reduced to the rows ``frames`` = (start, stop, step) of its first leading axis (Python
        slice semantics with start, stop >= 0; for NXtomo: of its projections); None: all of them. Shards read
        the selected rows only; with step 1 and a start on a chunk boundary they stay aligned to the chunks.

        Raises:
            DataError: a selection that holds no frame.
        """
        if frames is None:
            return self
        n = self.lead_shape[0]
        if frames[1] is not None and frames[1] > n:
            raise DataError(f"--frames {_slice_text(frames)}: {self.path}:{self.dataset} has {n} rows "
                            f"(frames 0-{n - 1}{' of the projections' if self.layout == 'nxtomo' else ''})")
        picked = range(n)[slice(*frames)]
        start, step = picked.start, picked.step
        rows = np.arange(picked.start, picked.stop, picked.step, dtype=np.int64)  # the selected rows only
        if len(rows) == 0:
            raise DataError(f"--frames {_slice_text(frames)} selects no frame of the {n} rows of "
                            f"{self.path}:{self.dataset}")
        select = rows if self.select is None else self.select[rows]
        aligned = self.select is None and step == 1 and start % self.chunk_rows == 0
        return replace(self, select=select, lead_shape=(len(rows), *self.lead_shape[1:]),
                       chunk_rows=self.chunk_rows if aligned else 1,
                       frames=(int(start), int(start + step * len(rows)), int(step)))

    def with_references(self, flats: tuple[Path, str | None] | None = None,
                        darks: tuple[Path, str | None] | None = None, reduction: str = "mean",
                        eigenflats: int | None = None) -> Archive:
        """This archive with its flats and/or darks from other files ((file, dataset or None: DXchange's
        ``/exchange/data_white`` / ``data_dark``, else the file's only stack of frames)), reduced by
        ``reduction`` (:data:`REDUCTIONS`; "pca" with ``eigenflats`` eigen-flats, None: the default).

        Raises:
            DataError: an unknown reduction, eigen-flats without "pca"; a missing or unreadable file, no such
                dataset, or frames of another shape.
        """
        if reduction not in REDUCTIONS:
            raise DataError(f"--flats-reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")
        if eigenflats is not None and (reduction != "pca" or eigenflats < 1):
            raise DataError(f"--eigenflats {eigenflats}: needs --flats-reduction pca and at least 1 eigen-flat")
        found = {}
        for what, given, default in (("flats", flats, "/exchange/data_white"), ("darks", darks, "/exchange/data_dark")):
            if given is None:
                continue
            file, dataset = given
            with _open(file) as g:
                if dataset is None:
                    stacks = [k for k, d in _datasets(g).items() if d.ndim >= 2]
                    dataset = default if default in g else stacks[0] if len(stacks) == 1 else None
                    if dataset is None:
                        raise DataError(f"--{what} {file}: name the dataset (FILE:DATASET); found "
                                        f"{_describe({k: g[k] for k in stacks}) if stacks else 'no stack of frames'}")
                if not isinstance(g.get(dataset), h5py.Dataset):
                    raise DataError(f"--{what} {file}: no dataset {dataset!r}")
                found[what] = (file, _reference(g, file, dataset, self.stored_frame_shape, what))
        return replace(self, reduction=reduction, eigenflats=eigenflats,
                       flats=found["flats"][1] if "flats" in found else self.flats,
                       flats_file=found["flats"][0] if "flats" in found else self.flats_file,
                       darks=found["darks"][1] if "darks" in found else self.darks,
                       darks_file=found["darks"][0] if "darks" in found else self.darks_file)

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """Stored frames (..., H, W) -> their region of interest (a view; the frames themselves without one)."""
        if self.roi is None:
            return frames
        y0, y1, x0, x1 = self.roi
        return frames[..., y0:y1, x0:x1]

    @property
    def n_frames(self) -> int:
        """Output frames (product of the leading shape)."""
        return int(np.prod(self.lead_shape))

    @property
    def frames_per_row(self) -> int:
        """Frames per index of the first leading axis."""
        return int(np.prod(self.lead_shape[1:]))


def _open(path: Path, swmr: bool = False) -> h5py.File:
    """Open an archive read-only (``swmr``: as a reader of a file an SWMR writer is still writing), turning
    every failure into one clear line."""
    if not path.exists():
        raise DataError(f"archive {path} not found")
    if not path.is_file():
        raise DataError(f"archive {path} is not a file")
    try:
        if not h5py.is_hdf5(path):
            raise DataError(f"{path} is not an HDF5 file")
        try:
            return h5py.File(path, "r", locking=False, swmr=swmr)
        except OSError as exc:
            if swmr or "already open for write" not in str(exc):
                raise
            # An SWMR writer has it open, or died without closing it (its consistency flags stay set): an
            # SWMR reader may still read what it wrote.
            return h5py.File(path, "r", locking=False, swmr=True)
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text else "unreadable"
        raise DataError(f"{path}: {reason} HDF5 file ({text.splitlines()[0] if text else 'OSError'})") from None


class LiveFile:
    """This process's one SWMR reader handle of a file that is being written, and its one object per dataset.

    HDF5 refreshes a dataset opened twice in one process (two ``h5py.Dataset`` objects of it, or of two
    handles of one path) no more: its shape follows the writer but its chunk index stays stale, and new chunks
    read as never written. So the live source that watches an archive and the workers reading it in the same
    process share this (:func:`open_live`, :meth:`release`).
    """

    _open_files: dict[Path, LiveFile] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path, self.file, self.refs = path, _open(path, swmr=True), 0
        self._datasets: dict[str, h5py.Dataset] = {}

    def dataset(self, name: str) -> h5py.Dataset:
        """The dataset ``name``, the same object for every caller (refresh it before reading new rows)."""
        with LiveFile._lock:
            if name not in self._datasets:
                self._datasets[name] = self.file[name]
            return self._datasets[name]

    def release(self) -> None:
        """One user less; the file is closed with the last."""
        with LiveFile._lock:
            self.refs -= 1
            if self.refs == 0:
                LiveFile._open_files.pop(self.path, None)
                self.file.close()


def open_live(path: Path) -> LiveFile:
    """The process's :class:`LiveFile` of ``path`` (opened at the first call; :meth:`LiveFile.release` each)."""
    path = Path(path)
    with LiveFile._lock:
        live = LiveFile._open_files.get(path)
        if live is None:
            live = LiveFile._open_files[path] = LiveFile(path)
        live.refs += 1
        return live


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found["/" + name] = obj

    f.visititems(visit)
    return found


def _describe(items: dict[str, h5py.Dataset]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(items.items())) or "none"


def _find_frames(f: h5py.File, path: Path, dataset: str | None) -> tuple[str, str]:
    if dataset is not None:
        name = dataset if dataset.startswith("/") else "/" + dataset
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise DataError(f"{path} has no dataset {name} (datasets: {_describe(_datasets(f))})")
        return name, "given"
    if "/exchange/data" in f and isinstance(f["/exchange/data"], h5py.Dataset):
        return "/exchange/data", "dxchange"
    all_ds = _datasets(f)
    nxtomo = [k for k, v in all_ds.items() if k.rsplit("/", 1)[-1] == "data" and v.ndim >= 3
              and isinstance(v.parent.get("image_key"), h5py.Dataset)]
    if len(nxtomo) == 1:
        return nxtomo[0], "nxtomo"
    stacks = {k: v for k, v in all_ds.items() if v.ndim >= 3}
    if len(stacks) == 1:
        return next(iter(stacks)), "single"
    if not stacks:
        raise DataError(f"{path}: no frames dataset (no dataset with >= 3 dimensions; datasets: {_describe(all_ds)})")
    raise DataError(f"{path}: several frames datasets, choose one with --dataset: {_describe(stacks)}")


def _check_frames_dataset(ds: h5py.Dataset, path: Path, live: bool = False) -> None:
    """Refuse what is not a stack of frames (``live``: it may hold none yet, but frames of a size)."""
    if ds.ndim < 3:
        raise DataError(f"{path}:{ds.name} has shape {tuple(ds.shape)}; reconstruct needs a stack of frames "
                        f"(..., H, W) with at least 3 dimensions")
    if ds.dtype.kind not in "uif":
        raise DataError(f"{path}:{ds.name} has dtype {ds.dtype}; frames must be integers or floats")
    if 0 in (ds.shape[1:] if live else ds.shape):
        raise DataError(f"{path}:{ds.name} holds no frames (shape {tuple(ds.shape)})")


def _reference(f: h5py.File, path: Path, name: str, frame_shape: tuple[int, int], what: str,
               rows: list[int] | None = None, live: bool = False) -> tuple[str, list[int] | None] | None:
    """(``name``, ``rows``) of a stack of flats or darks, None where there is none (``live``: also one created
    empty, to be written at the end of the acquisition).

    Raises:
        DataError: not a stack of frames of ``frame_shape``.
    """
    if name not in f:
        return None
    ds = f[name]
    if live and isinstance(ds, h5py.Dataset) and ds.ndim >= 2 and ds.shape[0] == 0:
        return None
    if not isinstance(ds, h5py.Dataset) or ds.ndim < 2 or (rows is None and ds.size == 0):
        raise DataError(f"{path}:{name} ({what}) is not a stack of frames: shape {getattr(ds, 'shape', None)}")
    if tuple(ds.shape[-2:]) != frame_shape:
        raise DataError(f"{path}:{name}: {what} are {ds.shape[-2]} x {ds.shape[-1]} but the frames are "
                        f"{frame_shape[0]} x {frame_shape[1]}")
    return name, rows


def _slice_text(frames: tuple[int | None, int | None, int | None]) -> str:
    return ":".join("" if v is None else str(v) for v in frames)


def parse_frames(text: str | None) -> tuple[int | None, int | None, int | None] | None:
    """``--frames START:STOP[:STEP]`` (rows START..STOP-1 of the first leading axis, every STEP-th; an empty
    field: the start, the end, 1) -> (start, stop, step), or None.

    Raises:
        DataError: anything else, negative values or a step below 1.
    """
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        start, stop, *step = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise DataError(f"--frames must be START:STOP[:STEP] (e.g. 0:1000 or 100::10), not {text!r}") from None
    step_v = step[0] if step else None
    if any(v is not None and v < 0 for v in (start, stop)) or (step_v is not None and step_v < 1):
        raise DataError(f"--frames {text}: START and STOP must be >= 0 and STEP >= 1")
    return start, stop, step_v


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``--roi Y0:Y1,X0:X1`` (pixel rows Y0..Y1-1, columns X0..X1-1 of the stored frames) -> (y0, y1, x0, x1).

    Raises:
        DataError: anything else.
    """
    if text is None:
        return None
    try:
        rows, cols = text.split(",")
        (y0, y1), (x0, x1) = (tuple(int(v) for v in part.split(":")) for part in (rows, cols))
    except ValueError:
        raise DataError(f"--roi must be Y0:Y1,X0:X1 (pixel rows and columns, e.g. 0:256,64:320), not {text!r}") \
            from None
    if not (0 <= y0 < y1 and 0 <= x0 < x1):
        raise DataError(f"--roi {text}: needs 0 <= Y0 < Y1 and 0 <= X0 < X1")
    return y0, y1, x0, x1


def open_archive(path: str | Path, dataset: str | None = None, live: bool = False) -> Archive:
    """Inspect an archive (read-only) and describe its frames.

    Args:
        path: HDF5 file.
        dataset: HDF5 path of the frames dataset, or None to find it.
        live: the file is still being written (:attr:`Archive.live`).

    Raises:
        DataError: missing, not HDF5, truncated, no or several candidate datasets, a dataset that is not a
            stack of frames, flats or darks of another frame shape, an NXtomo without projections.
    """
    path = Path(path).expanduser().resolve()
    with _open(path, swmr=live) as f:
        name, layout = _find_frames(f, path, dataset)
        ds = f[name]
        _check_frames_dataset(ds, path, live)
        frame_shape = (int(ds.shape[-2]), int(ds.shape[-1]))
        chunk_rows = int(ds.chunks[0]) if ds.chunks else 1
        lead = tuple(int(s) for s in ds.shape[:-2])
        select = flats = darks = None
        parent = ds.parent
        if layout != "single" and isinstance(parent.get("image_key"), h5py.Dataset):
            if ds.ndim != 3:
                raise DataError(f"{path}:{name}: an NXtomo data set with image_key must be (N, H, W)")
            key = np.asarray(parent["image_key"][()]).reshape(-1)
            if len(key) != ds.shape[0]:
                raise DataError(f"{path}:{parent.name}/image_key has {len(key)} entries for {ds.shape[0]} frames")
            layout = "nxtomo" if layout == "given" else layout
            select = np.flatnonzero(key == PROJECTION)
            if len(select) == 0:
                raise DataError(f"{path}:{name}: image_key marks no projections (0)")
            lead = (len(select),)
            chunk_rows = 1
            flat_rows = np.flatnonzero(key == FLAT).tolist()
            dark_rows = np.flatnonzero(key == DARK).tolist()
            flats = (name, flat_rows) if flat_rows else None
            darks = (name, dark_rows) if dark_rows else None
        else:
            base = parent.name.rstrip("/")
            flats = _reference(f, path, f"{base}/data_white", frame_shape, "flats", live=live)
            darks = _reference(f, path, f"{base}/data_dark", frame_shape, "darks", live=live)
        attrs = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in f.attrs.items()}
        if live and select is not None:
            raise DataError(f"--follow: {path} is NXtomo (image_key interleaves flats and projections); follow "
                            "DXchange or a plain stack of frames")
        return Archive(path, name, layout, tuple(int(s) for s in ds.shape), ds.dtype.name, chunk_rows, lead,
                       frame_shape, select, flats, darks, attrs, stated=stated_geometry(f, name, str(path)),
                       live=live)


def expand_archives(args: list[str] | tuple[str, ...]) -> list[Path]:
    """Archive arguments -> files: each argument with ``*``, ``?`` or ``[`` that is not itself a file is a glob
    pattern, expanded in name order (``RUN-S00000.h5``, ``RUN-S00001.h5``, ...); the others are taken as they
    are, in the order given.

    Raises:
        DataError: no argument, or a pattern that matches no file.
    """
    if not args:
        raise DataError("no archive given")
    paths: list[Path] = []
    for arg in map(str, args):
        if any(c in arg for c in "*?[") and not os.path.lexists(os.path.expanduser(arg)):
            found = sorted(glob.glob(os.path.expanduser(arg)))
            if not found:
                raise DataError(f"archive {arg} not found (and no file matches it as a pattern)")
            paths.extend(Path(p) for p in found)
        else:
            paths.append(Path(arg))
    return paths


def open_sequence(paths: list[Path], dataset: str | None = None, live: bool = False) -> Archive:
    """Several archives read as one movie, in the order given (European XFEL's sequence files ``...-S00000.h5``,
    ``...-S00001.h5``, ...): the frames of each, one after the other along the first axis. Every file must
    hold the same frames dataset (the first file's, found as :func:`open_archive` finds it) with the same frame
    shape, dtype and trailing leading shape; the geometry the files state and the flats and darks are the
    first file's (the first that has them, for flats and darks). One file: :func:`open_archive`.

    Raises:
        DataError: as :func:`open_archive`, for any file; files that differ; a file given twice; NXtomo files
            (their image_key interleaves flats and projections: reconstruct those one by one).
    """
    if live and len(paths) > 1:
        raise DataError("--follow reads one growing file; a growing sequence of files is not supported yet")
    first = open_archive(paths[0], dataset, live)
    if len(paths) == 1:
        return first
    if first.select is not None:
        raise DataError(f"{first.path}: a sequence of NXtomo files (image_key) is not supported; reconstruct "
                        "each file on its own")
    parts = [first]
    for p in paths[1:]:
        a = open_archive(p, first.dataset)
        if a.select is not None or (a.dtype, a.frame_shape, a.lead_shape[1:]) != (first.dtype, first.frame_shape,
                                                                                 first.lead_shape[1:]):
            raise DataError(f"sequence: {a.path}:{a.dataset} holds {a.dtype} {' x '.join(map(str, a.shape))} "
                            f"frames, {first.path} {first.dtype} {' x '.join(map(str, first.shape))}; a sequence "
                            "needs frames of one shape and dtype")
        parts.append(a)
    files = [a.path for a in parts]
    if len(set(files)) < len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise DataError(f"sequence: {twice} is given twice")
    rows = [a.shape[0] for a in parts]
    # chunk-aligned only if every file but the last ends on a chunk boundary of the same chunking
    aligned = all(a.chunk_rows == first.chunk_rows for a in parts) and all(r % first.chunk_rows == 0
                                                                           for r in rows[:-1])
    flats = next(((a.path, a.flats) for a in parts if a.flats is not None), (None, None))
    darks = next(((a.path, a.darks) for a in parts if a.darks is not None), (None, None))
    total = sum(rows)
    return replace(first, shape=(total, *first.shape[1:]), lead_shape=(total, *first.lead_shape[1:]),
                   chunk_rows=first.chunk_rows if aligned else 1,
                   flats=flats[1], flats_file=flats[0] if flats[0] != first.path else None,
                   darks=darks[1], darks_file=darks[0] if darks[0] != first.path else None,
                   parts=tuple((a.path, r) for a, r in zip(parts, rows, strict=True)))


def _mean_reference(f: h5py.File, ref: tuple[str, list[int] | None] | None, block: int = 16) -> np.ndarray | None:
    """Mean (H, W) float64 of a reference stack, read a few frames at a time (bounded memory)."""
    if ref is None:
        return None
    ds = f[ref[0]]
    rows = ref[1]
    if rows is None:
        stack = ds[()] if ds.ndim == 2 else None
        if stack is not None:
            return stack.astype(np.float64)
        flat_view = int(np.prod(ds.shape[:-2]))
        total = np.zeros(ds.shape[-2:], np.float64)
        for start in range(0, ds.shape[0], max(1, block)):
            part = ds[start:start + block].astype(np.float64)
            total += part.reshape(-1, *ds.shape[-2:]).sum(axis=0)
        return total / flat_view
    total = np.zeros(ds.shape[-2:], np.float64)
    for start in range(0, len(rows), block):
        total += ds[rows[start:start + block]].astype(np.float64).sum(axis=0)
    return total / len(rows)


def _median_reference(f: h5py.File, ref: tuple[str, list[int] | None] | None, band: int = 32) -> np.ndarray | None:
    """Median (H, W) float64 over a reference stack, a band of ``band`` pixel rows at a time (bounded memory;
    a zinger or a frame with the beam off in a few flats does not move it)."""
    if ref is None:
        return None
    ds, rows = f[ref[0]], ref[1]
    if ds.ndim == 2:
        return ds[()].astype(np.float64)
    h, w = ds.shape[-2:]
    out = np.empty((h, w), np.float64)
    for y in range(0, h, band):
        part = ds[..., y:y + band, :] if rows is None else ds[rows, y:y + band, :]
        out[y:y + band] = np.median(np.asarray(part, np.float64).reshape(-1, part.shape[-2], w), axis=0)
    return out


def _reference_stack(f: h5py.File, ref: tuple[str, list[int] | None]) -> np.ndarray:
    """Every frame of a reference stack, float32 (n, H, W) (n x H x W x 4 bytes; ``--flats-reduction pca``)."""
    ds, rows = f[ref[0]], ref[1]
    stack = ds[()] if rows is None else ds[rows]
    return np.asarray(stack, np.float32).reshape(-1, *ds.shape[-2:])


#: ``--flats-reduction``: "mean" and "median" reduce the flats (and the darks) to one frame each; "pca" keeps
#: every flat for a flat per frame from eigen-flats (:class:`~phasegan_hpc.physics.DynamicFlatfieldCorrector`;
#: the darks by their mean).
REDUCTIONS = ("mean", "median", "pca")
_FRAME_REDUCERS = {"mean": _mean_reference, "median": _median_reference, "pca": _mean_reference}
#: ``--eigenflats`` by default: min(this, flats - 1) (the paper's flat-field model has 15 components).
DEFAULT_EIGENFLATS = 15


def default_eigenflats(n_flats: int) -> int:
    """The eigen-flats used by default for ``n_flats`` flats: min(:data:`DEFAULT_EIGENFLATS`, n - 1)."""
    return max(1, min(DEFAULT_EIGENFLATS, n_flats - 1))


def fit_binning(frame_shape: tuple[int, int]) -> int:
    """The block side of the dynamic flat-field fit: frames downsampled to 64 to 127 pixels on their short side
    (``bench flatfield``: at 64 x 64 px the fit on every pixel beats 2 x 2 blocks; the fit's cost grows with its
    pixels)."""
    return max(1, min(frame_shape) // 64)


def load_mask(spec: tuple[Path, str | None], archive: Archive) -> np.ndarray:
    """``--mask FILE[:DATASET]`` (non-zero: a bad pixel or a module gap; DATASET default: the file's only 2-D
    dataset) as a (H, W) bool array over the frames read (the region of interest's, if set).

    Raises:
        DataError: a missing file or dataset, another frame shape, or a mask of every pixel.
    """
    file, dataset = spec
    with _open(file) as g:
        if dataset is None:
            planes = [k for k, d in _datasets(g).items() if d.ndim == 2]
            if len(planes) != 1:
                raise DataError(f"--mask {file}: name the dataset (FILE:DATASET); 2-D datasets: "
                                f"{_describe({k: g[k] for k in planes})}")
            dataset = planes[0]
        ds = g.get(dataset)
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
            raise DataError(f"--mask {file}: {dataset!r} is not a 2-D dataset")
        if tuple(ds.shape) != archive.stored_frame_shape:
            raise DataError(f"--mask {file}:{dataset} is {ds.shape[0]} x {ds.shape[1]} but the frames are "
                            f"{archive.stored_frame_shape[0]} x {archive.stored_frame_shape[1]}")
        mask = np.ascontiguousarray(archive.crop(np.asarray(ds[()]) != 0))
    if mask.all():
        raise DataError(f"--mask {file}:{dataset} masks every pixel of the frames read")
    return mask


def parse_reference(text: str | None, what: str) -> tuple[Path, str | None] | None:
    """``--flats FILE[:DATASET]`` / ``--darks FILE[:DATASET]`` -> (file, dataset or None)."""
    if text is None:
        return None
    file, sep, dataset = text.partition(":")
    if not file:
        raise DataError(f"--{what} must be FILE[:DATASET], not {text!r}")
    return Path(file).expanduser().resolve(), (dataset or None) if sep else None


def _reference_frame(f: h5py.File, ref: tuple[str, list[int] | None] | None, other: Path | None,
                     reduce: Callable[..., np.ndarray | None]) -> np.ndarray | None:
    """The reduced reference frame: from the archive ``f``, or from the file ``other`` (opened read-only)."""
    if other is None:
        return reduce(f, ref)
    with _open(other) as g:
        return reduce(g, ref)


def _cropped(archive: Archive, frame: np.ndarray | None) -> np.ndarray | None:
    return None if frame is None else np.ascontiguousarray(archive.crop(frame))


class FrameReader:
    """Reads output frames [start, stop) of an archive as flat-/dark-corrected float32 (n, H, W).

    Opens the archive itself (read-only), so each worker process has its own handle. ``threads`` chunk rows
    are decoded at once; ``reader`` is one of :data:`READERS`. Reads are aligned to
    the dataset's chunks along axis 0, so every chunk is decompressed once, and decoded in Python
    (:mod:`phasegan_hpc.data.chunks`): a corrupt chunk gives NaN frames, not a crash.
    """

    def __init__(self, archive: Archive, threads: int = 1, reader: str = "chunks") -> None:
        self.archive = archive
        self._live = open_live(archive.path) if archive.live else None
        self.file = self._live.file if self._live else _open(archive.path)
        self.ds = self._live.dataset(archive.dataset) if self._live else self.file[archive.dataset]
        self.rows = ChunkRows(self.ds, threads=threads, force_h5py=reader == "h5py")
        # a sequence: every file's reader, and where each file's rows begin along the first axis
        self._files = [self.file]
        self._part_rows = [self.rows]
        self._part_start = np.zeros(1, np.int64)
        if archive.parts is not None:
            for path, _ in archive.parts[1:]:
                f = _open(path)
                self._files.append(f)
                self._part_rows.append(ChunkRows(f[archive.dataset], threads=threads, force_h5py=reader == "h5py"))
            self._part_start = np.cumsum([0] + [n for _, n in archive.parts[:-1]]).astype(np.int64)
        reduce = _FRAME_REDUCERS[archive.reduction]
        self.flat = _cropped(archive, _reference_frame(self.file, archive.flats, archive.flats_file, reduce))
        self.dark = _cropped(archive, _reference_frame(self.file, archive.darks, archive.darks_file, reduce))
        if self.flat is not None and self.dark is None:
            self.dark = np.zeros_like(self.flat)
        # float32 affine form of the correction, precomputed once (the hot loop of every worker). Pixels whose
        # flat is not above the dark carry no signal: NaN, so that every frame counts them (nonfinite_pixels).
        self._corrector: FlatfieldCorrector | DynamicFlatfieldCorrector
        if archive.reduction == "pca":
            self._corrector = self._dynamic_corrector()
        else:
            self._corrector = FlatfieldCorrector(self.flat, self.dark, dead_value=np.nan)
        #: output frame indices whose raw data could not be read (see :meth:`raw_rows`)
        self.unreadable: list[int] = []
        #: the fraction of pixels whose flat is not above the dark (0 without flats)
        self.dead_fraction = self._corrector.dead_fraction

    def _dynamic_corrector(self) -> DynamicFlatfieldCorrector:
        """``--flats-reduction pca``: the eigen-flats of every flat (cropped to the region read).

        Raises:
            DataError: fewer than 2 flats, or more eigen-flats asked for than they give.
        """
        a = self.archive
        if a.flats is None:
            raise DataError(f"--flats-reduction pca: {a.path} has no flats (give them with --flats FILE[:DATASET])")
        if a.flats_file is None:
            stack = _reference_stack(self.file, a.flats)
        else:
            with _open(a.flats_file) as g:
                stack = _reference_stack(g, a.flats)
        stack = np.ascontiguousarray(a.crop(stack))
        n = len(stack)
        k = a.eigenflats if a.eigenflats is not None else default_eigenflats(n)
        if n < 2 or k > n - 1:
            raise DataError(f"--flats-reduction pca: {n} flat(s) give at most {max(0, n - 1)} eigen-flats"
                            + (f", not --eigenflats {k}" if a.eigenflats is not None else "; it needs at least 2"))
        return DynamicFlatfieldCorrector(stack, self.dark, n_components=k, binning=fit_binning(a.frame_shape),
                                         dead_value=np.nan)

    def close(self) -> None:
        for rows, f in zip(self._part_rows, self._files, strict=True):
            rows.close()
            if self._live is not None and f is self._live.file:
                self._live.release()
            else:
                f.close()

    def _by_part(self, rows: np.ndarray) -> Iterator[tuple[int, ChunkRows, np.ndarray]]:
        """Sorted dataset rows (of the whole sequence) -> (file index, its reader, its own rows), in order."""
        part = np.searchsorted(self._part_start, rows, side="right") - 1
        for i in np.unique(part):
            yield int(i), self._part_rows[i], rows[part == i] - self._part_start[i]

    def correct(self, raw: ArrayT) -> ArrayT:
        """(I - dark) / (flat - dark) (DESIGN.md §3), I - dark without flats, I without either; float32, numpy
        or a torch tensor on its device (raw integer frames corrected on a GPU: ``--correct-on``)."""
        return self._corrector(raw)

    def dataset_rows(self, r0: int, r1: int) -> np.ndarray:
        """The frames dataset's rows holding rows [r0, r1) of the output's leading axis (int64); of a live
        archive, the dataset is refreshed first (its shape, and where its chunks are: a shape seen before the
        writer stored a chunk would read that chunk as never written)."""
        a = self.archive
        if a.live:
            self.ds.refresh()
        return np.arange(r0, r1, dtype=np.int64) if a.select is None else a.select[r0:r1].astype(np.int64)

    def raw_rows(self, r0: int, r1: int, sink: Callable[[bytes], object] | None = None) -> np.ndarray:
        """Rows [r0, r1) of the leading axis of the output, as raw frames (n, H, W).

        Chunks are decoded in Python (:class:`~phasegan_hpc.data.chunks.ChunkRows`): the rows of a chunk that
        does not read or decode come back as NaN frames (float32), counted by the worker as non-finite and
        listed in the summary, and their output indices are added to :attr:`unreadable`. The run goes on.
        ``sink`` receives the rows' stored bytes (see :meth:`input_checksum`)."""
        a = self.archive
        note(f"reading rows {r0}-{r1 - 1} of {a.path}:{a.dataset}")  # named if a C decoder crashes (h5py path)
        pieces = [rows.read(local, sink) for _, rows, local in self._by_part(self.dataset_rows(r0, r1))]
        block, bad = (pieces[0] if len(pieces) == 1 else
                      (np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])))
        note("")
        if bad.any():
            block = block.astype(np.float32)
            block[bad] = np.nan
            per_row = a.frames_per_row
            for i in np.flatnonzero(bad):
                self.unreadable.extend(range((r0 + int(i)) * per_row, (r0 + int(i) + 1) * per_row))
        return np.ascontiguousarray(a.crop(block.reshape(-1, *a.stored_frame_shape)))

    def spans(self, start: int, stop: int, min_frames: int) -> Iterator[tuple[int, int]]:
        """Row ranges [r0, r1) of the output's leading axis covering frames [start, stop): whole chunk rows of
        the dataset, at least ``min_frames`` frames each (the last one smaller). ``start`` must be a multiple of
        :attr:`Archive.frames_per_row` (shards are whole rows)."""
        a = self.archive
        per_row = a.frames_per_row
        unit = a.chunk_rows
        rows_per_block = unit * max(1, -(-min_frames // (unit * per_row)))
        r, r_stop = start // per_row, -(-stop // per_row)
        while r < r_stop:
            # Align block ends to chunk boundaries of the dataset (rows counted from 0).
            r1 = min(r_stop, (r // unit) * unit + rows_per_block)
            yield r, r1
            r = r1

    def blocks(self, start: int, stop: int, min_frames: int, sink: Callable[[bytes], object] | None = None,
               corrected: bool = True) -> Iterator[np.ndarray]:
        """Frames [start, stop), a block per :meth:`spans`: corrected (float32), or raw (the archive's dtype;
        float32 where a chunk was unreadable) for :meth:`correct` elsewhere; ``sink`` receives the stored bytes
        read (see :meth:`input_checksum`)."""
        for r0, r1 in self.spans(start, stop, min_frames):
            raw = self.raw_rows(r0, r1, sink)
            yield self.correct(raw) if corrected else raw

    def input_checksum(self, start: int, stop: int, min_frames: int) -> str:
        """The :class:`~phasegan_hpc.data.checksum.Checksum` of what :meth:`blocks` reads for frames
        [start, stop): the stored bytes of the chunks (with their offsets and filter masks), read but not
        decoded, so a rewritten archive is recognised at the cost of reading it, not of decompressing it. Equal
        to the checksum of the bytes ``blocks`` feeds its sink."""
        h = Checksum()
        for r0, r1 in self.spans(start, stop, min_frames):
            for _, rows, local in self._by_part(self.dataset_rows(r0, r1)):
                rows.digest(local, h.update)
        return h.hexdigest()

    @property
    def references_sha256(self) -> str:
        """sha256 of the flat and dark used for the correction, and with pca of the eigen-flats and the fit's
        binning ("" without flats or darks)."""
        h = hashlib.sha256()
        for ref in (self.flat, self.dark):
            h.update(b"-" if ref is None else np.ascontiguousarray(ref, np.float64).tobytes())
        if isinstance(self._corrector, DynamicFlatfieldCorrector):
            h.update(f"pca:{self._corrector.binning}:".encode())
            h.update(np.ascontiguousarray(self._corrector.components).tobytes())
        return h.hexdigest() if self.flat is not None or self.dark is not None else ""
