"""Paper Table 1 reproduced: paired, pix2pix, CycleGAN and PhaseGAN trained with the same G_O on the same
simulated data (unpaired for the last two, paired for the first two), scored with Paganin on the same
validation frames (L2, DSSIM, FRCM of phase and attenuation).

An honest comparison: the data set is drawn once from ``seed``; each method is trained ``seeds`` times on
it (training seeds 0..N-1: other initial weights, data order and augmentation). The table gives, per method
and metric, the mean ± standard deviation *between seeds* of the per-seed means, next to the spread over
frames; each method's loss weights; and the targets of the issue that asked for it (PhaseGAN ahead of
CycleGAN by more than the two spreads, at most 1.5x the paired FRCM, Paganin last).

Resumable: every (method, seed) cell is a training run named by its configuration's digest and writes
``cells/<cell>.json`` when scored; a rerun (same arguments) trains only what is missing, and an interrupted
run resumes from its last checkpoint. Several runs may share one ``out_dir`` at once (e.g. one per
``--methods`` subset, to use more cores): the data set and each cell are made under a file lock, so each is
made once and the others wait for it and reuse it. Writes into ``out_dir``: ``table1.md``, ``table1.json`` (rewritten
after every cell), ``table1_convergence.png`` (validation metrics per epoch of every run),
``table1_patch.png`` (one validation patch per method, seed 0) and ``table1_ranked.png`` (ranked per-frame
distributions, Supplement Fig. S4).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters the data sets use)
import numpy as np
import tomllib
import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.bench.figures import convergence_figure, ranked_distributions, table1_figure
from phasegan_hpc.config import Config, load_config, with_overrides
from phasegan_hpc.data.h5io import atomic_write_text
from phasegan_hpc.errors import DataError
from phasegan_hpc.evaluate import evaluate, paganin_pad
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.physics import paganin
from phasegan_hpc.simulate import simulate_dataset
from phasegan_hpc.train.local import train_local

METHODS = ("paired", "pix2pix", "cyclegan", "phasegan")
#: Paper §3's CycleGAN weights: alpha_cyc 20, alpha_frc 4, x2.5 on the object-cycle terms (DESIGN.md §2).
CYCLEGAN_LOSS = {"loss.alpha_cyc": 20.0, "loss.alpha_frc": 4.0, "loss.object_cycle_weight": 2.5}
PHOTONS_PER_PIXEL = 6.6e7 / 256**2  # the paper's ~1007
#: ``weights``: "paper" gives CycleGAN the paper's weights above, "equal" PhaseGAN's.
WEIGHTS = ("paper", "equal")
METRIC_KEYS = tuple(f"{c}_{m}" for c in ("phase", "attenuation") for m in ("l2", "dssim", "frcm"))


def parse_settings(settings: tuple[str, ...] | list[str]) -> dict[str | None, dict[str, Any]]:
    """``[METHOD:]section.key=value`` strings -> {method or None (all): {dotted key: value}}.

    Values are read as TOML values (numbers, true/false, "strings"), else taken as bare strings.

    Raises:
        DataError: a malformed setting or an unknown method.
    """
    out: dict[str | None, dict[str, Any]] = {}
    for item in settings:
        head, eq, raw = item.partition("=")
        method, colon, key = head.rpartition(":")
        if not eq or "." not in key:
            raise DataError(f"--set {item!r}: expected [METHOD:]section.key=value")
        if colon and method not in METHODS:
            raise DataError(f"--set {item!r}: unknown method {method!r}; choose from {', '.join(METHODS)}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(method or None, {})[key.strip()] = value
    return out


def _digest(cfg: Config) -> str:
    """A cell's name: a digest of the configuration's values that differ from the built-in defaults, so that
    a newer version of this software which adds a config key (with a default) still finds the cells an older
    one trained."""
    default = Config()
    changed = {s: {k: v for k, v in dataclasses.asdict(getattr(cfg, s)).items()
                   if v != getattr(getattr(default, s), k)} for s in (f.name for f in dataclasses.fields(cfg))}
    return hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _weights(cfg: Config, method: str) -> str:
    loss = cfg.loss
    if method == "paired":
        return "L2"
    if method == "pix2pix":
        return f"α_mse {loss.alpha_mse:g}"
    return f"α_cyc {loss.alpha_cyc:g}, α_frc {loss.alpha_frc:g}, object ×{loss.object_cycle_weight:g}"


def _summary(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: mean and std between seeds of the per-seed means, and the mean per-frame spread."""
    out = {}
    for k in METRIC_KEYS:
        means = np.array([c["stats"][k]["mean"] for c in cells])
        spreads = np.array([c["stats"][k]["std"] for c in cells])
        out[k] = {"mean": float(means.mean()), "std_seeds": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
                  "std_frames": float(spreads.mean()), "seeds": len(means)}
    return out


def _targets(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, bool]:
    """The issue's targets, where the methods they name were run."""
    out: dict[str, bool] = {}
    p, c, paired = summary.get("phasegan"), summary.get("cyclegan"), summary.get("paired")
    if p and c:
        for k in ("phase_l2", "phase_dssim", "phase_frcm"):
            out[f"phasegan_beats_cyclegan_{k}"] = (c[k]["mean"] - p[k]["mean"]) > (p[k]["std_seeds"]
                                                                                  + c[k]["std_seeds"])
    if p and paired:
        out["phasegan_frcm_within_1.5x_paired"] = p["phase_frcm"]["mean"] <= 1.5 * paired["phase_frcm"]["mean"]
    if "paganin" in summary and len(summary) > 1:
        out["paganin_last_phase_l2"] = all(summary["paganin"]["phase_l2"]["mean"] >= s["phase_l2"]["mean"]
                                           for m, s in summary.items() if m != "paganin")
    return out


def _markdown(summary: dict[str, dict[str, dict[str, float]]], weights: dict[str, str]) -> str:
    head = "| method | seeds | loss weights | " + " | ".join(k.replace("_", " ") for k in METRIC_KEYS) + " |"
    lines = [head, "|" + "---|" * (len(METRIC_KEYS) + 3),
             *(f"| {m} | {s['phase_l2']['seeds']} | {weights.get(m, '')} | "
               + " | ".join(f"{s[k]['mean']:.4g} ± {s[k]['std_seeds']:.2g} ({s[k]['std_frames']:.2g})"
                            for k in METRIC_KEYS) + " |"
               for m, s in summary.items())]
    return ("\n".join(lines) + "\n\nmean ± std between seeds (mean per-frame std in parentheses)\n")


@contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``fcntl.flock``) on ``path`` (created; never through a symlink).

    Yields True once held; with ``wait`` False, yields False at once when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _validation_curves(run_dir: Path) -> list[dict[str, float]]:
    """The per-epoch validation records of a run's ``metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if "val_phase_l2" in r]


def bench_table1(size: int = 64, train: int = 2000, epochs: int = 10, val: int = 200, batch: int = 8,
                 filters: int = 4, device: str = "cpu", out_dir: str = "table1", seed: int = 1, seeds: int = 1,
                 config: str | None = None, methods: tuple[str, ...] = METHODS, weights: str = "paper",
                 photons: float = PHOTONS_PER_PIXEL, settings: tuple[str, ...] = (),
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the methods ``seeds`` times each on one data set and score them with Paganin.

    Args:
        size: frame side [px]. train: unpaired objects and frames, and paired frames, each. epochs: per run.
        val: validation frames. batch: batch size. filters: generator base filters; discriminators get twice
            as many (the paper's 32 and 64 are GPU-sized).
        seed: the data set's seed. seeds: training runs per method (training seeds 0 .. seeds - 1).
        config: the base configuration (default ``configs/tiny.toml``); the arguments override it.
        methods: a subset of :data:`METHODS`. weights: one of :data:`WEIGHTS` (CycleGAN's loss weights).
        photons: photons per pixel of the detector frames (the paper's ~1007).
        settings: ``[METHOD:]section.key=value`` overrides (:func:`parse_settings`), e.g.
            ``model.output=phase_attenuation``, ``flatfield.strength=0.5``, ``phasegan:loss.object_cycle_weight=1.5``.

    Raises:
        DataError: unknown methods or weights, malformed settings.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise DataError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}")
    if weights not in WEIGHTS:
        raise DataError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if seeds < 1:
        raise DataError("--seeds must be >= 1")
    per_method = parse_settings(settings)
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    base = with_overrides(load_config(config or Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"), {
        "simulate.size": size, "simulate.n_train": train, "simulate.n_paired": train, "simulate.n_val": val,
        "simulate.seed": seed, "detector.photons_per_frame": photons * size * size,
        "model.base_filters": filters, "model.disc_filters": 2 * filters,
        "train.epochs": epochs, "train.batch_size": batch, "train.val_frames": min(val, 32),
        "train.checkpoint_every": 500, "train.log_every": 50, "train.norm_frames": min(train, 1000)})
    try:
        base = with_overrides(base, per_method.get(None, {}))
        for method, overrides in per_method.items():
            if method is not None:
                with_overrides(base, overrides)  # a bad key or value fails here, before anything is written
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"--set: {exc}") from None
    data_keys = ("physics", "phantom", "flatfield", "detector", "simulate")
    data_digest = hashlib.sha256(json.dumps({s: dataclasses.asdict(getattr(base, s)) for s in data_keys},
                                            sort_keys=True).encode()).hexdigest()[:10]
    data_dir = out / f"data-{data_digest}"
    t0 = time.perf_counter()
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out / ".data.lock"):  # another run on this out_dir may be simulating the same data
        if not (data_dir / "validation.h5").is_file():
            say(f"simulating the data set ({', '.join(data_keys)}) into {data_dir}")
            simulate_dataset(data_dir, base, overwrite=True)
    validation = data_dir / "validation.h5"
    timings: dict[str, float] = {"simulate_s": time.perf_counter() - t0}
    cells: dict[str, list[dict[str, Any]]] = {}
    weight_text: dict[str, str] = {}
    models: dict[str, str] = {}
    curves: dict[str, list[list[dict[str, float]]]] = {}
    paganin_row = None

    def write() -> dict[str, Any]:
        summary = {m: _summary(c) for m, c in cells.items() if c}
        if paganin_row is not None:
            summary["paganin"] = {k: {"mean": paganin_row.stats[k][0], "std_seeds": 0.0,
                                      "std_frames": paganin_row.stats[k][1], "seeds": 1} for k in METRIC_KEYS}
        result = {"benchmark": "table1", **machine(torch.device(device)), "config": config or "configs/tiny.toml",
                  "settings": list(settings), "weights": weights, "flatfield": base.flatfield.enabled,
                  "size": size, "train": train, "epochs": epochs, "val": val, "batch": batch, "filters": filters,
                  "photons_per_pixel": photons, "data_seed": seed, "seeds": seeds, "data_dir": str(data_dir),
                  "timings": timings, "loss_weights": weight_text, "table": summary,
                  "cells": {m: [{k: v for k, v in c.items() if k != "per_frame"} for c in cs]
                            for m, cs in cells.items()},
                  "targets": _targets(summary),
                  "files": [str(out / n) for n in ("table1.md", "table1_convergence.png", "table1_patch.png",
                                                   "table1_ranked.png")]}
        atomic_write_text(out / "table1.md", _markdown(summary, weight_text))
        atomic_write_text(out / "table1.json", json.dumps(result, indent=2) + "\n")
        return result

    plan = []
    for method in methods:
        for k in range(seeds):
            cfg = with_overrides(base, {"train.method": method, "train.seed": k, "train.data_dir": str(data_dir),
                                        **(CYCLEGAN_LOSS if method == "cyclegan" and weights == "paper" else {}),
                                        **per_method.get(method, {})})
            cell = f"{method}-s{k}-{_digest(cfg)}"
            plan.append((method, k, cell, with_overrides(cfg, {"train.name": cell,
                                                               "train.runs_dir": str(out / "runs")})))
            weight_text[method] = _weights(cfg, method)
    records: dict[str, dict[str, Any]] = {}

    def run_cell(method: str, k: int, cell: str, cfg: Config) -> dict[str, Any]:
        cell_file = cells_dir / f"{cell}.json"
        if cell_file.is_file():
            say(f"{cell}: scored before, reused")
            return json.loads(cell_file.read_text())
        say(f"{cell}: training {method}, seed {k}")
        t1 = time.perf_counter()
        model_path = train_local(cfg, device=device)["model_path"]
        (row,) = evaluate(model_path, validation, device=device)
        record = {"method": method, "seed": k, "cell": cell, "model": str(model_path),
                  "train_s": time.perf_counter() - t1,
                  "stats": {key: {"mean": m, "std": s} for key, (m, s) in row.stats.items()},
                  "score_spearman": row.score_spearman}
        atomic_write_text(cell_file, json.dumps(record, indent=2) + "\n")
        return record

    def collect() -> None:
        cells.clear(), models.clear(), curves.clear()
        for method, _k, cell, _cfg in plan:  # in plan order, whatever order the cells finished in
            if cell in records:
                cells.setdefault(method, []).append(records[cell])
                models.setdefault(method, records[cell]["model"])
                curves.setdefault(method, []).append(_validation_curves(out / "runs" / cell))

    # Cells another run on this out_dir is training are left for last (and then waited for), so that
    # concurrent runs spread over the cells instead of queueing behind one.
    deferred = []
    for item in plan:
        with _locked(cells_dir / f".{item[2]}.lock", wait=False) as got:
            if not got:
                say(f"{item[2]}: being trained by another run, left for later")
                deferred.append(item)
                continue
            records[item[2]] = run_cell(*item)
        collect()
        write()
    for item in deferred:
        with _locked(cells_dir / f".{item[2]}.lock"):
            records[item[2]] = run_cell(*item)
        collect()
        write()
    paganin_row = evaluate(None, validation, ("paganin",), device=device)[0]
    result = write()
    rows = [evaluate(models[m], validation, device=device)[0] for m in models] + [paganin_row]
    convergence_figure(out / "table1_convergence.png", curves, ("val_phase_l2", "val_phase_dssim", "val_phase_frcm"))
    table1_figure(out / "table1_patch.png", *table1_patch(models, validation, frame=0), frame=0)
    ranked_distributions(out / "table1_ranked.png", rows)
    return result


def table1_patch(models: dict[str, str | Path], validation: str | Path, frame: int = 0
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One validation frame retrieved by each model (:class:`~phasegan_hpc.models.artifact.PhaseModel`, on the
    CPU) and by Paganin (the file's flat field, geometry and delta/beta), for :func:`table1_figure`.

    Returns:
        (the frame, its true (phase, attenuation), {method: (phase, attenuation)}: the models, then "paganin").
    """
    with h5py.File(validation, "r") as f:
        inten = f["intensity"][frame].astype(np.float32)
        truth = (f["phase"][frame], f["attenuation"][frame])
        a = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        flat = f["flatfield"][frame] if "flatfield" in f else np.ones_like(inten)
    retrieved = {}
    for method, model_path in models.items():
        phase, att = load_model(model_path).retrieve(torch.from_numpy(inten)[None])
        retrieved[method] = (phase[0].numpy(), att[0].numpy())
    retrieved["paganin"] = paganin(inten.astype(np.float64) / np.maximum(flat, 1e-6), pixel_size_m=a["pixel_size_m"],
                                   distance_m=a["distance_m"], wavelength_m=a["wavelength_m"],
                                   delta_beta=a["delta"] / a["beta"], pad=paganin_pad(a))
    return inten, truth, retrieved
