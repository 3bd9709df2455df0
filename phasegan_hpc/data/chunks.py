"""Rows of an HDF5 dataset read chunk by chunk: raw bytes from HDF5, decoded in Python (DESIGN.md §4); and
frames written as whole chunks compressed here (:class:`ChunkWriter`).

``h5py`` runs a dataset's filters (deflate, Blosc, bitshuffle...) in C inside the HDF5 library, where a
corrupt chunk can crash the process. Here each chunk's stored bytes are read with ``read_direct_chunk`` and
decoded by imagecodecs (a maintained binding of the same codec libraries, which reports bad input as an
error), so a chunk that fails to read or decode only marks its rows bad, and the rest are read. The stored
bytes are also what a shard's record of its input is made of (:meth:`ChunkRows.digest`): hashing them needs no
decoding.

What imagecodecs does not cover (a contiguous, virtual or external dataset, szip, n-bit, scale-offset,
Fletcher-32, or a plugin filter without a decoder here) is read through h5py instead (:attr:`ChunkRows.why_h5py`
says why), a row at a time when a read fails.

Nothing here imports torch or Ray; the file is only ever read.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import h5py
import imagecodecs
import numpy as np

# HDF5 filter identifiers (H5Zpublic.h and the registered plugin ids hdf5plugin uses).
DEFLATE, SHUFFLE, FLETCHER32 = 1, 2, 3
LZF, BLOSC, LZ4, BITSHUFFLE, ZSTD, BZIP2 = 32000, 32001, 32004, 32008, 32015, 307
#: bitshuffle's cd_values[4]: the compressor after the bit transpose.
BSHUF_NONE, BSHUF_LZ4, BSHUF_ZSTD = 0, 2, 3
_UINT32_BE = struct.Struct(">I")


@dataclass(frozen=True)
class Stored:
    """A chunk as HDF5 holds it: its filter mask (bit i set: filter i was skipped) and bytes, None for a chunk
    never written (its values are the fill value); ``readable`` is False when HDF5 could not return it."""

    mask: int
    data: bytes | None
    readable: bool = True


@dataclass(frozen=True)
class Filter:
    """One stage of a dataset's filter pipeline, as HDF5 stores it."""

    code: int
    values: tuple[int, ...]  # the filter's cd_values
    name: str


def pipeline(ds: h5py.Dataset) -> list[Filter]:
    """The filters of ``ds`` in the order they were applied when writing."""
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        out.append(Filter(int(code), tuple(int(v) for v in values), name.decode(errors="replace")))
    return out


def _unshuffle(data: bytes, itemsize: int) -> bytes:
    """HDF5's shuffle filter undone: byte planes back to interleaved elements (a trailing remainder of fewer
    bytes than one element was stored as is)."""
    a = np.frombuffer(data, np.uint8)
    n = len(a) // itemsize
    body = a[:n * itemsize].reshape(itemsize, n).T
    return body.tobytes() + a[n * itemsize:].tobytes()


def _bitshuffle(data: bytes, f: Filter, itemsize: int, nbytes: int) -> bytes:
    """The bitshuffle filter undone (kiyo-masui/bitshuffle, bshuf_h5filter.c). With a compressor: a 12-byte
    header (uncompressed size, uint64 big-endian; block size in bytes, uint32 big-endian), then per block a
    uint32 big-endian compressed size and the block; the last block holds the elements short of a whole block,
    rounded down to a multiple of 8; the remaining (< 8) elements follow uncompressed."""
    elem = f.values[2] if len(f.values) > 2 else itemsize
    comp = f.values[4] if len(f.values) > 4 else BSHUF_NONE
    if comp == BSHUF_NONE:
        block = f.values[3] if len(f.values) > 3 and f.values[3] else max(128, (8192 // elem) // 8 * 8)
        return imagecodecs.bitshuffle_decode(data, itemsize=elem, blocksize=block)
    if comp not in (BSHUF_LZ4, BSHUF_ZSTD):
        raise ValueError(f"bitshuffle compressor {comp} is unknown")
    if len(data) < 12:
        raise ValueError("bitshuffle header is truncated")
    total = int.from_bytes(data[:8], "big")
    block_elems = int.from_bytes(data[8:12], "big") // elem
    if total != nbytes or block_elems <= 0 or block_elems % 8:
        raise ValueError(f"bitshuffle header says {total} bytes in blocks of {block_elems} elements")
    size = total // elem
    if comp == BSHUF_LZ4 and size % 8 == 0:  # then the framing is HDF5's LZ4 filter's: one call decodes it all
        plain = imagecodecs.lz4h5_decode(data, out=total)
    else:
        plain = _blocks(data, comp, elem, size, block_elems)
    if len(plain) != total:  # a block that decoded short
        raise ValueError(f"bitshuffle blocks decode to {len(plain)} bytes, not {total}")
    # One blocked un-transpose over all blocks (bshuf_bitunshuffle: full blocks, the short last one, the
    # verbatim rest), the same as block by block.
    return imagecodecs.bitshuffle_decode(plain, itemsize=elem, blocksize=block_elems)


def _blocks(data: bytes, comp: int, elem: int, size: int, block_elems: int) -> bytearray:
    """The compressed blocks of a bitshuffle chunk decompressed one by one into one buffer (still
    bit-transposed), with the < 8 elements past the last block copied as stored."""
    sizes = [block_elems] * (size // block_elems)
    if size % block_elems >= 8:
        sizes.append(size % block_elems // 8 * 8)
    out = bytearray(size * elem)
    into, view, pos, at = memoryview(out), memoryview(data), 12, 0
    decode = imagecodecs.lz4_decode if comp == BSHUF_LZ4 else imagecodecs.zstd_decode
    unpack = _UINT32_BE.unpack_from
    try:
        for n in sizes:
            (length,) = unpack(data, pos)
            got = decode(view[pos + 4:pos + 4 + length], out=into[at:at + n * elem])
            if len(got) != n * elem:
                raise ValueError(f"a bitshuffle block decodes to {len(got)} bytes, not {n * elem}")
            pos, at = pos + 4 + length, at + n * elem
    except struct.error:
        raise ValueError("bitshuffle block is truncated") from None
    rest = view[pos:pos + (size * elem - at)]
    if len(rest) != size * elem - at:
        raise ValueError("bitshuffle chunk is truncated")
    into[at:] = rest
    return out


#: Decoders by filter id: (stored bytes, filter, element size, uncompressed chunk bytes) -> bytes.
DECODERS: dict[int, Callable[[bytes, Filter, int, int], bytes]] = {
    DEFLATE: lambda d, f, i, n: imagecodecs.zlib_decode(d, out=n),
    SHUFFLE: lambda d, f, i, n: _unshuffle(d, i),
    LZF: lambda d, f, i, n: imagecodecs.lzf_decode(d, out=n),
    BLOSC: lambda d, f, i, n: imagecodecs.blosc_decode(d, numthreads=1),
    LZ4: lambda d, f, i, n: imagecodecs.lz4h5_decode(d, out=n),
    BITSHUFFLE: _bitshuffle,
    ZSTD: lambda d, f, i, n: imagecodecs.zstd_decode(d),
    BZIP2: lambda d, f, i, n: imagecodecs.bz2_decode(d, out=n),
}


def _why_h5py(ds: h5py.Dataset, filters: list[Filter]) -> str | None:
    if ds.is_virtual:
        return "a virtual dataset"
    if ds.external:
        return "external storage"
    if ds.chunks is None:
        return "not chunked"
    for f in filters:
        if f.code not in DECODERS:
            return f"filter {f.name or '?'} ({f.code}) has no Python decoder here"
    return None


class ChunkRows:
    """Reads rows (indices along axis 0) of one dataset, decoding its chunks here (see the module docstring).

    Args:
        ds: an open dataset (any rank >= 1, any chunk shape, any real dtype).
        threads: chunk rows decoded at once (the codecs release the GIL); the stored bytes are always read,
            and fed to a sink, in order, by the calling thread (HDF5 calls are serialised anyway).
        force_h5py: read through h5py even where chunks could be decoded here (``--reader h5py``).
    """

    def __init__(self, ds: h5py.Dataset, threads: int = 1, force_h5py: bool = False) -> None:
        self.ds = ds
        self.filters = pipeline(ds)
        natural = _why_h5py(ds, self.filters)
        #: None when chunks are decoded here, else why h5py reads them
        self.why_h5py = natural or ("--reader h5py" if force_h5py else None)
        self._digest_values = natural is not None  # no stored chunks to digest: the values instead
        self.chunks: tuple[int, ...] = ds.chunks or ds.shape
        self._nbytes = int(np.prod(self.chunks)) * ds.dtype.itemsize
        grid = [range(0, s, c) for s, c in zip(ds.shape[1:], self.chunks[1:], strict=True)]
        self._inner = list(itertools.product(*grid))  # chunk offsets on the axes after the first
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode") if threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def read(self, rows: np.ndarray, sink: Callable[[bytes], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` (sorted dataset indices along axis 0) as (values of the dataset's dtype, shape
        (len(rows), *shape[1:]); bad: bool (len(rows),), rows that could not be read, whose values are 0).
        ``sink`` receives what :meth:`digest` of the same rows would feed it."""
        rows = np.asarray(rows, np.int64)
        if self.why_h5py is not None:
            values, bad = self._read_h5py(rows)
            if sink is not None and self._digest_values:
                sink(values.tobytes() + bad.tobytes())
            elif sink is not None:  # forced h5py: the same digest as the direct path (whichever reader resumes)
                self.digest(rows, sink)
            return values, bad
        out = np.empty((len(rows), *self.ds.shape[1:]), self.ds.dtype)
        bad = np.zeros(len(rows), bool)
        c0 = self.chunks[0]
        work = [(k * c0, at, [self._stored((k * c0, *inner), sink) for inner in self._inner])
                for k, at in _groups(rows // c0)]

        def place(item: tuple[int, np.ndarray, list[Stored]]) -> None:  # disjoint rows of out per item
            first, at, stored = item
            block = self._decode_rows(first, stored)
            if block is None:
                out[at] = 0
                bad[at] = True
                return
            sel = rows[at] - first
            if sel[-1] - sel[0] + 1 == len(sel):  # a run of rows (the usual case): one copy, no temporary
                out[at[0]:at[-1] + 1] = block[sel[0]:sel[-1] + 1]
            else:
                out[at] = block[sel]

        if self._pool is None or len(work) < 2:
            for item in work:
                place(item)
        else:
            for _ in self._pool.map(place, work):  # re-raises a worker's exception here
                pass
        return out, bad

    def digest(self, rows: np.ndarray, sink: Callable[[bytes], object]) -> None:
        """Feed ``sink`` (e.g. ``hashlib.sha256().update``) the stored bytes of every chunk holding ``rows``,
        each after its offset and filter mask, without decoding them. Without direct chunks: the rows' values
        and which rows failed."""
        rows = np.asarray(rows, np.int64)
        if self._digest_values:
            values, bad = self._read_h5py(rows)
            sink(values.tobytes() + bad.tobytes())
            return
        c0 = self.chunks[0]
        for k, _ in _groups(rows // c0):
            for inner in self._inner:
                self._stored((k * c0, *inner), sink)

    def _stored(self, offset: tuple[int, ...], sink: Callable[[bytes], object] | None) -> Stored:
        """The chunk at ``offset`` as stored; ``sink`` gets its offset, mask (-1: unreadable) and bytes."""
        try:
            info = self.ds.id.get_chunk_info_by_coord(offset)
            stored = Stored(0, None) if info.byte_offset is None else Stored(*self.ds.id.read_direct_chunk(offset))
        except (OSError, ValueError, RuntimeError):
            stored = Stored(-1, None, readable=False)
        if sink is not None:
            sink(np.asarray(offset, np.int64).tobytes() + stored.mask.to_bytes(8, "little", signed=True)
                 + (stored.data or b""))
        return stored

    def _decode_rows(self, first: int, stored: list[Stored]) -> np.ndarray | None:
        """The chunks of the chunk row starting at dataset row ``first`` (``stored``, in the order of
        ``_inner``), decoded: (rows, *shape[1:]); None when one of them does not read or decode."""
        shape = self.ds.shape
        n = min(self.chunks[0], shape[0] - first)
        if len(self._inner) == 1 and self.chunks[1:] == shape[1:]:  # one chunk per chunk row: no copy
            chunk = self._decode(stored[0])
            return None if chunk is None else chunk[:n]
        block = np.empty((n, *shape[1:]), self.ds.dtype)
        for inner, one in zip(self._inner, stored, strict=True):
            chunk = self._decode(one)
            if chunk is None:
                return None
            where = tuple(slice(o, min(o + c, s)) for o, c, s in zip(inner, self.chunks[1:], shape[1:], strict=True))
            block[(slice(None), *where)] = chunk[(slice(0, n), *(slice(0, w.stop - w.start) for w in where))]
        return block

    def _decode(self, stored: Stored) -> np.ndarray | None:
        """A chunk's values, or None when it does not read or decode."""
        if not stored.readable:
            return None
        mask, data = stored.mask, stored.data
        if data is None:
            return np.full(self.chunks, self.ds.fillvalue, self.ds.dtype)
        itemsize = self.ds.dtype.itemsize
        try:
            for i in reversed(range(len(self.filters))):
                if not mask & (1 << i):
                    f = self.filters[i]
                    data = DECODERS[f.code](data, f, itemsize, self._nbytes)
        except Exception:  # noqa: BLE001 - a codec's own error type (imagecodecs.*Error, ValueError...)
            return None
        if len(data) != self._nbytes:
            return None
        return np.frombuffer(data, self.ds.dtype).reshape(self.chunks)

    def _read_h5py(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Through h5py: a contiguous run of rows in one read, else by a list; a row at a time after an error."""
        bad = np.zeros(len(rows), bool)
        if len(rows) == 0:
            return np.empty((0, *self.ds.shape[1:]), self.ds.dtype), bad
        try:
            return self._h5py_rows(rows), bad
        except OSError:
            out = np.zeros((len(rows), *self.ds.shape[1:]), self.ds.dtype)
            for i, r in enumerate(rows):
                try:
                    out[i] = self.ds[int(r)]
                except OSError:
                    bad[i] = True
            return out, bad

    def _h5py_rows(self, rows: np.ndarray) -> np.ndarray:
        if rows[-1] - rows[0] + 1 == len(rows):
            return self.ds[int(rows[0]):int(rows[-1]) + 1]
        return self.ds[rows.tolist()]


#: Blosc's compressor codes in the HDF5 filter's cd_values[6].
BLOSC_COMPRESSORS = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}


class ChunkWriter:
    """Writes a (rows, *frame) dataset chunked along its first axis only, frames in order, as whole chunks:
    compressed here (Blosc through imagecodecs, as the dataset's filter declares) in a thread pool and stored
    with ``write_direct_chunk``, so HDF5's filter pipeline and its per-call cost are out of the way. The last
    chunk is padded with zeros (HDF5 stores edge chunks whole; the padding is never read).

    Args:
        ds: the dataset (its only filter Blosc: :func:`direct_writable`).
        pool: where chunks are compressed and written (None: in the caller's thread).
    """

    def __init__(self, ds: h5py.Dataset, pool: ThreadPoolExecutor | None) -> None:
        if not direct_writable(ds):
            raise ValueError(f"{ds.name} is not chunked along its first axis with Blosc alone")
        self.ds, self.pool = ds, pool
        values = pipeline(ds)[0].values
        self._encode = {"level": values[4], "shuffle": values[5], "compressor": BLOSC_COMPRESSORS[values[6]],
                        "typesize": ds.dtype.itemsize, "numthreads": 1}
        self._buf = np.zeros(ds.chunks, ds.dtype)
        self._filled = 0
        self._row = 0  # the first row of the chunk being filled
        self._pending: list[Any] = []

    def write(self, frames: np.ndarray) -> None:
        """The next ``len(frames)`` rows."""
        done = 0
        while done < len(frames):
            take = min(len(frames) - done, len(self._buf) - self._filled)
            self._buf[self._filled:self._filled + take] = frames[done:done + take]
            self._filled += take
            done += take
            if self._filled == len(self._buf):
                self._flush()

    def close(self) -> None:
        """Write the last, partial chunk and wait for every chunk to be stored (re-raising a failure)."""
        if self._filled:
            self._buf[self._filled:] = 0
            self._flush()
        self.wait()

    def wait(self, raise_errors: bool = True) -> None:
        """Wait for the chunks handed to the pool (before the file may close, even after a failure)."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        if raise_errors and any(errors):
            raise next(e for e in errors if e is not None)

    def _flush(self) -> None:
        chunk, row = self._buf, self._row
        self._buf, self._filled, self._row = np.empty_like(chunk), 0, row + len(chunk)
        if self.pool is None:
            self._store(row, chunk)
        else:
            self._pending.append(self.pool.submit(self._store, row, chunk))

    def _store(self, row: int, chunk: np.ndarray) -> None:
        data = imagecodecs.blosc_encode(chunk, **self._encode)
        self.ds.id.write_direct_chunk((row, *(0,) * (chunk.ndim - 1)), data)


def direct_writable(ds: h5py.Dataset) -> bool:
    """Whether :class:`ChunkWriter` can write ``ds``: chunked along the first axis only, Blosc its only filter."""
    filters = pipeline(ds)
    return (ds.chunks is not None and ds.chunks[1:] == ds.shape[1:] and len(filters) == 1
            and filters[0].code == BLOSC and len(filters[0].values) >= 7
            and filters[0].values[6] in BLOSC_COMPRESSORS)


def _groups(keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(key, positions) for each run of equal values of the sorted ``keys``."""
    if len(keys) == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    return [(int(keys[p[0]]), p) for p in np.split(np.arange(len(keys)), cuts)]
