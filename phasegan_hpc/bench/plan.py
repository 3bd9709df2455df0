"""Terabyte-shaped plans: what planning, a dry run and a partial reconstruction cost as the declared archive grows
from 1 GB to 1 TB, at the same data read (issue 19).

Each archive is a DXchange file whose frames dataset declares ``size_gb`` GB of ``size`` x ``size`` uint16
frames, chunked by ``chunk_frames``, with real data only in its flats, darks and the ``slice_frames`` frames
reconstructed (in its middle, on a chunk boundary): HDF5 allocates chunks lazily, so the file stays a few MB
whatever it declares. For each, in a subprocess of its own (so each peak RSS is that command's):

- planning: every check of the dry run and the plan (``run.dry_run``), and the manifest a run of the whole
  archive would write as ``plan.json`` (``run.planned_manifest``, serialised): medians over ``repeats`` after
  a warm-up in one process; the plan.json's bytes;
- the console script's ``reconstruct ARCHIVE --method paganin --dry-run``: wall time and peak RSS;
- ``reconstruct ARCHIVE --method paganin --frames A:B --backend local`` of the slice: wall time, peak RSS
  (the local backend's worker runs in the driver, so it is in that figure) and its plan.json's bytes.

What should grow is O(shards) only: the plan, plan.json, the dry run; the partial run should not grow at all.
``per_shard`` gives each quantity's growth per shard between consecutive sizes; ``superlinear`` names those whose
growth per shard at the last step is over twice its average over all sizes while adding over 10 % (none is
expected).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from phasegan_hpc.bench import machine
from phasegan_hpc.errors import DataError

#: Declared sizes measured by default [GB, 10^9 bytes of uint16 frames].
SIZES_GB = (1.0, 10.0, 100.0, 1000.0)


def make_declared_archive(path: Path, size_gb: float, size: int, chunk_frames: int, slice_frames: int,
                          seed: int = 0) -> tuple[Path, int, int]:
    """A DXchange archive declaring ``size_gb`` GB of uint16 frames with only its flats, darks and
    ``slice_frames`` frames at a chunk boundary in its middle written; returns (path, frames declared, first
    frame of the slice)."""
    frames = max(slice_frames, int(size_gb * 1e9) // (2 * size * size))
    start = (frames - slice_frames) // 2 // chunk_frames * chunk_frames
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    blobs = rng.uniform(0.2, 0.8, (slice_frames, 3, 2))
    thickness = sum(np.exp(-((y - b[:, None, None, 0]) ** 2 + (x - b[:, None, None, 1]) ** 2) / 0.005)
                    for b in np.moveaxis(blobs, 1, 0))
    stack = 100 + 900 * np.exp(-0.2 * thickness) + rng.normal(0, 3, thickness.shape)
    import h5py  # lazy: the CLI imports the bench package at start-up

    with h5py.File(path, "w") as f:
        ds = f.create_dataset("exchange/data", shape=(frames, size, size), dtype="uint16",
                              chunks=(chunk_frames, size, size), fillvalue=0)
        ds[start:start + slice_frames] = np.round(stack).astype(np.uint16)
        f["exchange/data_white"] = np.round(1000 + rng.normal(0, 3, (4, size, size))).astype(np.uint16)
        f["exchange/data_dark"] = np.round(100 + rng.normal(0, 1, (4, size, size))).astype(np.uint16)
        f.attrs.update(pixel_size_m=1e-6, wavelength_m=1e-10, distance_m=0.05, delta=1e-6, beta=1e-9)
    return path, frames, start


def _console_script() -> str:
    return shutil.which("phasegan-hpc", path=str(Path(sys.executable).parent)) or "phasegan-hpc"


#: Runs a command, then writes its peak RSS [KiB] to argv[1] (RUSAGE_CHILDREN: the largest of it and the children
#: it waited for, i.e. the supervisor's child that runs the command). A process forked from the benchmark's own
#: would start with the benchmark's RSS (it counts until exec), so this small process starts the command.
_RSS_WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                "sys.exit(rc)")


def _measured(args: list[str]) -> tuple[float, float]:
    """(wall [s], peak RSS [MiB]) of the console script run with ``args``.

    Raises:
        RuntimeError: it failed (its last lines of stderr).
    """
    with tempfile.TemporaryDirectory(prefix="bench-plan-rss-") as tmp:
        rss = Path(tmp) / "rss"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, str(rss), _console_script(), *args],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"phasegan-hpc {' '.join(args[:2])} failed: {proc.stderr[-500:]}")
        return wall, int(rss.read_text()) / 1024.0


def probe_planning(archive: str, repeats: int) -> dict[str, Any]:
    """In this process (``bench plan``'s subprocess): median seconds of the dry run's checks and plan and of the
    whole archive's plan.json, after one warm-up; its bytes and the shards."""
    from phasegan_hpc.reconstruct import ReconstructRequest
    from phasegan_hpc.reconstruct.output import manifest_text
    from phasegan_hpc.reconstruct.run import dry_run, planned_manifest

    request = ReconstructRequest(Path(archive), method="paganin", backend="local")
    plan, text = dry_run(request), manifest_text(planned_manifest(request))  # warm-up
    times: dict[str, list[float]] = {"plan_s": [], "plan_json_s": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan = dry_run(request)
        t1 = time.perf_counter()
        text = manifest_text(planned_manifest(request))
        times["plan_s"].append(t1 - t0)
        times["plan_json_s"].append(time.perf_counter() - t1)
    return {"shards": plan.shards, "frames": plan.frames, "output_bytes": plan.output_bytes,
            "plan_json_bytes": len(text.encode()), **{k: statistics.median(v) for k, v in times.items()}}


def _planning(archive: Path, repeats: int) -> dict[str, Any]:
    code = ("import json, sys; from phasegan_hpc.bench.plan import probe_planning; "
            "print(json.dumps(probe_planning(sys.argv[1], int(sys.argv[2]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(archive), str(repeats)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"planning {archive} failed: {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _marginal(rows: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> tuple[dict[str, dict], list[str]]:
    """Each quantity's growth per shard between consecutive sizes, and those growing faster than linearly in
    shards: the last step's growth per shard over 2x the average over all sizes, adding over 10 %."""
    names = list(rows)
    marginal: dict[str, dict] = {}
    superlinear = []

    def per_shard(key: str, a: str, b: str) -> float | None:
        shards = rows[b]["shards"] - rows[a]["shards"]
        return (rows[b][key] - rows[a][key]) / shards if shards else None  # None: as many shards

    for key in keys:
        marginal[key] = {f"{a}->{b}": per_shard(key, a, b) for a, b in zip(names, names[1:], strict=False)}
        if len(names) < 3:
            continue
        last, before, overall = per_shard(key, names[-2], names[-1]), rows[names[-2]][key], per_shard(key, names[0],
                                                                                                       names[-1])
        if last is not None and overall is not None and last > 2 * max(overall, 0.0) \
                and rows[names[-1]][key] - before > 0.1 * abs(before):
            superlinear.append(key)
    return marginal, superlinear


def _sizes(sizes: tuple[str, ...]) -> tuple[float, ...]:
    """``--sizes 1,10``: positive GB, in increasing order.

    Raises:
        DataError: anything else.
    """
    try:
        values = tuple(float(v) for v in sizes)
    except ValueError:
        values = ()
    if not values or any(not v > 0 for v in values) or list(values) != sorted(set(values)):
        raise DataError(f"--sizes must be increasing positive sizes in GB (e.g. 1,10,100), not {','.join(sizes)!r}")
    return values


def bench_plan(size: int = 256, chunk_frames: int = 16, slice_frames: int = 64, repeats: int = 3,
               sizes: tuple[str, ...] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Planning time, dry-run wall time and peak RSS, plan.json bytes, shards, and the wall time and peak RSS of a
    fixed slice's reconstruction, for archives declaring ``sizes`` GB (default 1, 10, 100, 1000).

    Args:
        size: frame side [px]. chunk_frames: frames per HDF5 chunk. slice_frames: frames of the slice
            reconstructed (``--frames``, Paganin). repeats: planning repeats (medians). sizes: declared sizes
            [GB]. device: of the partial reconstruction's worker.
    """
    declared = _sizes(sizes) if sizes else SIZES_GB
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        d = Path(tmp)
        for gb in declared:
            name = f"{gb:g} GB"
            archive, frames, start = make_declared_archive(d / f"declared-{gb:g}.h5", gb, size, chunk_frames,
                                                           slice_frames)
            planned = _planning(archive, repeats)
            dry_s, dry_rss = _measured(["reconstruct", str(archive), "--method", "paganin", "--backend", "local",
                                        "--dry-run"])
            out = d / f"part-{gb:g}.h5"
            part_s, part_rss = _measured(["reconstruct", str(archive), "--method", "paganin", "--backend", "local",
                                          "--frames", f"{start}:{start + slice_frames}", "--output", str(out),
                                          "--device", device, "--no-preview"])
            (part_plan,) = out.with_name(f"{out.stem}.shards").glob("*/plan.json")
            rows[name] = {"declared_bytes": frames * size * size * 2, "frames": frames,
                          "file_bytes": archive.stat().st_size, **planned,
                          "dry_run_s": dry_s, "dry_run_rss_mib": dry_rss,
                          "partial_s": part_s, "partial_rss_mib": part_rss,
                          "partial_plan_json_bytes": part_plan.stat().st_size}
            for p in d.iterdir():  # one archive and its output at a time
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    marginal, superlinear = _marginal(rows, ("plan_s", "plan_json_s", "plan_json_bytes", "dry_run_s",
                                             "dry_run_rss_mib", "partial_s", "partial_rss_mib"))
    return {"benchmark": "plan", **machine(device), "size": size, "chunk_frames": chunk_frames,
            "slice_frames": slice_frames, "repeats": repeats, "sizes": rows, "per_shard": marginal,
            "superlinear": superlinear,
            "target": "plan, plan.json and dry run O(shards); the partial run independent of the declared size"}
