"""One optimisation step of each method at the paper's size, against the paired (G_O-only) step; and the
PhaseGAN step's samples/s per GPU by variant, against the paper's ~28 samples/s on a V100.

Variants of the PhaseGAN step (``--variants``): ``fp32`` (the baseline), ``bf16_cl`` (bf16 autocast of the
network passes, ``train.amp = "bf16"``, with channels_last networks and batches), ``compile`` (``bf16_cl`` with
every network ``torch.compile``d). The paper trained 10k frames x 100 epochs in < 10 h on one V100: ~28
samples/s, the reference of ``*_vs_paper`` (issue 15's target: >= 10x per GPU at the foam sizes, ``--foam``:
batch 40, frames 128 px -> objects 256 px).
"""

from __future__ import annotations

from typing import Any

import torch

from phasegan_hpc.bench import median_time
from phasegan_hpc.config import Config, with_overrides
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.unet import SIZE_MULTIPLE
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.train.step import STEPS, Batch, Trainables, build_trainables

#: samples/s of the paper's training (10k frames x 100 epochs in < 10 h on one V100).
PAPER_SAMPLES_PER_S = 10_000 * 100 / (10 * 3600)
VARIANTS = ("fp32", "bf16_cl", "compile")


def _variant(tr: Trainables, data: Batch, variant: str) -> tuple[Trainables, Batch]:
    """``tr`` and ``data`` made ready for ``variant`` (networks converted in place)."""
    if variant == "fp32":
        return tr, data
    fmt = torch.channels_last
    for nets in (tr.generators, tr.discriminators):
        if nets is not None:
            nets.to(memory_format=fmt)
    data = Batch(data.intensity.contiguous(memory_format=fmt), data.obj.contiguous(memory_format=fmt))
    if variant == "compile":
        for nets in (tr.generators, tr.discriminators):
            for name, child in list(nets.named_children()) if nets is not None else []:
                if any(p.requires_grad for p in child.parameters()):
                    setattr(nets, name, torch.compile(child))
    return tr, data


def bench_step(size: int = 256, batch: int = 16, repeats: int = 3, device: str = "cpu",
               methods: tuple[str, ...] = ("paired", "phasegan"), variants: tuple[str, ...] = ("fp32",),
               filters: int = 32, foam: bool = False) -> dict[str, Any]:
    """Median seconds per training step per method (fp32), each method's ratio to the first (the paired step,
    which runs G_O alone), and the PhaseGAN step's samples/s per ``variants``.

    Args:
        size: frame side [px] (objects twice that with ``foam``). batch: samples per step.
        methods: the methods timed in fp32. variants: of :data:`VARIANTS`, for the PhaseGAN step.
        filters: G_O / G_D base filters (32: the paper's). foam: paper §4's cross-resolution networks
            (``model.upsample = 2``: frames ``size``, objects ``2 * size``).
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise DataError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if size % SIZE_MULTIPLE:
        raise DataError(f"--size must be a multiple of {SIZE_MULTIPLE} (the U-Net's), not {size}")
    dev = torch.device(device)
    amp = "bf16"
    cfg = with_overrides(Config(), {"train.batch_size": batch, "model.base_filters": filters,
                                    "model.upsample": 2 if foam else 1})
    obj_size = 2 * size if foam else size
    norm = Normalisation(1.0, 0.1, (0.98, -0.2), (0.1, 0.1), "real_imag")
    prop = FresnelPropagator((obj_size, obj_size), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    g = torch.Generator().manual_seed(0)
    data = Batch(torch.randn(batch, 1, size, size, generator=g).to(dev),
                 torch.randn(batch, 2, obj_size, obj_size, generator=g).to(dev))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {"benchmark": "step", "size": size, "object_size": obj_size, "batch": batch,
                           "filters": filters, "device": str(dev), "repeats": repeats,
                           "threads": torch.get_num_threads(), "paper_samples_per_s": PAPER_SAMPLES_PER_S}
    if foam:
        methods = tuple(m for m in methods if m != "paired") or ("phasegan",)  # paired needs equal sizes
    for method in methods:
        torch.manual_seed(0)
        tr = build_trainables(cfg, method, prop, norm, lambda m: m.to(dev), dev)
        out[f"{method}_s"] = median_time(lambda tr=tr, method=method: STEPS[method](tr, data, cfg.loss, 10.0),
                                         repeats, sync=sync)
    base = out[f"{methods[0]}_s"]
    for method in methods[1:]:
        out[f"{method}_over_{methods[0]}"] = out[f"{method}_s"] / base
    for variant in variants:
        torch.manual_seed(0)
        vcfg = with_overrides(cfg, {"train.amp": amp}) if variant != "fp32" else cfg
        tr, vdata = _variant(build_trainables(vcfg, "phasegan", prop, norm, lambda m: m.to(dev), dev), data, variant)
        seconds = median_time(lambda tr=tr, vdata=vdata, loss=vcfg.loss: STEPS["phasegan"](tr, vdata, loss, 10.0),
                              repeats, warmup=3 if variant == "compile" else 1, sync=sync)
        out[f"phasegan_{variant}_samples_per_s"] = batch / seconds
        out[f"phasegan_{variant}_vs_paper"] = batch / seconds / PAPER_SAMPLES_PER_S
    return out
