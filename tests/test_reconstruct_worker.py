"""One worker (reconstruct/worker.py): non-finite pixels, one-batch-late writes, compiled networks, the shard
writer's runs of frames and chunk shapes."""


from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
from movies import corrected_reference, g_o_reference, read, write_dxchange

from phasegan_hpc.data.checksum import ContentHash
from phasegan_hpc.data.h5io import compression, frame_chunks
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.worker import FlatWriter

pytestmark = pytest.mark.slow


def test_nonfinite_frames_are_reported_not_propagated(movie_model, movie, tmp_path):
    t = movie["transmission"][:8].astype(np.float32).copy()
    t[3, 10:12, 20:30] = np.nan
    t[3, 0, 0] = np.inf
    t[5] = np.inf
    archive = tmp_path / "nan.h5"
    with h5py.File(archive, "w") as f:
        f["movie"] = t
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", batch_size=4, preview=False))
    out = read(s.output)
    assert s.nonfinite == [(3, 21), (5, 64 * 64)]
    assert np.all(np.isfinite(out["phase"][[0, 1, 2, 3, 4, 6, 7]]))  # frame 3 repaired, neighbours untouched
    assert np.all(np.isnan(out["phase"][5])) and np.isnan(out["consistency"][5])
    assert 5 in [i for i, _ in s.flagged]
    clean = g_o_reference(movie_model, t[[0, 1, 2, 4]])
    np.testing.assert_allclose(out["phase"][[0, 1, 2, 4]], clean[:, 0], rtol=1e-4, atol=1e-5)


def test_fast_path_pipelining_and_compiled_networks_match_on_cpu(movie_model, movie, tmp_path):
    """The GPU fast path's pieces that run on a CPU: results are written one batch late (while the next one
    computes) and torch.compile'd networks give the same volumes as the plain ones (compiled once at worker
    start-up; the short last batch, 18 = 4 x 4 + 2, is padded to the compiled shape)."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=18)
    plain = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "plain.h5", backend="local",
                                           batch_size=4, preview=False, compile=False))
    compiled = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "compiled.h5",
                                              backend="local", batch_size=4, preview=False, compile=True))
    a, b = read(plain.output), read(compiled.output)
    assert len(a["phase"]) == len(b["phase"]) == 18
    for k in ("phase", "attenuation", "consistency"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-4, err_msg=k)
    for s in (plain, compiled):  # the start-up (model, compilation) is reported apart from the pipeline
        assert 0 < s.pipeline_seconds <= s.seconds and s.setup_seconds > 0
        assert s.pipeline_frames_per_s >= s.frames_per_s
    with h5py.File(archive, "r") as f:
        corr = corrected_reference(movie, f["exchange/data"][()], f["exchange/data_white"][()],
                                   f["exchange/data_dark"][()])
    np.testing.assert_allclose(a["phase"], g_o_reference(movie_model, corr)[:, 0], rtol=1e-4, atol=1e-5)



@pytest.mark.parametrize(("tail", "compressed"), [((), False), ((), True), ((5,), True), ((2, 3), False)])
def test_the_shard_writer_puts_runs_of_frames_where_a_plain_loop_does(tmp_path, tail, compressed):
    """Batches of any length at any flat offset (whole rows, part of a train, across rows) land where a
    frame-by-frame loop over np.unravel_index puts them (Blosc stacks without a lead tail as whole chunks
    compressed in a pool), and the checksum is that of the whole in C order."""
    rows = 4
    n = rows * int(np.prod(tail))
    frames = np.random.default_rng(0).random((n, 3, 2)).astype(np.float32)
    scores = np.arange(n, dtype=np.float32)
    comp = compression() if compressed else {}
    with h5py.File(tmp_path / "s.h5", "w") as f, ThreadPoolExecutor(2) as pool:
        ds = {"x": f.create_dataset("x", (rows, *tail, 3, 2), "f4", chunks=frame_chunks(rows, tail, (3, 2), 4, 3),
                                    **comp),
              "s": f.create_dataset("s", (rows, *tail), "f4")}
        with FlatWriter(ds, tail, pool) as writer:
            for a, b in [(0, 1), (1, 8), (8, 9), (9, n)]:  # a frame, a run across rows, a frame, the rest
                if a < min(b, n):
                    writer.write(a, {"x": frames[a:min(b, n)], "s": scores[a:min(b, n)]})
        got_x, got_s = f["x"][()], f["s"][()]
    want_x = np.zeros((rows, *tail, 3, 2), np.float32)
    want_s = np.zeros((rows, *tail), np.float32)
    for i in range(n):
        idx = np.unravel_index(i, (rows, *tail))
        want_x[idx], want_s[idx] = frames[i], scores[i]
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got_s, want_s)
    ref = ContentHash()
    ref.update("s", want_s)
    ref.update("x", want_x)
    assert writer.hash.hexdigest() == ref.hexdigest()


def test_output_chunks_hold_about_two_mib_of_whole_frames():
    assert frame_chunks(4096, (), (128, 128), 4) == (32, 128, 128)  # 64 KiB frames
    assert frame_chunks(10, (), (128, 128), 4) == (10, 128, 128)  # never more than the shard's rows
    assert frame_chunks(4096, (), (2048, 2048), 4) == (1, 2048, 2048)  # 16 MiB frames: one each
    assert frame_chunks(7, (100,), (128, 128), 2) == (1, 64, 128, 128)  # trains x pulses: along the pulses


def test_the_scores_cost_is_the_users_choice(movie_model, movie, tmp_path):
    """--score every:3 scores frames 0, 3, 6, ... as --score all does, marks the others unscored (NaN, /scored
    0) and never flags them for it; --score none scores nothing and is no error; the frames are the same."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=12)
    runs = {}
    for score in ("all", "every:3", "none"):
        s = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / f"{score[:5]}.h5",
                                           backend="local", batch_size=4, preview=False, score=score))
        with h5py.File(s.output, "r") as f:
            runs[score] = (s, {k: f[k][()] for k in ("phase", "consistency", "fresnel_residual", "scored")})
    full, every, none = (runs[k][1] for k in ("all", "every:3", "none"))
    picked = np.arange(12) % 3 == 0
    np.testing.assert_array_equal(every["scored"], picked.astype(np.int64))
    np.testing.assert_array_equal(full["scored"], np.ones(12, np.int64))
    for name in ("consistency", "fresnel_residual"):
        np.testing.assert_allclose(every[name][picked], full[name][picked], rtol=1e-5)
        assert np.isnan(every[name][~picked]).all() and np.isnan(none[name]).all()
    assert not none["scored"].any()
    for _, arrays in runs.values():
        np.testing.assert_array_equal(arrays["phase"], full["phase"])
    assert runs["every:3"][0].scored_frames == 4 and runs["none"][0].scored_frames == 0
    assert not {i for i, _ in runs["every:3"][0].flagged} - set(np.flatnonzero(picked))
    assert runs["none"][0].flagged == []
