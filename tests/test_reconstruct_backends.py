"""Backends (reconstruct/backends/): local, a real local Ray, a real `mpiexec -n 2` agree bit for bit and
with an independent reference; a Ray actor killed from outside is replaced; every backend serves a shard
source that grows while it runs."""

import subprocess
import threading
import time

import faults
import h5py
import numpy as np
import pytest
from movies import DATASETS, assert_identical, corrected_reference, g_o_reference, read, run_dir, sha, write_dxchange
from tools import EXE, MPIEXEC

from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.backends import backend_named
from phasegan_hpc.reconstruct.plan import Shard
from phasegan_hpc.reconstruct.run import prepare
from phasegan_hpc.reconstruct.source import FixedShards, Task, tasks

pytestmark = pytest.mark.slow


def test_backends_agree_with_reference_and_each_other(ray_cluster, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "run42.h5", movie)
    before = sha(archive)
    local = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "local.h5", backend="local",
                                           batch_size=4, shard_frames=8))
    assert local.frames == 22 and local.shards == 3 and local.preview.is_file()
    ray_sum = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ray.h5", backend="ray",
                                             workers=2, batch_size=4, shard_frames=8, preview=False))
    assert ray_sum.computed_frames == 22
    args = [MPIEXEC, "-n", "2", EXE, "reconstruct", archive, "--model", movie_model, "--backend", "mpi",
            "--output", tmp_path / "mpi.h5", "--batch-size", 4, "--shard-frames", 8, "--no-preview"]
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "22" in proc.stdout and proc.stdout.count("reconstruction:") == 1  # rank 0 alone summarises
    outs = {k: read(tmp_path / f"{k}.h5") for k in ("local", "ray", "mpi")}
    assert_identical(outs["local"], outs["ray"])
    assert_identical(outs["local"], outs["mpi"])
    # Independent reference: float64 flat/dark correction, then G_O frame by frame.
    with h5py.File(archive, "r") as f:
        corr = corrected_reference(movie, f["exchange/data"][()], f["exchange/data_white"][()],
                                   f["exchange/data_dark"][()])
    ref = g_o_reference(movie_model, corr)
    np.testing.assert_allclose(outs["local"]["phase"], ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs["local"]["attenuation"], ref[:, 1], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(outs["local"]["consistency"])) and np.all(outs["local"]["nonfinite_pixels"] == 0)
    with h5py.File(tmp_path / "local.h5", "r") as f:
        assert f["phase"].is_virtual and f["phase"].attrs["units"] == "rad"
        assert f.attrs["model_sha256"] == load_model(movie_model).sha256
        assert f.attrs["source_file"] == str(archive) and "G_D" in f.attrs["score"]
        assert "[model]" in f.attrs["config"] and f.attrs["pixel_size_m"] == pytest.approx(1e-6)
    assert sha(archive) == before


def test_killed_worker_is_replaced_with_identical_result(ray_cluster, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    ref = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5", backend="local",
                                         batch_size=4, shard_frames=8, preview=False))
    out = tmp_path / "faulty.h5"

    def writer_of_shard_1():  # the actor holding shard 1's partial file open, once the run directory exists
        d = run_dir(out)
        return d and faults.first(faults.find("ray::_RayWorker", holding=d / ".shard-000001.h5.partial"))

    # The actor writing shard 1 is killed from outside mid-shard, as a lost node would be.
    killer = faults.Killer(writer_of_shard_1, "a Ray actor writing shard 1",
                           after=lambda _: (time.time_ns(), (run_dir(out) / "shard-000001.h5").exists()))
    s = reconstruct(ReconstructRequest(archive, model=movie_model, output=out, backend="ray",
                                       workers=2, batch_size=4, shard_frames=8, preview=False))
    shards = run_dir(out)
    dead, (killed_ns, finished) = killer.result()
    assert not faults.alive(dead.pid) and not finished  # it did die, mid-shard
    assert (shards / "shard-000001.h5").stat().st_mtime_ns > killed_ns  # its shard was redone by another
    assert s.computed_frames == 22 and s.replaced_workers == 1
    assert_identical(read(ref.output), read(s.output))


class DrippingShards:
    """A shard source that grows while the backend runs, as a file being acquired would: one more shard every
    ``every`` seconds (from a thread), exhausted after the last. Taken shards are recorded."""

    def __init__(self, shards, every: float) -> None:
        self.inner = FixedShards([])
        self.left = list(shards)
        self.taken: list[int] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._release, args=(every,), daemon=True)
        self.thread.start()

    def _release(self, every: float) -> None:
        while True:
            time.sleep(every)
            with self.lock:
                if not self.left:
                    return
                self.inner.give_back(self.left.pop(0))

    def take(self, timeout: float = 0.0):
        task = self.inner.take(timeout)
        if task is not None:
            self.taken.append(task.shard.index)
        return task

    def give_back(self, task) -> None:
        self.inner.give_back(task)

    def exhausted(self) -> bool:
        with self.lock:
            return not self.left and self.inner.exhausted()

    def pending(self):
        return None


def test_fixed_shards_give_back_comes_first():
    a, b, c = (Task(0, Shard(i, i, i + 1, i, i + 1)) for i in range(3))
    src = FixedShards([a, b, c])
    assert src.pending() == 3 and src.take() == a
    src.give_back(a)  # its worker was lost
    assert [src.take(), src.take(), src.take()] == [a, b, c]
    assert src.exhausted() and src.take(timeout=0.05) is None


@pytest.mark.parametrize("name", ["local", "ray", "mpi"])
def test_backends_serve_a_source_that_grows_while_they_run(ray_cluster, movie_model, movie, tmp_path, name):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5", backend="local",
                                   batch_size=4, shard_frames=6, preview=False))
    request = ReconstructRequest(archive, model=movie_model, output=tmp_path / "grown.h5", backend=name, workers=2,
                                 batch_size=4, shard_frames=6, preview=False)
    if name == "mpi":  # one rank, in this process
        from mpi4py import MPI  # lazy: importing mpi4py.MPI initialises MPI

        backend = backend_named(name, comm=MPI.COMM_SELF)
    else:
        backend = backend_named(name, workers=2)
    prepared = prepare(request, backend)
    assert len(prepared.pending) == 4
    source = DrippingShards(tasks(prepared.pending), every=1.0 if name == "ray" else 0.5)
    frames: list[int] = []
    rows = backend.run([prepared.job], source, frames.append)
    assert sorted(r["shard"] for r in rows) == [0, 1, 2, 3] == sorted(source.taken)  # each once, none early lost
    assert sum(frames) == 22
    for s in prepared.plan:  # every shard file as the uninterrupted reference wrote it
        with h5py.File(run_dir(tmp_path / "ref.h5") / s.name, "r") as a, \
                h5py.File(run_dir(tmp_path / "grown.h5") / s.name, "r") as b:
            for k in DATASETS:
                np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=f"{s.name} {k}")
