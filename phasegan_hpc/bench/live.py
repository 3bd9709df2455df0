"""Live reconstruction: how fast a writer may write while ``reconstruct --follow`` keeps up, and with what
latency, against the batch reconstruct rate of the same archive measured in the same run.

A synthetic raw archive (``bench.reconstruct.make_archive``) and an untrained PhaseGAN model of ``filters``
filters are made. The batch rate is the pipeline rate of a local batch ``reconstruct`` of the archive (after
the worker's start-up; median of ``repeats``). Then, for each writer rate ``fraction`` x the batch rate, a
writer process (``simulate.acquire``, a detector in SWMR mode, triggered ``DELAY_S`` after the file is ready,
so the follower's start-up is not in the figures) writes the archive while a local ``--follow`` reconstructs
it. Latency: a frame first seen -> its phase visible in the republished output, p50 and p99 over frames. The
follower keeps up when its p99 latency is at most 2 shard durations (shard frames / writer rate), the target
of the issue; ``sustained_fraction`` is the highest fraction that keeps up.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
from pathlib import Path
from typing import Any

from phasegan_hpc.bench import machine
from phasegan_hpc.bench.reconstruct import make_archive, make_model
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.simulate.acquire import acquire

#: The writer's trigger after its file is ready [s]: the follower's start-up happens before the first frame.
DELAY_S = 4.0
#: Writer rates timed, as fractions of the batch rate.
FRACTIONS = (0.5, 0.8, 1.0, 1.25)


def _batch_rate(archive: Path, model: Path, out: Path, batch: int, shard: int, device: str) -> float:
    s = reconstruct(ReconstructRequest(archive, model=model, output=out, backend="local", batch_size=batch,
                                       shard_frames=shard, preview=False, overwrite=True, device=device))
    return s.pipeline_frames_per_s


def _follow(archive: Path, model: Path, live: Path, rate: float, batch: int, shard: int, device: str) -> dict:
    """One writer process at ``rate`` and a follower in this process; the follower's live figures."""
    live.unlink(missing_ok=True)
    writer = multiprocessing.get_context("spawn").Process(target=acquire, args=(archive, live, rate),
                                                           kwargs={"delay": DELAY_S})
    writer.start()
    try:
        while writer.is_alive() and not _ready(live):
            writer.join(0.05)
        s = reconstruct(ReconstructRequest(live, model=model, output=live.with_name(f"{live.stem}_out.h5"),
                                           backend="local", batch_size=batch, shard_frames=shard, preview=False,
                                           overwrite=True, device=device, follow=True, idle_timeout=30.0))
    finally:
        writer.join()
    p50, p99 = s.live["latency_p50_s"], s.live["latency_p99_s"]
    return {"rate": rate, "p50_s": p50, "p99_s": p99, "shard_s": shard / rate,
            "kept_up": p99 is not None and p99 <= 2 * shard / rate, "backlog": s.live["max_backlog_frames"],
            "ended_by": s.live["ended_by"]}


def _ready(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r", swmr=True, locking=False) as f:
            return "process/acquisition/end_date" in f
    except OSError:
        return False


def bench_live(size: int = 64, frames: int = 2048, batch: int = 16, shard_frames: int = 64, filters: int = 4,
               repeats: int = 1, device: str = "cpu", fractions: tuple[float, ...] = FRACTIONS) -> dict[str, Any]:
    """Latency p50/p99 of ``--follow`` at writer rates ``fractions`` x the batch rate (``repeats`` rounds,
    medians), and the highest fraction it keeps up with (p99 <= 2 shard durations).

    Args:
        size: frame side [px]. frames: frames written. batch: frames per forward pass. shard_frames: frames per
            shard (the live default is 64). filters: base filters of the untrained model. device: "cpu" or "cuda".
    """
    shard = shard_frames
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        d = Path(tmp)
        archive = make_archive(d / "movie.h5", frames, size, chunk=16)
        model = make_model(d / "model.pt", filters)
        rounds: dict[float, list[dict]] = {f: [] for f in fractions}
        batch_rates = []
        for _ in range(repeats):  # in turns: the batch rate and the follows of one round share the machine's load
            rate = _batch_rate(archive, model, d / "batch.h5", batch, shard, device)
            batch_rates.append(rate)
            for f in fractions:
                rounds[f].append(_follow(archive, model, d / "live.h5", f * rate, batch, shard, device))
    rows = {}
    for f, runs in rounds.items():
        def med(key: str, runs: list[dict] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None
        rows[f"{f:g}x"] = {"writer_frames_per_s": med("rate"), "latency_p50_s": med("p50_s"),
                           "latency_p99_s": med("p99_s"), "shard_s": med("shard_s"),
                           "kept_up": all(r["kept_up"] for r in runs), "max_backlog_frames": max(
                               r["backlog"] for r in runs)}
    kept = [f for f in fractions if rows[f"{f:g}x"]["kept_up"]]
    return {"benchmark": "live", **machine(device), "size": size, "frames": frames, "batch": batch,
            "shard_frames": shard, "filters": filters, "repeats": repeats, "trigger_delay_s": DELAY_S,
            "batch_frames_per_s": statistics.median(batch_rates), "rates": rows,
            "sustained_fraction": max(kept) if kept else 0.0,
            "target": "keeps up at >= 0.8 of the batch rate with p99 latency <= 2 shard durations"}
