"""Ray Train (V2) training: DDP over 2 CPU workers, worker failure recovery, driver restarts, bad input.

A real local Ray cluster (session fixture) runs real TorchTrainer workers with gloo DDP.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import faults
import pytest
from runlogs import assert_same_curves, event_scalars, jsonl_scalars
from tools import EXE

from phasegan_hpc.config import with_overrides
from phasegan_hpc.errors import DataError, ResourceError
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.train.fit import fit
from phasegan_hpc.train.loop import run_dir_of, weights_digest
from phasegan_hpc.train.session import run_checkpoints

pytestmark = pytest.mark.slow


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_workers_end_with_identical_weights(ray_cluster, tiny_train_config, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    # Set after the cluster started, so its workers do not inherit them: the driver must hand them over.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = with_overrides(tiny_train_config, {"train.name": "ddp"})
    result = fit(cfg, workers=2)
    run = run_dir_of(cfg)
    recs = records(run)
    assert [r["world_size"] for r in recs if r.get("event") == "start"] == [2]
    # 32 frames / 2 ranks / batch 8 = 2 steps per epoch, 2 epochs
    assert [r["step"] for r in recs if "loss_g" in r] == [1, 2, 3, 4]
    (end,) = [r for r in recs if r.get("event") == "end"]
    digests = end["g_o_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    model = load_model(result["model_path"])
    assert weights_digest(model.generator) == digests[0]
    # Ray Train's checkpoints in storage/NAME, named as in-process runs name theirs; the newest 2 kept
    assert [p.name for p in run_checkpoints(run)] == ["checkpoint_step_00000003", "checkpoint_step_00000004"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    assert_same_curves(event_scalars(run / "tensorboard"), jsonl_scalars(run))
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "loss_g")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


def test_killed_worker_is_replaced_and_run_completes(ray_cluster, tiny_train_config):
    cfg = with_overrides(tiny_train_config, {"train.name": "fault", "train.checkpoint_every": 100})
    run = run_dir_of(cfg)
    snapshot = run / "checkpoint_manager_snapshot.json"

    def after_step_3() -> faults.Proc | None:
        """A training worker, once step 3 is logged and the checkpoint at step 2 registered (4 steps in all)."""
        try:
            registered = "checkpoint_" in snapshot.read_text()
        except OSError:
            return None
        if registered and any(r.get("step") == 3 and "loss_g" in r for r in faults.jsonl(run / "metrics.jsonl")):
            return faults.first(faults.find("ray::RayTrainWorker"))
        return None

    # A rank is killed from outside after step 3, as a lost node would be; the last checkpoint is at step 2.
    killer = faults.Killer(after_step_3, "step 3 of run 'fault' after its first registered checkpoint")
    result = fit(cfg, workers=2, max_failures=2)
    dead, _ = killer.result()
    assert not faults.alive(dead.pid)  # it did die
    recs = records(run)
    starts = [r["step"] for r in recs if r.get("event") == "start"]
    assert starts == [0, 2]  # restarted from the checkpoint, not from scratch
    assert [r["step"] for r in recs if "loss_g" in r] == [1, 2, 3, 4]
    assert result["step"] == 4 and Path(result["model_path"]).is_file()
    # The restarted rank 0 continued the curves: what the killed one logged after step 2 is hidden.
    assert_same_curves(event_scalars(run / "tensorboard"), jsonl_scalars(run))


def test_interrupted_driver_resumes_from_last_checkpoint(tiny_train_config, tmp_path):
    cfg_file = tmp_path / "c.toml"
    from phasegan_hpc.config import config_to_toml

    cfg = with_overrides(tiny_train_config, {"train.name": "requeue", "train.epochs": 40,
                                             "train.checkpoint_every": 2})
    cfg_file.write_text(config_to_toml(cfg))
    # The driver starts (and, on SIGTERM, stops) a Ray of its own, as on a Slurm node.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = run_dir_of(cfg)
    proc = subprocess.Popen([EXE, "train", "--config", str(cfg_file), "--workers", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    snapshot = run / "checkpoint_manager_snapshot.json"

    def registered() -> bool:  # Ray Train has recorded a checkpoint, not merely copied its directory
        try:
            return "checkpoint_" in snapshot.read_text()
        except OSError:
            return False

    deadline = time.time() + 240
    while time.time() < deadline and not registered():
        time.sleep(0.5)
    assert registered(), "no checkpoint was registered"
    proc.send_signal(signal.SIGTERM)  # what Slurm sends on preemption / scancel / requeue
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "rerun the same command to resume" in out
    first = [r["step"] for r in records(run) if "loss_g" in r]
    assert first and not (run / "model.pt").exists()

    short = with_overrides(cfg, {"train.epochs": 2 + max(first) // 4})
    cfg_file.write_text(config_to_toml(short))
    done = subprocess.run([EXE, "train", "--config", str(cfg_file)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    starts = [r["step"] for r in records(run) if r.get("event") == "start"]
    assert starts[0] == 0 and starts[-1] > 0  # continued from its checkpoint
    steps = [r["step"] for r in records(run) if "loss_g" in r]
    assert steps == list(range(1, len(steps) + 1))  # no step lost or repeated
    assert_same_curves(event_scalars(run / "tensorboard"), jsonl_scalars(run))  # in TensorBoard neither
    assert (run / "model.pt").is_file()


def test_bad_input_fails_fast_with_clear_errors(ray_cluster, tiny_train_config, tmp_path):
    (tmp_path / "afile").write_text("x")
    cfg = with_overrides(tiny_train_config, {"train.runs_dir": str(tmp_path / "afile" / "runs")})
    with pytest.raises(DataError, match="not writable"):
        fit(cfg)
    t0 = time.time()
    with pytest.raises(ResourceError, match="need 3 CPUs; the Ray cluster has 2"):
        fit(tiny_train_config, workers=3)
    with pytest.raises(ResourceError, match="GPU"):
        fit(tiny_train_config, gpus_per_worker=1)
    assert time.time() - t0 < 30  # an error, not a hang
    with pytest.raises(DataError, match="not found"):
        fit(with_overrides(tiny_train_config, {"train.data_dir": str(tmp_path / "none")}))


def _ray_processes() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines()[1:] if "raylet" in line or "gcs_server" in line}


def test_cli_errors_leave_no_ray_processes(tiny_data, tmp_path):
    before = _ray_processes()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([EXE, "train", "--config", "configs/tiny.toml", "--data", str(tiny_data),
                           "--storage", str(tmp_path / "runs"), "--workers", "3"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 3 worker(s)")
    time.sleep(1.0)
    assert _ray_processes() <= before  # the local Ray it started is gone
