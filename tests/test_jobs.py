"""`jobs/submit.sh` against a real Ray head started on loopback by this test (its own temp dir and ports)."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from tools import BIN, REPO

from phasegan_hpc.config import config_to_toml, load_config, with_overrides
from phasegan_hpc.models.artifact import load_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on 127.0.0.1; stopped by terminating that one process tree."""
    temp = Path(tempfile.mkdtemp(prefix="rj-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    port, dash = _free_port(), _free_port()
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
         # every port explicit: another Ray on this machine (the test session's) holds the defaults
         *(f"--{opt}={_free_port()}" for opt in (
             "node-manager-port", "object-manager-port", "ray-client-server-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait_until_ready(head, url, env)
        yield url
    finally:
        os.killpg(head.pid, 15)  # the head and the processes it started, nothing else
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        subprocess.run(["rm", "-rf", str(temp)])


def _wait_until_ready(head: subprocess.Popen, url: str, env: dict) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                json.load(r)
            break
        except OSError:
            assert head.poll() is None, "ray start --head exited"
            time.sleep(1)
    else:
        raise RuntimeError("Ray head's job server did not come up")
    # The job server answers before the head's job agent has registered: wait until a job is accepted.
    while time.time() < deadline:
        probe = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", url, "--no-wait", "--", "true"],
                               env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError(f"Ray head accepts no job: {probe.stderr[-500:]}")


@pytest.mark.slow
def test_submit_train_job(ray_head, tiny_data, tmp_path):
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {"train.epochs": 1})
    (tmp_path / "c.toml").write_text(config_to_toml(cfg))
    env = dict(os.environ, RAY_ADDRESS=ray_head, PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run([str(REPO / "jobs" / "submit.sh"), "train", "--config", str(tmp_path / "c.toml"),
                           "--data", str(tiny_data), "--storage", str(tmp_path / "runs"), "--name", "job"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert load_model(tmp_path / "runs" / "job" / "model.pt").method == "phasegan"


@pytest.mark.slow
def test_failed_job_fails_submit(ray_head, tmp_path):
    env = dict(os.environ, RAY_ADDRESS=ray_head, PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run([str(REPO / "jobs" / "submit.sh"), "train", "--data", str(tmp_path / "none"),
                           "--storage", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert proc.returncode != 0
    assert "error: data directory" in proc.stdout + proc.stderr


def test_submit_usage_errors():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([str(REPO / "jobs" / "submit.sh"), "train"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "no Ray cluster" in proc.stderr
    proc = subprocess.run([str(REPO / "jobs" / "submit.sh"), "dance"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
