"""A real two-host cluster on one machine: network + UTS namespaces ``node1`` and ``node2`` joined by a veth pair.

Each "host" has its own address (10.213.0.1, 10.213.0.2 on the veth pair, nothing else routed), its own
hostname (a UTS namespace per process tree, :meth:`Host.cmd`) and its own ``/etc/hosts`` naming both
(``/etc/netns/NAME/hosts`` bind-mounted over it in a mount namespace of the process tree); both see the same
filesystem, as cluster nodes see a shared file system. Traffic stays between the two namespaces: nothing
outside them is addressed.

On it, for the tests (tests/test_multinode.py), ``phasegan-hpc bench nodes`` and trying things by hand
(README, "A two-host test cluster"):

- :func:`up`: the namespaces; with ``slurm=True`` also munged (one key, shared: its socket is a file),
  slurmctld in node1 and one slurmd per namespace (``NodeName`` / ``NodeAddr`` per node, 1 CPU each);
- :func:`start_ray`: a Ray head in node1 and a worker in node2 (``ray start --address``), 1 CPU each;
- :meth:`Host.kill_all`: ``kill -9`` of every process in a namespace (a node lost);
- :func:`down`: every process in both namespaces killed, the namespaces, their ``/etc/netns`` files, the
  daemons and the state directory removed. It is safe to call on a half-built or already removed cluster.

By hand, as root::

    phasegan-hpc testbed up --slurm --ray   # prints the commands to use it
    phasegan-hpc testbed down

Needs root, ``ip`` (iproute2) and ``unshare``/``nsenter`` (util-linux); each missing capability is one line
(:class:`Unavailable`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from phasegan_hpc.errors import ResourceError
from phasegan_hpc.testbed import slurm as slurm_cluster

#: The cluster's hosts: (network namespace and hostname, address on the veth pair).
NODES = (("node1", "10.213.0.1"), ("node2", "10.213.0.2"))
PREFIX = 24
#: Where the state of a cluster lives (short: Ray's socket paths under it must stay below 107 bytes).
STATE = Path("/tmp/pgns")
RAY_PORT = 6379
#: Ray's node health checks, quick enough for a test to see a lost node within seconds (defaults: ~30 s).
RAY_HEALTH_ENV = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                  "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


class Unavailable(ResourceError):
    """A capability the cluster needs is missing here (one line says which)."""


@dataclass(frozen=True)
class Host:
    name: str
    ip: str

    @property
    def veth(self) -> str:
        return f"pg-{self.name}"

    def cmd(self, *argv: str, mount_tmpfs: str | None = None) -> list[str]:
        """``argv`` run on this host: in its network namespace, with its hostname (a UTS namespace of its own);
        with ``mount_tmpfs``, in a mount namespace where a private tmpfs hides that directory (a path this
        host does not share with the others)."""
        # nsenter, not `ip netns exec`: that one mounts a fresh /sys, without the cgroup hierarchies slurmd needs
        setup = 'hostname "$0" && mount --bind "/etc/netns/$0/hosts" /etc/hosts'
        if mount_tmpfs:
            setup += f" && mount -t tmpfs pgns-private {mount_tmpfs}"
        return ["nsenter", f"--net=/run/netns/{self.name}", "unshare", "--uts", "--mount", "--propagation",
                "private", "--", "sh", "-c", setup + ' && exec "$@"', self.name, *argv]

    def run(self, *argv: str, env: dict | None = None, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*argv), env=env, capture_output=True, text=True, timeout=timeout, **kw)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_all(self) -> list[int]:
        """``kill -9`` every process in this host's network namespace, until none is left (a lost node)."""
        killed: list[int] = []
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: processes {self.pids()} survive kill -9")


HOSTS = tuple(Host(n, ip) for n, ip in NODES)


def check_capabilities() -> None:
    """Raises :class:`Unavailable` naming the first missing capability."""
    if os.geteuid() != 0:
        raise Unavailable("the two-host cluster needs root (network and UTS namespaces)")
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            raise Unavailable(f"the two-host cluster needs `{tool}` (Debian: iproute2 / util-linux)")


def _sh(*argv: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")


@dataclass
class Cluster:
    hosts: tuple[Host, ...]
    root: Path
    slurm: slurm_cluster.SlurmCluster | None = None

    @property
    def head(self) -> Host:
        return self.hosts[0]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def up(root: Path = STATE, slurm: bool = False) -> Cluster:
    """Create the two namespaces (and, with ``slurm``, the Slurm cluster on them). Removes a stale cluster of
    ours first (state under ``root``); refuses namespaces of the same names that are not ours."""
    check_capabilities()
    existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    if any(h.name in existing for h in HOSTS):
        if (root / "cluster.json").exists():
            down(root)
        else:
            raise Unavailable(f"network namespaces {[h.name for h in HOSTS if h.name in existing]} exist and are "
                              f"not this cluster's (no {root / 'cluster.json'}); remove them or use another machine")
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.json").write_text(json.dumps({"hosts": NODES, "created": time.time()}))
    cluster = Cluster(HOSTS, root)
    try:
        a, b = HOSTS
        for h in HOSTS:
            _sh("ip", "netns", "add", h.name)
        _sh("ip", "link", "add", a.veth, "type", "veth", "peer", "name", b.veth)
        for h in HOSTS:
            _sh("ip", "link", "set", h.veth, "netns", h.name)
            _sh("ip", "-n", h.name, "addr", "add", f"{h.ip}/{PREFIX}", "dev", h.veth)
            _sh("ip", "-n", h.name, "link", "set", h.veth, "up")
            _sh("ip", "-n", h.name, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / h.name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{x.ip} {x.name}\n" for x in HOSTS))
        probe = b.run("python3", "-c", f"import socket; socket.create_connection(('{a.ip}', 9), 2)")
        if "ConnectionRefused" not in probe.stderr:  # refused: the packet reached node1, where nothing listens
            raise Unavailable(f"node2 cannot reach node1 over the veth pair: {probe.stderr.strip()[-200:]}")
        if slurm:
            cluster.slurm = slurm_cluster.start(root / "slurm", hosts=HOSTS)
    except BaseException:
        down(root)
        raise
    return cluster


def down(root: Path = STATE) -> None:
    """Remove everything :func:`up` and :func:`start_ray` made (see the module docstring).

    Raises:
        Unavailable: namespaces of these names exist but are not this cluster's (no state under ``root``):
            their processes are not ours to kill.
    """
    existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    if existing & {h.name for h in HOSTS} and not (root / "cluster.json").exists():
        raise Unavailable(f"network namespaces {sorted(existing & {h.name for h in HOSTS})} are not this cluster's "
                          f"(no {root / 'cluster.json'}): left as they are")
    for h in HOSTS:
        if h.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
            h.kill_all()
            subprocess.run(["ip", "netns", "del", h.name], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / h.name, ignore_errors=True)
    slurm_cluster.stop_under(root / "slurm")  # munged runs outside the namespaces
    try:
        Path("/etc/netns").rmdir()  # only if empty: others' files stay
    except OSError:
        pass
    shutil.rmtree(root, ignore_errors=True)


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of a process on the cluster's Ray (driver or node)."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2", RAY_ADDRESS=f"{HOSTS[0].ip}:{RAY_PORT}",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **RAY_HEALTH_ENV)
    env.update(extra)
    return env


def start_ray_node(cluster: Cluster, host: Host, mount_tmpfs: str | None = None, cpus: int = 1) -> subprocess.Popen:
    """``ray start --block`` on ``host`` (the head on the first host), ``cpus`` CPUs, its own temp dir; returns
    the process (Ray's own processes are its children, in the host's namespace)."""
    tmp = cluster.root / f"ray-{host.name}"
    common = [f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={tmp}", "--object-store-memory=200000000",
              "--disable-usage-stats", "--block", f"--node-ip-address={host.ip}"]
    if host == cluster.head:
        argv = [ray_bin(), "start", "--head", f"--port={RAY_PORT}", "--include-dashboard=false", *common]
    else:
        argv = [ray_bin(), "start", f"--address={cluster.head.ip}:{RAY_PORT}", *common]
    log = open(cluster.root / f"ray-{host.name}.log", "ab")  # noqa: SIM115 - lives as long as the node
    env = ray_env()
    env.pop("RAY_ADDRESS")
    return subprocess.Popen(host.cmd(*argv, mount_tmpfs=mount_tmpfs), env=env, stdout=log, stderr=log,
                            start_new_session=True)


def wait_for_ray_nodes(cluster: Cluster, want: int, timeout: float = 120) -> None:
    """Until ``want`` Ray nodes are alive (asked from node1), or RuntimeError with the logs' tails."""
    code = ("import ray, sys; ray.init(logging_level='error', log_to_driver=False); "
            "n = sum(1 for x in ray.nodes() if x['Alive']); ray.shutdown(); "
            f"sys.exit(0 if n == {want} else 3)")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.head.run(sys.executable, "-c", code, env=ray_env(), timeout=60).returncode == 0:
            return
        time.sleep(1)
    tails = [f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:])
             for p in sorted(cluster.root.glob("ray-*.log"))]
    raise RuntimeError(f"Ray: {want} node(s) not alive within {timeout:.0f}s\n" + "\n".join(tails))


def start_ray(cluster: Cluster) -> None:
    """A Ray head on node1 and a worker on node2, both joined."""
    start_ray_node(cluster, cluster.head)
    time.sleep(3)
    for h in cluster.hosts[1:]:
        start_ray_node(cluster, h)
    wait_for_ray_nodes(cluster, len(cluster.hosts))


def bring_up(slurm: bool = False, ray: bool = False) -> list[str]:
    """:func:`up` (and :func:`start_ray`) for use by hand; the lines that say how to use the cluster.

    Raises:
        ResourceError: a missing capability, or a daemon that did not come up (the cluster is then removed).
    """
    try:
        cluster = up(slurm=slurm)
        if ray:
            start_ray(cluster)
    except RuntimeError as exc:
        down()
        raise ResourceError(f"{str(exc).splitlines()[0]}; the cluster was removed") from None
    shell = "  nsenter --net=/run/netns/node1 unshare --uts --mount -- sh -c " \
            "'hostname node1; mount --bind /etc/netns/node1/hosts /etc/hosts; exec bash'"
    lines = [f"hosts: {', '.join(f'{h.name} {h.ip}' for h in HOSTS)}; state in {STATE}", "a shell on node1:", shell]
    if cluster.slurm is not None:
        lines.append(f"Slurm: export SLURM_CONF={cluster.slurm.root / 'slurm.conf'}  (sbatch, srun, sinfo on node1)")
    if ray:
        lines.append(f"Ray:   export RAY_ADDRESS={HOSTS[0].ip}:{RAY_PORT}  (drivers on node1 or node2)")
    lines.append("remove: phasegan-hpc testbed down")
    return lines
