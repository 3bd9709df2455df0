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
from rich.table import Table


@contextmanager
def training_progress(description: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """Progress of a training run with its current losses; yields ``update(step, total, losses)``."""
    console = Console(stderr=True)
    shown = ("loss_g", "loss_d", "cyc_i", "frc_i", "mse")
    if not console.is_terminal:
        last = {"t": 0.0}

        def update_plain(step: int, total: int, losses: dict[str, float]) -> None:
            now = time.monotonic()
            if now - last["t"] >= 30 or step == total:
                text = " ".join(f"{k}={losses[k]:.4g}" for k in shown if k in losses)
                console.print(f"{description}: step {step}/{total} {text}", highlight=False)
                last["t"] = now

        yield update_plain
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=None, losses="")

        def update(step: int, total: int, losses: dict[str, float]) -> None:
            text = " ".join(f"{k}={losses[k]:.3g}" for k in shown if k in losses)
            bar.update(task, completed=step, total=total, losses=text)

        yield update


def metrics_table(rows: list, title: str) -> Table:
    """A rich table of evaluation rows: one line per metric, one column per method (mean ± std)."""
    table = Table(title=title)
    table.add_column("metric")
    for r in rows:
        table.add_column(f"{r.method} (n={r.n})", justify="right")
    for k in (rows[0].stats if rows else {}):
        table.add_row(k.replace("_", " "), *(f"{r.stats[k][0]:.3g} ± {r.stats[k][1]:.2g}" for r in rows))
    return table


def search_table(rows: list[dict], metric: str, title: str, limit: int = 20) -> Table:
    """Trials of a search sorted by the tuned metric (best first), with the paired metrics if present."""
    table = Table(title=title)
    extra = [k for k in ("val_phase_frcm", "val_phase_dssim") if any(k in r for r in rows)]
    for col in ("trial", "alpha_cyc", "alpha_frc", "epochs", metric, *extra):
        table.add_column(col.replace("_", " "), justify="left" if col == "trial" else "right")
    for r in rows[:limit]:
        table.add_row(r["trial"], f"{r['alpha_cyc']:.3g}", f"{r['alpha_frc']:.3g}",
                      f"{r['epochs']:g}" + (" (ASHA)" if r.get("stopped_early") else ""), f"{r[metric]:.4g}",
                      *(f"{r[k]:.4g}" if k in r else "" for k in extra))
    return table


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
