"""One optimisation step of each method at the paper's size, against the paired (G_O-only) step."""

from __future__ import annotations

from typing import Any

import torch

from phasegan_hpc.bench import median_time
from phasegan_hpc.config import Config, with_overrides
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.train.step import STEPS, Batch, build_trainables


def bench_step(size: int = 256, batch: int = 16, repeats: int = 3, device: str = "cpu",
               methods: tuple[str, ...] = ("paired", "phasegan")) -> dict[str, Any]:
    """Median seconds per training step (full-size networks, paper §3 physics) per method, and each
    method's ratio to the first (the paired step, which runs G_O alone)."""
    dev = torch.device(device)
    cfg = with_overrides(Config(), {"train.batch_size": batch})
    norm = Normalisation(1.0, 0.1, (0.98, -0.2), (0.1, 0.1), "real_imag")
    prop = FresnelPropagator((size, size), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    g = torch.Generator().manual_seed(0)
    data = Batch(torch.randn(batch, 1, size, size, generator=g).to(dev),
                 torch.randn(batch, 2, size, size, generator=g).to(dev))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {"benchmark": "step", "size": size, "batch": batch, "device": str(dev),
                           "repeats": repeats, "threads": torch.get_num_threads()}
    for method in methods:
        torch.manual_seed(0)
        tr = build_trainables(cfg, method, prop, norm, lambda m: m.to(dev))
        out[f"{method}_s"] = median_time(lambda tr=tr, method=method: STEPS[method](tr, data, cfg.loss, 10.0),
                                         repeats, sync=sync)
    base = out[f"{methods[0]}_s"]
    for method in methods[1:]:
        out[f"{method}_over_{methods[0]}"] = out[f"{method}_s"] / base
    return out
