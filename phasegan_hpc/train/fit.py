"""Distributed training on Ray Train (V2 API): the driver.

``phasegan-hpc train`` always comes here. The driver checks what it can before any worker starts (data,
storage, resources), connects to ``RAY_ADDRESS`` or starts a quiet local Ray (:mod:`phasegan_hpc.cluster`),
and runs :func:`phasegan_hpc.train.loop.train_loop` on every worker of a ``TorchTrainer``, through a
:class:`phasegan_hpc.train.session.RaySession`. DDP (gloo on CPU, NCCL on GPU) wraps the generator pair
and the discriminator pair separately; ``ray.train.report`` is called by every rank at the same steps;
rank 0 alone writes metrics (``metrics.jsonl``, TensorBoard, MLflow: ``logs.py``), figures and ``model.pt``.
Ray Train names the checkpoints as in-process runs do, ``STORAGE/NAME/checkpoint_step_NNNNNNNN``
(``session.checkpoint_name``).

Rerunning with the same name and storage resumes from the latest checkpoint (``ray.train.get_checkpoint``),
which is what ``sbatch --requeue`` needs; a worker that dies is restarted up to ``max_failures`` times.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any

import tomllib
import torch

from phasegan_hpc.cluster import (
    HeadWatch,
    check_resources,
    check_shared,
    check_storage,
    connect_ray,
    disconnect_ray,
)
from phasegan_hpc.config import Config, config_from_dict, config_to_toml
from phasegan_hpc.data.frames import open_training_data
from phasegan_hpc.errors import PhaseganError, ResourceError, TrainingError
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.progress import ProgressFn
from phasegan_hpc.train.logs import check_mlflow, mlflow_environment, run_progress
from phasegan_hpc.train.loop import check_init_from, network_shapes, run_dir_of, steps_per_epoch, train_loop
from phasegan_hpc.train.session import RaySession
from phasegan_hpc.train.step import PAIRED_METHODS
from phasegan_hpc.ui import notice


def _worker(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: rebuild the config, run the loop through a RaySession."""
    cfg = config_from_dict(tomllib.loads(loop_config["config"]))
    os.environ.update(loop_config.get("mlflow_env", {}))  # the driver's MLflow settings (logs.open_run_log)
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    train_loop(cfg, RaySession.train_worker())


def fit(cfg: Config, *, workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
        max_failures: int = 3, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train ``cfg`` with Ray Train on ``workers`` workers; resume if the run already has checkpoints.

    Args:
        cfg: configuration (``cfg.train.runs_dir`` is the storage path, ``cfg.train.name`` the run name).
        workers: data-parallel workers (ranks).
        cpus_per_worker, gpus_per_worker: resources of each worker (GPUs > 0 means CUDA and NCCL).
        max_failures: worker failures to recover from (restart from the latest checkpoint).
        progress: called by the driver with (step, total, losses) read from rank 0's ``metrics.jsonl``.

    Returns:
        ``{"step", "metrics", "model_path", "run_dir"}`` of the finished (or stopped) run.

    Raises:
        DataError, ResourceError: user-fixable problems, found before any worker starts.
        TrainingError: the run failed more often than ``max_failures``.
    """
    if workers < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ResourceError("need workers >= 1, cpus per worker > 0, gpus per worker >= 0")
    if gpus_per_worker > 0 and not torch.cuda.is_available() and not os.environ.get("RAY_ADDRESS"):
        raise ResourceError("GPUs requested but this machine has no CUDA device (and RAY_ADDRESS is not set)")
    data = open_training_data(cfg.train.data_dir, paired=cfg.train.method in PAIRED_METHODS,
                              upsample=cfg.model.upsample)  # fail fast
    network_shapes(cfg, data)
    if cfg.train.init_from:  # a missing, foreign or mismatched model: one line, before Ray starts
        check_init_from(cfg, load_model(cfg.train.init_from), cfg.train.init_from)
    total = steps_per_epoch(data, cfg.train.batch_size, workers) * cfg.train.epochs
    check_mlflow()  # MLFLOW_TRACKING_URI set without mlflow, or a store it refuses: one line, before Ray starts
    storage = check_storage(Path(cfg.train.runs_dir))
    cfg = _with_storage(cfg, storage)

    started = connect_ray()
    try:
        check_resources(workers, cpus_per_worker, gpus_per_worker)
        # rank 0 writes the run under storage, every rank reads the data: every node must see both
        check_shared([storage], sorted(Path(cfg.train.data_dir).glob("*.h5")), "storage")
        trainer = make_trainer(cfg, storage, workers, cpus_per_worker, gpus_per_worker, max_failures)
        with HeadWatch() as head:
            result = _fit_with_progress(trainer, run_dir_of(cfg), total, progress, max_failures, head)
        return _summary(cfg, result)
    finally:
        disconnect_ray(started)


def _with_storage(cfg: Config, storage: Path) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, runs_dir=str(storage),
                                                              data_dir=str(Path(cfg.train.data_dir).resolve())))


def make_trainer(cfg: Config, storage: Path, workers: int, cpus: float, gpus: float, max_failures: int,
                 callbacks: list | None = None):
    """The ``TorchTrainer`` of run ``cfg.train.name`` under ``storage``: ``workers`` ranks of ``cpus`` CPUs and
    ``gpus`` GPUs each, each running :func:`phasegan_hpc.train.loop.train_loop` on a Ray Train
    :class:`~phasegan_hpc.train.session.RaySession` (``fit`` runs it; a multi-worker Tune trial too, with
    ``callbacks=[TuneReportCallback()]``)."""
    # lazy: ray takes seconds to import, and the bench registry imports this module for every benchmark
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {"config": config_to_toml(cfg), "threads": max(1, int(cpus)), "mlflow_env": mlflow_environment()}
    return TorchTrainer(
        _worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}),
        run_config=RunConfig(
            name=cfg.train.name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
    )


def _fit_with_progress(trainer, run_dir: Path, total: int, progress: ProgressFn | None, max_failures: int = 0,
                       head: HeadWatch | None = None):
    """``trainer.fit()`` in a thread while this one reports progress and says when Ray Train restarted the
    workers from a checkpoint (one line each); worker errors become one line."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            box["error"] = exc

    before = len(run_progress(run_dir)[1])  # this run's earlier starts (a rerun resumes): not restarts
    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    last_step, seen = -1, before + 1
    while thread.is_alive():
        thread.join(1.0)
        if head is not None:
            head.check(f"the checkpoints of run {run_dir} stay")
        rec, starts = run_progress(run_dir)
        for k in range(seen, len(starts)):  # Ray Train started the workers again: a worker or its node was lost
            step = starts[k]
            redo = (f"; step {last_step} is done again" if last_step == step + 1 else
                    f"; steps {step + 1}-{last_step} are done again" if last_step > step else "")
            notice(f"training restarted after a lost worker (failure {k - before} of at most "
                   f"{max_failures}): resumed from its checkpoint at step {step}{redo}")
        seen = max(seen, len(starts))
        if rec is not None and rec["step"] != last_step:
            last_step = rec["step"]
            if progress is not None:
                progress(int(rec["step"]), total, {k: v for k, v in rec.items() if isinstance(v, float)})
    if "error" in box:
        cause = _root_cause(box["error"])
        if isinstance(cause, PhaseganError):
            raise cause from None
        text = f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
        raise TrainingError(f"training failed ({text}); worker logs are in Ray's session log directory") \
            from box["error"]
    return box["result"]


def _summary(cfg: Config, result) -> dict[str, Any]:
    run_dir = run_dir_of(cfg)
    model = run_dir / "model.pt"
    metrics = dict(result.metrics or {})
    return {"step": metrics.get("step"), "metrics": metrics, "run_dir": str(run_dir),
            "model_path": str(model) if model.is_file() and metrics.get("complete") else None}


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__
        if nxt is None:
            for attr in ("worker_failures", "errors"):
                failures = getattr(exc, attr, None)
                if isinstance(failures, dict) and failures:
                    nxt = next(iter(failures.values()))
                    break
        if nxt is None:
            return exc
        exc = nxt
    return exc
