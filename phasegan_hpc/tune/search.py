"""Ray Tune search of alpha_cyc / alpha_frc (and optionally a learning-rate scale).

One trial = one training run of :func:`phasegan_hpc.train.loop.train_loop`. A single-device trial is a
plain Tune function whose Session reports with ``ray.tune.report`` and checkpoints at every epoch end;
with ``workers_per_trial > 1`` the trial function launches a Ray Train ``TorchTrainer`` whose reports
reach Tune through ``TuneReportCallback``. Optuna's TPE proposes the weights, ASHA stops poor trials
after ``[tune] grace_epochs``. The tuned metric (default ``val_unpaired``) needs no paired truth. A trial
that is lost (its process killed, its node gone) restarts from its latest checkpoint, up to ``max_failures``
times (``tune.FailureConfig``).

Outputs under ``STORAGE/tune-NAME/``: ``trials.csv`` (every trial's weights and metrics), ``best.toml``
(a config ``phasegan-hpc train --config`` accepts), ``model.pt`` (the best trial's G_O; ``STORAGE/latest``
points here), ``search.png`` (alpha_cyc vs alpha_frc coloured by the metric), and Tune's own state, from
which ``--resume`` continues.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import tomllib
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from phasegan_hpc.cluster import check_resources, check_storage, connect_ray, disconnect_ray
from phasegan_hpc.config import Config, config_from_dict, config_to_toml, with_overrides
from phasegan_hpc.data.frames import open_training_data
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.errors import DataError, ResourceError
from phasegan_hpc.files import atomic_file, atomic_write_text
from phasegan_hpc.models.artifact import PhaseModel
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.train.fit import make_trainer
from phasegan_hpc.train.loop import link_latest, train_loop
from phasegan_hpc.train.session import RaySession, latest_checkpoint, load_checkpoint
from phasegan_hpc.train.step import PAIRED_METHODS
from phasegan_hpc.tune.figures import search_figure

TRIALS_DIR = "trials"


def trial_config(base: Config, params: dict[str, float], trials_dir: Path, trial_name: str,
                 max_epochs: int) -> Config:
    """The training config of one trial: the proposed weights, its own run directory, epoch-end reports."""
    overrides: dict[str, Any] = {
        "loss.alpha_cyc": float(params["alpha_cyc"]), "loss.alpha_frc": float(params["alpha_frc"]),
        "train.runs_dir": str(trials_dir), "train.name": trial_name, "train.epochs": max_epochs,
        "train.checkpoint_every": 10**9, "train.max_steps": 0,
    }
    if "lr_scale" in params:
        overrides["train.lr_g"] = base.train.lr_g * float(params["lr_scale"])
        overrides["train.lr_d"] = base.train.lr_d * float(params["lr_scale"])
    return with_overrides(base, overrides)


def _trial(params: dict[str, float], base_toml: str, trials_dir: str, max_epochs: int, workers: int,
           cpus_per_worker: float, gpus_per_worker: float, max_failures: int) -> None:
    """The Tune function: one training run with the proposed weights. Restarted after a failure, it resumes:
    a single-device trial from Tune's checkpoint (``RaySession.restore``: ``tune.get_checkpoint()``), a
    multi-worker one from its Ray Train run's (the same name and storage)."""
    base = config_from_dict(tomllib.loads(base_toml))
    cfg = trial_config(base, params, Path(trials_dir), tune.get_context().get_trial_name(), max_epochs)
    if workers <= 1:
        torch.set_num_threads(max(1, int(cpus_per_worker)))
        train_loop(cfg, RaySession.tune_trial())
        return
    trainer = make_trainer(cfg, Path(trials_dir), workers, cpus_per_worker, gpus_per_worker, max_failures,
                           callbacks=[TuneReportCallback()])
    trainer.fit()


def search_space(cfg: Config) -> dict[str, Any]:
    """Tune's search space from ``[tune]``: log-uniform weights (and learning-rate scale)."""
    t = cfg.tune
    space = {"alpha_cyc": tune.loguniform(t.alpha_cyc_min, t.alpha_cyc_max),
             "alpha_frc": tune.loguniform(t.alpha_frc_min, t.alpha_frc_max)}
    if t.lr_scale_max > 0:
        space["lr_scale"] = tune.loguniform(t.lr_scale_min, t.lr_scale_max)
    return space


@dataclass
class SearchResult:
    """What a finished search wrote, and its best trial."""

    directory: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any]
    files: dict[str, Path]


def run_search(cfg: Config, *, trials: int, name: str, workers_per_trial: int = 1, cpus_per_trial: float = 1.0,
               gpus_per_trial: float = 0.0, max_epochs: int | None = None, max_failures: int = 2,
               resume: bool = False) -> SearchResult:
    """Search the loss weights of ``cfg.train.method`` on ``cfg.train.data_dir``.

    A trial that fails (its process killed, its node lost, or an error) is restarted from its latest
    checkpoint, up to ``max_failures`` times (a multi-worker trial also recovers that many lost workers);
    then it counts as errored. A resumed search keeps the ``max_failures`` it was started with.

    Raises:
        DataError: data missing (with the command that makes it), no held-out detector frames, a paired
            method, an existing search without ``resume``, or ``resume`` without a search.
        ResourceError: a trial needs more than the cluster has.
    """
    if cfg.train.method in PAIRED_METHODS:
        raise DataError(f"tune searches the cycle weights of phasegan / cyclegan, not {cfg.train.method}")
    if trials < 1 or workers_per_trial < 1 or cpus_per_trial <= 0 or gpus_per_trial < 0 or max_failures < 0:
        raise ResourceError("need trials >= 1, workers per trial >= 1, cpus > 0, gpus >= 0, max failures >= 0")
    data_dir = Path(cfg.train.data_dir)
    data = open_training_data(data_dir, paired=False, upsample=cfg.model.upsample)
    if data.validation is None:
        raise DataError(f"{data_dir} has no validation.h5: tune scores trials on held-out detector frames "
                        f"(make them with `phasegan-hpc simulate {data_dir} --val N`)")
    epochs = max_epochs or cfg.tune.max_epochs or cfg.train.epochs
    storage = check_storage(Path(cfg.train.runs_dir))
    base = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data_dir=str(data_dir.resolve()),
                                                              val_frames=max(cfg.train.val_frames, 1)))
    directory = storage / f"tune-{name}"
    if directory.exists() and not resume:
        raise DataError(f"{directory} exists: pass --resume to continue that search, or another --name")
    if resume and not directory.exists():
        raise DataError(f"nothing to resume: {directory} does not exist")

    started = connect_ray()
    try:
        per_worker_cpu = cpus_per_trial / workers_per_trial
        per_worker_gpu = gpus_per_trial / workers_per_trial
        check_resources(workers_per_trial, per_worker_cpu, per_worker_gpu)
        results = _fit(base, directory, trials, epochs, workers_per_trial, per_worker_cpu, per_worker_gpu,
                       cpus_per_trial, gpus_per_trial, max_failures, resume)
        return _write_outputs(base, directory, results, data.geometry, epochs)
    finally:
        disconnect_ray(started)


def trial_name(trial) -> str:
    """Short, stable names for trials and their directories (Tune's default embeds every parameter)."""
    return f"trial_{trial.trial_id}"


def _fit(base: Config, directory: Path, trials: int, epochs: int, workers: int, cpu_w: float, gpu_w: float,
         cpus: float, gpus: float, max_failures: int, resume: bool):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t = base.tune
    trainable = tune.with_parameters(
        _trial, base_toml=config_to_toml(base), trials_dir=str(directory / TRIALS_DIR), max_epochs=epochs,
        workers=workers, cpus_per_worker=cpu_w, gpus_per_worker=gpu_w, max_failures=max_failures)
    # A multi-worker trial only orchestrates; its TorchTrainer holds the workers' resources (Tune needs a
    # non-empty request: one byte of memory).
    resources = {"cpu": 0, "memory": 1} if workers > 1 else {"cpu": cpus, "gpu": gpus}
    trainable = tune.with_resources(trainable, resources)
    if resume:
        tuner = tune.Tuner.restore(str(directory), trainable=trainable, resume_errored=True)
        return tuner.fit()
    scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=min(t.grace_epochs, epochs),
                              reduction_factor=t.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(base),
        tune_config=tune.TuneConfig(metric=t.metric, mode="min", num_samples=trials, scheduler=scheduler,
                                    search_alg=OptunaSearch(seed=t.seed), trial_name_creator=trial_name,
                                    max_concurrent_trials=t.max_concurrent or None,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=directory.name, storage_path=str(directory.parent), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    return tuner.fit()


def _write_outputs(base: Config, directory: Path, results, geometry: Geometry, epochs: int) -> SearchResult:
    metric = base.tune.metric
    rows = []
    for r in results:
        if r.metrics is None or "alpha_cyc" not in (r.config or {}):
            continue
        history = r.metrics_dataframe
        values = history[metric].dropna() if history is not None and metric in history else []
        row = {"trial": Path(r.path).name, "alpha_cyc": r.config["alpha_cyc"], "alpha_frc": r.config["alpha_frc"],
               **({"lr_scale": r.config["lr_scale"]} if "lr_scale" in r.config else {}),
               "epochs": float(r.metrics.get("epoch", math.nan)),
               "stopped_early": float(r.metrics.get("epoch", 0)) < epochs - 1e-9,
               "error": r.error is not None,
               metric: float(r.metrics.get(metric, math.nan)),
               f"best_{metric}": float(min(values)) if len(values) else math.nan,
               "checkpoint": r.checkpoint}
        for k, v in r.metrics.items():
            if k.startswith("val_") and k != metric:
                row[k] = float(v)
        rows.append(row)
    scored = [r for r in rows if math.isfinite(r[metric])]
    if not scored:
        raise DataError(f"no trial reported {metric}; see the trial logs under {directory}")
    scored.sort(key=lambda r: r[metric])
    best = scored[0]
    files = {"trials.csv": directory / "trials.csv", "best.toml": directory / "best.toml",
             "model.pt": directory / "model.pt", "search.png": directory / "search.png"}
    _write_csv(files["trials.csv"], rows)
    best_cfg = with_overrides(base, {"loss.alpha_cyc": float(best["alpha_cyc"]),
                                     "loss.alpha_frc": float(best["alpha_frc"]),
                                     "train.name": f"{directory.name}-best"})
    if "lr_scale" in best:
        best_cfg = with_overrides(best_cfg, {"train.lr_g": base.train.lr_g * best["lr_scale"],
                                             "train.lr_d": base.train.lr_d * best["lr_scale"]})
    atomic_write_text(files["best.toml"], f"# best trial {best['trial']} of {directory.name}: {metric} = "
                                          f"{best[metric]:.6g}\n" + config_to_toml(best_cfg))
    _export_best(best, best_cfg, geometry, files["model.pt"], directory / TRIALS_DIR / best["trial"])
    link_latest(directory)
    search_figure(files["search.png"], rows, metric)
    for r in rows:
        r.pop("checkpoint", None)
    return SearchResult(directory, scored, {k: v for k, v in best.items() if k != "checkpoint"}, files)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    lead = ["trial", "alpha_cyc", "alpha_frc", "lr_scale"]
    present = {k for r in rows for k in r if k != "checkpoint"}
    keys = [k for k in lead if k in present] + sorted(present - set(lead))
    with atomic_file(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})


def _export_best(best: dict[str, Any], cfg: Config, geometry: Geometry, path: Path, run_dir: Path) -> None:
    """G_O of the best trial's last checkpoint as ``model.pt`` (early-stopped trials have no model.pt).

    Single-device trials checkpoint through Tune; multi-worker trials through their own Ray Train run in
    ``run_dir`` (its newest checkpoint: :func:`~phasegan_hpc.train.session.latest_checkpoint`)."""
    ckpt = best["checkpoint"]
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_checkpoint(Path(d))
    else:
        latest = latest_checkpoint(run_dir)
        if latest is None:
            raise DataError(f"best trial {best['trial']} left no checkpoint")
        state = load_checkpoint(latest)
    info = {"step": int(state["step"]), "config": config_to_toml(cfg), "tuned_metric": cfg.tune.metric,
            "trial": best["trial"]}
    PhaseModel.for_run(cfg, state["generators"], Normalisation.from_dict(state["normalisation"]), geometry,
                       info).save(path)
