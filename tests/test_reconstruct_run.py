"""The driver (reconstruct/run.py) through the real console script: a killed driver resumes without
redoing finished shards; bad input is one line and changes nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import faults
import h5py
import numpy as np
import pytest
import torch
from movies import (
    assert_identical,
    assert_one_line_error,
    counts,
    read,
    run_cli,
    run_dir,
    sha,
    snapshot,
    write_dxchange,
)
from tools import EXE

from phasegan_hpc.errors import DataError, ResourceError
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

pytestmark = pytest.mark.slow


def test_killed_driver_resumes_without_redoing_finished_shards(ray_cluster, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    before = sha(archive)
    ref = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5", backend="local",
                                         batch_size=4, shard_frames=6, preview=False))
    out = tmp_path / "out.h5"
    args = ["reconstruct", archive, "--model", movie_model, "--output", out, "--batch-size", 4,
            "--shard-frames", 6, "--workers", 2, "--no-preview"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.Popen([EXE, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    # The actor on shard 0 hangs mid-shard (frozen from outside, as on a stuck node); the other does the rest.
    hung = faults.wait_for(lambda: (d := run_dir(out)) and faults.first(
        faults.find("ray::_RayWorker", holding=d / ".shard-000000.h5.partial")), 180, "a Ray actor writing shard 0")
    faults.freeze(hung.pid)
    shards = run_dir(out)
    partial = shards / ".shard-000000.h5.partial"
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


def test_bad_input_is_one_line_and_changes_nothing(movie_model, movie, tmp_path):
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
    (d / "model_link.pt").symlink_to(movie_model)
    before = snapshot(d)
    m = ["--model", movie_model, "--backend", "local"]
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
        ((good, *m, "--batch-size", "0"), "'--batch-size': 0 is not in the range x>=1"),
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
                    "--json", d / "report.json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads((d / "report.json").read_text())
    assert report["backend"] == "local" and report["computed_frames"] == report["frames"] > 0
    assert report["output"] == str(out) and report["pipeline_frames_per_s"] >= report["frames_per_s"] > 0
    # A different plan over an unfinished shard directory is refused, not mixed.
    out.unlink()
    refused = run_cli("reconstruct", good, *m, "--batch-size", "3", env=env)
    assert_one_line_error(refused, "unfinished reconstruction with other")
    assert sha(good) == before["good.h5"]



def test_bad_pixels_are_counted_and_an_all_bad_volume_is_an_error(movie_model, movie, tmp_path):
    """Absolute rules beside the relative one: pixels whose flat is not above the dark are counted in every
    frame; a frame with more than 1 % bad pixels is flagged whatever the others look like; a volume in which
    every frame is flagged is an error, never "0 flagged"."""
    t = movie["transmission"][:6].copy()
    t[2, 20:30, :10] = np.nan  # 100 px = 2.4 % of frame 2: flagged by the absolute rule
    flat = np.stack([counts(movie, np.ones((64, 64)))] * 2)
    flat[:, 0, :12] = 40  # 12 px (0.3 %) whose flat is below the dark (50): counted, not flagged
    raw = counts(movie, np.nan_to_num(t, nan=1.0)).astype(np.float32)
    raw[2, 20:30, :10] = np.nan
    raw[4, 40:50, :10] = 10  # below the dark: 100 negative pixels (2.4 %), flagged
    raw[5, 40:42, 20:30] = 10  # 20 negative pixels (0.5 %): counted, not flagged by the absolute rule
    archive = tmp_path / "bad.h5"
    with h5py.File(archive, "w") as f:
        f["exchange/data"] = raw
        f["exchange/data_white"] = flat
        f["exchange/data_dark"] = np.stack([np.full((64, 64), 50, np.uint16)] * 2)
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", batch_size=4, preview=False))
    per_frame = dict(s.nonfinite)
    assert per_frame == {0: 12, 1: 12, 2: 112, 3: 12, 4: 12, 5: 12}
    assert dict(s.negative) == {4: 100, 5: 20}
    flagged = [i for i, _ in s.flagged]
    assert 2 in flagged and 4 in flagged and len(flagged) < 6
    nothing = tmp_path / "nan.h5"
    with h5py.File(nothing, "w") as f:
        f["frames"] = np.full((6, 64, 64), np.nan, np.float32)
    with pytest.raises(DataError, match="every one of the 6 frames was flagged"):
        reconstruct(ReconstructRequest(nothing, model=movie_model, backend="local", batch_size=4, preview=False))


def test_a_second_run_on_one_output_is_refused_and_a_killed_holder_frees_it(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=4)
    out = tmp_path / "o.h5"
    request = ReconstructRequest(archive, model=movie_model, output=out, backend="local", preview=False)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from phasegan_hpc.reconstruct.output import OutputLock\n"
        "with OutputLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError, match=rf"o\.h5 is in use by {socket.gethostname()}:{holder.pid} since 20"):
            reconstruct(request)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".o.h5.lock", "a.h5"]  # nothing started
    finally:
        faults.kill(holder.pid)  # SIGKILL, as a lost process: the kernel drops its lock
        holder.wait()
    s = reconstruct(request)
    assert s.computed_frames == 4 and not (tmp_path / ".o.h5.lock").exists()


def test_a_run_that_fails_before_any_shard_leaves_nothing(ray_cluster, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=4)
    with pytest.raises(ResourceError, match="64"):  # refused by the Ray backend, after the plan was made
        reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "o.h5", backend="ray",
                                       cpus_per_worker=64, preview=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]  # no .shards, no plan.json, no lock


def test_dry_run_prints_the_plan_and_writes_nothing(movie_model, movie, tmp_path):
    """`--dry-run` checks as a run does, prints frames, shards, workers, output size and the geometry with its
    sources, and writes nothing but --report; the real run then makes exactly the shards it planned, within
    the size bound it printed."""
    d = tmp_path / "in"
    d.mkdir()
    archive = write_dxchange(d / "a.h5", movie, n=10)
    before = snapshot(d)
    report = tmp_path / "plan.json"
    args = ["reconstruct", archive, "--model", movie_model, "--shard-frames", 6, "--batch-size", 3, "--no-preview",
            "--backend", "local", "--roi", "0:64,0:32"]
    proc = run_cli(*args, "--dry-run", "--json", report)
    assert proc.returncode == 0, proc.stderr
    assert "plan (dry run, nothing written)" in proc.stdout and "region 0:64,0:32" in proc.stdout
    assert snapshot(d) == before  # not even a shard directory
    plan = json.loads(report.read_text())
    assert plan["frames"] == 10 and plan["shards"] == 2 and plan["output_shape"] == [10, 64, 32]
    assert plan["geometry_sources"] == {"pixel_size_m": "model", "wavelength_m": "model", "distance_m": "model"}
    assert plan["geometry"]["distance_m"] == pytest.approx(0.1) and plan["output_exists"] is False
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    shards = sorted(run_dir(d / "a_phasegan.h5").glob("shard-*.h5"))
    assert len(shards) == plan["shards"]
    with h5py.File(d / "a_phasegan.h5") as f:
        assert list(f["phase"].shape) == plan["output_shape"]
    assert sum(p.stat().st_size for p in shards) < plan["output_bytes"] + 2 * 4096 * len(shards)  # + metadata
    assert_one_line_error(run_cli(*args[:-2], "--roi", "0:99,0:32", "--dry-run"), "is not a region of the 64 x 64")


def test_frames_reconstructs_a_slice_of_rows(movie_model, movie, tmp_path):
    """`--frames START:STOP[:STEP]` reconstructs those rows only, equal to G_O on each of them; a slice on
    chunk boundaries keeps the chunk-aligned plan; NXtomo's slice is of its projections; --dry-run names it;
    a slice beyond the archive, an empty one or a malformed one is one line."""
    from movies import corrected_reference, g_o_reference

    from phasegan_hpc.data.archive import open_archive, parse_frames

    archive = write_dxchange(tmp_path / "a.h5", movie, n=20)
    with h5py.File(archive) as f:
        raw, flats, darks = (f[f"exchange/{k}"][()] for k in ("data", "data_white", "data_dark"))
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", batch_size=2, shard_frames=3,
                                       frames="4:17:3", preview=False))
    assert s.frames == 5
    ref = g_o_reference(movie_model, corrected_reference(movie, raw[4:17:3], flats, darks))
    out = read(s.output)
    np.testing.assert_allclose(out["phase"], ref[:, 0], rtol=1e-4, atol=1e-5)
    with h5py.File(s.output) as f:
        assert list(f.attrs["frames"]) == [4, 19, 3]
    aligned = open_archive(archive).with_frames(parse_frames("6:12"))
    assert aligned.chunk_rows == 3 and aligned.lead_shape == (6,) and list(aligned.select) == list(range(6, 12))
    assert open_archive(archive).with_frames(parse_frames("7:12")).chunk_rows == 1  # not on a chunk boundary
    # NXtomo: the slice picks among the projections (image_key 0), not among all rows.
    key = np.array([1, 0, 0, 2, 0, 0, 0, 1, 0])
    with h5py.File(tmp_path / "nx.h5", "w") as f:
        f["entry/data/data"] = np.zeros((len(key), 8, 8), np.uint16)
        f["entry/data/image_key"] = key
    nx = open_archive(tmp_path / "nx.h5").with_frames(parse_frames("1::2"))
    assert list(nx.select) == [2, 5, 8] and nx.lead_shape == (3,)
    args = ["reconstruct", archive, "--model", movie_model, "--backend", "local", "--output", tmp_path / "x.h5"]
    proc = run_cli(*args, "--frames", "10:", "--dry-run")
    assert proc.returncode == 0 and "10 (rows 10:20:1 of the first axis)" in proc.stdout, proc.stdout
    for frames, needle in (("0:99", "has 20 rows"), ("20:", "selects no frame"), ("3", "must be START:STOP[:STEP]"),
                           ("0:4:0", "STEP >= 1")):
        assert_one_line_error(run_cli(*args, "--frames", frames), needle)
    assert not (tmp_path / "x.h5").exists()


def test_a_sequence_of_three_files_is_the_same_movie_as_one_file(movie_model, movie, tmp_path):
    """`--sequence 'RUN-S*.h5'`: three sequence files (flats and darks in the first only; 7 + 7 + 6 frames, so
    shards cross file boundaries) give the output of the same 20 frames in one file, value for value, named
    after the run; the files are read-only; several files without --sequence, a pattern matching nothing and a
    file of other frames are one line each."""
    whole = write_dxchange(tmp_path / "whole.h5", movie, n=20)
    with h5py.File(whole) as f:
        raw, flats, darks = (f[f"exchange/{k}"][()] for k in ("data", "data_white", "data_dark"))
    d = tmp_path / "run"
    d.mkdir()
    for i, (a, b) in enumerate(((0, 7), (7, 14), (14, 20))):
        with h5py.File(d / f"RUN-S{i:05d}.h5", "w") as f:
            f.create_dataset("exchange/data", data=raw[a:b], chunks=(3, 64, 64))
            if i == 0:
                f["exchange/data_white"], f["exchange/data_dark"] = flats, darks
    before = snapshot(d)
    options = dict(model=movie_model, backend="local", batch_size=2, shard_frames=6, preview=False)
    one = reconstruct(ReconstructRequest(whole, **options))
    seq = reconstruct(ReconstructRequest(d / "RUN-S00000.h5", sequence=(d / "RUN-S00001.h5", d / "RUN-S00002.h5"),
                                         **options))
    assert seq.output == d / "RUN_phasegan.h5" and seq.frames == 20
    assert_identical(read(seq.output), read(one.output))
    with h5py.File(seq.output) as f:
        assert [p for p, _ in json.loads(f.attrs["source_files"])] == [str(d / f"RUN-S{i:05d}.h5") for i in range(3)]
    assert {k: v for k, v in snapshot(d).items() if k.startswith("RUN-S")} == before  # read-only
    args = ["reconstruct", "--model", movie_model, "--backend", "local", "--output", tmp_path / "x.h5"]
    proc = run_cli(*args, "--sequence", str(d / "RUN-S*.h5"), "--dry-run")
    assert proc.returncode == 0 and "and 2 more files, one movie" in proc.stdout, proc.stderr + proc.stdout
    with h5py.File(d / "RUN-S00003.h5", "w") as f:
        f["exchange/data"] = raw[:2, :32]
    for extra, needle in ((["--sequence", d / "RUN-S*.h5"], "a sequence needs frames of one shape and dtype"),
                          ([d / "RUN-S00000.h5", d / "RUN-S00001.h5"], "--output names one file, but 2 archives"),
                          (["--sequence", tmp_path / "none-S*.h5"], "no file matches it as a pattern")):
        assert_one_line_error(run_cli(*args, *extra), needle)
    assert not (tmp_path / "x.h5").exists()


def test_a_list_of_archives_gives_one_output_each_from_one_pool(ray_cluster, movie_model, movie, tmp_path):
    """`reconstruct A.h5 B.h5`: each output equals its archive's own run; the shards of both run on one pool of
    Ray actors (the same two processes); a bad archive in the list is one line and nothing is written."""
    from phasegan_hpc.reconstruct.backends import backend_named
    from phasegan_hpc.reconstruct.run import prepare
    from phasegan_hpc.reconstruct.source import FixedShards, tasks

    d = tmp_path / "in"
    d.mkdir()
    a, b = write_dxchange(d / "a.h5", movie, n=12), write_dxchange(d / "b.h5", movie, n=9)
    options = dict(model=movie_model, batch_size=2, shard_frames=3, preview=False)
    refs = [read(reconstruct(ReconstructRequest(x, output=tmp_path / f"ref_{x.stem}.h5", backend="local",
                                                **options)).output) for x in (a, b)]
    ray_backend = backend_named("ray", workers=2)
    prepared = [prepare(ReconstructRequest(x, output=tmp_path / f"pool_{x.stem}.h5", backend="ray", workers=2,
                                           **options), ray_backend) for x in (a, b)]
    todo = tasks(prepared[0].pending, 0) + tasks(prepared[1].pending, 1)
    rows = ray_backend.run([p.job for p in prepared], FixedShards(todo), lambda n: None)
    assert sorted((r["job"], r["shard"]) for r in rows) == sorted((t.job, t.shard.index) for t in todo)
    assert len({r["worker"] for r in rows}) <= 2  # two actors served both archives
    for p in prepared:  # every shard as the archive's own run wrote it
        for s in p.plan:
            ref = run_dir(tmp_path / f"ref_{p.job.archive.path.stem}.h5") / s.name
            with h5py.File(ref, "r") as x, h5py.File(Path(p.job.shards_dir) / s.name, "r") as y:
                np.testing.assert_array_equal(x["phase"][()], y["phase"][()])
    report = tmp_path / "runs.json"
    proc = run_cli("reconstruct", a, b, "--model", movie_model, "--backend", "local", "--batch-size", 2,
                   "--shard-frames", 3, "--no-preview", "--json", report)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(report.read_text())
    assert [r["output"] for r in records] == [str(d / "a_phasegan.h5"), str(d / "b_phasegan.h5")]
    for x, ref in zip((a, b), refs, strict=True):
        assert_identical(read(d / f"{x.stem}_phasegan.h5"), ref)
    (d / "text.h5").write_text("not HDF5")
    before = snapshot(d)
    proc = run_cli("reconstruct", a, d / "text.h5", "--model", movie_model, "--backend", "local",
                   "--overwrite")
    assert_one_line_error(proc, "is not an HDF5 file")
    assert snapshot(d) == before
