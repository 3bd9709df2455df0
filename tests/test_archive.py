"""The movie-archive reader (data/archive.py) on the layouts beamlines write: DXchange, NXtomo (image_key),
4-D trains x pulses with Blosc, and the simulator's raw-count DXchange movie; corrupt compressed chunks."""

import subprocess
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from movies import assert_identical, corrected_reference, counts, g_o_reference, read, sha, write_dxchange
from tools import EXE, REPO

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.archive import open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

pytestmark = pytest.mark.slow


def test_layouts_nxtomo_and_4d_blosc(movie_model, movie, tmp_path):
    t = movie["transmission"]
    # NXtomo: flats and darks interleaved with the projections, selected by image_key.
    key = np.array([2, 1, 1] + [0] * 10 + [1] + [0] * 7)
    stack = np.empty((len(key), 64, 64), np.uint16)
    stack[key == 0] = counts(movie, t[:17])
    stack[key == 1] = counts(movie, np.ones((3, 64, 64)))
    stack[key == 2] = np.round(movie["dark"]).astype(np.uint16)
    nx = tmp_path / "nx.h5"
    with h5py.File(nx, "w") as f:
        f.create_dataset("entry/instrument/detector/data", data=stack, chunks=(1, 64, 64),
                         **hdf5plugin.Zstd())
        f["entry/instrument/detector/image_key"] = key
        f["entry/data/data"] = f["entry/instrument/detector/data"]  # NXdata links to the same data
        f["entry/data/image_key"] = f["entry/instrument/detector/image_key"]
    before = sha(nx)
    s = reconstruct(ReconstructRequest(nx, model=movie_model, backend="local", batch_size=4, shard_frames=5,
                                       preview=False))
    assert s.frames == 17 and s.output == tmp_path / "nx_phasegan.h5"
    out = read(s.output)
    corr = corrected_reference(movie, stack[key == 0], stack[key == 1], stack[key == 2])
    np.testing.assert_allclose(out["phase"], g_o_reference(movie_model, corr)[:, 0], rtol=1e-4, atol=1e-5)
    assert sha(nx) == before

    # 4-D trains x pulses, Blosc-compressed uint16 without flats: raw counts rescaled to ~1 by the user.
    four = tmp_path / "trains.h5"
    frames = counts(movie, t[:21]).reshape(7, 3, 64, 64)
    with h5py.File(four, "w") as f:
        f.create_dataset("frames", data=frames, chunks=(2, 3, 64, 64),
                         **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE))
        f.create_dataset("axis", data=np.arange(7))  # 1-D: not a candidate
    s4 = reconstruct(ReconstructRequest(four, model=movie_model, backend="local", batch_size=4, shard_frames=5,
                                        preview=False))
    out4 = read(s4.output)
    assert out4["phase"].shape == (7, 3, 64, 64) and out4["consistency"].shape == (7, 3)
    ref4 = g_o_reference(movie_model, frames.reshape(21, 64, 64).astype(np.float32))
    np.testing.assert_allclose(out4["attenuation"].reshape(21, 64, 64), ref4[:, 1], rtol=1e-4, atol=1e-4)


def test_simulated_movie_is_a_dxchange_archive_of_raw_counts(tmp_path):
    from phasegan_hpc.data.archive import FrameReader
    from phasegan_hpc.simulate.movie import DARK_LEVEL, simulate_movie

    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {"flatfield.n_flats": 20,
                                                                     "flatfield.n_components": 4})
    path = simulate_movie(tmp_path / "movie.h5", cfg, 20, chunk_frames=8)
    arc = open_archive(path)
    assert (arc.layout, arc.dtype, arc.lead_shape, arc.frame_shape) == ("dxchange", "uint16", (20,), (64, 64))
    assert arc.flats is not None and arc.darks is not None and arc.attrs["pixel_size_m"] == 1e-6
    reader = FrameReader(arc)
    corrected = np.concatenate(list(reader.blocks(0, 20, 8)))
    reader.close()
    assert np.abs(reader.dark.mean() - DARK_LEVEL) < 1
    assert corrected.shape == (20, 64, 64) and 0.8 < corrected.mean() < 1.2  # transmission about 1
    with pytest.raises(DataError, match="exists"):
        simulate_movie(path, cfg, 4)



def corrupt_chunk(path: Path, chunk: int, at: int, data: bytes) -> None:
    """Overwrite bytes ``at`` bytes into the stored (compressed) chunk ``chunk`` of /exchange/data."""
    with h5py.File(path, "r") as f:
        info = f["exchange/data"].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + at)
        fh.write(data)


@pytest.mark.parametrize("at, garbage", [(0, b"\xff" * 12), (12, b"\x7f\xff\xff\xff")],
                         ids=["a header the decoder rejects", "a block size that crashes h5py's decoder"])
def test_a_corrupt_chunk_gives_nan_frames_and_the_run_goes_on(movie_model, movie, tmp_path, at, garbage):
    """Chunks are decoded in Python (data/chunks.py): the corrupt chunk's frames are NaN, counted and flagged,
    the others equal an intact run's, where h5py's C decoder segfaulted on the second corruption."""
    archive = write_dxchange(tmp_path / "a.h5", movie)  # bitshuffle-LZ4, chunks of 3 frames
    ref = read(reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5",
                                              backend="local", batch_size=4, preview=False)).output)
    corrupt_chunk(archive, 2, at, garbage)  # frames 6-8
    s = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "bad.h5", backend="local",
                                       batch_size=4, preview=False))
    assert [i for i, _ in s.nonfinite] == [6, 7, 8] and all(n == 64 * 64 for _, n in s.nonfinite)
    assert {6, 7, 8} <= {i for i, _ in s.flagged}
    out = read(s.output)
    assert np.isnan(out["phase"][6:9]).all()
    keep = [i for i in range(22) if i not in (6, 7, 8)]
    np.testing.assert_array_equal(out["phase"][keep], ref["phase"][keep])


def test_a_chunk_that_crashes_the_decoder_is_one_line(movie_model, movie, tmp_path):
    """Behind a virtual dataset the chunks are h5py's to decode, and a corrupt one still crashes HDF5's C
    filter: the supervisor turns the crash into one line naming what was being read."""
    source = write_dxchange(tmp_path / "a.h5", movie)
    corrupt_chunk(source, 2, 12, b"\x7f\xff\xff\xff")  # frames 6-8: a block size that crashes the decoder
    archive = tmp_path / "vds.h5"
    with h5py.File(source, "r") as src, h5py.File(archive, "w") as f:
        layout = h5py.VirtualLayout(shape=src["exchange/data"].shape, dtype=src["exchange/data"].dtype)
        layout[...] = h5py.VirtualSource(src["exchange/data"])
        f.create_virtual_dataset("exchange/data", layout)
        for name in ("exchange/data_white", "exchange/data_dark"):
            f[name] = src[name][()]
    proc = subprocess.run([EXE, "reconstruct", str(archive), "--model", movie_model, "--backend", "local",
                           "--batch-size", "4", "--no-preview"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("phasegan:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: the run crashed (SIGSEGV) while reading rows 4-7 of "), lines  # 4 a block
    assert not (tmp_path / "vds_phasegan.h5").exists()  # nothing published


def test_both_readers_give_identical_volumes_and_resume_each_other(movie_model, movie, tmp_path):
    """--reader h5py (HDF5's filters) and the default chunk decoder (2 threads) write identical shards, and
    each shard's record of what it read is the same, so a run resumes the other's shards."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=12)
    common = dict(model=movie_model, backend="local", batch_size=4, shard_frames=3, preview=False,
                  cpus_per_worker=2)
    by_h5py = reconstruct(ReconstructRequest(archive, output=tmp_path / "h.h5", reader="h5py", **common))
    chunks = reconstruct(ReconstructRequest(archive, output=tmp_path / "c.h5", **common))
    assert_identical(read(by_h5py.output), read(chunks.output))
    (tmp_path / "c.h5").unlink()
    again = reconstruct(ReconstructRequest(archive, output=tmp_path / "c.h5", reader="h5py", **common))
    assert again.reused_shards == 4 and again.computed_frames == 0


def _references(rng, h=70, w=40):
    """Raw frames, five flats (one with a zinger, one with the beam half off) and three darks of h x w px."""
    flats = rng.normal(1000.0, 20.0, (5, h, w)).round().astype(np.uint16)
    flats[1, 5, 7] = 60000  # a zinger
    flats[3, : h // 2] = 400  # the beam half off in one flat
    darks = rng.normal(50.0, 2.0, (3, h, w)).round().astype(np.uint16)
    raw = rng.normal(800.0, 30.0, (4, h, w)).round().astype(np.uint16)
    return raw, flats, darks


def test_median_flats_and_references_from_other_files(tmp_path):
    """--flats-reduction median against numpy's median (over row bands: 70 rows cross a band edge), and
    --flats FILE / --darks FILE:DATASET giving the same correction as the same references inside the archive."""
    from phasegan_hpc.data.archive import FrameReader, parse_reference

    raw, flats, darks = _references(np.random.default_rng(4))
    inside = tmp_path / "inside.h5"
    with h5py.File(inside, "w") as f:
        f.create_dataset("exchange/data", data=raw, chunks=(2, 70, 40))
        f["exchange/data_white"], f["exchange/data_dark"] = flats, darks
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f.create_dataset("exchange/data", data=raw, chunks=(2, 70, 40))
    with h5py.File(tmp_path / "flats.h5", "w") as f:
        f["exchange/data_white"] = flats
    with h5py.File(tmp_path / "darks.h5", "w") as f:
        f["scan/dk"], f["scan/angles"] = darks, np.arange(3.0)
    median_flat, median_dark = np.median(flats.astype(np.float64), axis=0), np.median(darks.astype(np.float64), axis=0)
    expected = (raw.astype(np.float64) - median_dark) / (median_flat - median_dark)
    readers = {
        "inside": open_archive(inside).with_references(reduction="median"),
        "files": open_archive(bare).with_references(parse_reference(str(tmp_path / "flats.h5"), "flats"),
                                                    parse_reference(f"{tmp_path / 'darks.h5'}:/scan/dk", "darks"),
                                                    "median"),
    }
    got = {}
    for name, archive in readers.items():
        reader = FrameReader(archive)
        try:
            np.testing.assert_array_equal(reader.flat, median_flat)
            np.testing.assert_array_equal(reader.dark, median_dark)
            got[name] = next(reader.blocks(0, 4, 4))
        finally:
            reader.close()
        np.testing.assert_allclose(got[name], expected, rtol=2e-6)
    np.testing.assert_array_equal(got["inside"], got["files"])
    mean = FrameReader(open_archive(inside))
    try:  # the mean is pulled by the zinger and the half-dark flat; the median is not
        assert abs(mean.flat[5, 7] - median_flat[5, 7]) > 1000 and abs(mean.flat[0, 0] - median_flat[0, 0]) > 50
    finally:
        mean.close()
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = flats, flats
    with h5py.File(tmp_path / "small.h5", "w") as f:
        f["exchange/data_white"] = flats[:, :32, :32]
    for given, needle in ((str(tmp_path / "nope.h5"), "nope.h5"), (str(tmp_path / "two.h5"), "name the dataset"),
                          (f"{tmp_path / 'two.h5'}:/c", "no dataset '/c'"),
                          (str(tmp_path / "small.h5"), "flats are 32 x 32 but the frames are 70 x 40")):
        with pytest.raises(DataError, match=needle):
            open_archive(bare).with_references(parse_reference(given, "flats"))
    with pytest.raises(DataError, match="--flats-reduction must be one of mean, median"):
        open_archive(bare).with_references(reduction="mode")


def test_reconstruct_takes_median_flats_from_another_file(tmp_path):
    raw, flats, darks = _references(np.random.default_rng(5), 64, 64)
    archive = tmp_path / "a.h5"
    with h5py.File(archive, "w") as f:
        f["exchange/data"], f["exchange/data_dark"] = raw, darks
    with h5py.File(tmp_path / "flats.h5", "w") as f:
        f["exchange/data_white"] = flats
    s = reconstruct(ReconstructRequest(archive, method="flatfield", backend="local", preview=False,
                                       flats=str(tmp_path / "flats.h5"), flats_reduction="median",
                                       physics={"pixel_size_m": 1e-6, "distance_m": 0.1, "wavelength_m": 1e-10}))
    median_dark = np.median(darks.astype(np.float64), axis=0)
    expected = (raw - median_dark) / (np.median(flats.astype(np.float64), axis=0) - median_dark)
    with h5py.File(s.output) as f:
        np.testing.assert_allclose(f["intensity"][()], expected, rtol=2e-6)


def test_pca_flats_follow_pulse_to_pulse_illumination(tmp_path):
    """--flats-reduction pca on a simulated archive whose flats, like its frames, each have an illumination of
    their own: the corrected frames equal the dynamic correction computed here from the raw arrays, and their
    flat-field error against the true illumination is well below that of mean flats."""
    from phasegan_hpc.physics import DynamicFlatfieldCorrector
    from phasegan_hpc.simulate.movie import simulate_movie

    cfg = load_config(REPO / "configs" / "tiny.toml")
    path = simulate_movie(tmp_path / "pulses.h5", cfg, 24, n_flats=24, pulse_flats=True, chunk_frames=8)
    with h5py.File(path) as f:
        raw, flats, darks = (f[f"exchange/{k}"][()] for k in ("data", "data_white", "data_dark"))
        truth = f["truth/flatfield"][()]
    roi = (4, 60, 0, 64)
    physics = {"pixel_size_m": 1e-6, "distance_m": 0.1, "wavelength_m": 1e-10}
    out = {}
    for reduction in ("mean", "pca"):
        s = reconstruct(ReconstructRequest(path, output=tmp_path / f"{reduction}.h5", method="flatfield",
                                           backend="local", preview=False, flats_reduction=reduction,
                                           roi="4:60,0:64", physics=physics))
        with h5py.File(s.output) as f:
            out[reduction] = f["intensity"][()]
    crop = (slice(None), slice(roi[0], roi[1]), slice(roi[2], roi[3]))
    dark = darks.astype(np.float64).mean(0)[crop[1:]]
    reference = DynamicFlatfieldCorrector(flats[crop], dark, n_components=15, binning=1)(raw[crop])
    np.testing.assert_allclose(out["pca"], reference, rtol=1e-5, atol=1e-6)
    ideal = (raw[crop] - dark) / (truth[crop] * cfg.detector.photons_per_frame / 64**2)

    def error(corrected):  # median over frames of the rms relative error of the flat
        return np.median(np.sqrt(np.mean((corrected / ideal - 1) ** 2, axis=(1, 2))))

    assert error(out["pca"]) < 0.5 * error(out["mean"])
    for args, needle in ((["--eigenflats", "3"], "--eigenflats 3: needs --flats-reduction pca"),
                         (["--flats-reduction", "pca", "--eigenflats", "24"],
                          "24 flat(s) give at most 23 eigen-flats, not --eigenflats 24")):
        run = subprocess.run([str(EXE), "reconstruct", str(path), "--method", "paganin", "--delta-beta", "100",
                              "--backend", "local", "--output", str(tmp_path / "x.h5"), "--pixel-size-m", "1e-6",
                              "--distance-m", "0.1", "--energy-kev", "12.4", *args], capture_output=True, text=True)
        assert run.returncode == 1 and needle in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert not (tmp_path / "x.h5").exists()
