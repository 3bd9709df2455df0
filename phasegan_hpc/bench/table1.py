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
from dataclasses import dataclass
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
from phasegan_hpc.errors import DataError
from phasegan_hpc.evaluate import evaluate, paganin_pad
from phasegan_hpc.files import atomic_write_text
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
#: The configuration sections the data set depends on (its directory is named by their digest).
DATA_SECTIONS = ("physics", "phantom", "flatfield", "detector", "simulate")


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


@dataclass(frozen=True)
class Cell:
    """One (method, training seed) run of the table, named by its configuration's digest."""

    method: str
    seed: int
    name: str
    config: Config


class Table1Study:
    """The table's stages: :meth:`simulate` the data set once, :meth:`run` every cell (resumable, shareable
    between concurrent runs on one ``out_dir``), :meth:`finish` with Paganin and the figures. ``write``
    rewrites table1.md / table1.json after every cell. Arguments: see :func:`bench_table1`."""

    def __init__(self, size: int, train: int, epochs: int, val: int, batch: int, filters: int, device: str,
                 out_dir: str, seed: int, seeds: int, config: str | None, methods: tuple[str, ...], weights: str,
                 photons: float, settings: tuple[str, ...], say: Callable[[str], None]) -> None:
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise DataError(f"unknown method(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METHODS)}")
        if weights not in WEIGHTS:
            raise DataError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if seeds < 1:
            raise DataError("--seeds must be >= 1")
        self.say, self.device, self.out = say, device, Path(out_dir)
        self.header = {"config": config or "configs/tiny.toml", "settings": list(settings), "weights": weights,
                       "size": size, "train": train, "epochs": epochs, "val": val, "batch": batch,
                       "filters": filters, "photons_per_pixel": photons, "data_seed": seed, "seeds": seeds}
        per_method = parse_settings(settings)
        self.base = self._base_config(config, per_method, size=size, train=train, epochs=epochs, val=val,
                                      batch=batch, filters=filters, seed=seed, photons=photons)
        digest = hashlib.sha256(json.dumps({s: dataclasses.asdict(getattr(self.base, s)) for s in DATA_SECTIONS},
                                           sort_keys=True).encode()).hexdigest()[:10]
        self.data_dir = self.out / f"data-{digest}"
        self.validation = self.data_dir / "validation.h5"
        self.cells_dir = self.out / "cells"
        self.plan = [self._cell(method, k, weights, per_method) for method in methods for k in range(seeds)]
        self.weight_text = {c.method: _weights(c.config, c.method) for c in self.plan}
        self.records: dict[str, dict[str, Any]] = {}  # cell name -> its scored record
        self.timings: dict[str, float] = {}
        self.paganin = None  # Paganin's evaluation row, once :meth:`finish` has run

    @staticmethod
    def _base_config(config: str | None, per_method: dict[str | None, dict[str, Any]], *, size: int, train: int,
                     epochs: int, val: int, batch: int, filters: int, seed: int, photons: float) -> Config:
        """configs/tiny.toml (or ``config``) with the arguments and the settings for every method; every
        method's settings are tried on it, so that a bad key fails before anything is written."""
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
                    with_overrides(base, overrides)
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"--set: {exc}") from None
        return base

    def _cell(self, method: str, k: int, weights: str, per_method: dict[str | None, dict[str, Any]]) -> Cell:
        cfg = with_overrides(self.base, {"train.method": method, "train.seed": k, "train.data_dir": str(self.data_dir),
                                         **(CYCLEGAN_LOSS if method == "cyclegan" and weights == "paper" else {}),
                                         **per_method.get(method, {})})
        name = f"{method}-s{k}-{_digest(cfg)}"
        runs = str(self.out / "runs")
        return Cell(method, k, name, with_overrides(cfg, {"train.name": name, "train.runs_dir": runs}))

    def simulate(self) -> None:
        """The data set, once per data configuration (under a lock: a concurrent run may be making it)."""
        t0 = time.perf_counter()
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.out / ".data.lock"):
            if not self.validation.is_file():
                self.say(f"simulating the data set ({', '.join(DATA_SECTIONS)}) into {self.data_dir}")
                simulate_dataset(self.data_dir, self.base, overwrite=True)
        self.timings["simulate_s"] = time.perf_counter() - t0

    def run(self) -> None:
        """Every cell of the plan. Cells another run on this out_dir is training are left for last (and then
        waited for), so that concurrent runs spread over the cells instead of queueing behind one."""
        deferred = []
        for cell in self.plan:
            with _locked(self.cells_dir / f".{cell.name}.lock", wait=False) as got:
                if not got:
                    self.say(f"{cell.name}: being trained by another run, left for later")
                    deferred.append(cell)
                    continue
                self.records[cell.name] = self._run_cell(cell)
            self.write()
        for cell in deferred:
            with _locked(self.cells_dir / f".{cell.name}.lock"):
                self.records[cell.name] = self._run_cell(cell)
            self.write()

    def _run_cell(self, cell: Cell) -> dict[str, Any]:
        """Train and score one cell, or reuse its record (``cells/<cell>.json``)."""
        cell_file = self.cells_dir / f"{cell.name}.json"
        if cell_file.is_file():
            self.say(f"{cell.name}: scored before, reused")
            return json.loads(cell_file.read_text())
        self.say(f"{cell.name}: training {cell.method}, seed {cell.seed}")
        t1 = time.perf_counter()
        model_path = train_local(cell.config, device=self.device)["model_path"]
        (row,) = evaluate(model_path, self.validation, device=self.device)
        record = {"method": cell.method, "seed": cell.seed, "cell": cell.name, "model": str(model_path),
                  "train_s": time.perf_counter() - t1,
                  "stats": {key: {"mean": m, "std": s} for key, (m, s) in row.stats.items()},
                  "score_spearman": row.score_spearman}
        atomic_write_text(cell_file, json.dumps(record, indent=2) + "\n")
        return record

    def _by_method(self) -> dict[str, list[dict[str, Any]]]:
        """The scored records per method, in plan order (whatever order the cells finished in)."""
        cells: dict[str, list[dict[str, Any]]] = {}
        for cell in self.plan:
            if cell.name in self.records:
                cells.setdefault(cell.method, []).append(self.records[cell.name])
        return cells

    def write(self) -> dict[str, Any]:
        """table1.md and table1.json from what is scored so far; returns the JSON record."""
        cells = self._by_method()
        summary = {m: _summary(c) for m, c in cells.items() if c}
        if self.paganin is not None:
            summary["paganin"] = {k: {"mean": self.paganin.stats[k][0], "std_seeds": 0.0,
                                      "std_frames": self.paganin.stats[k][1], "seeds": 1} for k in METRIC_KEYS}
        result = {"benchmark": "table1", **machine(torch.device(self.device)), **self.header,
                  "flatfield": self.base.flatfield.enabled, "data_dir": str(self.data_dir),
                  "timings": self.timings, "loss_weights": self.weight_text, "table": summary,
                  "cells": {m: [{k: v for k, v in c.items() if k != "per_frame"} for c in cs]
                            for m, cs in cells.items()},
                  "targets": _targets(summary),
                  "files": [str(self.out / n) for n in ("table1.md", "table1_convergence.png", "table1_patch.png",
                                                        "table1_ranked.png")]}
        atomic_write_text(self.out / "table1.md", _markdown(summary, self.weight_text))
        atomic_write_text(self.out / "table1.json", json.dumps(result, indent=2) + "\n")
        return result

    def finish(self) -> dict[str, Any]:
        """Paganin on the same frames, the final table, and the three figures (seed 0's model per method)."""
        self.paganin = evaluate(None, self.validation, ("paganin",), device=self.device)[0]
        result = self.write()
        cells = self._by_method()
        models = {m: cs[0]["model"] for m, cs in cells.items()}
        curves = {m: [_validation_curves(self.out / "runs" / c["cell"]) for c in cs] for m, cs in cells.items()}
        rows = [evaluate(models[m], self.validation, device=self.device)[0] for m in models] + [self.paganin]
        convergence_figure(self.out / "table1_convergence.png", curves,
                           ("val_phase_l2", "val_phase_dssim", "val_phase_frcm"))
        table1_figure(self.out / "table1_patch.png", *table1_patch(models, self.validation, frame=0), frame=0)
        ranked_distributions(self.out / "table1_ranked.png", rows)
        return result


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
        progress: called with one line per stage.

    Raises:
        DataError: unknown methods or weights, malformed settings.
    """
    study = Table1Study(size, train, epochs, val, batch, filters, device, out_dir, seed, seeds, config, methods,
                        weights, photons, settings, progress or (lambda msg: None))
    study.simulate()
    study.run()
    return study.finish()


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
