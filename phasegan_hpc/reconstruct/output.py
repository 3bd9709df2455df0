"""The reconstruction's output (DESIGN.md §4): shard directory, manifest, and the assembled volume.

    run42_phasegan.h5            /phase, /attenuation (leading shape of the frames, H, W), /consistency,
                                 /fresnel_residual, /nonfinite_pixels, /negative_pixels (leading shape):
                                 HDF5 virtual datasets over the shards,
                                 with units, physics, source, model sha256, version and config as attributes;
                                 /entry (NeXus) and /exchange (DXchange): links to them (``nexus``)
    run42_phasegan.shards/RUN/   one directory per run (RUN: the plan's sha256, 12 digits, and -N for a
                                 second run of the same plan): plan.json (the plan and what it was made
                                 from), shard-NNNNNN.h5 (finished and verifiable), .shard-NNNNNN.h5.partial
                                 (being written; never mistaken for finished)

The virtual datasets name their shards by relative path, so the output file and its shard directory move
together. The output file itself is written under a temporary name and renamed: it exists only when
every shard is finished and verified. ``--overwrite`` is transactional: the new run writes its own RUN
directory beside the published one, the output file is replaced by one atomic rename, and only then are
the previous run's files removed (:func:`retire`): only the files a run wrote (plan.json, its shards, their
partials), never another file. A failing new run leaves the previous result as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from phasegan_hpc import __version__
from phasegan_hpc.data.archive import Archive
from phasegan_hpc.data.checksum import ALGORITHM as CHECKSUM_ALGORITHM
from phasegan_hpc.data.checksum import ContentHash
from phasegan_hpc.data.h5io import atomic_h5
from phasegan_hpc.errors import DataError
from phasegan_hpc.files import atomic_write_text, check_writable
from phasegan_hpc.reconstruct.methods import Layout
from phasegan_hpc.reconstruct.nexus import write_views
from phasegan_hpc.reconstruct.plan import Shard
from phasegan_hpc.reconstruct.worker import COUNT_DATASETS, SCALAR_DATASETS

MANIFEST = "plan.json"
MANIFEST_VERSION = 2  # 2: the identity leaves out the archive's length; shards record what they read


def default_output(archive: Path, method: str, sequence: bool = False) -> Path:
    """``<stem>_phasegan.h5`` (``_paganin`` for the baseline) next to the archive; for a sequence whose first
    file is ``RUN-S00000.h5``, ``RUN_phasegan.h5`` (the sequence number dropped)."""
    stem = archive.stem
    if sequence:
        stem = re.sub(r"[-_]?S?\d+$", "", stem) or stem
    return archive.with_name(f"{stem}_{method}.h5")


class OutputLock:
    """An exclusive lock on an output for the length of a run (``.NAME.lock`` beside it, ``fcntl.flock``):
    a second run on the same output is refused with who holds it, instead of two runs writing one shard
    directory. The file records ``HOST:PID since TIME``; the kernel releases the lock when its process ends
    however it ends (kill -9 included), so a lock is never stale on a local or NFSv4 file system, and the file
    is removed on release. Without the output's directory (made later) there is nothing to lock yet.

    Raises (on entry):
        DataError: another run holds the lock, or the lock's name is not a plain file (a planted link).
    """

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(f".{output.name}.lock")
        self.output = output
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        if not self.path.parent.is_dir():
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise DataError(f"cannot lock {self.output}: {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another run"
                os.close(fd)
                raise DataError(f"{self.output} is in use by {holder}; wait for it or choose another --output") \
                    from None
            try:  # the file may have been removed by its last holder between our open and our lock
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()}:{os.getpid()} since {since}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: the next run creates a fresh one
            os.close(self.fd)
            self.fd = None


def shards_dir_of(output: Path) -> Path:
    return output.with_name(f"{output.stem}.shards")


def check_output(output: Path, archive: Path | list[Path], overwrite: bool) -> None:
    """Refuse an output that would replace the archive (or a file of a sequence), a finished output (without
    ``overwrite``), a file at the output that is not a reconstruction (even with ``overwrite``), or a directory
    that cannot be written. Changes nothing."""
    for a in archive if isinstance(archive, list) else [archive]:
        if output.resolve() == a.resolve() or shards_dir_of(output).resolve() == a.resolve():
            raise DataError(f"output {output} is the archive itself; choose another --output")
    if output.suffix.lower() not in (".h5", ".hdf5", ".nxs"):
        raise DataError(f"output {output} must end in .h5")
    check_writable(output, "output")  # its directory is made when missing
    if os.path.lexists(output):
        if not is_reconstruction(output):
            raise DataError(f"output {output} is not a phasegan-hpc reconstruction: --overwrite replaces only "
                            "those; choose another --output")
        if not overwrite and is_complete(output):  # a growing one (--follow, complete = false) is resumed
            raise DataError(f"output {output} exists; add --overwrite to replace it")


def is_reconstruction(output: Path) -> bool:
    """Whether ``output`` is a readable reconstruction of this software (over its shards, or consolidated);
    False for a link."""
    if output.is_symlink() or not output.is_file():
        return False
    try:
        with h5py.File(output, "r") as f:
            return f.attrs.get("software") == "phasegan-hpc"
    except (OSError, ValueError):
        return False


def is_complete(output: Path) -> bool:
    """Whether the reconstruction at ``output`` is finished (not the growing output of a ``--follow`` that
    was interrupted: ``complete = false``)."""
    try:
        with h5py.File(output, "r") as f:
            return bool(f.attrs.get("complete", True))
    except (OSError, ValueError):
        return False


def published_run(output: Path) -> Path | None:
    """The run directory the reconstruction at ``output`` reads its shards from; None when ``output`` is not
    a readable reconstruction of this software (or is a link)."""
    if output.is_symlink() or not output.is_file():
        return None
    try:
        with h5py.File(output, "r") as f:
            if f.attrs.get("software") != "phasegan-hpc" or "shards" not in f.attrs:
                return None
            return (output.parent / str(f.attrs["shards"])).resolve()
    except (OSError, ValueError):
        return None


def _read_manifest(run_dir: Path) -> dict[str, Any] | None:
    mf = run_dir / MANIFEST
    if mf.is_symlink() or not mf.is_file():
        return None
    try:
        have = json.loads(mf.read_text())
    except (OSError, ValueError):
        return None
    return have if isinstance(have, dict) else None


def manifest(archive: Archive, job_identity: dict[str, Any], plan: list[Shard]) -> dict[str, Any]:
    """What a plan was made from (:func:`identity`) and its shards.

    The archive's length is not part of the identity: frames appended to a growing archive are new shards of
    the same plan. Whether the frames already reconstructed are unchanged is not judged by the file's size or
    time but by what each shard read (its ``input_checksum``, checked on resume by :func:`verified`)."""
    return {
        "version": MANIFEST_VERSION,
        "archive": str(archive.path), "dataset": archive.dataset, "layout": archive.layout, "dtype": archive.dtype,
        "frame_shape": list(archive.frame_shape), "lead_tail": list(archive.lead_shape[1:]),
        "chunk_rows": archive.chunk_rows,
        **({"sequence": [str(p) for p, _ in archive.parts]} if archive.parts else {}),
        **job_identity,
        "shards": [s.as_dict() for s in plan],
    }


def manifest_text(plan_manifest: dict[str, Any]) -> str:
    """The text of ``plan.json`` for a :func:`manifest` (O(shards): about 100 bytes a shard)."""
    return json.dumps(plan_manifest, indent=1) + "\n"


def identity(plan_manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without its list of shards: what a rerun must share to continue a run."""
    return {k: v for k, v in plan_manifest.items() if k != "shards"}


def prepare_shards_dir(output: Path, wanted: dict[str, Any], overwrite: bool) -> tuple[Path, bool]:
    """The run directory for the plan ``wanted``: an unfinished one of the same plan to resume, else a new
    one. Returns (directory, resumed). Nothing is deleted here (see :func:`retire`).

    Raises:
        DataError: the shard directory holds something a reconstruction did not write; or, without
            ``overwrite``, an unfinished run of another plan (other archive, model or settings).
    """
    root = shards_dir_of(output)
    if os.path.lexists(root) and (root.is_symlink() or not root.is_dir()):
        raise DataError(f"{root} exists and is not a reconstruction's shard directory; remove it or choose "
                        "another --output")
    entries = sorted(root.iterdir()) if root.is_dir() else []
    runs = {e: _read_manifest(e) for e in entries if e.is_dir() and not e.is_symlink()}
    foreign = [e for e in entries if runs.get(e) is None]
    if foreign:
        raise DataError(f"{root} holds {foreign[0].name}, which no reconstruction wrote: it is not a "
                        "reconstruction's shard directory; remove it or choose another --output")
    published = published_run(output) if is_complete(output) else None  # a growing output's run continues
    unfinished = {e: m for e, m in runs.items() if e.resolve() != published}
    for e, m in unfinished.items():
        if identity(m) == identity(wanted):
            if m.get("shards") != wanted["shards"]:  # the archive grew (or shrank): the plan's shards changed
                _record_shards(e, m, wanted)
            return e, True
    if unfinished and not overwrite:
        have = next(iter(unfinished.values()))
        changed = sorted(k for k in identity(wanted) if have.get(k) != wanted[k])
        raise DataError(f"{root} holds an unfinished reconstruction with other settings "
                        f"({', '.join(changed) or 'unreadable plan'}); add --overwrite to start over")
    base = plan_id(wanted)[:12]
    name, n = base, 1
    while os.path.lexists(root / name):
        n += 1
        name = f"{base}-{n}"
    d = root / name
    d.mkdir(parents=True)
    atomic_write_text(d / MANIFEST, manifest_text(wanted))
    return d, False


def record_plan(run_dir: Path, plan: list[Shard]) -> None:
    """Rewrite the run's plan.json for ``plan`` (the shards of an archive that grew, ``--follow``)."""
    have = _read_manifest(run_dir)
    if have is not None:
        _record_shards(run_dir, have, {**have, "shards": [s.as_dict() for s in plan]})


def _record_shards(run_dir: Path, have: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Rewrite a resumed run's plan.json for the current plan, still naming every shard it listed before (its
    files are this run's to delete, :func:`retire`)."""
    by_index = {int(s["index"]): s for s in have.get("shards", []) if isinstance(s, dict) and "index" in s}
    by_index.update({s["index"]: s for s in wanted["shards"]})
    atomic_write_text(run_dir / MANIFEST, manifest_text({**wanted, "shards": [by_index[i] for i in sorted(by_index)]}))


def retire(output: Path, keep: Path | None) -> list[Path]:
    """After ``output`` was published over ``keep``: remove the files other runs of this shard directory
    wrote (their plan.json, the shards their plan names, partials of those), and each such run directory once
    it is empty (None: every run's, after ``consolidate``). A file a run did not write stays, with its
    directory. Returns the directories removed."""
    root = shards_dir_of(output)
    removed = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        have = _read_manifest(d) if d.is_dir() and not d.is_symlink() else None
        if have is None or (keep is not None and d.resolve() == keep.resolve()):
            continue
        names = [f"shard-{int(sh['index']):06d}.h5" for sh in have.get("shards", []) if isinstance(sh, dict)]
        for name in names:
            for p in (d / name, d / f".{name}.partial"):
                if p.is_file() or p.is_symlink():
                    p.unlink()
        (d / MANIFEST).unlink()
        try:
            d.rmdir()
            removed.append(d)
        except OSError:  # something else is in it: not ours to delete
            pass
    return removed


def retire_empty(run_dir: Path) -> None:
    """Remove a run directory this run has just made (only its plan.json in it), e.g. when a check fails
    after it was made; the shard directory goes too if nothing else is in it."""
    (run_dir / MANIFEST).unlink(missing_ok=True)
    for d in (run_dir, run_dir.parent):
        try:
            d.rmdir()
        except OSError:
            return


def check_space(directory: Path, need_bytes: int, what: str) -> None:
    """Refuse when the file system of ``directory`` (or its nearest existing ancestor) has less than
    ``need_bytes`` free.

    Raises:
        DataError: naming the need and what is free.
    """
    d = directory
    while not d.exists() and d != d.parent:
        d = d.parent
    free = shutil.disk_usage(d).free
    if free < need_bytes:
        raise DataError(f"{what} needs up to {need_bytes / 2**30:.2f} GiB and {d} has {free / 2**30:.2f} GiB "
                        "free; free space or choose another --output")


def plan_id(wanted: dict[str, Any]) -> str:
    """The identity of a plan: sha256 of its :func:`identity` (archive, method, model, settings, shard size)."""
    return hashlib.sha256(json.dumps(identity(wanted), sort_keys=True).encode()).hexdigest()


#: Rows read at a time when a shard's checksum is verified (bounded memory whatever the shard's size).
VERIFY_ROWS = 256


#: Why a shard is not reused when the archive's rows it was made from are no longer what it read.
ARCHIVE_CHANGED = "the archive's frames it was made from have changed"


def verify_shard(path: Path, shard: Shard, plan: str, inputs: Callable[[Shard], str] | None = None,
                 written: str | None = None) -> str | None:
    """Why the file at ``path`` is not ``shard`` of the plan ``plan``, or None when it is: it must open, carry
    this plan's identity, index, start, stop and frame count and a record of what it read, hold every dataset
    with the shard's rows, and its content must match the checksum its writer recorded last
    (``data.checksum.ContentHash``). A copy of another shard, a shard of another plan, a truncated or garbled file
    and a modified value all fail. With ``inputs`` (``inputs(shard)``: ``FrameReader.input_checksum`` of the
    shard's frames now, asked only of a shard that passes all else), one that read other bytes fails with
    :data:`ARCHIVE_CHANGED`. ``written``: the checksum this run's worker returned for the shard it has just
    written (hashed as it wrote); the file must carry it, and its content is not read again."""
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            want = {"plan_sha256": plan, "shard": shard.index, "start": shard.start, "stop": shard.stop,
                    "frames": shard.frames}
            for key, value in want.items():
                if key not in a:
                    return f"no {key} attribute"
                if (a[key].decode() if isinstance(a[key], bytes) else a[key]) != value:
                    return f"{key} is {a[key]}, not {value}"
            recorded = a.get("input_checksum")
            if not isinstance(recorded, str) or not recorded.startswith(f"{CHECKSUM_ALGORITHM}:"):
                return f"no {CHECKSUM_ALGORITHM} record of what it read (input_checksum)"
            rows = shard.row_stop - shard.row_start
            content = ContentHash()
            for name in sorted(f):
                ds = f[name]
                if not isinstance(ds, h5py.Dataset) or ds.shape[:1] != (rows,):
                    return f"{name} is not a dataset of {rows} rows"
                for r in range(0, rows, VERIFY_ROWS) if written is None else ():
                    content.update(name, ds[r:r + VERIFY_ROWS])
            if set(f) < set(SCALAR_DATASETS):
                return "datasets are missing"
            if (content.hexdigest() if written is None else written) != a.get("checksum"):
                return "its content does not match its checksum"
    except (OSError, KeyError, ValueError) as exc:
        return f"unreadable ({type(exc).__name__})"
    if inputs is not None and recorded != inputs(shard):
        return ARCHIVE_CHANGED
    return None


def verified(shards_dir: Path, plan: list[Shard], plan_sha256: str,
             inputs: Callable[[Shard], str] | None = None,
             written: dict[int, str] | None = None) -> tuple[set[int], dict[int, str]]:
    """(indices of the shards whose file verifies, {index: why not} for files that exist but do not).
    ``inputs``: see :func:`verify_shard`; ``written``: {shard index: checksum} of the shards this run wrote."""
    good: set[int] = set()
    bad: dict[int, str] = {}
    for s in plan:
        path = shards_dir / s.name
        if not os.path.lexists(path):
            continue
        why = (verify_shard(path, s, plan_sha256, inputs, (written or {}).get(s.index))
               if path.is_file() and not path.is_symlink() else "not a file")
        if why is None:
            good.add(s.index)
        else:
            bad[s.index] = why
    return good, bad


def assemble(output: Path, shards_dir: Path, archive: Archive, plan: list[Shard], layout: Layout,
             attrs: dict[str, Any], frames_dtype: str = "float32", mask: np.ndarray | None = None,
             complete: bool = True) -> Path:
    """Write the output file: virtual datasets over all shards plus attributes (atomic).

    Args:
        output: the final path.
        shards_dir: the finished shards (all of ``plan``).
        archive: the source (for shapes and provenance).
        layout: the method's frame datasets and their shape.
        attrs: extra root attributes (model sha256, method, config TOML, physics...).
        frames_dtype: of the method's frame datasets in the shards (``--output-dtype``).
        mask: (H, W) bool of the pixels inpainted before retrieval (``--mask``), written as ``/mask``.
        complete: ``plan`` is every shard of the archive, all verified; False: the finished shards so far of a
            growing archive (``--follow``), the other frames reading as fill values (NaN, -1 for counts).
    """
    lead, tail = archive.lead_shape, archive.lead_shape[1:]
    rel = os.path.relpath(shards_dir, output.parent)
    with atomic_h5(output) as f:
        for name, (units, desc) in {**layout.outputs, **SCALAR_DATASETS}.items():
            spatial = layout.shape if name in layout.outputs else ()
            dtype = "int64" if name in COUNT_DATASETS else frames_dtype if spatial else "float32"
            volume = h5py.VirtualLayout(shape=(*lead, *spatial), dtype=dtype)
            for s in plan:
                rows = s.row_stop - s.row_start
                src = h5py.VirtualSource(f"{rel}/{s.name}", name, shape=(rows, *tail, *spatial))
                volume[s.row_start:s.row_stop] = src
            ds = f.create_virtual_dataset(name, volume, fillvalue=-1 if dtype == "int64" else np.nan)
            ds.attrs["units"], ds.attrs["description"] = units, desc
        if mask is not None:
            m = f.create_dataset("mask", data=mask.astype(np.uint8))
            m.attrs["description"] = "1: a pixel inpainted from its nearest unmasked one before retrieval (--mask)"
        root = {
            "source_file": str(archive.path), "source_dataset": archive.dataset, "source_layout": archive.layout,
            **({"source_files": json.dumps([[str(p), n] for p, n in archive.parts])} if archive.parts else {}),
            "software": "phasegan-hpc", "software_version": __version__, "shards": str(rel),
            "complete": complete,  # every shard finished and verified (False: a --follow's output as it grows)
            **{k: v for k, v in attrs.items() if v is not None},
        }
        f.attrs.update(root)
        write_views(f, archive, layout, list(SCALAR_DATASETS), root)
    return output


def open_reconstruction(output: str | Path) -> h5py.File:
    """Open a reconstruction read-only, refusing one whose shard files are missing: HDF5 reads a virtual
    dataset with a missing source as its fill value (NaN for every frame), without a word.

    Raises:
        DataError: not readable, marked incomplete (``complete = False``), or a shard file missing (moved without
            its ``.shards`` directory).
    """
    output = Path(output)
    try:
        f = h5py.File(output, "r")
    except (OSError, FileNotFoundError) as exc:
        raise DataError(f"cannot read {output} ({type(exc).__name__})") from None
    try:
        if not bool(f.attrs.get("complete", True)):  # outputs before this attribute were always complete
            raise DataError(f"{output} is an incomplete reconstruction (complete = false)")
        for ds in f.values():
            if isinstance(ds, h5py.Dataset) and ds.is_virtual:
                for source in {vs.file_name for vs in ds.virtual_sources()}:
                    if source != "." and not (output.parent / source).is_file():
                        raise DataError(f"{output}: shard file {source} is missing (an output moves with its "
                                        f"{shards_dir_of(output).name} directory)")
    except BaseException:
        f.close()
        raise
    return f


#: Frames of the per-frame datasets read at a time (:func:`per_frame_blocks`).
PER_FRAME_BLOCK = 1 << 20


def per_frame_blocks(output: Path, score: str = "consistency", frames: int = PER_FRAME_BLOCK) \
        -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The per-frame values of a finished output, flat, in blocks of whole rows of about ``frames`` frames:
    (index of the block's first frame, ``score``, nonfinite_pixels, negative_pixels, scored (bool)). Memory is
    bounded by the block whatever the archive's length (21 bytes a frame: 170 MB at 8 M frames read whole)."""
    with open_reconstruction(output) as f:
        lead = f[score].shape
        per_row = int(np.prod(lead[1:]))
        rows = max(1, frames // max(per_row, 1))
        for r in range(0, lead[0], rows):
            values = [f[name][r:r + rows].reshape(-1) for name in (score, "nonfinite_pixels", "negative_pixels")]
            scored = f["scored"][r:r + rows].reshape(-1) > 0 if "scored" in f else np.ones(len(values[0]), bool)
            yield r * per_row, *values, scored
