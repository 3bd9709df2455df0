"""G_O inference throughput (frames/s) by batch size and variant, at 128 -> 128 (one detector) and
128 -> 256 (paper §4's cross-resolution G_O).

Variants: ``fp32`` (the baseline of every ratio), ``channels_last``, ``bf16`` (autocast), ``bf16_cl`` (both),
``compile`` (``torch.compile`` of bf16_cl) and, on CUDA, ``cuda_graph`` (bf16_cl captured once and
replayed). Each variant is timed on the same input, after warm-up, with the device synchronised only
around the timed loop; the figure is the median over repeats. The reconstruction fast path uses bf16 +
channels_last on CUDA (``phasegan_hpc.reconstruct.retrieve``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.registry import build_generator

VARIANTS = ("fp32", "channels_last", "bf16", "bf16_cl", "compile", "cuda_graph")


def _runner(net: torch.nn.Module, x: torch.Tensor, variant: str) -> Callable[[], torch.Tensor] | None:
    cuda = x.device.type == "cuda"
    cl = variant in ("channels_last", "bf16_cl", "compile", "cuda_graph")
    bf16 = variant in ("bf16", "bf16_cl", "compile", "cuda_graph")
    if variant == "cuda_graph" and not cuda:
        return None
    model = net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    inp = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    if variant == "compile":
        model = torch.compile(model)
    if variant == "cuda_graph":
        static = inp.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode(), ctx():
            for _ in range(3):
                model(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), ctx():
            out = model(static)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay

    def run() -> torch.Tensor:
        with torch.inference_mode(), ctx():
            return model(inp)

    return run


def bench_inference(size: int = 128, batch: int | None = None, repeats: int = 5, device: str = "cpu", filters: int = 32,
                    batches: tuple[int, ...] = (1, 4, 16, 64, 256), variants: tuple[str, ...] = VARIANTS,
                    min_seconds: float = 0.2) -> dict[str, Any]:
    """Frames/s of G_O per (resize, batch, variant) and each variant's speedup over fp32.

    Args:
        size: detector frame side (128 as the paper's Shimadzu crops).
        batch: a single batch size instead of ``batches``.
        filters: base filters (32: the paper's 22.9 M-parameter U-Net).
        variants: which of :data:`VARIANTS` to time (ratios need ``fp32``).
        min_seconds: each timed repeat runs forward passes for at least this long.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise DataError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sizes = (batch,) if batch else batches
    results: dict[str, Any] = {}
    for resize in ("same", "up2"):
        torch.manual_seed(0)
        net = build_generator("unet", 1, 2, filters, "kaiming", resize).to(dev).eval()
        for b in sizes:
            x = torch.randn(b, 1, size, size, device=dev)
            row: dict[str, Any] = {}
            for variant in variants:
                run = _runner(net, x, variant)
                if run is None:
                    continue
                for _ in range(2):  # warm-up (compilation, autotuning, allocator)
                    run()
                sync()
                n = max(1, int(min_seconds / max(_once(run, sync), 1e-6)))
                fps = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        run()
                    sync()
                    fps.append(n * b / (time.perf_counter() - t0))
                row[variant] = {"frames_per_s": statistics.median(fps), "min": min(fps), "max": max(fps)}
            base = row.get("fp32", {}).get("frames_per_s")
            for v in row.values():
                v["speedup_vs_fp32"] = v["frames_per_s"] / base if base else None
            out = f"{size}->{size * (2 if resize == 'up2' else 1)}"
            results.setdefault(out, {})[f"batch_{b}"] = row
    best = max(((o, b, v, r["frames_per_s"]) for o, rows in results.items() for b, row in rows.items()
                for v, r in row.items()), key=lambda t: t[3])
    return {"benchmark": "inference", **machine(dev), "size": size, "filters": filters, "repeats": repeats,
            "results": results, "best": {"output": best[0], "batch": best[1], "variant": best[2],
                                         "frames_per_s": best[3]}}


def _once(run: Callable[[], torch.Tensor], sync: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - t0
