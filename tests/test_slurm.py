"""`sbatch slurm/train_foam.sh` on a real one-node Slurm cluster (munged, slurmctld, slurmd from Debian)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tools import REPO

from phasegan_hpc.config import config_to_toml, load_config, with_overrides
from phasegan_hpc.models.artifact import load_model

SCRIPTS = sorted((REPO / "slurm").glob("*.sh")) + sorted((REPO / "jobs").glob("*.sh"))


def _job_env(cluster, tmp_path, data, name, **extra):
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {"train.epochs": 1, "train.val_frames": 8})
    (tmp_path / "tiny-slurm.toml").write_text(config_to_toml(cfg))
    env = dict(cluster.env, PHASEGAN_HPC_HOME=str(REPO), PHASEGAN_HPC_CONFIG=str(tmp_path / "tiny-slurm.toml"),
               PHASEGAN_HPC_DATA=str(data), PHASEGAN_HPC_NAME=name, PHASEGAN_HPC_STORAGE=str(tmp_path / "runs"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.update(extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _sbatch(cluster, env, tmp_path, *args, script="train_foam.sh"):
    out = tmp_path / "job-%j.out"
    proc = subprocess.run(["sbatch", "--parsable", "--wait", "--gres=none", "--nodes=1", "--cpus-per-task=2",
                           "--time=15", f"--output={out}", str(REPO / "slurm" / script), *map(str, args)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    job_id = proc.stdout.strip().split(";")[0]
    log = (tmp_path / f"job-{job_id}.out").read_text() if job_id else ""
    info = cluster.run("scontrol", "show", "job", job_id).stdout
    return proc, job_id, log, info


@pytest.mark.slow
def test_sbatch_train_foam_completes_and_leaves_a_model(slurm, tiny_data, tmp_path):
    env = _job_env(slurm, tmp_path, tiny_data, "slurm")
    proc, job_id, log, info = _sbatch(slurm, env, tmp_path)
    assert proc.returncode == 0, f"{proc.stderr}\n{log}\n{info}"
    assert "JobState=COMPLETED" in info and re.search(r"\bExitCode=0:0\b", info), info
    assert "all 1 node(s) joined" in log
    model = load_model(tmp_path / "runs" / "slurm" / "model.pt")
    assert model.method == "phasegan"
    # Ray was stopped: no raylet of this job is left.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"/tmp/ray-{job_id}" not in ps


@pytest.mark.slow
def test_sbatch_passes_the_training_exit_code_through(slurm, tmp_path):
    env = _job_env(slurm, tmp_path, tmp_path / "no-data", "broken")
    proc, job_id, log, info = _sbatch(slurm, env, tmp_path)
    assert proc.returncode != 0
    assert "JobState=FAILED" in info and re.search(r"\bExitCode=1:0\b", info), info
    assert "error: data directory" in log and "Traceback" not in log
    assert "stopping Ray" in log


@pytest.mark.slow
def test_sbatch_reconstruct_writes_the_volume(slurm, tiny_data, tmp_path):
    import h5py
    import numpy as np

    from phasegan_hpc.train.local import train_local

    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.data_dir": str(tiny_data), "train.runs_dir": str(tmp_path / "runs"), "train.epochs": 1,
        "train.name": "m", "train.val_frames": 4, "train.checkpoint_every": 100})
    model = train_local(cfg)["model_path"]
    archive = tmp_path / "movie.h5"
    with h5py.File(tiny_data / "validation.h5", "r") as f, h5py.File(archive, "w") as out:
        out["exchange/data"] = f["intensity"][()]
    env = _job_env(slurm, tmp_path, tiny_data, "unused", PHASEGAN_HPC_MODEL=model)
    proc, job_id, log, info = _sbatch(slurm, env, tmp_path, archive, "--shard-frames", 4, "--batch-size", 4,
                                      "--no-preview", script="reconstruct.sh")
    assert proc.returncode == 0, f"{proc.stderr}\n{log}\n{info}"
    assert "JobState=COMPLETED" in info and "all 1 node(s) joined" in log
    with h5py.File(tmp_path / "movie_phasegan.h5", "r") as f:
        assert f["phase"].shape == (8, 64, 64) and np.isfinite(f["phase"][()]).all()
    assert len(list((tmp_path / "movie_phasegan.shards").glob("*/shard-*.h5"))) == 2


MPS_STANDIN = r"""#!/bin/bash
# Stand-in for nvidia-cuda-mps-control (no GPU here), talking through the pipe directory as the real one does:
# -f is the daemon in the foreground, answering commands written to $CUDA_MPS_PIPE_DIRECTORY/control until
# quit; without arguments it is the client, sending the command read from stdin (failing with no daemon).
log=$MPS_STANDIN_LOG
fifo=$CUDA_MPS_PIPE_DIRECTORY/control
if [[ ${1:-} == -f ]]; then
  mkfifo "$fifo"
  echo "daemon started $CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> "$log"
  while true; do  # a read that ends without a line (a writer gone) reopens the pipe, as a daemon keeps serving
    if read -r cmd < "$fifo"; then
      echo "daemon got $cmd" >> "$log"
      [[ $cmd == quit ]] && break
    fi
  done
  rm -f "$fifo"
  echo "daemon quit" >> "$log"
  exit 0
fi
[[ -p $fifo ]] || { echo "cannot find MPS control daemon" >&2; exit 1; }
read -r cmd
echo "$cmd" > "$fifo"
"""


@pytest.mark.slow
def test_sbatch_reconstruct_shares_gpus_through_mps(slurm, movie_model, tiny_data, tmp_path):
    """slurm/reconstruct.sh on a node that reports a GPU (CUDA_VISIBLE_DEVICES=0; the workers told --device
    cpu, since there is none): two actors per GPU by default, so one MPS daemon (a stand-in) is started before
    Ray, with this job's own pipe directory, and stopped after Ray; and PHASEGAN_HPC_MPS=on without MPS fails in
    one line before Ray starts."""
    import h5py
    import numpy as np

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = bin_dir / "nvidia-cuda-mps-control"
    standin.write_text(MPS_STANDIN)
    standin.chmod(0o755)
    archive = tmp_path / "movie.h5"
    with h5py.File(tiny_data / "validation.h5", "r") as f, h5py.File(archive, "w") as out:
        out["exchange/data"] = f["intensity"][:8]
    mps_log = tmp_path / "mps.log"
    env = _job_env(slurm, tmp_path, tiny_data, "unused", PHASEGAN_HPC_MODEL=movie_model, CUDA_VISIBLE_DEVICES="0",
                   MPS_STANDIN_LOG=str(mps_log))
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    proc, job_id, log, info = _sbatch(slurm, env, tmp_path, archive, "--shard-frames", 4, "--batch-size", 4,
                                      "--no-preview", "--device", "cpu", script="reconstruct.sh")
    assert proc.returncode == 0, f"{proc.stderr}\n{log}\n{info}"
    with h5py.File(tmp_path / "movie_phasegan.h5", "r") as f:
        assert f["phase"].shape == (8, 64, 64) and np.isfinite(f["phase"][()]).all()
    events = mps_log.read_text().splitlines()
    assert events[0] == f"daemon started /tmp/mps-{job_id}/pipe log=/tmp/mps-{job_id}/log", events
    assert "daemon got get_server_list" in events and events[-2:] == ["daemon got quit", "daemon quit"], events
    mps_stopped = re.search(r"\[cuda-mps [\d:]+\] stopping", log)
    assert mps_stopped and log.index("[cuda-mps") < log.index("head ") < log.index("stopping Ray") < mps_stopped.start()
    assert "x 1 GPUs" in log and not Path(f"/tmp/mps-{job_id}").exists()
    # Two actors of half a GPU each (the default), on the one GPU Ray was given.
    assert "reconstruct: 2 worker(s) of 0.5 GPU and 1 CPU each" in log, log

    env["PATH"] = env["PATH"].split(":", 1)[1]  # no MPS on this node
    proc, job_id, log, info = _sbatch(slurm, dict(env, PHASEGAN_HPC_MPS="on"), tmp_path, archive,
                                      script="reconstruct.sh")
    assert proc.returncode != 0 and "JobState=FAILED" in info
    assert "PHASEGAN_HPC_MPS=on, but nvidia-cuda-mps-control is not on PATH" in log and "head " not in log, log


@pytest.mark.slow
def test_sbatch_train_foam_on_the_foam_chain(slurm, foam_data, tmp_path):
    """paper §4's training as `sbatch slurm/train_foam.sh` runs it: the foam config, scaled down."""
    cfg = with_overrides(load_config(REPO / "configs" / "foam-tiny.toml"), {"train.epochs": 1})
    (tmp_path / "foam.toml").write_text(config_to_toml(cfg))
    env = _job_env(slurm, tmp_path, foam_data / "data", "foam", PHASEGAN_HPC_CONFIG=str(tmp_path / "foam.toml"))
    proc, job_id, log, info = _sbatch(slurm, env, tmp_path)
    assert proc.returncode == 0, f"{proc.stderr}\n{log}\n{info}"
    assert "JobState=COMPLETED" in info
    model = load_model(tmp_path / "runs" / "foam" / "model.pt")
    assert model.arch["resize"] == "up2" and model.geometry.detector_pixel_size_m == pytest.approx(3.2e-6)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_bash_n_and_shellcheck_clean(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["shellcheck", "-x", "-P", str(REPO), str(script)], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
def test_sbatch_table1_smoke_and_resume(slurm, tmp_path):
    """`sbatch slurm/table1.sh` with the paper-sized defaults overridden to smoke size; a second job resumes
    (reuses the scored cell)."""
    import json

    env = _job_env(slurm, tmp_path, tmp_path, "unused", PHASEGAN_HPC_TABLE1_DEVICE="cpu",
                   PHASEGAN_HPC_TABLE1_SEEDS="1", PHASEGAN_HPC_TABLE1_CONFIG=str(REPO / "configs" / "tiny.toml"),
                   PHASEGAN_HPC_TABLE1_ARGS="--size 32 --train 16 --epochs 1 --val 8 --batch 8 --filters 2 "
                                            "--methods paired")
    out = tmp_path / "t1"
    for _ in range(2):
        proc, job_id, log, info = _sbatch(slurm, env, tmp_path, out, script="table1.sh")
        assert proc.returncode == 0, f"{proc.stderr}\n{log}\n{info}"
        assert "JobState=COMPLETED" in info
    assert "scored before, reused" in log  # the second job trained nothing
    result = json.loads((out / "table1-result.json").read_text())
    assert set(result["table"]) == {"paired", "paganin"} and result["size"] == 32 and result["seeds"] == 1


def test_the_default_workers_per_gpu_has_one_value():
    """slurm/reconstruct.sh, reconstruct's --gpus-per-worker help and the backend agree on the default."""
    from click.testing import CliRunner

    from phasegan_hpc.cli import cli
    from phasegan_hpc.reconstruct.backends.ray_actors import DEFAULT_WORKERS_PER_GPU

    script = (REPO / "slurm" / "reconstruct.sh").read_text()
    assert f"per_gpu=${{PHASEGAN_HPC_WORKERS_PER_GPU:-{DEFAULT_WORKERS_PER_GPU}}}" in script
    helptext = " ".join(CliRunner().invoke(cli, ["reconstruct", "--help"]).output.split())
    assert f"(default: {1 / DEFAULT_WORKERS_PER_GPU:g}, two actors per GPU," in helptext
    assert DEFAULT_WORKERS_PER_GPU == 2


def test_ray_actors_take_no_gpu_by_default_where_there_is_none(monkeypatch):
    from phasegan_hpc.reconstruct.backends.ray_actors import RayBackend

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the local Ray a run would start: this machine, no GPU
    assert RayBackend().gpus_per_worker == 0.0 and RayBackend().device(None) == "cpu"
    assert RayBackend(gpus_per_worker=0.25).device(None) == "cuda"


def test_old_variable_names_work_with_one_warning_each():
    """slurm/phasegan-env.sh, which every script sources first: PHASEGAN_X becomes PHASEGAN_HPC_X (where both
    are set the new name wins), one warning line each; no script reads an old name itself."""
    env = {"PATH": os.environ["PATH"], "PHASEGAN_CONFIG": "old.toml", "PHASEGAN_NAME": "old",
           "PHASEGAN_HPC_NAME": "new", "PHASEGAN_BIN": "/x/phasegan-hpc"}
    script = ('set -euo pipefail; PHASEGAN_HPC_HOME=.; source slurm/phasegan-env.sh; '
              'echo "$PHASEGAN_HPC_CONFIG $PHASEGAN_HPC_NAME $PHASEGAN_HPC_BIN ${PHASEGAN_CONFIG-unset}"')
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["old.toml", "new", "/x/phasegan-hpc", "unset"], proc
    assert proc.stderr.splitlines() == [
        f"warning: PHASEGAN_{x} is deprecated and will be removed in 0.3.0: use PHASEGAN_HPC_{x}"
        for x in ("BIN", "CONFIG", "NAME")]
    old_names = re.search(r"_phasegan_old_names=\(([^)]*)\)", (REPO / "slurm" / "phasegan-env.sh").read_text())
    renamed = set(old_names.group(1).split())
    new_only = {"MODEL", "STOP_WAIT_S", "MIN_RUN_S"}  # read by no script before the rename
    for path in SCRIPTS:
        text = path.read_text()
        assert set(re.findall(r"PHASEGAN_HPC_([A-Z0-9_]+)", text)) <= renamed | new_only, path.name
        # the only old name read outside phasegan-env.sh: PHASEGAN_HOME, to find phasegan-env.sh
        old = set(re.findall(r"\$\{?PHASEGAN_(?!HPC_)([A-Z0-9_]+)", text))
        assert old <= ({"HOME"} if path.name != "phasegan-env.sh" else set()), (path.name, old)
