"""Multi-node for real: a two-host cluster on this machine (phasegan_hpc/testbed/netns.py: network + UTS namespaces
node1 and node2 joined by a veth pair), with a Slurm of two slurmd and a Ray of two nodes on it.

- ``sbatch --nodes=2 slurm/train_foam.sh`` starts the Ray head on node1 and a worker on node2 through srun,
  trains one DDP rank per node, and passes the exit code through;
- ``reconstruct --backend ray`` places actors on both hosts and equals ``--backend local`` bit for bit;
- a directory node2 does not share (a private tmpfs in node2's mount namespace) is named before work starts;
- node2 lost (``kill -9`` of every process in its namespace) mid-reconstruction: the run completes on node1,
  identical, with only the lost shard redone; mid-training: Ray Train restores the last checkpoint and the
  losses equal a one-host 2-worker run's.

One cluster for all of them, torn down at the end leaving no process, namespace or file behind.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from movies import assert_identical, read, run_dir, write_dxchange
from tools import EXE, REPO

from phasegan_hpc.config import config_to_toml, with_overrides
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.testbed import netns as nc
from phasegan_hpc.train.fit import fit
from phasegan_hpc.train.loop import run_dir_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hosts():
    """The two hosts with Slurm on them (Ray is started by ``ray_hosts``, when first needed). Only this module
    uses them: they go at its end, so their daemons do not idle beside the rest of the suite."""
    try:
        cluster = nc.up(slurm=True)
    except nc.Unavailable as exc:
        pytest.fail(f"two-host cluster: {exc}")
    try:
        yield cluster
    finally:
        nc.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        assert not {"node1", "node2"} & set(left), left
        assert not any(Path("/etc/netns", h.name).exists() for h in nc.HOSTS) and not nc.STATE.exists()


@pytest.fixture(scope="module")
def ray_hosts(hosts):
    nc.start_ray(hosts)
    return hosts


def restore_node2(cluster, mount_tmpfs: str | None = None) -> None:
    """node2 back (after a loss, or with a private tmpfs at ``mount_tmpfs``): its slurmd and its Ray node."""
    node2 = cluster.host("node2")
    node2.kill_all()
    nc.wait_for_ray_nodes(cluster, 1)
    shutil.rmtree(cluster.root / "ray-node2", ignore_errors=True)
    cluster.slurm.start_slurmd(node2)
    nc.start_ray_node(cluster, node2, mount_tmpfs=mount_tmpfs)
    nc.wait_for_ray_nodes(cluster, 2)


def on_node1(cluster, *args, timeout=600) -> subprocess.CompletedProcess:
    return cluster.head.run(EXE, *map(str, args), env=nc.ray_env(), timeout=timeout)


def bigger_movie(movie, copies: int) -> dict:
    return dict(movie, transmission=np.concatenate([movie["transmission"]] * copies))


# ---- Slurm over two hosts ------------------------------------------------------------------------------------


def test_sbatch_two_nodes_trains_one_rank_per_node(hosts, tiny_data, tmp_path):
    slurm = hosts.slurm
    cfg = with_overrides(nc_tiny_config(), {"train.epochs": 1, "train.val_frames": 8})
    (tmp_path / "c.toml").write_text(config_to_toml(cfg))
    env = dict(slurm.env, PHASEGAN_HPC_HOME=str(REPO), PHASEGAN_HPC_CONFIG=str(tmp_path / "c.toml"),
               PHASEGAN_HPC_DATA=str(tiny_data), PHASEGAN_HPC_NAME="two", PHASEGAN_HPC_STORAGE=str(tmp_path / "runs"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)

    def sbatch(name: str, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
        out = tmp_path / f"{name}-%j.out"
        proc = subprocess.run(slurm.command("sbatch", "--parsable", "--wait", "--nodes=2", "--ntasks-per-node=1",
                                            "--cpus-per-task=1", "--gres=none", "--time=15", f"--output={out}",
                                            str(REPO / "slurm" / "train_foam.sh"), *extra),
                              env=env, capture_output=True, text=True, timeout=600)
        job = proc.stdout.strip().split(";")[0]
        log = Path(str(out).replace("%j", job))
        return proc, log.read_text() if log.exists() else proc.stderr

    proc, log = sbatch("ok")
    assert proc.returncode == 0, log[-3000:]
    assert "head node1" in log and "2 node(s)" in log and "all 2 node(s) joined" in log, log[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "runs" / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in recs if r.get("event") == "start"] == [2]  # one rank per node (1 CPU each)
    assert (tmp_path / "runs" / "two" / "model.pt").is_file()
    assert not list(Path("/tmp").glob(f"ray-{proc.stdout.strip()}*"))  # each node's temp dir removed
    # The command's exit code is the job's: a training that cannot start fails the job.
    proc, log = sbatch("bad", "--data", str(tmp_path / "no-such-data"))
    assert proc.returncode != 0 and "no-such-data" in log, log[-3000:]


def nc_tiny_config():
    from phasegan_hpc.config import load_config

    return load_config(REPO / "configs" / "tiny.toml")


# ---- Ray over two hosts: reconstruction ---------------------------------------------------------------------


def test_reconstruct_across_hosts_equals_local(ray_hosts, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    local = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "local.h5", backend="local",
                                           batch_size=4, shard_frames=6, preview=False))
    proc = on_node1(ray_hosts, "reconstruct", archive, "--model", movie_model, "--backend", "ray", "--workers", 2,
                    "--batch-size", 4, "--shard-frames", 6, "--output", tmp_path / "ray.h5", "--no-preview",
                    "--json", tmp_path / "ray.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ray.json").read_text())
    assert set(summary["hosts"]) == {"node1", "node2"}, summary["hosts"]  # actors on both hosts
    assert sum(summary["hosts"].values()) == summary["shards"] and summary["lost_workers"] == []
    assert_identical(read(local.output), read(tmp_path / "ray.h5"))


def test_directory_another_node_cannot_see_is_named_before_work(ray_hosts, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    private = tmp_path / "private"
    private.mkdir()
    restore_node2(ray_hosts, mount_tmpfs=str(private))  # node2 sees its own empty tmpfs at that path
    try:
        proc = on_node1(ray_hosts, "reconstruct", archive, "--model", movie_model, "--backend", "ray", "--workers",
                        2, "--output", private / "out.h5", "--no-preview")
    finally:
        restore_node2(ray_hosts)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and "node2" in lines[0] and "is not the same on node" in lines[0], lines
    assert str(private) in lines[0]
    assert not [p for p in private.rglob("*") if p.is_file()]  # nothing written, no token left behind


def test_node_lost_mid_reconstruction_completes_identically(ray_hosts, movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", bigger_movie(movie, 4))  # 88 frames, 15 shards of 6
    ref = reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5", backend="local",
                                         batch_size=3, shard_frames=6, preview=False))
    out = tmp_path / "two.h5"
    node2 = ray_hosts.host("node2")
    seen: dict = {}

    def kill_node2_mid_shard() -> None:  # once node2 has finished a shard and is writing another
        deadline = time.time() + 300
        while time.time() < deadline and "killed" not in seen:
            d = run_dir(out)
            if d is not None:
                for pid in node2.pids():
                    try:
                        held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
                    except OSError:
                        continue
                    partial = [h for h in held if h.startswith(str(d)) and h.endswith(".partial")]
                    if partial and len(list(d.glob("shard-*.h5"))) >= 2:
                        seen["done"] = {p.name: p.stat().st_mtime_ns for p in d.glob("shard-*.h5")}
                        seen["partial"] = Path(partial[0]).name
                        node2.kill_all()
                        seen["killed"] = time.time_ns()
                        break
            time.sleep(0.02)

    killer = threading.Thread(target=kill_node2_mid_shard)
    killer.start()
    proc = on_node1(ray_hosts, "reconstruct", archive, "--model", movie_model, "--backend", "ray", "--workers", 2,
                    "--batch-size", 3, "--shard-frames", 6, "--output", out, "--no-preview",
                    "--json", tmp_path / "two.json")
    killer.join()
    try:
        assert "killed" in seen, "node2 never held a shard open"
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "two.json").read_text())
        lost = seen["partial"].removeprefix(".shard-").removesuffix(".h5.partial")
        (line,) = [ln for ln in proc.stderr.splitlines() if "lost a worker" in ln]
        assert "node2" in line and f"shard {int(lost)} " in line and "redone" in line, line
        assert summary["replaced_workers"] == 1 and summary["lost_workers"] == [line.removeprefix("warning: ")]
        after = {p.name: p.stat().st_mtime_ns for p in run_dir(out).glob("shard-*.h5")}
        # Only the lost shard was redone: every shard finished before the loss is the same file as before.
        assert {name: after[name] for name in seen["done"]} == seen["done"]
        assert after[seen["partial"].removeprefix(".").removesuffix(".partial")] > seen["killed"]
        assert_identical(read(ref.output), read(out))
    finally:
        restore_node2(ray_hosts)


# ---- Ray over two hosts: training ---------------------------------------------------------------------------


def test_training_across_hosts_survives_node_loss_with_one_host_losses(ray_hosts, ray_cluster, tiny_train_config,
                                                                        tmp_path):
    cfg = with_overrides(tiny_train_config, {"train.epochs": 3, "train.checkpoint_every": 2, "train.name": "one"})
    fit(cfg, workers=2)  # the one-host 2-worker run (this machine's local Ray)
    one = [json.loads(x) for x in (run_dir_of(cfg) / "metrics.jsonl").read_text().splitlines()]
    two_cfg = with_overrides(cfg, {"train.name": "two", "train.runs_dir": str(tmp_path / "two-runs")})
    (tmp_path / "two.toml").write_text(config_to_toml(two_cfg))
    run = run_dir_of(two_cfg)
    node2 = ray_hosts.host("node2")
    seen: dict = {}

    def kill_node2_after_step_3() -> None:  # after the checkpoint at step 2 is registered
        deadline = time.time() + 400
        while time.time() < deadline:
            try:
                registered = "checkpoint_" in (run / "checkpoint_manager_snapshot.json").read_text()
                recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.endswith("}")]
            except (OSError, json.JSONDecodeError):
                recs, registered = [], False
            if registered and any(r.get("step") == 3 and "loss_g" in r for r in recs):
                seen["killed"] = node2.kill_all()
                restore_node2(ray_hosts)  # the node comes back: the two ranks can be placed again
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_node2_after_step_3)
    killer.start()
    proc = on_node1(ray_hosts, "train", "--config", tmp_path / "two.toml", "--workers", 2, "--cpus-per-worker", 1,
                    "--max-failures", 2)
    killer.join()
    assert seen.get("killed"), "node2 was not killed"
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if "training restarted" in ln]
    assert "resumed from its checkpoint at step 2" in line, line
    two = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two if r.get("event") == "start"] == [0, 2]
    def losses(recs):
        return [[r["step"], r["loss_g"], r["loss_d"]] for r in recs if "loss_g" in r]

    assert [s for s, *_ in losses(two)] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5)


# ---- the head node lost (last: it takes Slurm's controller with it) -------------------------------------------


def test_head_node_lost_ends_with_one_line_and_rerun_resumes(ray_hosts, tmp_path):
    rng = np.random.default_rng(3)
    archive = tmp_path / "long.h5"
    with h5py.File(archive, "w") as f:  # 3,000 frames for Paganin (no model): long enough to be cut
        f["exchange/data"] = (900 + 50 * rng.random((3000, 64, 64))).astype(np.uint16)
        f["exchange/data_white"] = np.full((2, 64, 64), 1000, np.uint16)
        f["exchange/data_dark"] = np.full((2, 64, 64), 10, np.uint16)
        f.attrs.update(pixel_size_m=1e-6, distance_m=0.1, energy_kev=12.4)
    out = tmp_path / "long_paganin.h5"
    args = [EXE, "reconstruct", archive, "--method", "paganin", "--delta-beta", 1000, "--backend", "ray",
            "--workers", 2, "--shard-frames", 30, "--batch-size", 10, "--output", out, "--no-preview"]
    node1, node2 = ray_hosts.hosts
    # The driver runs on node2 (as a login node would), the head on node1.
    driver = subprocess.Popen(node2.cmd(*map(str, args)), env=nc.ray_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not ((d := run_dir(out)) and len(list(d.glob("shard-*.h5"))) >= 5):
        time.sleep(0.05)
    node1.kill_all()
    killed = time.time()
    _, err = driver.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert driver.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and "lost the Ray head node" in lines[0] and "rerun" in lines[0], err[-3000:]
    assert time.time() - killed < 30  # not Ray's own 60 s wait for its GCS
    saved = len(list(run_dir(out).glob("shard-*.h5")))
    assert 5 <= saved < 100 and not out.exists()
    # A Ray cluster again (head and worker started anew), the same command: it resumes from the saved shards.
    node2.kill_all()
    for h in ray_hosts.hosts:
        shutil.rmtree(ray_hosts.root / f"ray-{h.name}", ignore_errors=True)
    nc.start_ray(ray_hosts)
    proc = node2.run(*map(str, args), "--json", str(tmp_path / "rerun.json"), env=nc.ray_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "rerun.json").read_text())
    assert summary["reused_shards"] >= saved - 2 and summary["shards"] == 100  # (those mid-write are redone)
    ref = reconstruct(ReconstructRequest(archive, method="paganin", physics={"delta_beta": 1000},
                                         output=tmp_path / "ref.h5", backend="local", shard_frames=30, batch_size=10,
                                         preview=False))
    with h5py.File(out, "r") as a, h5py.File(ref.output, "r") as b:
        np.testing.assert_array_equal(a["phase"][()], b["phase"][()])
