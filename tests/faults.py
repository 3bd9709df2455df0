"""Faults from outside, for the fault-tolerance tests: find worker processes as ``ps`` shows them, and kill
them as a failing node would (SIGKILL: no cleanup, no last report) or freeze them as a hung one (SIGSTOP),
timed by what a test can observe read-only (files appearing, ``metrics.jsonl`` lines, open files).
Production code does not cooperate: it has no fault hooks.

Linux only (``/proc``), as the clusters this targets. Ray workers are found by the title Ray gives their
processes (``ray::RayTrainWorker``, ``ray::_RayWorker.run``) among the descendants of this test process
(the session's Ray was started by it), so processes of other test sessions on the machine are never hit.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cmdline: str


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return None


def processes() -> list[Proc]:
    """Every live process (zombies excluded) with its parent and command line, as ``ps -eo pid,ppid,args``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat, cmdline = _read(f"/proc/{entry}/stat"), _read(f"/proc/{entry}/cmdline")
        if not stat or cmdline is None:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] in (b"Z", b"X"):
            continue
        out.append(Proc(int(entry), int(fields[1]), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return out


def descendants(root: int | None = None) -> list[Proc]:
    """The live processes below ``root`` (default: this process), at any depth."""
    procs = processes()
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def open_files(pid: int) -> set[Path]:
    """The paths ``pid`` has open (``ls -l /proc/PID/fd``); empty once it is gone."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    paths = set()
    for fd in fds:
        try:
            paths.add(Path(os.readlink(f"/proc/{pid}/fd/{fd}")))
        except OSError:
            continue
    return paths


def find(title: str, *, holding: Path | None = None, root: int | None = None) -> list[Proc]:
    """Descendants of ``root`` (default: this process) whose command line starts with ``title``, and, with
    ``holding``, that have that file open."""
    found = [p for p in descendants(root) if p.cmdline.startswith(title)]
    if holding is not None:
        target = Path(os.path.abspath(holding))
        found = [p for p in found if target in open_files(p.pid)]
    return found


def _state(pid: int) -> bytes:
    """The process state letter of ``pid`` (``ps -o stat``), b"" once it is gone."""
    stat = _read(f"/proc/{pid}/stat")
    return stat[stat.rfind(b")") + 2:][:1] if stat else b""


def alive(pid: int) -> bool:
    return _state(pid) not in (b"", b"Z", b"X")


def kill(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL ``pid``, as a node failure would, and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_for(lambda: not alive(pid), timeout, f"process {pid} to die after SIGKILL")


def freeze(pid: int) -> None:
    """SIGSTOP ``pid``: it hangs (as on a stuck node) until killed."""
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: _state(pid) in (b"T", b"t"), 10, f"process {pid} to stop")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises:
        AssertionError: not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def jsonl(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines file being written (a missing file: none)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # being written
        out.append(json.loads(line))
    return out


class Killer(threading.Thread):
    """In the background, wait for ``target()`` to name a process, then SIGKILL it: for a test whose call
    under test blocks (``fit``, ``reconstruct``). ``result()``, called once that call has returned, gives
    the killed process (with ``after(proc)``'s return value), or fails with why none was killed."""

    def __init__(self, target: Callable[[], Proc | None], what: str, timeout: float = 240.0,
                 after: Callable[[Proc], object] | None = None) -> None:
        super().__init__(name="fault-killer", daemon=True)
        self._target, self._what, self._timeout, self._after = target, what, timeout, after
        self._done = threading.Event()  # the call under test has returned: nothing more to wait for
        self._result: tuple[Proc, object] | None = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            proc = wait_for(lambda: self._target() or self._done.is_set(), self._timeout, self._what)
            if isinstance(proc, Proc):
                kill(proc.pid)
                self._result = (proc, self._after(proc) if self._after else None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in result()
            self._error = exc

    def result(self, timeout: float = 60.0) -> tuple[Proc, object]:
        self._done.set()
        self.join(timeout)
        if self._error is not None:
            raise self._error
        assert self._result is not None, f"nothing was killed: the run ended before {self._what}"
        return self._result


def first(procs: list[Proc]) -> Proc | None:
    return procs[0] if procs else None
