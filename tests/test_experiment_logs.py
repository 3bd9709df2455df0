"""Experiment logs of training (train/logs.py): TensorBoard event files and an MLflow run mirror metrics.jsonl,
resumed runs continue them, and checkpoints have one name (train/session.py).

Real components only: in-process training runs on the tiny data set, TensorBoard's own event accumulator,
MLflow's client on a local file store under tmp_path.
"""

import json
import shutil
import sys

import pytest
import torch
from runlogs import assert_same_curves, event_scalars, jsonl_scalars

from phasegan_hpc.config import with_overrides
from phasegan_hpc.errors import TrainingError
from phasegan_hpc.train.fit import fit
from phasegan_hpc.train.local import train_local
from phasegan_hpc.train.loop import run_dir_of
from phasegan_hpc.train.session import CHECKPOINT_FILE, checkpoint_name, latest_checkpoint, run_checkpoints


@pytest.fixture
def short(tiny_train_config):
    """One epoch of 4 steps, a checkpoint every 2, a loss record every step, validation at the end."""
    return with_overrides(tiny_train_config, {"train.epochs": 1, "train.checkpoint_every": 2})


def test_tensorboard_mirrors_metrics_and_a_resumed_run_continues_its_curves(short):
    cfg = with_overrides(short, {"train.name": "tb", "train.max_steps": 3})
    train_local(cfg)  # steps 1-3; checkpoints at 2 and 3 (the stop)
    run = run_dir_of(cfg)
    # An interruption after step 3 was logged but before its checkpoint was written: the run resumes from 2.
    shutil.rmtree(run / checkpoint_name(3))
    train_local(with_overrides(cfg, {"train.max_steps": 0}))

    logs = run / "tensorboard"
    assert len(list(logs.glob("events.out.tfevents.*"))) == 2  # the resumed run appended its own file
    every_point = event_scalars(logs, purge=False)
    assert [s for s, _ in every_point["loss_g"]] == [1, 2, 3, 3, 4]  # the interrupted run's step 3 is in a file
    shown = event_scalars(logs)
    assert [s for s, _ in shown["loss_g"]] == [1, 2, 3, 4]  # ... and hidden: steps continue and never repeat
    assert [s for s, _ in shown["val_phase_l2"]] == [4]
    assert {"loss_d", "cyc_o", "frc_i", "lr_scale", "val_unpaired"} <= set(shown)
    assert_same_curves(shown, jsonl_scalars(run))  # every number of metrics.jsonl, at its step


def test_mlflow_run_mirrors_metrics_and_a_resumed_run_continues_it(short, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to use a file store
    cfg = with_overrides(short, {"train.name": "ml", "train.max_steps": 2, "train.tensorboard": False})
    train_local(cfg)
    run = run_dir_of(cfg)
    first_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    train_local(with_overrides(cfg, {"train.max_steps": 0}))
    assert not (run / "tensorboard").exists()  # [train] tensorboard = false

    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("phasegan-hpc").experiment_id])
    assert found.info.run_id == first_id  # the resumed run continued the same MLflow run
    assert found.info.status == "FINISHED" and found.info.run_name == "ml"
    params = found.data.params
    assert params["train.method"] == "phasegan" and params["loss.alpha_cyc"] == str(cfg.loss.alpha_cyc)
    record = jsonl_scalars(run)
    assert [s for s, _ in record["loss_g"]] == [1, 2, 3, 4]
    logged = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(first_id, key),
                                                      key=lambda m: (m.step, m.timestamp))]
              for key in found.data.metrics}
    assert_same_curves(logged, record, rel=1e-12)


def test_mlflow_problems_are_one_line_before_anything_is_written(short, tmp_path, monkeypatch):
    cfg = with_overrides(short, {"train.name": "bad"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://tracking")
    with pytest.raises(TrainingError, match=r"^MLFLOW_TRACKING_URI=nosuch://tracking: .*unsupported URI"):
        train_local(cfg)
    with pytest.raises(TrainingError, match="MLFLOW_TRACKING_URI=nosuch"):
        fit(cfg)  # the Ray driver refuses it before Ray starts
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on a machine without mlflow: its import fails
    with pytest.raises(TrainingError, match=r"mlflow is not installed: pip install 'phasegan-hpc\[mlflow\]'"):
        train_local(cfg)
    assert not run_dir_of(cfg).exists()


def test_one_checkpoint_name_and_older_runs_still_resume(short):
    """In-process runs write checkpoint_step_N (Ray Train's runs too: tests/test_fit.py); a run that holds the
    older in-process name (checkpoints/step_N) resumes from it, and its old checkpoints are rotated out."""
    cfg = with_overrides(short, {"train.name": "old", "train.max_steps": 2})
    train_local(cfg)
    run = run_dir_of(cfg)
    assert [p.name for p in run_checkpoints(run)] == ["checkpoint_step_00000002"]
    (run / "checkpoints").mkdir()
    (run / "checkpoint_step_00000002").rename(run / "checkpoints" / "step_00000002")  # as older versions wrote
    (run / "checkpoint_2099-01-01_00-00-00.000000").mkdir()  # Ray Train's older timestamp name, older than steps
    torch.save({"step": -1}, run / "checkpoint_2099-01-01_00-00-00.000000" / CHECKPOINT_FILE)
    assert latest_checkpoint(run) == run / "checkpoints" / "step_00000002"
    resumed = train_local(with_overrides(cfg, {"train.max_steps": 3}))
    assert resumed["step"] == 3
    starts = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"event": "start"' in line]
    assert starts == [0, 2]  # resumed from the old name, not from scratch
    # keep_checkpoints = 2 of every name: the oldest (Ray's timestamp) went
    assert [p.relative_to(run).as_posix() for p in run_checkpoints(run)] == [
        "checkpoints/step_00000002", "checkpoint_step_00000003"]
    train_local(with_overrides(cfg, {"train.max_steps": 0}))
    assert [p.name for p in run_checkpoints(run)] == ["checkpoint_step_00000003", "checkpoint_step_00000004"]
    assert not (run / "checkpoints").exists()
