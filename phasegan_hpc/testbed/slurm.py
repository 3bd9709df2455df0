"""A real Slurm cluster for tests: munged, slurmctld and slurmd from Debian, all under one directory, stopped
by the PIDs this module started (nothing else on the machine is touched). One node (this machine, on free
ports), or one node per host of the two-host namespace cluster (``hosts``, testbed/netns.py: slurmctld
on the first host, one slurmd per host, the standard ports inside each namespace, munged shared).

Three settings are there for the speed of the requeue tests (tests/test_slurm_requeue.py): a requeued job
may start again ``cred_expire`` + 1 s after its requeue (Slurm's default: 121 s), the scheduler looks at
pending jobs every ``sched_interval`` seconds (default 60), and ``OverTimeLimit=1`` ends a job one minute after
its time limit rather than at it, so that a test may ask for its warning signal only seconds before the limit
(slurmctld sends it up to 30 s early, as it checks limits every 30 s) without racing the kill.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    hosts: tuple = ()  # netns.Host of each node; () for the one-node cluster on this machine

    def command(self, *args: str) -> list[str]:
        """``args`` as a client command: on the first host of a namespace cluster (where slurmctld listens)."""
        return self.hosts[0].cmd(*args) if self.hosts else list(args)

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, **kw)

    def start_slurmd(self, host=None) -> None:
        """Start (or start again, after a lost node) the slurmd of ``host`` (None: this machine's)."""
        conf = str(self.root / "slurm.conf")
        argv = ["slurmd", "-D", "-f", conf]
        log = open(self.root / "log" / "daemons.out", "ab")  # noqa: SIM115 - lives as long as the daemon
        self.procs.append(subprocess.Popen(host.cmd(*argv) if host else argv, env=self.env, stdout=log, stderr=log))

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o``'s fields (JobState, Restarts, ExitCode, ...); {} for an unknown job."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def wait_for_job(self, job_id: str, cond, timeout: float, what: str) -> dict[str, str]:
        """Poll the job until ``cond(fields)``; its fields, or AssertionError after ``timeout`` seconds."""
        deadline = time.time() + timeout
        while True:
            info = self.job(job_id)
            if cond(info):
                return info
            if time.time() > deadline:
                raise AssertionError(f"job {job_id}: {what} not within {timeout:.0f}s: {info}")
            time.sleep(0.5)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(root: Path, cpus: int = 2, memory_mb: int = 8000, hosts: tuple = ()) -> SlurmCluster:
    """Start munged, slurmctld and slurmd (foreground processes) with state under ``root``; with ``hosts``
    (testbed/netns.py), slurmctld on the first and one slurmd of 1 CPU on each.

    Raises:
        RuntimeError: a command is missing (``make test`` installs slurm-wlm and munge) or a daemon
            does not come up; the log tails are in the message.
    """
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: `make test` installs Debian's slurm-wlm and munge")
    root.mkdir(parents=True, exist_ok=True)
    for d in ("munge", "state", "spool", "log"):
        (root / d).mkdir(exist_ok=True)
    for h in hosts:
        (root / "spool" / h.name).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = root / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    if hosts:  # each namespace has its own ports: Slurm's standard ones
        ctld, ports = f"{hosts[0].name}({hosts[0].ip})", "SlurmctldPort=6817\nSlurmdPort=6818"
        nodes = "\n".join(f"NodeName={h.name} NodeAddr={h.ip} CPUs=1 RealMemory={memory_mb // 2} State=UNKNOWN"
                          for h in hosts)
    else:
        ctld, ports = host, f"SlurmctldPort={_free_port()}\nSlurmdPort={_free_port()}"
        nodes = f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN"
    conf = root / "slurm.conf"
    conf.write_text(f"""
ClusterName=phasegantest
SlurmctldHost={ctld}
{ports}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock},cred_expire=10
CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool' / '%n'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd-%n.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd-%n.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
OverTimeLimit=1
InactiveLimit=0
MinJobAge=300
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster = SlurmCluster(root, env, hosts=tuple(hosts))
    log = open(root / "log" / "daemons.out", "ab")  # noqa: SIM115 - lives as long as the daemons
    try:
        cluster.procs.append(subprocess.Popen(
            ["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
             f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}"], stdout=log, stderr=log))
        _wait(lambda: sock.exists(), 20, "munged socket", root)
        cluster.procs.append(subprocess.Popen(cluster.command("slurmctld", "-D", "-i", "-f", str(conf)), env=env,
                                              stdout=log, stderr=log))
        _wait(lambda: cluster.run("scontrol", "ping").returncode == 0 and "UP" in
              cluster.run("scontrol", "ping").stdout, 60, "slurmctld", root)
        for h in hosts or (None,):
            cluster.start_slurmd(h)
        want = max(1, len(hosts))
        _wait(lambda: cluster.run("sinfo", "-h", "-N", "-o", "%T").stdout.split().count("idle") == want, 60,
              "slurmd (every node idle)", root)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def stop_under(root: Path) -> None:
    """Stop the munged a cluster under ``root`` started, by its pid file (for a cluster started by another
    process; the namespaces' daemons go with their namespace)."""
    pid_file = root / "munge" / "munged.pid"
    try:
        os.kill(int(pid_file.read_text().split()[0]), 15)
    except (OSError, ValueError):
        pass


def _wait(cond, timeout: float, what: str, root: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.5)
    tails = []
    for f in sorted((root / "log").glob("*")):
        tails.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n" + "\n".join(tails))
