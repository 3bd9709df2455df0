"""`phasegan-hpc tune`: Optuna TPE + ASHA over real Ray Tune trials on the tiny config (CPU)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tools import EXE, REPO

from phasegan_hpc.config import config_to_toml, load_config, with_overrides
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.tune.search import run_search

pytestmark = pytest.mark.slow


def tune_config(data: Path, runs: Path, **extra):
    return with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.data_dir": str(data), "train.runs_dir": str(runs), "train.val_frames": 8,
        "tune.grace_epochs": 1, "tune.reduction_factor": 2, "tune.max_concurrent": 1, **extra})


def test_four_trial_search_writes_outputs_and_asha_stops_one(ray_cluster, tiny_data, tmp_path):
    cfg = tune_config(tiny_data, tmp_path / "runs")
    t0 = time.time()
    result = run_search(cfg, trials=4, name="four", max_epochs=4)
    print(f"4-trial search: {time.time() - t0:.1f} s")
    d = tmp_path / "runs" / "tune-four"
    assert result.directory == d and len(result.rows) == 4
    metrics = [r["val_unpaired"] for r in result.rows]
    assert metrics == sorted(metrics)  # best first
    assert any(r["stopped_early"] for r in result.rows), "ASHA stopped no trial"
    assert any(not r["stopped_early"] for r in result.rows)
    lines = (d / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("trial,alpha_cyc,alpha_frc") and len(lines) == 5
    assert all("val_phase_frcm" in r for r in result.rows)  # paired metrics reported alongside
    best = load_config(d / "best.toml")
    assert best.loss.alpha_cyc == pytest.approx(result.best["alpha_cyc"])
    assert best.loss.alpha_frc == pytest.approx(result.best["alpha_frc"])
    assert 1.0 <= best.loss.alpha_cyc <= 300.0 and 0.1 <= best.loss.alpha_frc <= 100.0
    assert load_model(d / "model.pt").info["trial"] == result.best["trial"]
    assert (tmp_path / "runs" / "latest").resolve() == d.resolve()
    assert (d / "search.png").read_bytes()[:4] == b"\x89PNG"

    # The best config round-trips through `phasegan-hpc train --config`.
    env = dict(os.environ, RAY_ADDRESS=ray_cluster)
    proc = subprocess.run([EXE, "train", "--config", str(d / "best.toml"), "--epochs", "1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    trained = tmp_path / "runs" / "tune-four-best" / "config.toml"
    assert load_config(trained).loss == best.loss


def test_interrupted_search_resumes_without_repeating_trials(ray_cluster, tiny_data, tmp_path):
    cfg = tune_config(tiny_data, tmp_path / "runs")
    (tmp_path / "c.toml").write_text(config_to_toml(cfg))
    args = [EXE, "tune", "--trials", "4", "--config", str(tmp_path / "c.toml"), "--name", "re", "--max-epochs", "2"]
    env = dict(os.environ, RAY_ADDRESS=ray_cluster)
    trials = tmp_path / "runs" / "tune-re" / "trials"

    def finished() -> set[str]:  # trials Tune's saved experiment state records as terminated
        names = set()
        for state in (tmp_path / "runs" / "tune-re").glob("experiment_state-*.json"):
            try:
                data = json.loads(state.read_text())
            except (json.JSONDecodeError, OSError):
                continue  # being rewritten
            for trial_json, _ in data["trial_data"]:
                t = json.loads(trial_json)
                if t["status"] == "TERMINATED":
                    names.add(f"trial_{t['trial_id']}")
        return names

    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(finished()) < 2:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    first = finished()
    assert len(first) >= 2, out[-3000:]
    assert not (tmp_path / "runs" / "tune-re" / "trials.csv").exists()  # it did not finish

    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = (tmp_path / "runs" / "tune-re" / "trials.csv").read_text().splitlines()[1:]
    assert len(rows) == 4
    for name in first:  # finished trials were not run again
        recs = [json.loads(line) for line in (trials / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs if r.get("event") == "start"] == [0], name


def test_a_lost_trial_restarts_from_its_checkpoint(ray_cluster, tiny_data, tmp_path):
    """`phasegan-hpc tune --max-failures 1`: once the trial has reported its first epoch (with its checkpoint),
    its process is killed (SIGKILL, as a lost node); Tune starts the trial again, which resumes at that
    checkpoint's step (not at 0) and finishes its epochs; the search ends as if nothing had happened."""
    cfg = tune_config(tiny_data, tmp_path / "runs", **{"train.log_every": 1})
    (tmp_path / "c.toml").write_text(config_to_toml(cfg))
    args = [EXE, "tune", "--trials", "1", "--config", str(tmp_path / "c.toml"), "--name", "lost",
            "--max-epochs", "3", "--max-failures", "1"]
    search = tmp_path / "runs" / "tune-lost"

    def reported() -> dict | None:  # the trial's last result as Tune's driver logged it (result.json)
        for path in search.glob("trial_*/result.json"):
            lines = [ln for ln in path.read_text().splitlines() if ln.endswith("}")]
            if lines:
                return json.loads(lines[-1])
        return None

    t0 = time.time()
    proc = subprocess.Popen(args, env=dict(os.environ, RAY_ADDRESS=ray_cluster), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not (reported() or {}).get("epoch"):
            time.sleep(0.2)
        first = reported()
        assert first and first["step"] in (4, 8), first  # an epoch end (4 steps each), reported with its checkpoint
        assert Path(f"/proc/{first['pid']}/cmdline").read_bytes().startswith(b"ray::"), first  # the trial's actor
        os.kill(first["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    print(f"lost-trial search: {time.time() - t0:.1f} s")
    assert proc.returncode == 0, out[-3000:]
    (trial,) = (search / "trials").iterdir()
    recs = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    starts = [i for i, r in enumerate(recs) if r.get("event") == "start"]
    resumed = recs[starts[-1]]["step"]
    assert len(starts) == 2 and resumed >= first["step"], recs  # resumed from the checkpoint, not from step 0
    assert sorted({r["step"] for r in recs[starts[-1]:] if "event" not in r}) == list(range(resumed + 1, 13))
    assert reported()["pid"] != first["pid"] and reported()["epoch"] == 3
    (row,) = csv.DictReader((search / "trials.csv").read_text().splitlines())
    assert row["error"] == "False" and float(row["epochs"]) == 3
    assert load_model(search / "model.pt").info["step"] == 12


def test_defaults_and_bad_input(tmp_path, tiny_data):
    import inspect

    from phasegan_hpc.cli import tune

    options = {p.name: p.default for p in tune.params}
    assert options["max_failures"] == inspect.signature(run_search).parameters["max_failures"].default == 2
    proc = subprocess.run([EXE, "tune", "--trials", "64"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "phasegan-hpc simulate data/synthetic" in proc.stderr
    no_val = tmp_path / "noval"
    shutil.copytree(tiny_data, no_val)
    (no_val / "validation.h5").unlink()
    with pytest.raises(DataError, match="held-out detector frames"):
        run_search(tune_config(no_val, tmp_path / "runs"), trials=1, name="x")
    with pytest.raises(DataError, match="not phasegan|not paired|cycle weights"):
        run_search(with_overrides(tune_config(tiny_data, tmp_path / "runs"), {"train.method": "paired"}),
                   trials=1, name="x")
    with pytest.raises(DataError, match="nothing to resume"):
        run_search(tune_config(tiny_data, tmp_path / "runs"), trials=1, name="none", resume=True)


def test_multi_worker_trial_runs_a_torchtrainer(ray_cluster, tiny_data, tmp_path):
    cfg = tune_config(tiny_data, tmp_path / "runs")
    result = run_search(cfg, trials=1, name="mw", max_epochs=1, workers_per_trial=2, cpus_per_trial=2)
    (row,) = result.rows
    run = tmp_path / "runs" / "tune-mw" / "trials" / row["trial"]
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in recs if r.get("event") == "start"] == [2]  # a 2-rank DDP trial
    assert list(run.glob("checkpoint_*"))  # Ray Train's own checkpoints
    assert load_model(result.files["model.pt"]).info["trial"] == row["trial"]
