"""The one progress shape, progress(done, total, info): Tally, and what simulate and reconstruct report."""

from tools import REPO

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.progress import Tally
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.simulate.movie import simulate_movie


def test_tally_reports_absolute_counts_and_is_silent_without_a_callback():
    calls = []
    t = Tally(lambda done, total, info: calls.append((done, total, dict(info))), 10, done=4)
    t.add(0)
    t.add(3)
    t.add(3)
    assert calls == [(4, 10, {}), (7, 10, {}), (10, 10, {})]
    Tally(None, 5).add(5)  # nothing to call, nothing raised


def test_simulate_and_reconstruct_report_frames_done_of_total(tmp_path):
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {"simulate.size": 32})
    calls = []
    simulate_movie(tmp_path / "m.h5", cfg, 20, chunk_frames=8, progress=lambda d, t, i: calls.append((d, t)))
    assert calls == [(8, 20), (16, 20), (20, 20)]
    calls.clear()
    reconstruct(ReconstructRequest(tmp_path / "m.h5", method="flatfield", backend="local", batch_size=8, shard_frames=8,
                                   preview=False), progress=lambda d, t, i: calls.append((d, t)))
    assert calls[0] == (0, 20) and calls[-1] == (20, 20)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
