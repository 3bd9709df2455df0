"""Terminal presentation shared by CLI commands: progress on stderr, tables, messages.

Everything is printed literally (:func:`console`): a path like ``a/scan[raw].h5`` or a config section
``[train2]`` in a message is never read as rich markup."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from phasegan_hpc.progress import ProgressFn


def console(stderr: bool = False) -> Console:
    """A rich console that prints text literally (no markup, no highlighting), wrapping only where the text
    does."""
    return Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True)


def notice(message: str) -> None:
    """One line on stderr, at once (above a progress bar on a terminal): something the user should know that
    does not stop the command (a lost worker, say)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error_line(message: str) -> Text:
    """``error: MESSAGE`` with "error:" in bold red and the message literal."""
    return Text.assemble(("error: ", "bold red"), message)


@contextmanager
def training_progress(description: str) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """Progress of a training run with its current losses; yields ``update(step, total, losses)``."""
    term = console(stderr=True)
    shown = ("loss_g", "loss_d", "cyc_i", "frc_i", "mse")
    if not term.is_terminal:
        last = {"t": 0.0}

        def update_plain(step: int, total: int, losses: dict[str, float]) -> None:
            now = time.monotonic()
            if now - last["t"] >= 30 or step == total:
                text = " ".join(f"{k}={losses[k]:.4g}" for k in shown if k in losses)
                term.print(f"{description}: step {step}/{total} {text}", highlight=False)
                last["t"] = now

        yield update_plain
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[losses]}"))
    with Progress(*columns, console=term) as bar:
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
    for k in sorted({k for r in rows for k in r.score_spearman}):
        table.add_row(f"Spearman({k.replace('_', ' ')}, phase L2)",
                      *(f"{r.score_spearman[k]:.3f}" if k in r.score_spearman else "" for r in rows))
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


class _RateColumn(ProgressColumn):
    """Items per second of a task (e.g. frames/s)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} {self.unit}/s" if task.speed else f"- {self.unit}/s")


@contextmanager
def progress_bar(description: str, unit: str | None = None) -> Iterator[ProgressFn]:
    """Show progress reported as ``progress(done, total, info)`` (``phasegan_hpc.progress``); yields that
    function. The bar starts at the first report (its ``total``; ``done`` may start above 0 on resume).

    On a terminal this is a live rich bar (with the rate in ``unit``/s when ``unit`` is given). Elsewhere
    (a Slurm log, a pipe) it prints a plain line at every further 10 % and at most every 30 s, so batch
    logs show progress without control characters.
    """
    term = console(stderr=True)
    if term.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   *((_RateColumn(unit),) if unit else ()), TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=term) as bar:
            tasks: list = []

            def update_bar(done: int, total: int, info: Mapping[str, float]) -> None:
                if not tasks:
                    tasks.append(bar.add_task(description, total=total, completed=done))
                bar.update(tasks[0], completed=done, total=total)

            yield update_bar
        return

    start = last_time = time.monotonic()
    state: dict[str, float] = {}

    def update(done: int, total: int, info: Mapping[str, float]) -> None:
        nonlocal last_time
        if not state:
            state.update(first=done, next=done / max(total, 1) + 0.1)
        now = time.monotonic()
        frac = done / max(total, 1)
        if frac >= state["next"] or now - last_time >= 30 or done >= total:
            rate = f", {(done - state['first']) / max(now - start, 1e-9):,.0f} {unit}/s" if unit else ""
            term.print(f"{description}: {done}/{total} ({100 * frac:.0f} %), {now - start:.0f} s{rate}",
                          highlight=False)
            state["next"] = frac + 0.1
            last_time = now

    yield update


def _what_value(title: str) -> Table:
    """A two-column table without a header: what, and its value (right-aligned)."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    return table


def reconstruction_table(summary) -> Table:
    """What ``reconstruct`` did: frames, time, throughput, output, flagged frames."""
    table = _what_value(f"reconstruction: {summary.output}")
    reused = f" ({summary.reused_shards} of {summary.shards} shards reused)" if summary.reused_shards else ""
    table.add_row("frames", f"{summary.frames:,}{reused}")
    table.add_row("computed", f"{summary.computed_frames:,} in {summary.seconds:.1f} s")
    table.add_row("throughput", f"{summary.frames_per_s:,.1f} frames/s ({summary.backend})")
    if summary.pipeline_seconds > 0:
        table.add_row("after start-up", f"{summary.pipeline_frames_per_s:,.1f} frames/s "
                                        f"(worker start-up {summary.setup_seconds:.1f} s)")
    if summary.rejected_shards:
        shown = ", ".join(map(str, summary.rejected_shards[:10]))
        table.add_row("shards redone", f"{len(summary.rejected_shards)} did not verify: {shown}")
    if summary.replaced_workers:
        table.add_row("workers replaced", f"{summary.replaced_workers} (lost mid-run; their shards redone)")
    if len(summary.hosts) > 1:
        table.add_row("hosts", ", ".join(f"{h}: {n} shard(s)" for h, n in summary.hosts.items()))
    for key, source in summary.geometry_sources.items():
        table.add_row(key.removesuffix("_m").replace("_", " ") + " from", source)
    live = summary.live
    if live:
        how = ("the end marker" if live["ended_by"] == "end marker" else
               "no new frame for --idle-timeout: the writer stopped without marking the end; everything it wrote "
               "whole is reconstructed" + (f", {live['left_out_frames']} frames of an unfinished chunk row are not"
                                           if live["left_out_frames"] else ""))
        table.add_row("acquisition", f"ended by {how}")
        if live.get("recorrected"):
            table.add_row("re-corrected", "flats/darks written after the projections: the finished archive "
                                          "reconstructed again with them (--recorrect)")
        elif live.get("unused_references"):
            table.add_row("not used", f"{' and '.join(live['unused_references'])} written after the projections; "
                                      "rerun with --recorrect (or reconstruct --overwrite) to use them")
        if live["latency_p50_s"] is not None:
            table.add_row("latency", f"p50 {live['latency_p50_s']:.2f} s, p99 {live['latency_p99_s']:.2f} s (frame "
                                     f"written -> phase visible); backlog <= {live['max_backlog_frames']} frames, "
                                     f"{live['republished']} republications")
    table.add_row("flag threshold", f"{summary.flag_by} > {summary.threshold:.3g}")
    shown = ", ".join(f"{i} ({s:.3g})" for i, s in summary.flagged[:10])
    more = f" and {summary.flagged_frames - 10:,} more" if summary.flagged_frames > 10 else ""
    if summary.scored_frames != summary.frames:
        table.add_row("scored frames", f"{summary.scored_frames} of {summary.frames} (--score)")
    table.add_row("flagged frames", f"{summary.flagged_frames:,}" + (f": {shown}{more}" if shown else ""))
    bad = ", ".join(f"{i} ({n} px)" for i, n in summary.nonfinite[:10])
    table.add_row("non-finite input", f"{summary.nonfinite_frames:,} frames" + (f": {bad}" if bad else ""))
    below = ", ".join(f"{i} ({n} px)" for i, n in summary.negative[:10])
    table.add_row("negative input", f"{summary.negative_frames:,} frames" + (f": {below}" if below else ""))
    if summary.preview is not None:
        table.add_row("preview", str(summary.preview))
    return table


def bench_table(result: dict) -> Table:
    """A benchmark's result as a two-column table: nested keys joined with '.', numbers to 4 digits."""
    table = _what_value(f"bench {result.get('benchmark', '')}")

    def rows(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                rows(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, float):
            table.add_row(prefix, f"{value:.4g}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            table.add_row(prefix, f"{len(value)} records (in the JSON)")
        else:
            table.add_row(prefix, str(value))

    rows("", result)
    return table


def dry_run_table(plan) -> Table:
    """What ``reconstruct --dry-run`` found (a :class:`~phasegan_hpc.reconstruct.request.DryRun`)."""
    table = _what_value(f"plan (dry run, nothing written): {plan.output}")
    roi = f", region {plan.roi[0]}:{plan.roi[1]},{plan.roi[2]}:{plan.roi[3]}" if plan.roi else ""
    more = f" and {plan.files - 1} more files, one movie" if plan.files > 1 else ""
    table.add_row("archive", f"{plan.archive}:{plan.dataset}{more}")
    picked = (f" (rows {plan.selection[0]}:{plan.selection[1]}:{plan.selection[2]} of the first axis)"
              if plan.selection else "")
    table.add_row("frames", f"{plan.frames:,}{picked} of {plan.frame_shape[0]} x {plan.frame_shape[1]} px{roi}")
    table.add_row("method", f"{plan.method}" + (f" ({plan.model})" if plan.model else ""))
    table.add_row("shards", f"{plan.shards:,} of up to {plan.shard_frames:,} frames, batches of {plan.batch_size}")
    workers = plan.workers if plan.workers is not None else "default (one per GPU share or CPU slot)"
    table.add_row("workers", f"{workers} ({plan.backend})")
    exists = " (exists: resumed or refused without --overwrite)" if plan.output_exists else ""
    table.add_row("output", f"{plan.output}{exists}")
    table.add_row("output size", f"{' x '.join(map(str, plan.output_shape))}, at most {plan.output_bytes / 1e9:.3g} GB")
    for key, value in plan.geometry.items():
        table.add_row(key, f"{value:.6g} ({plan.geometry_sources.get(key, '?')})")
    return table
