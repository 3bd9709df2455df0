"""Terminal presentation shared by CLI commands: progress on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Show progress of ``total`` items; yields ``advance(n)``.

    On a terminal this is a live rich bar. Elsewhere (a Slurm log, a pipe) it prints a plain line at every
    further 10 % and at most every 30 s, so batch logs show progress without control characters.
    """
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return

    start = last_time = time.monotonic()
    state = {"done": 0, "next": 0.1}

    def advance(n: int) -> None:
        nonlocal last_time
        state["done"] += n
        now = time.monotonic()
        frac = state["done"] / max(total, 1)
        if frac >= state["next"] or now - last_time >= 30 or state["done"] >= total:
            console.print(f"{description}: {state['done']}/{total} ({100 * frac:.0f} %), {now - start:.0f} s",
                          highlight=False)
            state["next"] = frac + 0.1
            last_time = now

    yield advance
