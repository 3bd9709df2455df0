"""Paper Table 1 reproduced: paired, pix2pix, CycleGAN and PhaseGAN trained with the same G_O on the same
simulated data (unpaired for the last two, paired for the first two), scored with Paganin on the same
validation frames (L2, DSSIM, FRCM of phase and attenuation: mean, spread and distribution).

Writes into ``out_dir``: ``table1.md`` (the table), ``table1.json``, ``table1_patch.png`` (one validation
patch per method, as the paper's Table 1), ``table1_ranked.png`` (the ranked per-frame distributions of
Supplement Fig. S4), the data set and the four runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.config import load_config, with_overrides

METHODS = ("paired", "pix2pix", "cyclegan", "phasegan")
#: Paper §3's CycleGAN weights: alpha_cyc 20, alpha_frc 4, x2.5 on the object-cycle terms (DESIGN.md §2).
CYCLEGAN_LOSS = {"loss.alpha_cyc": 20.0, "loss.alpha_frc": 4.0, "loss.object_cycle_weight": 2.5}
PHOTONS_PER_PIXEL = 6.6e7 / 256**2  # the paper's ~1007


def _markdown(rows, metrics: tuple[str, ...]) -> str:
    head = "| method | n | " + " | ".join(m.replace("_", " ") for m in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for r in rows:
        lines.append(f"| {r.method} | {r.n} | " + " | ".join(f"{r.stats[m][0]:.4g} ± {r.stats[m][1]:.2g}"
                                                               for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def bench_table1(size: int = 64, train: int = 2000, epochs: int = 10, val: int = 200, batch: int = 8,
                 filters: int = 4, device: str = "cpu", out_dir: str = "table1", seed: int = 1,
                 config: str | None = None) -> dict[str, Any]:
    """Train the four methods and score them with Paganin; returns the table as a dict (and writes files).

    Args:
        size: frame side [px]. train: unpaired objects and frames, and paired frames, each. epochs: per method.
        val: validation frames. batch: batch size. filters: generator base filters, discriminators get twice
            as many (the paper's 32 and 64 are GPU-sized). config: the base configuration (physics, phantoms,
            flat fields, losses, learning rates; default ``configs/tiny.toml``); the arguments override it.
    """
    from phasegan_hpc.evaluate import evaluate
    from phasegan_hpc.figures import ranked_distributions, table1_figure
    from phasegan_hpc.simulate import simulate_dataset
    from phasegan_hpc.train.local import train_local

    out = Path(out_dir)
    base = with_overrides(load_config(config or Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"), {
        "simulate.size": size, "simulate.n_train": train, "simulate.n_paired": train, "simulate.n_val": val,
        "simulate.seed": seed, "detector.photons_per_frame": PHOTONS_PER_PIXEL * size * size,
        "model.base_filters": filters, "model.disc_filters": 2 * filters, "train.data_dir": str(out / "data"),
        "train.runs_dir": str(out / "runs"),
        "train.epochs": epochs, "train.batch_size": batch, "train.val_frames": min(val, 32),
        "train.checkpoint_every": 10_000, "train.log_every": 50, "train.norm_frames": min(train, 1000)})
    t0 = time.perf_counter()
    if not (out / "data" / "validation.h5").is_file():
        simulate_dataset(out / "data", base, overwrite=True)
    timings = {"simulate_s": time.perf_counter() - t0}
    models = {}
    for method in METHODS:
        cfg = with_overrides(base, {"train.method": method, "train.name": method,
                                    **(CYCLEGAN_LOSS if method == "cyclegan" else {})})
        t0 = time.perf_counter()
        models[method] = train_local(cfg, device=device)["model_path"]
        timings[f"train_{method}_s"] = time.perf_counter() - t0
    validation = out / "data" / "validation.h5"
    rows = [evaluate(models[m], validation, device=device)[0] for m in METHODS]
    rows += evaluate(None, validation, ("paganin",), device=device)
    metrics = tuple(rows[0].stats)
    (out / "table1.md").write_text(_markdown(rows, metrics))
    table1_figure(out / "table1_patch.png", {m: models[m] for m in METHODS}, validation, frame=0)
    ranked_distributions(out / "table1_ranked.png", rows)
    means = {r.method: {k: v[0] for k, v in r.stats.items()} for r in rows}
    ranking = {k: sorted(means, key=lambda m, k=k: means[m][k]) for k in metrics}
    result = {"benchmark": "table1", **machine(torch.device(device)), "config": config or "configs/tiny.toml",
              "flatfield": base.flatfield.enabled, "size": size, "train": train, "epochs": epochs,
              "val": val, "batch": batch, "filters": filters, "timings": timings,
              "table": {r.method: r.as_dict() for r in rows}, "ranking_best_first": ranking,
              "files": [str(out / n) for n in ("table1.md", "table1_patch.png", "table1_ranked.png")]}
    (out / "table1.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
