"""``phasegan-hpc consolidate``: a reconstruction rewritten as one self-contained file.

An output's volumes are HDF5 virtual datasets over its shard files: fast to publish, but the file must move
with its ``.shards`` directory, and a reader that opens it without them sees fill values (``open_reconstruction``
refuses that; other readers do not). Consolidating copies every virtual dataset's values into the file
(compressed and chunked as the shards were), keeps every attribute, group and link (the NeXus entry's hard
links point at the copies), checks the copy against the original's content checksum, and publishes it
atomically. In place, the shard files are removed only after the new file is in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py

from phasegan_hpc.data.checksum import ContentHash
from phasegan_hpc.data.h5io import atomic_h5, compression, frame_chunks
from phasegan_hpc.errors import DataError
from phasegan_hpc.files import check_writable
from phasegan_hpc.reconstruct.output import VERIFY_ROWS, open_reconstruction, retire, shards_dir_of


@dataclass
class Consolidated:
    """What :func:`consolidate` did."""

    output: Path
    datasets: int  # virtual datasets whose values were copied
    bytes: int  # size of the new file
    removed: list[Path]  # shard run directories removed (in place only)


def _copy_values(src: h5py.Dataset, dst_parent: h5py.Group, name: str, digest: ContentHash) -> h5py.Dataset:
    """A plain (chunked, compressed) copy of a virtual dataset's values and attributes, fed to ``digest``
    block by block (bounded memory)."""
    lead_tail = src.shape[1:-2] if src.ndim >= 3 else ()
    frame = src.shape[-2:] if src.ndim >= 3 else ()
    chunks = frame_chunks(src.shape[0], tuple(lead_tail), tuple(frame), src.dtype.itemsize) if src.ndim else None
    dst = dst_parent.create_dataset(name, shape=src.shape, dtype=src.dtype, chunks=chunks,
                                    fillvalue=src.fillvalue, **(compression() if src.size else {}))
    for r in range(0, src.shape[0], VERIFY_ROWS):
        block = src[r:r + VERIFY_ROWS]
        digest.update(name, block)
        dst[r:r + VERIFY_ROWS] = block
    dst.attrs.update(dict(src.attrs))
    return dst


def _content(f: h5py.File, names: list[str]) -> str:
    digest = ContentHash()
    for name in names:
        ds = f[name]
        for r in range(0, ds.shape[0], VERIFY_ROWS):
            digest.update(name, ds[r:r + VERIFY_ROWS])
    return digest.hexdigest()


def consolidate(output: Path, dest: Path | None = None) -> Consolidated:
    """Rewrite the reconstruction ``output`` as one self-contained file at ``dest`` (None: in place, after
    which its shard directory's files are removed).

    Raises:
        DataError: ``output`` is not a complete reconstruction with all its shards, is already self-contained,
            ``dest`` exists or is the output's shard directory, or the copy does not match the original.
    """
    output = Path(output)
    dest = Path(dest) if dest is not None else output
    in_place = dest.resolve() == output.resolve()
    if not in_place:
        if os.path.lexists(dest):
            raise DataError(f"{dest} exists; choose another --output")
        if dest.suffix.lower() not in (".h5", ".hdf5", ".nxs"):
            raise DataError(f"output {dest} must end in .h5")
        check_writable(dest, "output")
    with open_reconstruction(output) as src:
        if src.attrs.get("software") != "phasegan-hpc":
            raise DataError(f"{output} is not a phasegan-hpc reconstruction")
        virtual = [n for n, obj in src.items() if isinstance(obj, h5py.Dataset) and obj.is_virtual]
        if not virtual:
            raise DataError(f"{output} is already self-contained (no virtual datasets)")
        with atomic_h5(dest) as dst:
            digest, copies = ContentHash(), {}
            for name, obj in src.items():  # the root datasets first: the groups' links point at them
                if isinstance(obj, h5py.Dataset):
                    copies[obj.id] = (_copy_values(obj, dst, name, digest) if obj.is_virtual
                                      else _copy_plain(src, dst, name))
            _copy_groups(src, dst, copies)
            dst.attrs.update({k: v for k, v in src.attrs.items() if k != "shards"})
            dst.attrs["consolidated_from"] = str(src.attrs.get("shards", ""))
            dst.flush()
            if _content(dst, virtual) != digest.hexdigest():
                raise DataError(f"the consolidated copy of {output} does not read back as written; nothing "
                                "was replaced")
    removed = retire(output, keep=None) if in_place else []
    if in_place:
        try:
            shards_dir_of(output).rmdir()
        except OSError:  # something else is in it: not ours to delete
            pass
    return Consolidated(dest, len(virtual), dest.stat().st_size, removed)


def _copy_plain(src: h5py.File, dst: h5py.File, name: str) -> h5py.Dataset:
    src.copy(src[name], dst, name=name)
    return dst[name]


def _copy_groups(src: h5py.Group, dst: h5py.Group, copies: dict) -> None:
    """Copy the groups below ``src`` (their attributes, datasets, and hard links to datasets already copied,
    ``copies``: source dataset id -> its copy, kept as links)."""
    for name, obj in src.items():
        if isinstance(obj, h5py.Group):
            g = dst.create_group(name)
            g.attrs.update(dict(obj.attrs))
            _copy_groups(obj, g, copies)
        elif name not in dst:
            if obj.id in copies:
                dst[name] = copies[obj.id]
            else:
                src.copy(obj, dst, name=name)
                copies[obj.id] = dst[name]

