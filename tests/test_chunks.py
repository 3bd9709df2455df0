"""Chunks decoded in Python (data/chunks.py): byte-identical to h5py on every filter, chunk shape and dtype the
archives use; a corrupt chunk marks its rows, never crashes; the stored-bytes digest sees a same-size rewrite;
chunks compressed here and stored whole read back through HDF5's filter."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import h5py
import hdf5plugin
import numpy as np
import pytest

from phasegan_hpc.data.chunks import ChunkRows, ChunkWriter, direct_writable
from phasegan_hpc.data.h5io import compression

#: name -> create_dataset keywords: every filter the archives, the simulator and the tests write.
DIRECT = {
    "none": {},
    "gzip": dict(compression="gzip"),
    "gzip+shuffle": dict(compression="gzip", shuffle=True),
    "shuffle": dict(shuffle=True),
    "lzf": dict(compression="lzf"),
    "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
    "bitshuffle-zstd": dict(hdf5plugin.Bitshuffle(cname="zstd")),
    "bitshuffle": dict(hdf5plugin.Bitshuffle(cname="none")),
    "blosc-lz4-shuffle": dict(hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE)),
    "blosc-zstd-bitshuffle": dict(hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE)),
    "lz4": dict(hdf5plugin.LZ4()),
    "zstd": dict(hdf5plugin.Zstd()),
    "bzip2": dict(hdf5plugin.BZip2()),
}
#: read through h5py (no Python decoder, or nothing to decode): the same values either way.
THROUGH_H5PY = {
    "blosc2": dict(hdf5plugin.Blosc2()),
    "fletcher32": dict(compression="gzip", fletcher32=True),
    "scaleoffset": dict(scaleoffset=0),
}
#: (shape, chunks): whole frames per chunk, one frame per chunk, tiles with partial edge chunks, 4-D, and
#: chunks of several bitshuffle blocks (8 KiB each) with a short last block and a few elements beyond it.
GEOMETRIES = [((37, 23, 29), (4, 23, 29)), ((9, 16, 16), (1, 16, 16)), ((20, 33, 35), (8, 8, 8)),
              ((10, 3, 17, 19), (3, 2, 8, 19)), ((7, 50, 70), (3, 50, 70))]
DTYPES = ["<u2", ">u2", "u1", "<i4", "<f4", "<f8"]


def _reference(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    return ds[rows.tolist()]


@pytest.mark.parametrize("name", [*DIRECT, *THROUGH_H5PY])
def test_rows_are_byte_identical_to_h5py(name, tmp_path):
    kw = {**DIRECT, **THROUGH_H5PY}[name]
    rng = np.random.default_rng(1)
    path = tmp_path / "a.h5"
    for dtype in DTYPES:
        if name == "scaleoffset" and dtype[-2] == "f":
            continue  # integer scale-offset only
        for shape, chunks in GEOMETRIES:
            data = (rng.random(shape) * 1000).astype(dtype)
            with h5py.File(path, "w") as f:
                f.create_dataset("d", data=data, chunks=chunks, **kw)
                partly = f.create_dataset("sparse", shape=shape, chunks=chunks, dtype=dtype, fillvalue=7, **kw)
                partly[2] = data[2]  # the other chunks are never written: the fill value
            with h5py.File(path, "r") as f:
                for ds, threads in ((f["d"], 1), (f["sparse"], 1), (f["d"], 3)):  # decoded in turn, or 3 at once
                    reader = ChunkRows(ds, threads)
                    assert (reader.why_h5py is None) == (name in DIRECT), reader.why_h5py
                    for rows in (np.arange(shape[0]), np.arange(1, shape[0] - 1), np.array([0, 2, 3, shape[0] - 1])):
                        got, bad = reader.read(rows)
                        ref = _reference(ds, rows)
                        assert got.dtype == ref.dtype and got.shape == ref.shape and not bad.any()
                        assert got.tobytes() == ref.tobytes(), (name, dtype, shape, chunks, ds.name, threads)
                    reader.close()


def _corrupt(path, offset: tuple[int, ...], at: int, data: bytes) -> None:
    with h5py.File(path, "r") as f:
        info = f["d"].id.get_chunk_info_by_coord(offset)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + at)
        fh.write(data)


@pytest.mark.parametrize("name", sorted(set(DIRECT) - {"none", "shuffle", "bitshuffle"}))
def test_a_corrupt_chunk_marks_its_rows_and_the_others_read(name, tmp_path):
    """Garbage over a compressed chunk (its header, then its body): that chunk's rows come back bad (zeros),
    the rest byte-identical to h5py's reading of the intact file. A codec that cannot tell (no check in its
    format) may return other values, never a crash or rows of another chunk."""
    data = (np.random.default_rng(2).random((12, 32, 32)) * 4000).astype("<u2")
    path = tmp_path / "a.h5"
    for at, garbage in ((0, b"\xff" * 16), (12, b"\x7f\xff\xff\xff"), (40, b"\x00" * 64)):
        with h5py.File(path, "w") as f:
            f.create_dataset("d", data=data, chunks=(3, 32, 32), **DIRECT[name])
        _corrupt(path, (3, 0, 0), at, garbage)
        with h5py.File(path, "r") as f:
            got, bad = ChunkRows(f["d"], threads=2).read(np.arange(12))
        keep = [0, 1, 2, 6, 7, 8, 9, 10, 11]
        assert not bad[keep].any() and got[keep].tobytes() == data[keep].tobytes()
        if bad[3:6].all():
            assert not got[3:6].any()
        else:  # decoded to something: all three rows of the chunk together
            assert not bad[3:6].any()


def test_the_digest_is_what_read_fed_and_sees_a_same_size_rewrite(tmp_path):
    data = (np.random.default_rng(3).random((12, 32, 32)) * 4000).astype("<u2")
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, chunks=(3, 32, 32), **DIRECT["bitshuffle-lz4"])

    def digests() -> tuple[str, str, str]:
        fed, alone, part, forced = (hashlib.sha256() for _ in range(4))
        with h5py.File(path, "r") as f:
            reader = ChunkRows(f["d"], threads=2)
            reader.read(np.arange(12), fed.update)
            reader.digest(np.arange(12), alone.update)
            reader.digest(np.arange(6), part.update)
            ChunkRows(f["d"], force_h5py=True).read(np.arange(12), forced.update)  # --reader h5py: the same
        assert forced.hexdigest() == fed.hexdigest()
        return fed.hexdigest(), alone.hexdigest(), part.hexdigest()

    before = digests()
    assert before[0] == before[1] != before[2]
    size = path.stat().st_size
    with h5py.File(path, "r") as f:
        info = f["d"].id.get_chunk_info_by_coord((9, 0, 0))
    with open(path, "r+b") as fh:  # one stored byte of the last chunk: same size, other content
        fh.seek(info.byte_offset + info.size - 1)
        last = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([last[0] ^ 1]))
    after = digests()
    assert path.stat().st_size == size
    assert after[0] == after[1] != before[1] and after[2] == before[2]  # rows 0-5 did not change


@pytest.mark.parametrize("dtype", ["<f4", "<f2"])
def test_chunk_writer_stores_what_h5py_reads_back(tmp_path, dtype):
    """Frames written in runs of any length (chunks compressed in a pool, the last one padded) read back
    through HDF5's own Blosc filter as written; a dataset with another filter is refused."""
    frames = np.random.default_rng(4).standard_normal((37, 12, 10)).astype(dtype)
    with ThreadPoolExecutor(2) as pool, h5py.File(tmp_path / "w.h5", "w") as f:
        ds = f.create_dataset("x", (37, 12, 10), dtype, chunks=(8, 12, 10), **compression())
        writer = ChunkWriter(ds, pool)
        for a, b in [(0, 3), (3, 20), (20, 21), (21, 37)]:
            writer.write(frames[a:b])
        writer.close()
        other = f.create_dataset("y", (4, 5, 5), dtype, chunks=(2, 5, 5), compression="gzip")
        assert not direct_writable(other) and not direct_writable(f.create_dataset("z", (4, 5, 5), dtype))
        with pytest.raises(ValueError, match="Blosc alone"):
            ChunkWriter(other, None)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["x"][()].tobytes() == frames.tobytes()
