"""Slurm time limits on a real one-node Slurm (phasegan_hpc/testbed/slurm.py): slurm/requeue.sh's signal and requeue
paths driven by the test (`scancel --signal`, `scontrol requeue`, `scancel`; the signal path through
slurm/tune.sh, which resumes its search when requeued), and one `sbatch --time=2 slurm/train_foam.sh` whose
training outlasts its limit and ends, after requeues, with the losses of an uninterrupted run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tools import REPO

from phasegan_hpc.config import config_to_toml, load_config, with_overrides

pytestmark = pytest.mark.slow


def _sbatch(cluster, env, tmp_path, script, *args, cpus=1, time="15", extra=()) -> str:
    proc = subprocess.run(["sbatch", "--parsable", "--gres=none", "--nodes=1", f"--cpus-per-task={cpus}",
                           f"--time={time}", "--open-mode=append", f"--output={tmp_path}/job-%j.out", *extra,
                           str(script), *map(str, args)], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _log(tmp_path, job_id) -> str:
    path = tmp_path / f"job-{job_id}.out"
    return path.read_text() if path.exists() else ""


def _done(info) -> bool:
    return info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


# A batch script that runs its arguments as train_foam.sh and tune.sh run phasegan-hpc (without Ray: the helper
# alone), and a stand-in command that says when it starts and what signal it gets: on its first start it runs
# until it is stopped (ignoring SIGTERM if asked), on the next it finishes.
PROBE = """#!/bin/bash
set -euo pipefail
source {repo}/slurm/requeue.sh
requeue_arm
trap requeue_finish EXIT
rc=0
requeue_run "$@" || rc=$?
echo "command exit $rc"
exit "$rc"
"""
STANDIN = """#!/bin/bash
echo "start ${SLURM_RESTART_COUNT:-0}" >> "$STANDIN_LOG"
if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then exit 0; fi
if [[ ${STANDIN_IGNORE_TERM:-0} == 1 ]]; then
  trap 'echo "got TERM, ignored" >> "$STANDIN_LOG"' TERM
else
  trap 'echo "got TERM" >> "$STANDIN_LOG"; exit 130' TERM
fi
while true; do sleep 0.2; done
"""


def _probe(slurm, tmp_path, name, **env):
    """Submit the probe with the stand-in: (job id, stand-in log, job directory) once the stand-in has started."""
    d = tmp_path / name
    d.mkdir()
    (d / "probe.sh").write_text(PROBE.format(repo=REPO))
    standin = d / "standin.sh"
    standin.write_text(STANDIN)
    standin.chmod(0o755)
    log = d / "standin.log"
    job_env = {**slurm.env, "STANDIN_LOG": str(log), "PHASEGAN_HPC_MIN_RUN_S": "0", **env}
    job_id = _sbatch(slurm, job_env, d, d / "probe.sh", standin)
    slurm.wait_for_job(job_id, lambda info: log.exists() and "start 0" in log.read_text(), 60,
                       "the stand-in's first start")
    return job_id, log, d


TUNE_STANDIN = """#!/bin/bash
echo "start ${SLURM_RESTART_COUNT:-0}: $*" >> "$STANDIN_LOG"
if (( ${SLURM_RESTART_COUNT:-0} > 0 )); then exit 0; fi
mkdir -p "$STANDIN_STORAGE/tune-search"  # where phasegan-hpc tune keeps its search
trap 'echo "got TERM" >> "$STANDIN_LOG"; exit 130' TERM
while true; do sleep 0.2; done
"""


def _tune_sh(slurm, tmp_path):
    """Submit slurm/tune.sh (one CPU: Ray over the allocation) with a stand-in for phasegan-hpc, under the old
    variable names: (job id, stand-in log, job directory) once the stand-in has started."""
    d = tmp_path / "tune"
    d.mkdir()
    standin = d / "phasegan-hpc"
    standin.write_text(TUNE_STANDIN)
    standin.chmod(0o755)
    log, storage = d / "standin.log", d / "runs"
    env = dict(slurm.env, PHASEGAN_HOME=str(REPO), PHASEGAN_BIN=str(standin), PHASEGAN_HPC_STORAGE=str(storage),
               PHASEGAN_HPC_NAME="search", PHASEGAN_TRIALS="3", PHASEGAN_HPC_MIN_RUN_S="0",
               STANDIN_LOG=str(log), STANDIN_STORAGE=str(storage),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    job = _sbatch(slurm, env, d, REPO / "slurm" / "tune.sh", "--max-epochs", 1, cpus=1)
    slurm.wait_for_job(job, lambda info: log.exists() and "start 0" in log.read_text(), 120, "the first start")
    return job, log, d


def test_signal_requeue_and_cancel_paths(slurm, tmp_path):
    """The paths of slurm/requeue.sh, each as its own job (two at a time on the node's two CPUs):
    - `scancel --signal=TERM --batch` (the time-limit signal, sent by hand) to slurm/tune.sh (Ray over the
      allocation, a stand-in for phasegan-hpc): the search is stopped, Ray too, the job requeues itself and
      its next start passes --resume and finishes; the old variable names still work, with one warning line
      each;
    - the same with a command that ignores SIGTERM (the probe): it is killed after PHASEGAN_HPC_STOP_WAIT_S,
      and requeued;
    - `scontrol requeue`: Slurm requeues the job, once (the script adds no requeue of its own);
    - `scancel`: the job stops for good;
    - a run shorter than PHASEGAN_HPC_MIN_RUN_S is not requeued (it could not have progressed)."""
    tuned, tuned_log, tuned_dir = _tune_sh(slurm, tmp_path)
    stubborn, stubborn_log, stubborn_dir = _probe(slurm, tmp_path, "stubborn", STANDIN_IGNORE_TERM="1",
                                                  PHASEGAN_HPC_STOP_WAIT_S="2")
    for job in (tuned, stubborn):
        assert slurm.run("scancel", "--batch", "--signal=TERM", job).returncode == 0
    for job, d in ((tuned, tuned_dir), (stubborn, stubborn_dir)):
        info = slurm.wait_for_job(job, _done, 180, "the end")
        log = _log(d, job)
        assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{log}"
        assert "SIGTERM while RUNNING" in log and f"requeueing job {job}" in log, log
        assert f"job {job} started again (requeued 1 time(s)): resuming" in log, log
    assert "command exit 0" in _log(stubborn_dir, stubborn)
    lines = tuned_log.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["start 0", "got TERM", "start 1"], lines
    starts = [lines[0], lines[2]]
    assert "--resume" not in starts[0] and "--resume" in starts[1], starts
    assert all("--trials 3 " in s and s.endswith("--max-epochs 1") for s in starts), starts
    out = _log(tuned_dir, tuned)
    assert out.count("stopping Ray") == 2  # each start stopped its Ray before the job requeued or ended
    for old in ("PHASEGAN_HOME", "PHASEGAN_BIN", "PHASEGAN_TRIALS"):  # once per start
        warning = f"warning: {old} is deprecated and will be removed in 0.3.0: use {old.replace('_', '_HPC_', 1)}"
        assert out.count(warning) == 2, out
    assert stubborn_log.read_text().splitlines()[:2] == ["start 0", "got TERM, ignored"]
    assert stubborn_log.read_text().splitlines()[-1] == "start 1"
    assert "the command did not stop within 2s: killing it" in _log(stubborn_dir, stubborn)

    requeued, requeued_log, requeued_dir = _probe(slurm, tmp_path, "requeue")
    cancelled, cancelled_log, cancelled_dir = _probe(slurm, tmp_path, "cancel")
    assert slurm.run("scontrol", "requeue", requeued).returncode == 0
    assert slurm.run("scancel", cancelled).returncode == 0
    info = slurm.wait_for_job(requeued, _done, 90, "the end")
    log = _log(requeued_dir, requeued)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{log}"
    assert f"SIGTERM, job {requeued} COMPLETING" in log and "requeueing job" not in log, log
    assert requeued_log.read_text().splitlines() == ["start 0", "got TERM", "start 1"]
    info = slurm.wait_for_job(cancelled, _done, 60, "the end")
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info
    log = _log(cancelled_dir, cancelled)
    assert f"SIGTERM, job {cancelled} COMPLETING" in log and "requeueing job" not in log, log

    short, _, short_dir = _probe(slurm, tmp_path, "short", PHASEGAN_HPC_MIN_RUN_S="600")
    assert slurm.run("scancel", "--batch", "--signal=TERM", short).returncode == 0
    info = slurm.wait_for_job(short, _done, 60, "the end")
    log = _log(short_dir, short)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{info}\n{log}"
    assert "not requeued: the command ran" in log and "< PHASEGAN_HPC_MIN_RUN_S=600s" in log, log
    # The cancelled job stayed cancelled (a requeued job would have started again by now).
    assert slurm.job(cancelled)["JobState"] == "CANCELLED"
    assert cancelled_log.read_text().splitlines() == ["start 0", "got TERM"]


def _losses(run_dir: Path) -> dict[int, dict[str, float]]:
    """Every number logged per step (training losses; validation metrics at epoch ends) by step."""
    out: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "event" in rec:
            continue
        values = {k: v for k, v in rec.items() if k not in ("step", "epoch", "time", "complete")
                  and isinstance(v, float)}
        out.setdefault(rec["step"], {}).update(values)
    return out


REFERENCE = """
import sys
import torch
from phasegan_hpc.config import load_config
from phasegan_hpc.train.local import train_local
torch.set_num_threads(2)  # as the Ray Train worker of the job (--cpus-per-worker 2)
train_local(load_config(sys.argv[1]))
"""


def _checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.rsplit("_", 1)[1]) for p in run_dir.glob("checkpoint_step_*"))


def _logged_past(run_dir: Path, step: int) -> bool:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return False
    return any(json.loads(line).get("step", 0) > step for line in lines if line.endswith("}"))


def test_train_foam_outlasts_its_time_limit_and_ends_as_an_uninterrupted_run(slurm, tiny_data, tmp_path):
    """`sbatch --time=2 slurm/train_foam.sh` (the script's own --signal lead, 300 s, replaced by 5 s, which a
    2-minute limit leaves room for): slurmctld sends SIGTERM to the batch shell 5-35 s before the limit, the
    training stops, the job requeues itself and its next start resumes from the last checkpoint.

    The config asks for 40 epochs, far more than a 2-minute allocation trains here. Once the job is requeued,
    the test cuts them to two epochs past the last checkpoint, so that the next start finishes (the epoch
    count enters no schedule: every step's losses stay the same). Beside the job, from its first step on, the
    test trains the 40-epoch config uninterrupted in-process; the losses and validation metrics of every step
    of the job equal that run's within rtol 1e-6."""
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.epochs": 40, "train.val_frames": 8, "train.log_every": 1, "train.checkpoint_every": 1})
    config = tmp_path / "tiny-requeue.toml"
    config.write_text(config_to_toml(cfg))
    runs, ref = tmp_path / "runs", tmp_path / "ref"
    env = dict(slurm.env, PHASEGAN_HPC_HOME=str(REPO), PHASEGAN_HPC_CONFIG=str(config),
               PHASEGAN_HPC_DATA=str(tiny_data), PHASEGAN_HPC_NAME="long", PHASEGAN_HPC_STORAGE=str(runs),
               PHASEGAN_HPC_MIN_RUN_S="10", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    job = _sbatch(slurm, env, tmp_path, REPO / "slurm" / "train_foam.sh", cpus=2, time="2",
                  extra=["--signal=B:TERM@5"])
    # The uninterrupted run starts with the job's first checkpoint (not before: the job's start-up would slow).
    slurm.wait_for_job(job, lambda info: _checkpoint_steps(runs / "long") or _done(info), 180, "a checkpoint")
    ref_cfg = with_overrides(cfg, {"train.data_dir": str(tiny_data), "train.runs_dir": str(tmp_path),
                                   "train.name": "ref"})
    (tmp_path / "ref.toml").write_text(config_to_toml(ref_cfg))
    reference = subprocess.Popen([sys.executable, "-c", REFERENCE, str(tmp_path / "ref.toml")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        slurm.wait_for_job(job, lambda info: info.get("Restarts", "0") != "0" or _done(info), 180,
                           "a requeue (or the end)")
        # Requeued (it starts again some 11 s later): its next start trains two more epochs and finishes.
        steps = _checkpoint_steps(runs / "long")
        assert steps, _log(tmp_path, job)
        epochs = steps[-1] // 4 + 2  # 4 steps per epoch: 32 frames, batch 8
        (tmp_path / "next.toml").write_text(config_to_toml(with_overrides(cfg, {"train.epochs": epochs})))
        (tmp_path / "next.toml").replace(config)
        info = slurm.wait_for_job(job, _done, 300, "the end")
        log = _log(tmp_path, job)
        assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, f"{info}\n{log}"
        slurm.wait_for_job(job, lambda _: _logged_past(ref, epochs * 4) or reference.poll() is not None, 300,
                           "the uninterrupted run's steps")
    finally:
        reference.kill()
        ref_out, _ = reference.communicate(timeout=60)
    assert _logged_past(ref, epochs * 4), ref_out
    # Slurm's own signal (the test sent none), then the requeue and the resumed start.
    assert "SIGTERM while RUNNING" in log and f"requeueing job {job}" in log, log
    assert "resuming" in log and (runs / "long" / "model.pt").is_file(), log
    recs = [json.loads(line) for line in (runs / "long" / "metrics.jsonl").read_text().splitlines()]
    starts = [r["step"] for r in recs if r.get("event") == "start"]
    assert starts[0] == 0 and len(starts) >= 2 and starts[-1] > 0, starts  # resumed, not started over
    got = _losses(runs / "long")
    want = {step: values for step, values in _losses(ref).items() if step <= epochs * 4}
    assert sorted(got) == sorted(want) == list(range(1, epochs * 4 + 1))
    for step, values in want.items():
        assert sorted(got[step]) == sorted(values), step
        np.testing.assert_allclose([got[step][k] for k in sorted(values)], [values[k] for k in sorted(values)],
                                   rtol=1e-6, err_msg=f"step {step}")
