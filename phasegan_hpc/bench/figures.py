"""Figures of ``phasegan-hpc bench table1``: convergence, one validation patch per method (paper Table 1),
ranked per-frame distributions (Supplement Fig. S4). They take arrays; ``bench/table1.py`` runs the models
and Paganin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phasegan_hpc.plotting import image_grid, pyplot, save


def convergence_figure(path: str | Path, curves: dict[str, list[list[dict]]], keys: tuple[str, ...]) -> Path:
    """Validation metrics per epoch of several methods, one panel per metric: a thin line per run (seed) and
    a thick one for the mean over runs. ``curves[method]`` holds each run's validation records (with
    "epoch" and the ``keys``)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (method, runs) in enumerate(curves.items()):
            colour = colours[i % len(colours)]
            series = [([r["epoch"] for r in run if key in r], [r[key] for r in run if key in r]) for run in runs]
            series = [s for s in series if s[0]]
            for x, y in series:
                ax.plot(x, y, color=colour, alpha=0.35, lw=0.8)
            n = min((len(x) for x, _ in series), default=0)
            if n:
                ax.plot(series[0][0][:n], np.mean([y[:n] for _, y in series], axis=0), color=colour, lw=2,
                        label=f"{method} ({len(series)})")
        ax.set_title(key.replace("val_", "validation ").replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    if axes[0][0].lines:
        axes[0][0].legend(fontsize=7)
    return save(fig, path)


def table1_figure(path: str | Path, intensity: np.ndarray, truth: tuple[np.ndarray, np.ndarray],
                  retrieved: dict[str, tuple[np.ndarray, np.ndarray]], frame: int = 0) -> Path:
    """One validation patch per method (paper Table 1): the frame, the true object, and each method's.

    Args:
        intensity: the detector frame (H, W). truth: its true (phase, attenuation).
        retrieved: each method's (phase, attenuation), one row each in this order.
        frame: the frame's index in the validation set (the title).
    """
    rows = [[("I (detector)", intensity), ("true phase", truth[0]), ("true attenuation", truth[1])]]
    rows += [[(f"{method} phase", phase), (f"{method} attenuation", att)] for method, (phase, att) in retrieved.items()]
    return image_grid(path, rows, f"validation frame {frame}")


def ranked_distributions(path: str | Path, rows: list) -> Path:
    """Supplement Fig. S4: each method's per-frame metric values sorted (best first), one panel per metric.

    ``rows``: :class:`phasegan_hpc.evaluate.EvalRow` (their ``method`` and ``per_frame`` arrays)."""
    plt = pyplot()
    keys = list(rows[0].per_frame)
    cols = 3
    fig, axes = plt.subplots(-(-len(keys) // cols), cols, figsize=(4 * cols, 3 * -(-len(keys) // cols)), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for r in rows:
            v = np.sort(r.per_frame[key])
            ax.plot(np.arange(1, len(v) + 1) / len(v), v, label=r.method)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.set_xlabel("fraction of frames (ranked)")
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return save(fig, path)
