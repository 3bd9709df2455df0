"""A supervisor for the console script: a crash in C code (a corrupt compressed chunk in an HDF5 decoder,
say) still ends in one clear line.

``phasegan-hpc`` forks once at start, before anything heavy is imported. The child runs the command; the
parent only waits. If the child dies by a signal that means a crash (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
SIGABRT), the parent prints one error line naming what the child was doing, from the note the child keeps
with :func:`note` (for example, which frames of which archive it was reading), and exits 1. The parent
forwards SIGINT, SIGTERM and SIGHUP to the child, which runs in a process group of its own so that it gets
each once (Slurm's preemption and Ctrl-C behave as before), and the child dies with the parent
(``PR_SET_PDEATHSIG``), so killing the parent kills the run, as before.

Linux only (fork, prctl); elsewhere, and with ``PHASEGAN_HPC_NO_SUPERVISOR=1``, the command runs unsupervised.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

#: The environment variable that carries the note file's path to the supervised process.
NOTE_ENV = "PHASEGAN_HPC_CRASH_NOTE"
#: Set to 1 to run without the supervisor.
OFF_ENV = "PHASEGAN_HPC_NO_SUPERVISOR"
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_note_fd: int | None = None


def note(text: str) -> None:
    """Say what this process is doing now (one line), for the supervisor's message should it crash. A no-op
    without a supervisor. Cheap: one ``pwrite``."""
    global _note_fd
    path = os.environ.get(NOTE_ENV)
    if not path:
        return
    if _note_fd is None:
        try:
            _note_fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        except OSError:
            return
    data = text.encode(errors="replace")[:4000]
    os.ftruncate(_note_fd, 0)
    os.pwrite(_note_fd, data, 0)


def run_supervised(command: Callable[[], None], error_line: Callable[[str], None]) -> None:
    """Run ``command`` in a forked child and exit as it exits; a crash of the child is one ``error_line``.

    Runs ``command`` in this process where the supervisor is off or unsupported."""
    if os.environ.get(OFF_ENV) == "1" or not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        command()
        return
    note_dir = Path(tempfile.mkdtemp(prefix="phasegan-hpc-"))
    note_path = note_dir / "note"
    note_path.touch(mode=0o600)
    pid = os.fork()
    if pid == 0:  # the child: the command itself, in a process group of its own (signals come via the parent)
        os.setpgid(0, 0)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
        os.environ[NOTE_ENV] = str(note_path)
        os.environ[OFF_ENV] = "1"  # processes this one starts run unsupervised
        command()
        return
    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    doing = note_path.read_text(errors="replace").strip()
    note_path.unlink(missing_ok=True)
    note_dir.rmdir()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in CRASH_SIGNALS:
            name = signal.Signals(sig).name
            error_line(f"the run crashed ({name}){' while ' + doing if doing else ''}: a corrupt file, or a bug "
                       "in a library's C code; finished work is kept, and the same command resumes")
            sys.exit(1)
        sys.exit(128 + sig)
    sys.exit(os.WEXITSTATUS(status))
