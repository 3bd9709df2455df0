"""Experiment logs of a training run, written by rank 0 only: the record and the live views of it.

``metrics.jsonl`` (:class:`JsonlSink`) is the record: one JSON object per line, cut back to the resumed step
when a run resumes; figures, the driver's progress and the tests read it. Two views mirror its numbers:

- :class:`TensorBoardSink` (``[train] tensorboard = true``): event files under ``RUN/tensorboard/``
  (``tensorboard --logdir RUN/tensorboard``). A resumed run appends a new event file that continues from the
  checkpoint's step; its ``purge_step`` hides what the interrupted run logged after that checkpoint, so a
  curve never shows a step twice.
- :class:`MlflowSink` (only when ``MLFLOW_TRACKING_URI`` is set): one MLflow run per training run, whose id
  is kept in ``RUN/mlflow_run.json`` so that a resumed run continues it; the configuration as parameters.

Each view gets every number of a ``metrics.jsonl`` record under the same name at the record's ``step``,
except ``step``, ``time`` (the points' wall time) and ``epoch`` (``step / steps_per_epoch``); records of
events (``"event": "start"`` ...) are the record's alone. A view that fails while training runs (an MLflow
server gone) is dropped with one warning; training and the record go on.

mlflow is an optional dependency (``pip install 'phasegan-hpc[mlflow]'``), imported only when
``MLFLOW_TRACKING_URI`` is set (it takes about 2 s).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from torch.utils.tensorboard import SummaryWriter

from phasegan_hpc.config import Config
from phasegan_hpc.errors import TrainingError
from phasegan_hpc.files import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run.json"
MLFLOW_EXPERIMENT = "phasegan-hpc"  # without MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID
MLFLOW_SECTIONS = ("train", "loss", "model", "physics")  # the configuration's sections logged as parameters
#: Keys of a record that are not curves of their own (see the module docstring).
NOT_SCALARS = frozenset({"step", "time", "epoch"})
#: How a run ended, in MLflow's words: training completed or stopped at ``--max-steps``, an error, a signal.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class MetricSink(Protocol):
    """Where rank 0's metric records go."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Log one ``metrics.jsonl`` record (a dict with ``step``)."""

    def flush(self) -> None:
        """Make what was written so far durable (called before each checkpoint is reported)."""

    def close(self, status: str) -> None:
        """End the log; ``status`` is :data:`FINISHED`, :data:`FAILED` or :data:`KILLED`."""


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a record that the views plot: every int or float (not bool) but ``step``, ``time`` and
    ``epoch``; none for an event record."""
    if "event" in record:
        return {}
    return {k: float(v) for k, v in record.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class JsonlSink:
    """``metrics.jsonl``: one JSON object per line. On resume, lines past the resumed step go (rewritten
    atomically); :attr:`records` holds what the file holds."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))
        with self.path.open("a") as f:  # one line per open: a killed process leaves whole lines
            f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        pass  # every write is closed already

    def close(self, status: str) -> None:
        pass


def run_progress(run_dir: Path) -> tuple[dict[str, float] | None, list[int]]:
    """What a driver shows of ``run_dir/metrics.jsonl``, from one read of it: the last training-loss record
    (None before the first), and the step of every start still recorded (its ``"event": "start"`` records: the
    first start, then one per resume, by a rerun or by Ray Train after a lost worker)."""
    try:
        lines = (Path(run_dir) / METRICS_FILE).read_text().splitlines()
    except OSError:
        return None, []
    latest, starts = None, []
    for line in lines:
        if '"loss_g"' not in line and '"start"' not in line:
            continue  # parse only the records wanted
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if "loss_g" in rec:
            latest = rec
        elif rec.get("event") == "start":
            starts.append(int(rec.get("step", 0)))
    return latest, starts


class TensorBoardSink:
    """TensorBoard event files in ``log_dir`` (torch's ``SummaryWriter``), one scalar curve per metric.

    ``purge_step = resume_step + 1``: TensorBoard hides the events at and after that step written before this
    file, i.e. what an interrupted run logged after the checkpoint this run resumes from (a fresh start hides
    all of an earlier attempt's).
    """

    def __init__(self, log_dir: Path, resume_step: int, flush_secs: int = 30) -> None:
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step + 1, flush_secs=flush_secs)

    def write(self, record: Mapping[str, Any]) -> None:
        wall = record.get("time")
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, int(record["step"]), walltime=wall)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def _mlflow(tracking_uri: str):
    """The ``mlflow`` module (lazy: an optional dependency that takes about 2 s to import).

    Raises:
        TrainingError: MLFLOW_TRACKING_URI is set but mlflow is not installed.
    """
    try:
        import mlflow
    except ImportError:
        raise TrainingError(f"MLFLOW_TRACKING_URI is set ({tracking_uri}) but mlflow is not installed: "
                            "pip install 'phasegan-hpc[mlflow]', or unset MLFLOW_TRACKING_URI") from None
    return mlflow


def mlflow_client(tracking_uri: str):
    """An ``mlflow.MlflowClient`` of ``tracking_uri``, its store opened (the driver calls this before any
    worker starts, so a bad URI or a missing mlflow is one line early).

    Raises:
        TrainingError: mlflow is missing, or refuses the store (e.g. a ``file:`` store without
            ``MLFLOW_ALLOW_FILE_STORE=true`` on recent MLflow 3 releases, which then say so).
    """
    mlflow = _mlflow(tracking_uri)
    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 - MlflowException, or a store's own missing package
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"MLFLOW_TRACKING_URI={tracking_uri}: {first}") from None


def _flat_params(cfg: Config) -> dict[str, str]:
    """The sections of the configuration that shape a training run as MLflow parameters: ``section.key`` ->
    its value as text (the whole configuration is ``RUN/config.toml``)."""
    return {f"{section}.{key}": str(value) for section in MLFLOW_SECTIONS
            for key, value in dataclasses.asdict(getattr(cfg, section)).items()}


class MlflowSink:
    """One MLflow run per training run, logged through ``MlflowClient`` (no global active run is touched).

    The run is created in ``MLFLOW_EXPERIMENT_ID``, else ``MLFLOW_EXPERIMENT_NAME``, else
    :data:`MLFLOW_EXPERIMENT` (created if missing), named after the training run, with the configuration's
    :data:`MLFLOW_SECTIONS` as parameters. Its id goes to ``run_dir/mlflow_run.json``: a run that resumes
    from a checkpoint continues the same MLflow run. MLflow cannot remove points, so steps that an interrupted
    run logged after its last checkpoint keep their old point beside the new one (``metrics.jsonl`` and
    TensorBoard hold only the new).
    """

    def __init__(self, tracking_uri: str, run_dir: Path, cfg: Config, resume_step: int) -> None:
        self.client = mlflow_client(tracking_uri)
        self.state_file = Path(run_dir) / MLFLOW_RUN_FILE
        self.run_id = self._resumed_run(tracking_uri) if resume_step > 0 else None
        if self.run_id is None:
            self.run_id = self._new_run(tracking_uri, run_dir, cfg)
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def _resumed_run(self, tracking_uri: str) -> str | None:
        try:
            saved = json.loads(self.state_file.read_text())
            if saved["tracking_uri"] != tracking_uri:
                return None
            run = self.client.get_run(saved["run_id"])
        except Exception:  # noqa: BLE001 - no file, another store, a deleted run: start a new MLflow run
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _experiment_id(self) -> str:
        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - created meanwhile by another run (parallel trials)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _new_run(self, tracking_uri: str, run_dir: Path, cfg: Config) -> str:
        from mlflow.entities import Param  # mlflow is imported by mlflow_client already

        run = self.client.create_run(self._experiment_id(), run_name=cfg.train.name,
                                     tags={"phasegan.run_dir": str(Path(run_dir).resolve())})
        params = [Param(k, v[:6000]) for k, v in sorted(_flat_params(cfg).items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_file, json.dumps({"tracking_uri": tracking_uri, "run_id": run.info.run_id,
                                                       "experiment_id": run.info.experiment_id}) + "\n")
        return run.info.run_id

    def write(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric  # mlflow is imported by mlflow_client already

        values = scalars(record)
        if not values:
            return
        stamp = int(1000 * float(record.get("time", time.time())))
        step = int(record["step"])
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def flush(self) -> None:
        pass  # every batch is sent when written

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class RunLog:
    """Rank 0's logs of one run: the record (:class:`JsonlSink`, whose failures are errors) and the views
    (any :class:`MetricSink`; one that fails is dropped with a warning). Other ranks get a log that writes
    nothing (``record=None``)."""

    def __init__(self, record: JsonlSink | None, views: list[MetricSink] | None = None) -> None:
        self.record = record
        self.views = list(views or [])

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (empty on ranks other than 0)."""
        return self.record.records if self.record is not None else []

    def write(self, record: Mapping[str, Any]) -> None:
        if self.record is None:
            return
        self.record.write(record)
        self._each("write", record)

    def flush(self) -> None:
        self._each("flush")

    def close(self, status: str) -> None:
        self._each("close", status)
        self.views = []

    def _each(self, method: str, *args: Any) -> None:
        for view in list(self.views):
            try:
                getattr(view, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a view must not stop training; the record goes on
                self.views.remove(view)
                warnings.warn(f"{type(view).__name__} stopped ({type(exc).__name__}: {exc}); "
                              f"{METRICS_FILE} keeps the record", RuntimeWarning, stacklevel=3)


def open_run_log(cfg: Config, run_dir: Path, resume_step: int, rank0: bool) -> RunLog:
    """The logs of a run that starts (or resumes) at ``resume_step``: ``metrics.jsonl`` cut back to it, and
    the views the configuration and environment ask for (rank 0 only).

    Args:
        cfg: the run's configuration (``[train] tensorboard``; the MLflow parameters).
        run_dir: the run directory (``metrics.jsonl``, ``tensorboard/``, ``mlflow_run.json``).
        resume_step: the checkpoint's step (0: a fresh start).
        rank0: whether this rank writes logs.

    Raises:
        TrainingError: MLFLOW_TRACKING_URI is set and mlflow is missing or refuses it.
    """
    if not rank0:
        return RunLog(None)
    run_dir = Path(run_dir)
    views: list[MetricSink] = []
    uri = os.environ.get("MLFLOW_TRACKING_URI")  # mlflow reads its other MLFLOW_* settings there itself
    if uri:  # first: the one that can refuse, before any file is written
        views.append(MlflowSink(uri, run_dir, cfg, resume_step))
    if cfg.train.tensorboard:
        views.append(TensorBoardSink(run_dir / TENSORBOARD_DIR, resume_step))
    return RunLog(JsonlSink(run_dir / METRICS_FILE, resume_step), views)


def mlflow_environment() -> dict[str, str]:
    """This process's ``MLFLOW_*`` variables: what a Ray driver hands its workers, which on a cluster do not
    share its environment (see :func:`check_mlflow`)."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


def check_mlflow() -> None:
    """Open the MLflow store of ``MLFLOW_TRACKING_URI`` if it is set (nothing otherwise): a driver calls this
    before any worker starts.

    Raises:
        TrainingError: mlflow is missing or refuses the store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        mlflow_client(uri)
