"""Reconstruction on one node vs two nodes of the two-host namespace cluster, with the same total cores.

Layouts (``phasegan_hpc.testbed.netns``, as root): "1 node" is a Ray head on node1 with 2 CPUs; "2 nodes" is
a head on node1 and a worker on node2 with 1 CPU each. Both run ``phasegan-hpc reconstruct --backend ray
--workers 2`` (Paganin, no model to train) from node1 on the same archive, so the difference is what a second
node costs: actors placed across the veth pair, the archive read and the shards written from two network
namespaces, Ray's cross-node scheduling and object traffic. On one machine the two "nodes" share the cores,
the page cache and the disk: what this shows is the per-node overhead of the software, not a network.

The layouts alternate (1, 2, 1, 2, ...; a fresh Ray each time) so load from elsewhere hits both alike; each
run's frames/s is taken from its own ``--json`` summary (whole run, and after start-up), medians reported.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from phasegan_hpc.bench import machine
from phasegan_hpc.errors import ResourceError

LAYOUTS = {"1 node": (2,), "2 nodes": (1, 1)}  # Ray CPUs of node1 (and node2)


def _archive(path: Path, frames: int, size: int, chunk_frames: int, seed: int = 0) -> Path:
    import h5py  # lazy: the CLI imports the bench package at start-up

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=(900 + 50 * rng.random((frames, size, size))).astype(np.uint16),
                         chunks=(chunk_frames, size, size))
        f["exchange/data_white"] = np.full((4, size, size), 1000, np.uint16)
        f["exchange/data_dark"] = np.full((2, size, size), 10, np.uint16)
        f.attrs.update(pixel_size_m=1e-6, distance_m=0.1, energy_kev=12.4)
    return path


def _run_layout(netns, cluster, cpus: tuple[int, ...], args: list[str], summary_path: Path) -> dict[str, float]:
    """Start Ray with ``cpus`` per node, run ``args`` on node1, stop Ray; the run's figures."""
    for host in cluster.hosts:
        host.kill_all()
        shutil.rmtree(cluster.root / f"ray-{host.name}", ignore_errors=True)
    netns.start_ray_node(cluster, cluster.head, cpus=cpus[0])
    for host, n in zip(cluster.hosts[1:], cpus[1:], strict=False):
        time.sleep(2)
        netns.start_ray_node(cluster, host, cpus=n)
    netns.wait_for_ray_nodes(cluster, len(cpus))
    t0 = time.perf_counter()
    proc = cluster.head.run(*args, "--json", str(summary_path), env=netns.ray_env(), timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise ResourceError(f"bench nodes: reconstruct failed on {len(cpus)} node(s): "
                            f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    s = json.loads(summary_path.read_text())
    return {"wall_s": wall, "frames_per_s": s["frames_per_s"], "pipeline_frames_per_s": s["pipeline_frames_per_s"],
            "setup_s": s["setup_seconds"], "seconds": s["seconds"], "hosts": len(s.get("hosts", {}))}


def bench_nodes(frames: int = 4096, size: int = 128, batch: int = 32, shard_frames: int = 256,
                repeats: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Frames/s of ``reconstruct --backend ray --workers 2`` on 1 node (2 CPUs) and 2 nodes (1 + 1 CPUs), on the
    CPU (``device`` other than "cpu" is refused: the namespace cluster's nodes have no GPUs of their own).

    Raises:
        ResourceError: not root, or the namespaces cannot be made (one line says which).
    """
    from phasegan_hpc.testbed import netns

    if device != "cpu":
        raise ResourceError("bench nodes runs on the CPU: the namespace cluster gives its nodes no GPUs")
    try:
        cluster = netns.up()
    except netns.Unavailable as exc:
        raise ResourceError(f"bench nodes: {exc}") from None
    exe = str(Path(netns.ray_bin()).with_name("phasegan-hpc"))
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in LAYOUTS}
    try:
        archive = _archive(work / "movie.h5", frames, size, min(shard_frames, 64))
        args = [exe, "reconstruct", str(archive), "--method", "paganin", "--delta-beta", "1000", "--backend", "ray",
                "--workers", "2", "--batch-size", str(batch), "--shard-frames", str(shard_frames),
                "--output", str(work / "out.h5"), "--overwrite", "--no-preview"]
        for _ in range(repeats):
            for name, cpus in LAYOUTS.items():
                runs[name].append(_run_layout(netns, cluster, cpus, args, work / "summary.json"))
    finally:
        netns.down()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, rs in runs.items():
        rows.append({"layout": name, "nodes": len(LAYOUTS[name]), "cpus_per_node": "+".join(map(str, LAYOUTS[name])),
                     **{k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "hosts"},
                     "hosts_used": max(r["hosts"] for r in rs)})
    one, two = rows
    return {"benchmark": "nodes", "frames": frames, "size": size, "batch_size": batch,
            "shard_frames": shard_frames, "repeats": repeats, "rows": rows,
            "ratio_2_to_1_nodes": two["frames_per_s"] / one["frames_per_s"],
            "pipeline_ratio_2_to_1_nodes": two["pipeline_frames_per_s"] / one["pipeline_frames_per_s"],
            "extra_setup_s": two["setup_s"] - one["setup_s"], **machine("cpu")}
