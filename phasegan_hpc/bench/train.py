"""Training throughput: the in-process loop vs Ray Train with 1 and 2 workers, on the same work.

For each image size, a small data set is simulated once; then PhaseGAN trains for a few steps (a) in this
process, (b) under Ray Train with one worker, (c) with two data-parallel workers. Throughput is samples per
second from the median step time (timestamps in ``metrics.jsonl``, warm-up steps dropped); Ray's fixed
start-up cost is reported separately as wall time.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from phasegan_hpc.cluster import connect_ray, disconnect_ray
from phasegan_hpc.config import Config, load_config, with_overrides
from phasegan_hpc.errors import DataError
from phasegan_hpc.simulate import simulate_dataset
from phasegan_hpc.train.fit import fit
from phasegan_hpc.train.local import train_local
from phasegan_hpc.train.loop import run_dir_of

WARMUP_STEPS = 2


def _step_time(run_dir: Path) -> float:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in recs if "loss_g" in r]
    deltas = [b - a for a, b in zip(times, times[1:], strict=False)][WARMUP_STEPS:]
    return statistics.median(deltas)


def _config(base: Config, data: Path, runs: Path, size: int, batch: int, steps: int) -> Config:
    return with_overrides(base, {
        "train.data_dir": str(data), "train.runs_dir": str(runs), "train.batch_size": batch,
        "train.epochs": 1, "train.max_steps": steps, "train.log_every": 1, "train.val_frames": 0,
        "train.checkpoint_every": 10_000, "simulate.size": size,
    })


def bench_train(size: int = 256, batch: int = 4, repeats: int = 10, device: str = "cpu",
                sizes: tuple[int, ...] = (64,)) -> dict[str, Any]:
    """Samples/s of the PhaseGAN step in-process and under Ray Train (1 and 2 workers).

    Args:
        size: image side of the second configuration (the first is configs/tiny.toml's 64 px).
        batch: batch per worker.
        repeats: timed steps per run (after warm-up).
        device: must be "cpu" (GPU training is measured on a GPU cluster).
    """
    if device != "cpu":
        raise DataError("bench train measures CPU workers; run it on a GPU node with --device cpu")
    base = load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.toml")
    out: dict[str, Any] = {"benchmark": "train", "batch_per_worker": batch, "threads": torch.get_num_threads()}
    steps = repeats + WARMUP_STEPS + 1
    started = connect_ray()
    try:
        for s in (*sizes, size):
            with tempfile.TemporaryDirectory(prefix="phasegan-bench-") as tmp:
                tmp = Path(tmp)
                n = 2 * batch * steps
                sim = with_overrides(base, {"simulate.size": s, "simulate.n_train": n, "simulate.n_val": 0,
                                            "simulate.n_paired": 0, "simulate.workers": 1})
                simulate_dataset(tmp / "data", sim)
                res: dict[str, Any] = {}
                cfg = with_overrides(_config(base, tmp / "data", tmp / "runs", s, batch, steps),
                                     {"train.name": "local"})
                t0 = time.perf_counter()
                train_local(cfg)
                res["local_wall_s"] = time.perf_counter() - t0
                res["local_samples_per_s"] = batch / _step_time(run_dir_of(cfg))
                for workers in (1, 2):
                    cfg = with_overrides(_config(base, tmp / "data", tmp / "runs", s, batch, steps),
                                         {"train.name": f"ray{workers}"})
                    t0 = time.perf_counter()
                    fit(cfg, workers=workers, cpus_per_worker=2.0 / workers)
                    res[f"ray{workers}_wall_s"] = time.perf_counter() - t0
                    res[f"ray{workers}_samples_per_s"] = workers * batch / _step_time(run_dir_of(cfg))
                res["ray1_over_local_step_time"] = res["local_samples_per_s"] / res["ray1_samples_per_s"]
                res["ray2_over_ray1_throughput"] = res["ray2_samples_per_s"] / res["ray1_samples_per_s"]
                out[f"size_{s}"] = res
    finally:
        disconnect_ray(started)
    return out
