"""Benchmarks behind ``phasegan-hpc bench NAME`` (one click subcommand each, in ``cli.py``).

Each measures a ratio against a baseline timed in the same run (the machine may be shared and noisy)
and reports medians over repeats. Benchmarks are never run as timed tests.
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from phasegan_hpc.errors import PhaseganError
from phasegan_hpc.files import atomic_write_text, check_writable
from phasegan_hpc.ui import bench_table, console


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time [s] of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                      sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Wall times [s] of several functions measured in turns (a, b, a, b, ...), so that load from other
    processes hits all of them alike; ratios are then taken pair by pair."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def machine(device: Any = "cpu") -> dict[str, Any]:
    """Where a benchmark ran: host, processor, versions, device name, torch threads, date (for the JSON)."""
    import torch  # lazy: the CLI imports this module at start-up, and it must not import torch

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"machine": platform.node(), "device": str(dev), "device_name": name, "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat()}


def benchmarks() -> dict[str, Callable[..., dict[str, Any]]]:
    """The registry: name -> function(**its options) returning a result dict (`cli.py` declares the options)."""
    # lazy: the benchmarks import torch and the CLI imports this module at start-up (and a cycle: they import it)
    from phasegan_hpc.bench.check import bench_check
    from phasegan_hpc.bench.flatfield import bench_flatfield
    from phasegan_hpc.bench.frc import bench_frc
    from phasegan_hpc.bench.inference import bench_inference
    from phasegan_hpc.bench.live import bench_live
    from phasegan_hpc.bench.nodes import bench_nodes
    from phasegan_hpc.bench.pipeline import bench_pipeline
    from phasegan_hpc.bench.plan import bench_plan
    from phasegan_hpc.bench.propagator import bench_propagator
    from phasegan_hpc.bench.read import bench_read
    from phasegan_hpc.bench.reconstruct import bench_reconstruct
    from phasegan_hpc.bench.step import bench_step
    from phasegan_hpc.bench.table1 import bench_table1
    from phasegan_hpc.bench.train import bench_train

    return {"frc": bench_frc, "propagator": bench_propagator, "read": bench_read, "pipeline": bench_pipeline,
            "flatfield": bench_flatfield, "step": bench_step, "train": bench_train, "reconstruct": bench_reconstruct,
            "live": bench_live, "inference": bench_inference, "table1": bench_table1, "check": bench_check,
            "plan": bench_plan, "nodes": bench_nodes}


def run_benchmark(name: str, **options: Any) -> dict[str, Any]:
    """Run benchmark ``name``; an option given as None takes that benchmark's default."""
    return benchmarks()[name](**{k: v for k, v in options.items() if v is not None})


def bench_command(name: str, json_path: str | None = None, **options: Any) -> dict[str, Any]:
    """``phasegan-hpc bench NAME``: run the benchmark, print its table and (with ``json_path``) write the record.

    Raises:
        PhaseganError: a check of the record is over its tolerance (``bench check``), after the table and
            the JSON are written.
    """
    if json_path is not None:
        check_writable(json_path, "--json")
    if options.get("device") is not None:
        from phasegan_hpc.reconstruct.backends import local_device  # lazy: imports torch

        local_device(options["device"])  # one line for a device that is no device, or CUDA where there is none
    if name == "table1":  # hours of training: say which cell is running
        options["progress"] = lambda message: console(stderr=True).print(message, style="dim")
    result = run_benchmark(name, **options)
    console().print(bench_table(result))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    if result.get("ok") is False:
        failed = ", ".join(k for k, c in result["checks"].items() if not c["ok"])
        raise PhaseganError(f"bench {name}: over tolerance: {failed}")
    return result
