"""Terabyte-shaped plans (issue 19): an archive whose frames dataset declares 1 TiB (2^27 frames of 64 x 64
uint16, chunked) but holds real data only in its flats, darks and one slice (HDF5 allocates chunks lazily: the
others read as the fill value), so the file stays a few MB. The real console script dry-runs the whole of it and
reconstructs the slice (``--frames``); the plan, the output and the driver's memory must follow the shards
(8,192 of them), never the 134 M frames: a byte per frame would be 128 MiB, which the bounds below catch.

References are independent of the planner: the shard count and output size are computed here from the
archive's declared shape, the reconstructed slice equals a plain run of an archive holding only those frames
bit for bit, and a float64 numpy Paganin within float32 rounding.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.fft
from tools import EXE

pytestmark = pytest.mark.slow

SIDE = 64  # frame side [px]
FRAMES = 2**27  # declared: 2^27 x 64 x 64 x 2 bytes = 1 TiB
CHUNK = 256  # frames per HDF5 chunk (2 MiB)
START, COUNT = 2**26, 384  # the slice reconstructed: rows 2^26 .. 2^26 + 383 (chunk-aligned, 1.5 chunks)
SHARD = 256  # --shard-frames of the partial runs: two shards (256 + 128)
GEOMETRY = {"pixel_size_m": 1e-6, "wavelength_m": 1e-10, "distance_m": 0.05, "delta": 1e-6, "beta": 1e-9}
#: Bounds: generous against what is measured (docs/benchmarks.md, bench plan), far below O(frames) structures.
PLAN_JSON_MAX = 2 << 20  # bytes of the whole archive's plan.json (measured ~0.9 MB for its 8,192 shards)
EXTRA_RSS_MAX = 64 << 20  # driver peak RSS above the same command on a small archive (measured < 10 MB)
DRY_RUN_RSS_MAX = 1 << 30  # the dry run's peak RSS (measured ~0.3 GB: torch's import)


def slice_data(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, flats, darks) uint16: a phase object (smooth blobs) in a beam of ~1000 counts over a dark of ~100."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIDE, :SIDE]
    thickness = np.zeros((n, SIDE, SIDE))
    for i in range(n):
        for cy, cx, r in rng.uniform((8, 8, 3), (56, 56, 9), (3, 3)):
            thickness[i] += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    dark = 100 + rng.normal(0, 1, (4, SIDE, SIDE))
    flat = 1000 + 20 * np.sin(x / 9.0) + rng.normal(0, 3, (4, SIDE, SIDE))
    frames = dark.mean(0) + (flat.mean(0) - dark.mean(0)) * np.exp(-0.2 * thickness) + rng.normal(0, 2, thickness.shape)
    return (np.round(frames).astype(np.uint16), np.round(flat).astype(np.uint16), np.round(dark).astype(np.uint16))


def write_archive(path: Path, frames: int, at: int, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Path:
    """A DXchange archive declaring ``frames`` frames with ``data``'s frames written at row ``at`` only."""
    stack, flats, darks = data
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("exchange/data", shape=(frames, SIDE, SIDE), dtype="uint16",
                              chunks=(CHUNK, SIDE, SIDE), fillvalue=0)
        ds[at:at + len(stack)] = stack
        f["exchange/data_white"], f["exchange/data_dark"] = flats, darks
        f.attrs.update(GEOMETRY)
    return path


#: Runs a command and writes its peak RSS (RUSAGE_CHILDREN: the largest of it and the children it waited for, i.e.
#: the supervisor's child that runs the command) to argv[1]. A process forked from this test's would start with
#: this test's RSS (it counts until exec), so the command is started by this small process instead.
RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(rc)")


def measured(*args: object) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run the console script; (its result, its peak RSS [bytes], its wall time [s])."""
    with tempfile.TemporaryDirectory() as tmp:
        rss = Path(tmp) / "rss"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RSS_WRAPPER, rss, EXE, *map(str, args)], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=600)
        wall = time.perf_counter() - t0
        return proc, int(rss.read_text()) * 1024, wall


def reference_paganin(intensity: np.ndarray, dx: float, z: float, lam: float, db: float) -> np.ndarray:
    """Phase [rad] of flat-corrected frames, float64 numpy (DESIGN.md §3), edge-padded on each side by
    ceil(pi lambda z / dx^2) and up to the next fast FFT size (physics/paganin.py's documented rule)."""
    n = intensity.shape[-1]
    total = scipy.fft.next_fast_len(n + 2 * math.ceil(math.pi * lam * z / dx**2))
    before = (total - n) // 2
    padded = np.pad(intensity, ((0, 0), (before, total - n - before), (before, total - n - before)), mode="edge")
    f = np.fft.fftfreq(total, d=dx)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    filtered = np.fft.ifft2(np.fft.fft2(padded) / (1 + math.pi * lam * z * db * f2)).real
    attenuation = -np.log(filtered[:, before:before + n, before:before + n])
    return -db * attenuation / 2


def read_output(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("terabyte")
    data = slice_data(COUNT)
    return {"huge": write_archive(d / "huge.h5", FRAMES, START, data),
            "small": write_archive(d / "small.h5", COUNT, 0, data), "dir": d}


def test_the_archive_declares_a_terabyte_and_stays_small(archives):
    with h5py.File(archives["huge"], "r") as f:
        ds = f["exchange/data"]
        assert ds.shape == (FRAMES, SIDE, SIDE) and ds.size * ds.dtype.itemsize == 2**40
        assert ds.id.get_num_chunks() == math.ceil(COUNT / CHUNK)  # only the slice's chunks exist
        assert not ds[START - 1].any() and (ds[START:START + 2] > 0).all()  # unwritten chunks: the fill value
    assert archives["huge"].stat().st_size < 50 << 20


def test_dry_run_of_the_whole_terabyte_archive_is_o_shards(archives):
    """The full archive's dry run: its numbers equal an independent computation, and it holds no more memory
    than a dry run of a 384-frame archive (the plan's 8,192 shards are small; a byte per frame would be 128 MiB)."""
    runs = {}
    for name in ("huge", "small"):
        proc, rss, wall = measured("reconstruct", archives[name], "--method", "paganin", "--dry-run",
                                   "--json", archives["dir"] / f"dry-{name}.json")
        assert proc.returncode == 0, proc.stderr
        runs[name] = (json.loads((archives["dir"] / f"dry-{name}.json").read_text()), rss, wall)
    plan, rss, _ = runs["huge"]
    per_shard = round((256 << 20) // (4 * SIDE * SIDE) / CHUNK) * CHUNK  # 256 MiB of float32 input, whole chunks
    assert per_shard == 16384
    assert plan["frames"] == FRAMES and plan["output_shape"] == [FRAMES, SIDE, SIDE]
    assert plan["shards"] == math.ceil(FRAMES / per_shard) == 8192 and plan["shard_frames"] == per_shard
    # the output's upper bound: phase and attenuation float32, and 6 per-frame values counted 8 bytes each
    assert plan["output_bytes"] == FRAMES * (2 * 4 * SIDE * SIDE + 8 * 6)
    assert rss < DRY_RUN_RSS_MAX
    assert rss - runs["small"][1] < EXTRA_RSS_MAX, (rss, runs["small"][1])


def test_the_whole_archives_plan_json_is_o_shards(archives):
    """What plan.json would hold for a run of the whole archive (a real run is refused here: its output needs
    4 TiB of free space): one entry per shard, contiguous, covering every frame once, under 2 MB."""
    from phasegan_hpc.reconstruct import ReconstructRequest
    from phasegan_hpc.reconstruct.output import manifest_text
    from phasegan_hpc.reconstruct.run import planned_manifest

    request = ReconstructRequest(archives["huge"], method="paganin", backend="local",
                                 output=archives["dir"] / "whole.h5")
    t0 = time.perf_counter()
    text = manifest_text(planned_manifest(request))
    seconds = time.perf_counter() - t0
    shards = json.loads(text)["shards"]
    assert len(shards) == 8192 and len(text) < PLAN_JSON_MAX
    assert [s["start"] for s in shards] == list(range(0, FRAMES, 16384))
    assert all(s["stop"] == min(FRAMES, s["start"] + 16384) for s in shards)
    assert seconds < 30  # not a timing test: a per-frame loop in Python would take minutes


def test_a_slice_of_the_terabyte_archive_is_reconstructed_as_a_small_archive_of_it(archives):
    """``--frames`` of the 1 TiB archive: its plan.json lists the slice's two shards only, its output equals bit
    for bit a plain run of an archive holding just those frames, and that equals float64 Paganin; the driver's
    peak RSS is the small run's (the 2^27 rows it does not read cost nothing)."""
    from phasegan_hpc.reconstruct import ReconstructRequest
    from phasegan_hpc.reconstruct.output import manifest_text
    from phasegan_hpc.reconstruct.run import planned_manifest

    d = archives["dir"]
    part, ref = d / "part.h5", d / "ref.h5"
    common = ("--method", "paganin", "--backend", "local", "--shard-frames", SHARD, "--no-preview")
    frames = f"{START}:{START + COUNT}"
    expected_plan = manifest_text(planned_manifest(ReconstructRequest(
        archives["huge"], method="paganin", backend="local", shard_frames=SHARD, frames=frames, output=part)))
    proc, rss, _ = measured("reconstruct", archives["huge"], "--frames", frames, "--output", part, *common,
                            "--json", d / "part.json")
    assert proc.returncode == 0, proc.stderr
    proc_ref, rss_ref, _ = measured("reconstruct", archives["small"], "--output", ref, *common)
    assert proc_ref.returncode == 0, proc_ref.stderr

    (plan_file,) = (d / "part.shards").glob("*/plan.json")
    assert plan_file.read_text() == expected_plan  # planned_manifest is what a run writes
    plan = json.loads(plan_file.read_text())
    assert len(plan_file.read_bytes()) < 4096 and plan["frames"] == [START, START + COUNT, 1]
    assert [(s["start"], s["stop"]) for s in plan["shards"]] == [(0, 256), (256, 384)]
    summary = json.loads((d / "part.json").read_text())
    assert summary["frames"] == summary["computed_frames"] == COUNT and summary["shards"] == 2

    got, want = read_output(part), read_output(ref)
    assert got["phase"].shape == (COUNT, SIDE, SIDE)
    for name in ("phase", "attenuation", "consistency", "fresnel_residual", "nonfinite_pixels", "negative_pixels"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    with h5py.File(part, "r") as f:  # the NeXus frame axis: the archive's own row numbers
        np.testing.assert_array_equal(f["entry/data/frame"][()], np.arange(START, START + COUNT))
    stack, flats, darks = slice_data(COUNT)
    dark = darks.astype(np.float64).mean(0)
    corrected = (stack - dark) / (flats.astype(np.float64).mean(0) - dark)
    phase = reference_paganin(corrected[::64], GEOMETRY["pixel_size_m"], GEOMETRY["distance_m"],
                              GEOMETRY["wavelength_m"], GEOMETRY["delta"] / GEOMETRY["beta"])
    assert np.ptp(phase) > 1  # an object worth retrieving
    np.testing.assert_allclose(got["phase"][::64], phase, rtol=0, atol=2e-4 * np.abs(phase).max())
    assert rss - rss_ref < EXTRA_RSS_MAX, (rss, rss_ref)
    print(f"partial: peak RSS {rss / 2**20:.0f} MiB (small archive: {rss_ref / 2**20:.0f} MiB)", file=sys.stderr)


def test_a_runs_summary_lists_a_bounded_number_of_frames(tmp_path):
    """A detector pixel whose flat is not above its dark is non-finite in every frame: the summary counts every
    such frame but lists only the first LISTED_FRAMES (a terabyte run would otherwise list millions, in the
    driver's memory and in --json), and so does the table."""
    from phasegan_hpc.reconstruct.request import LISTED_FRAMES

    n, side = LISTED_FRAMES + 500, 16
    rng = np.random.default_rng(5)
    flats = np.full((2, side, side), 1000, np.uint16)
    darks = np.full((2, side, side), 100, np.uint16)
    flats[:, 3, 5] = 100  # dead: flat = dark
    with h5py.File(tmp_path / "dead.h5", "w") as f:
        f["exchange/data"] = np.round(rng.uniform(500, 900, (n, side, side))).astype(np.uint16)
        f["exchange/data_white"], f["exchange/data_dark"] = flats, darks
        f.attrs.update(GEOMETRY)
    proc, _, _ = measured("reconstruct", tmp_path / "dead.h5", "--method", "paganin", "--backend", "local",
                          "--batch-size", 500, "--no-preview", "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["frames"] == s["nonfinite_frames"] == n
    assert s["nonfinite"] == [[i, 1] for i in range(LISTED_FRAMES)]  # the first ones, each with its one pixel
    assert s["negative_frames"] == 0 and s["negative"] == []
    assert s["flagged_frames"] < n and len(s["flagged"]) == min(s["flagged_frames"], LISTED_FRAMES)
    assert f"{n:,} frames: 0 (1 px)" in proc.stdout  # the table's count is every frame
