"""`reconstruct`: real HDF5 archives made here, a real local Ray, a real `mpiexec -n 2`, the real console script.

Outputs are checked against an independent reference (flat/dark correction in float64 numpy, then G_O
applied frame by frame), backends against each other (bit for bit), and the archive's bytes after every run.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import faults
import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from tools import EXE, MPIEXEC, REPO

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.archive import open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.physics import paganin
from phasegan_hpc.reconstruct import reconstruct
from phasegan_hpc.reconstruct.plan import make_plan
from phasegan_hpc.train.local import train_local

DATASETS = ("phase", "attenuation", "consistency", "fresnel_residual", "nonfinite_pixels")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_path(tiny_data, tmp_path_factory) -> str:
    """A PhaseGAN model (with G_D) trained for one epoch on the tiny 64 px data."""
    runs = tmp_path_factory.mktemp("recon-runs")
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.data_dir": str(tiny_data), "train.runs_dir": str(runs), "train.epochs": 1, "train.name": "m",
        "train.val_frames": 4, "train.log_every": 4, "train.checkpoint_every": 100})
    return train_local(cfg)["model_path"]


@pytest.fixture(scope="module")
def movie(tiny_data) -> dict[str, np.ndarray]:
    """22 detector frames (64 px, transmission about 1) with a flat and a dark to make raw counts of."""
    rng = np.random.default_rng(5)
    with h5py.File(tiny_data / "validation.h5", "r") as f:
        inten = f["intensity"][()]
    frames = np.concatenate([inten, inten[:, ::-1], inten[:, :, ::-1]])[:22]
    flat = 900.0 + 200.0 * rng.random((64, 64))
    dark = 50.0 + 5.0 * rng.random((64, 64))
    return {"transmission": frames.astype(np.float64), "flat": flat, "dark": dark}


def counts(movie, transmission):
    return np.round(transmission * (movie["flat"] - movie["dark"]) + movie["dark"]).astype(np.uint16)


def write_dxchange(path: Path, movie, compression=None, n=None) -> Path:
    t = movie["transmission"][:n]
    comp = dict(compression if compression is not None else hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=counts(movie, t), chunks=(3, 64, 64), **comp)
        f.create_dataset("exchange/data_white", data=np.stack([counts(movie, np.ones((64, 64)))] * 4), **comp)
        f.create_dataset("exchange/data_dark", data=np.stack([np.round(movie["dark"]).astype(np.uint16)] * 2))
    return path


def corrected_reference(movie, raw: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> np.ndarray:
    """(raw - mean dark) / (mean flat - mean dark) in float64, written out longhand."""
    flat = flats.reshape(-1, 64, 64).astype(np.float64).mean(axis=0)
    dark = darks.reshape(-1, 64, 64).astype(np.float64).mean(axis=0)
    return ((raw.astype(np.float64) - dark) / (flat - dark)).astype(np.float32)


def g_o_reference(model_path, corrected: np.ndarray) -> np.ndarray:
    """G_O applied to one frame at a time: (N, H, W) -> (N, 2, H, W) phase, attenuation."""
    m = load_model(model_path)
    out = []
    with torch.no_grad():
        for frame in corrected:
            x = m.normalisation.norm_intensity(torch.from_numpy(frame)[None, None])
            out.append(m.normalisation.denorm_object(m.generator(x))[0].numpy())
    return np.stack(out)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in DATASETS}


def assert_identical(a: dict, b: dict) -> None:
    for k in DATASETS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def run_cli(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_plan_is_chunk_aligned_and_independent_of_workers(tmp_path, movie):
    arc = open_archive(write_dxchange(tmp_path / "a.h5", movie))
    plan = make_plan(arc, batch_size=4, shard_frames=7)
    assert [(s.start, s.stop) for s in plan] == [(0, 6), (6, 12), (12, 18), (18, 22)]  # chunks of 3 frames
    assert all(s.start % 3 == 0 for s in plan)
    with pytest.raises(DataError, match="batch-size"):
        make_plan(arc, batch_size=0)


def test_backends_agree_with_reference_and_each_other(ray_cluster, model_path, movie, tmp_path):
    archive = write_dxchange(tmp_path / "run42.h5", movie)
    before = sha(archive)
    local = reconstruct(archive, model=model_path, output=tmp_path / "local.h5", backend="local", batch_size=4,
                        shard_frames=8)
    assert local.frames == 22 and local.shards == 3 and local.preview.is_file()
    ray_sum = reconstruct(archive, model=model_path, output=tmp_path / "ray.h5", backend="ray", workers=2,
                          batch_size=4, shard_frames=8, preview=False)
    assert ray_sum.computed_frames == 22
    args = [MPIEXEC, "-n", "2", EXE, "reconstruct", archive, "--model", model_path, "--backend", "mpi",
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
    ref = g_o_reference(model_path, corr)
    np.testing.assert_allclose(outs["local"]["phase"], ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs["local"]["attenuation"], ref[:, 1], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(outs["local"]["consistency"])) and np.all(outs["local"]["nonfinite_pixels"] == 0)
    with h5py.File(tmp_path / "local.h5", "r") as f:
        assert f["phase"].is_virtual and f["phase"].attrs["units"] == "rad"
        assert f.attrs["model_sha256"] == load_model(model_path).sha256
        assert f.attrs["source_file"] == str(archive) and "G_D" in f.attrs["score"]
        assert "[model]" in f.attrs["config"] and f.attrs["pixel_size_m"] == pytest.approx(1e-6)
    assert sha(archive) == before


def test_layouts_nxtomo_and_4d_blosc(model_path, movie, tmp_path):
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
    s = reconstruct(nx, model=model_path, backend="local", batch_size=4, shard_frames=5, preview=False)
    assert s.frames == 17 and s.output == tmp_path / "nx_phasegan.h5"
    out = read(s.output)
    corr = corrected_reference(movie, stack[key == 0], stack[key == 1], stack[key == 2])
    np.testing.assert_allclose(out["phase"], g_o_reference(model_path, corr)[:, 0], rtol=1e-4, atol=1e-5)
    assert sha(nx) == before

    # 4-D trains x pulses, Blosc-compressed uint16 without flats: raw counts rescaled to ~1 by the user.
    four = tmp_path / "trains.h5"
    frames = counts(movie, t[:21]).reshape(7, 3, 64, 64)
    with h5py.File(four, "w") as f:
        f.create_dataset("frames", data=frames, chunks=(2, 3, 64, 64),
                         **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.BITSHUFFLE))
        f.create_dataset("axis", data=np.arange(7))  # 1-D: not a candidate
    s4 = reconstruct(four, model=model_path, backend="local", batch_size=4, shard_frames=5, preview=False)
    out4 = read(s4.output)
    assert out4["phase"].shape == (7, 3, 64, 64) and out4["consistency"].shape == (7, 3)
    ref4 = g_o_reference(model_path, frames.reshape(21, 64, 64).astype(np.float32))
    np.testing.assert_allclose(out4["attenuation"].reshape(21, 64, 64), ref4[:, 1], rtol=1e-4, atol=1e-4)


def test_paganin_through_the_pipeline(movie, tmp_path):
    archive = write_dxchange(tmp_path / "p.h5", movie, n=10)
    s = reconstruct(archive, method="paganin", backend="local", batch_size=4, preview=False,
                    physics={"delta_beta": 1000.0, "pixel_size_m": 1e-6, "distance_m": 0.1, "energy_kev": 12.398419843})
    assert s.output.name == "p_paganin.h5"
    out = read(s.output)
    with h5py.File(archive, "r") as f:
        corr = corrected_reference(movie, f["exchange/data"][()], f["exchange/data_white"][()],
                                   f["exchange/data_dark"][()])
    phase, att = paganin(corr.astype(np.float64), pixel_size_m=1e-6, distance_m=0.1, delta_beta=1000.0,
                         energy_kev=12.398419843)
    np.testing.assert_allclose(out["phase"], phase, rtol=1e-4, atol=1e-3)  # float32 FFTs vs float64
    np.testing.assert_allclose(out["attenuation"], att, rtol=1e-4, atol=1e-6)


def test_nonfinite_frames_are_reported_not_propagated(model_path, movie, tmp_path):
    t = movie["transmission"][:8].astype(np.float32).copy()
    t[3, 10:12, 20:30] = np.nan
    t[3, 0, 0] = np.inf
    t[5] = np.inf
    archive = tmp_path / "nan.h5"
    with h5py.File(archive, "w") as f:
        f["movie"] = t
    s = reconstruct(archive, model=model_path, backend="local", batch_size=4, preview=False)
    out = read(s.output)
    assert s.nonfinite == [(3, 21), (5, 64 * 64)]
    assert np.all(np.isfinite(out["phase"][[0, 1, 2, 3, 4, 6, 7]]))  # frame 3 repaired, neighbours untouched
    assert np.all(np.isnan(out["phase"][5])) and np.isnan(out["consistency"][5])
    assert 5 in [i for i, _ in s.flagged]
    clean = g_o_reference(model_path, t[[0, 1, 2, 4]])
    np.testing.assert_allclose(out["phase"][[0, 1, 2, 4]], clean[:, 0], rtol=1e-4, atol=1e-5)


def test_killed_worker_is_replaced_with_identical_result(ray_cluster, model_path, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    ref = reconstruct(archive, model=model_path, output=tmp_path / "ref.h5", backend="local", batch_size=4,
                      shard_frames=8, preview=False)
    shards = tmp_path / "faulty.shards"
    # The actor writing shard 1 is killed from outside mid-shard, as a lost node would be.
    partial = shards / ".shard-000001.h5.partial"
    killer = faults.Killer(lambda: faults.first(faults.find("ray::_RayWorker", holding=partial)),
                           "a Ray actor writing shard 1",
                           after=lambda _: (time.time_ns(), (shards / "shard-000001.h5").exists()))
    s = reconstruct(archive, model=model_path, output=tmp_path / "faulty.h5", backend="ray", workers=2,
                    batch_size=4, shard_frames=8, preview=False)
    dead, (killed_ns, finished) = killer.result()
    assert not faults.alive(dead.pid) and not finished  # it did die, mid-shard
    assert (shards / "shard-000001.h5").stat().st_mtime_ns > killed_ns  # its shard was redone by another
    assert s.computed_frames == 22
    assert_identical(read(ref.output), read(s.output))


def test_killed_driver_resumes_without_redoing_finished_shards(ray_cluster, model_path, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    before = sha(archive)
    ref = reconstruct(archive, model=model_path, output=tmp_path / "ref.h5", backend="local", batch_size=4,
                      shard_frames=6, preview=False)
    out = tmp_path / "out.h5"
    shards = tmp_path / "out.shards"
    args = ["reconstruct", archive, "--model", model_path, "--output", out, "--batch-size", 4,
            "--shard-frames", 6, "--workers", 2, "--no-preview"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.Popen([EXE, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    # The actor on shard 0 hangs mid-shard (frozen from outside, as on a stuck node); the other does the rest.
    partial = shards / ".shard-000000.h5.partial"
    hung = faults.wait_for(lambda: faults.first(faults.find("ray::_RayWorker", holding=partial)), 180,
                           "a Ray actor writing shard 0")
    faults.freeze(hung.pid)
    others = [shards / f"shard-{i:06d}.h5" for i in (1, 2, 3)]
    try:
        faults.wait_for(lambda: all(p.is_file() for p in others) or proc.poll() is not None, 180, "shards 1-3")
        assert all(p.is_file() for p in others), proc.stdout.read() if proc.poll() is not None else "timeout"
        assert partial.is_file()
        proc.send_signal(signal.SIGKILL)  # the driver dies mid-run
        proc.wait(timeout=30)
    finally:
        faults.kill(hung.pid)  # and so does the stuck node
    assert not out.exists() and not (shards / "shard-000000.h5").exists()  # unfinished never looks finished
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in others}
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert "3 of 4 shards reused" in done.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in others} == stamps  # not recomputed
    assert_identical(read(ref.output), read(out))
    assert sha(archive) == before
    again = run_cli(*args, env=env)  # a finished output is not replaced
    assert again.returncode == 1 and "exists; add --overwrite" in again.stderr


def assert_one_line_error(proc, needle):
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


def test_bad_input_is_one_line_and_changes_nothing(model_path, movie, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = write_dxchange(d / "good.h5", movie, n=6)
    (d / "text.h5").write_text("not hdf5\n")
    truncated = d / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with h5py.File(d / "flat2d.h5", "w") as f:
        f["image"] = np.ones((64, 64), np.float32)
        f["angles"] = np.arange(5.0)
    with h5py.File(d / "several.h5", "w") as f:
        f["a"] = np.ones((2, 64, 64), np.float32)
        f["b"] = np.ones((2, 64, 64), np.float32)
    with h5py.File(d / "badflats.h5", "w") as f:
        f["exchange/data"] = np.ones((2, 64, 64), np.uint16)
        f["exchange/data_white"] = np.ones((2, 32, 32), np.uint16)
    torch.save({"weights": torch.zeros(3)}, d / "other.pt")
    (d / "model_link.pt").symlink_to(model_path)
    before = snapshot(d)
    m = ["--model", model_path, "--backend", "local"]
    cases = [
        ((d / "missing.h5", *m), "not found"),
        ((d / "text.h5", *m), "is not an HDF5 file"),
        ((truncated, *m), "truncated"),
        ((d / "flat2d.h5", *m), "no frames dataset"),
        ((d / "flat2d.h5", *m, "--dataset", "image"), "at least 3 dimensions"),
        ((d / "several.h5", *m), "several frames datasets, choose one with --dataset: /a"),
        ((d / "badflats.h5", *m), "flats are 32 x 32 but the frames are 64 x 64"),
        ((good, *m, "--output", good), "is the archive itself"),
        ((good, "--model", d / "other.pt", "--backend", "local"), "not a phasegan-hpc model file"),
        ((good, "--backend", "local"), "no model: give --model"),
        ((good, "--method", "paganin", "--backend", "local"), "needs --delta-beta"),
        ((good, *m, "--batch-size", "0"), "--batch-size must be >= 1"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PHASEGAN_HPC_MODEL"}
    for args, needle in cases:
        assert_one_line_error(run_cli("reconstruct", *args, env=env, cwd=tmp_path), needle)
    assert snapshot(d) == before and not list(d.glob("*_phasegan*"))

    # A finished output is kept without --overwrite, replaced with it.
    ok = run_cli("reconstruct", good, "--model", d / "model_link.pt", "--backend", "local", "--no-preview", env=env)
    assert ok.returncode == 0, ok.stderr
    out = d / "good_phasegan.h5"
    first = sha(out)
    assert_one_line_error(run_cli("reconstruct", good, *m, env=env), "exists; add --overwrite")
    assert sha(out) == first
    again = run_cli("reconstruct", good, *m, "--overwrite", "--batch-size", "2", "--no-preview",
                    "--report", d / "report.json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads((d / "report.json").read_text())
    assert report["backend"] == "local" and report["computed_frames"] == report["frames"] > 0
    assert report["output"] == str(out) and report["pipeline_frames_per_s"] >= report["frames_per_s"] > 0
    # A different plan over an unfinished shard directory is refused, not mixed.
    out.unlink()
    refused = run_cli("reconstruct", good, *m, "--batch-size", "3", env=env)
    assert_one_line_error(refused, "unfinished reconstruction with other")
    assert sha(good) == before["good.h5"]


def test_output_moves_with_its_shards(model_path, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=6)
    s = reconstruct(archive, model=model_path, backend="local", preview=False, shard_frames=3)
    expected = read(s.output)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(s.output, moved / s.output.name)
    shutil.move(tmp_path / "a_phasegan.shards", moved / "a_phasegan.shards")
    assert_identical(expected, read(moved / s.output.name))


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


def test_bench_reconstruct_smoke(tmp_path):
    import json

    out = tmp_path / "bench.json"
    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 1, "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert set(r["end_to_end_over_model"]) == {"local", "ray", "mpi"}
    assert all(v > 0 for v in r["end_to_end_over_model"].values())
    assert r["frames_per_s"]["model_only"]["median"] > 0 and r["threads"] == 1
    assert r["raw_mb"]["large"] == pytest.approx(4 * r["raw_mb"]["small"])
    assert r["peak_rss_mb"]["small"] > 50 and r["peak_rss_mb"]["large_over_small"] > 0

    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 1, "--backends", "local", "--no-rss", "--no-detector", "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert set(r["end_to_end_over_model"]) == {"local"} and r["peak_rss_mb"] is None and r["detector"] is False
    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 2, "--backends", "mpi", "--workers", 2, "--no-rss", "--json", out)
    assert proc.returncode == 0, proc.stderr  # two real ranks under mpiexec, their --report read back
    r = json.loads(out.read_text())
    assert r["workers"] == 2 and r["after_startup_frames_per_s"]["mpi"]["median"] >= r["frames_per_s"]["mpi"]["median"]
    proc = run_cli("bench", "reconstruct", "--backends", "local,slurm")
    assert proc.returncode == 1 and "unknown backend(s) slurm" in proc.stderr


def test_overwrite_never_deletes_a_directory_it_did_not_write(model_path, movie, tmp_path):
    archive = write_dxchange(tmp_path / "b.h5", movie, n=3)
    foreign = tmp_path / "b_phasegan.shards"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match="not a reconstruction's shard directory"):
        reconstruct(archive, model=model_path, backend="local", overwrite=True, preview=False)
    assert (foreign / "notes.txt").read_text() == "mine\n" and not (tmp_path / "b_phasegan.h5").exists()


def test_fast_path_pipelining_and_compiled_networks_match_on_cpu(model_path, movie, tmp_path):
    """The GPU fast path's pieces that run on a CPU: results are written one batch late (while the next one
    computes) and torch.compile'd networks give the same volumes as the plain ones (compiled once at worker
    start-up; the short last batch, 18 = 4 x 4 + 2, is padded to the compiled shape)."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=18)
    plain = reconstruct(archive, model=model_path, output=tmp_path / "plain.h5", backend="local", batch_size=4,
                        preview=False, compile=False)
    compiled = reconstruct(archive, model=model_path, output=tmp_path / "compiled.h5", backend="local",
                           batch_size=4, preview=False, compile=True)
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
    np.testing.assert_allclose(a["phase"], g_o_reference(model_path, corr)[:, 0], rtol=1e-4, atol=1e-5)
