"""Live reconstruction (``reconstruct --follow``, reconstruct/live.py) of archives a real writer process is
still writing in HDF5's SWMR mode (``phasegan-hpc acquire``): on every backend the end result is a batch
run's, bit for bit; the output grows while the writer writes; a killed follower resumes; a dead writer ends
the follow at the idle timeout; frames appended after the end are refused."""

import json
import os
import signal
import subprocess
import time

import faults
import h5py
import hdf5plugin  # noqa: F401 - the outputs are Blosc-compressed
import numpy as np
import pytest
from movies import assert_identical, assert_one_line_error, read, run_cli, write_dxchange
from tools import EXE, MPIEXEC

from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.simulate.acquire import acquire

pytestmark = pytest.mark.slow

#: 21 frames in chunks of 3 rows (write_dxchange), shards of 2 chunk rows: 4 shards, the last one short.
FRAMES, SHARD, BATCH = 21, 6, 4
COMMON = ("--batch-size", BATCH, "--shard-frames", SHARD, "--no-preview")


@pytest.fixture(scope="module")
def source(movie, tmp_path_factory):
    return write_dxchange(tmp_path_factory.mktemp("live-src") / "movie.h5", movie, n=FRAMES)


@pytest.fixture(scope="module")
def reference(source, movie_model, tmp_path_factory):
    """A batch reconstruct of the archive as the writer leaves it (written here at full speed)."""
    d = tmp_path_factory.mktemp("live-ref")
    finished = acquire(source, d / "finished.h5", rate=1e6)
    out = reconstruct(ReconstructRequest(finished, model=movie_model, backend="local", batch_size=BATCH,
                                         shard_frames=SHARD, preview=False)).output
    return read(out)


def start_writer(source, path, rate):
    """`phasegan-hpc acquire` in a process of its own; returns once the file is in SWMR mode."""
    proc = subprocess.Popen([EXE, "acquire", str(source), "--output", str(path), "--rate", str(rate)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready():
        assert proc.poll() is None, proc.stderr.read()
        try:
            with h5py.File(path, "r", swmr=True, locking=False) as f:
                return "process/acquisition/end_date" in f
        except OSError:
            return False
    faults.wait_for(ready, 60, "the writer's file in SWMR mode", interval=0.05)
    return proc


def watch(output, proc, seen):
    """Until ``proc`` ends: what a viewer reopening the output sees, (complete, frames with a phase)."""
    while proc.poll() is None:
        try:
            with h5py.File(output, "r") as f:
                seen.append((bool(f.attrs["complete"]), int(np.isfinite(f["consistency"][()]).sum())))
        except (OSError, KeyError):
            pass
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["local", "ray", "mpi"])
def test_follow_gives_the_batch_result_on_every_backend(backend, source, reference, movie_model, ray_cluster,
                                                         tmp_path):
    live = tmp_path / "live.h5"
    writer = start_writer(source, live, rate=3.0)  # 7 s of acquisition
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    cmd = [EXE, "reconstruct", live, "--follow", "--model", movie_model, "--backend", backend, *COMMON,
           "--json", tmp_path / "s.json"]
    if backend == "ray":
        cmd += ["--workers", 2]
    if backend == "mpi":
        cmd = [MPIEXEC, "-n", 2, *cmd]
    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: list[tuple[bool, int]] = []
    watch(tmp_path / "live_phasegan.h5", proc, seen)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert writer.wait(timeout=60) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == FRAMES and summary["live"]["ended_by"] == "end marker", summary
    assert summary["live"]["latency_p50_s"] > 0 and summary["live"]["latency_p99_s"] >= summary["live"]["latency_p50_s"]
    # While the writer wrote, a viewer saw a partial output that grew (complete = false), then the finished one.
    growing = [n for complete, n in seen if not complete]
    assert growing and 0 < min(growing) < FRAMES and seen[-1] == (True, FRAMES), seen
    assert sorted(growing) == growing  # it only ever grows
    assert_identical(reference, read(tmp_path / "live_phasegan.h5"))


def test_killed_follower_resumes_and_appended_frames_are_refused(source, reference, movie_model, tmp_path):
    live = tmp_path / "live.h5"
    out = tmp_path / "live_phasegan.h5"
    writer = start_writer(source, live, rate=3.0)
    args = ["reconstruct", live, "--follow", "--model", movie_model, "--backend", "local", *COMMON]
    follower = subprocess.Popen([EXE, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = faults.wait_for(lambda: (d := out.with_name("live_phasegan.shards")).is_dir() and next(
        d.glob("*/shard-000000.h5"), None), 120, "the follower's first shard")
    follower.send_signal(signal.SIGKILL)  # mid-acquisition, as a lost node
    follower.wait(timeout=30)
    inode = first.stat().st_ino
    proc = run_cli(*args, "--json", tmp_path / "s.json")  # started again while the writer still writes
    assert proc.returncode == 0, proc.stderr
    assert writer.wait(timeout=60) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["reused_shards"] >= 1 and summary["frames"] == FRAMES
    assert summary["computed_frames"] == FRAMES - SHARD * summary["reused_shards"]  # nothing done twice
    assert first.stat().st_ino == inode  # the shard finished before the kill was kept, not rewritten
    assert_identical(reference, read(out))

    with h5py.File(live, "a") as f:  # a writer appends to the finished file
        data = f["exchange/data"]
        data.resize(FRAMES + 3, axis=0)
        data[FRAMES:] = data[:3]
    assert_one_line_error(run_cli(*args), "frames were appended after its acquisition ended")
    assert_identical(reference, read(out))


def test_a_writer_that_dies_ends_the_follow_at_the_idle_timeout(source, movie_model, tmp_path):
    live = tmp_path / "live.h5"
    writer = start_writer(source, live, rate=6.0)

    def written():
        with h5py.File(live, "r", swmr=True, locking=False) as f:
            return f["exchange/data"].shape[0] >= 12
    faults.wait_for(written, 60, "12 frames written")
    writer.send_signal(signal.SIGKILL)  # the file never says that the acquisition ended
    writer.wait(timeout=30)
    with h5py.File(live, "r", swmr=True, locking=False) as f:
        n = f["exchange/data"].shape[0] // 3 * 3  # whole chunk rows (a kill between resize and write: fewer)
    proc = run_cli("reconstruct", live, "--follow", "--model", movie_model, "--backend", "local", *COMMON,
                   "--idle-timeout", 2, "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    table = " ".join(proc.stdout.replace("│", " ").split())  # the summary table's cells, unwrapped
    assert "the writer stopped without marking the end" in table, table
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["live"]["ended_by"] == "idle timeout" and n - 3 <= summary["frames"] <= n, (summary, n)
    batch = reconstruct(ReconstructRequest(live, model=movie_model, backend="local", batch_size=BATCH,
                                           shard_frames=SHARD, preview=False, output=tmp_path / "batch.h5",
                                           frames=f"0:{summary['frames']}"))
    assert_identical(read(batch.output), read(tmp_path / "live_phasegan.h5"))


#: A detector writer whose flats come after the projections (their dataset created empty before SWMR mode).
FLATS_LAST = """
import sys, time, h5py, hdf5plugin, numpy as np
src, dst = sys.argv[1], sys.argv[2]
with h5py.File(src, "r") as s:
    frames, flats, darks = (s[k][()] for k in ("exchange/data", "exchange/data_white", "exchange/data_dark"))
with h5py.File(dst, "x", libver="latest") as f:
    f.create_dataset("exchange/data_dark", data=darks)
    white = f.create_dataset("exchange/data_white", shape=(0, 64, 64), maxshape=(None, 64, 64), dtype=flats.dtype)
    data = f.create_dataset("exchange/data", shape=(0, 64, 64), maxshape=(None, 64, 64), chunks=(3, 64, 64),
                            dtype=frames.dtype)
    end = f.create_dataset("process/acquisition/end_date", shape=(), dtype="S32", data=b"")
    f.swmr_mode = True
    time.sleep(3)
    for i in range(0, len(frames), 3):
        data.resize(i + 3, axis=0); data[i:i + 3] = frames[i:i + 3]; data.flush(); time.sleep(0.5)
    white.resize(len(flats), axis=0); white[:] = flats; white.flush()
    end[()] = b"done"; end.flush()
"""


def test_flats_written_last_are_used_only_with_recorrect(source, reference, movie_model, tmp_path):
    import sys

    live = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", FLATS_LAST, str(source), str(live)], stderr=subprocess.PIPE,
                              text=True)
    def started():
        assert writer.poll() is None, writer.stderr.read()
        return live.exists()
    faults.wait_for(started, 60, "the writer's file", interval=0.05)
    time.sleep(0.5)  # in SWMR mode (it sleeps 3 s before the first frame)
    followers = {name: subprocess.Popen(
        [EXE, "reconstruct", str(live), "--follow", "--model", movie_model, "--backend", "local", *map(str, COMMON),
         "--output", str(tmp_path / f"{name}.h5"), "--json", str(tmp_path / f"{name}.json"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, extra in (("plain", []), ("recorrected", ["--recorrect"]))}
    for name, p in followers.items():
        assert p.wait(timeout=300) == 0, (name, p.stderr.read()[-2000:])
    assert writer.wait(timeout=60) == 0, writer.stderr.read()
    plain, again = (json.loads((tmp_path / f"{n}.json").read_text())["live"] for n in ("plain", "recorrected"))
    assert plain["unused_references"] == ["flats"] and not plain["recorrected"]
    assert again["recorrected"] and again["ended_by"] == "end marker"
    assert_identical(reference, read(tmp_path / "recorrected.h5"))  # = a batch run with the flats
    assert not np.array_equal(read(tmp_path / "plain.h5")["phase"], reference["phase"])
