"""FRC loss (eq. 4), forward and backward: vectorised implementation vs a per-ring Python loop."""

from __future__ import annotations

from typing import Any

import torch

from phasegan_hpc.bench import median_time
from phasegan_hpc.losses.frc import frc_loss, frc_reference_loop


def bench_frc(size: int = 256, batch: int = 16, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
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

    t_vec = median_time(vectorised, repeats, sync=sync)
    t_loop = median_time(loop, repeats, sync=sync)
    return {"benchmark": "frc", "size": size, "batch": batch, "device": str(dev), "repeats": repeats,
            "vectorised_ms": 1e3 * t_vec, "per_ring_loop_ms": 1e3 * t_loop, "speedup": t_loop / t_vec}
