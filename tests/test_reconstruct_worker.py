"""One worker (reconstruct/worker.py): non-finite pixels, one-batch-late writes, compiled networks."""


import h5py
import numpy as np
import pytest
from movies import corrected_reference, g_o_reference, read, write_dxchange

from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

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

