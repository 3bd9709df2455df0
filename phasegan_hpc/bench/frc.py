"""FRC loss (eq. 4), forward and backward: vectorised implementation vs a per-ring Python loop.

The two are timed in turns; the speedup is the median of the per-turn ratios.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from phasegan_hpc.bench import interleaved_times
from phasegan_hpc.losses.frc import frc_loss, frc_reference_loop


def bench_frc(size: int = 256, batch: int = 16, repeats: int = 15, device: str = "cpu") -> dict[str, Any]:
    """Time forward + backward of the FRC loss on (batch, 1, size, size) float32 images."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(batch, 1, size, size, generator=g).to(dev).requires_grad_(True)
    b = torch.randn(batch, 1, size, size, generator=g).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def vectorised() -> None:
        a.grad = None
        frc_loss(a, b).backward()

    def loop() -> None:
        a.grad = None
        (1.0 - frc_reference_loop(a, b)).square().mean().backward()

    times = interleaved_times({"vectorised": vectorised, "loop": loop}, repeats, sync=sync)
    ratios = [lp / v for lp, v in zip(times["loop"], times["vectorised"], strict=True)]
    return {"benchmark": "frc", "size": size, "batch": batch, "device": str(dev), "repeats": repeats,
            "vectorised_ms": 1e3 * statistics.median(times["vectorised"]),
            "per_ring_loop_ms": 1e3 * statistics.median(times["loop"]),
            "speedup": statistics.median(ratios)}
