"""The figure of a search (``search.png``): every trial's loss weights, coloured by the tuned metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phasegan_hpc.plotting import pyplot, save


def search_figure(path: str | Path, rows: list[dict], metric: str) -> Path:
    """alpha_cyc vs alpha_frc of every trial (log axes), coloured by the tuned metric; best trial ringed."""
    plt = pyplot()
    good = [r for r in rows if np.isfinite(r.get(metric, np.nan))]
    fig, ax = plt.subplots(figsize=(6, 5))
    if good:
        sc = ax.scatter([r["alpha_cyc"] for r in good], [r["alpha_frc"] for r in good],
                        c=[r[metric] for r in good], cmap="viridis_r", s=60,
                        marker="o", edgecolors=["red" if r.get("stopped_early") else "k" for r in good])
        fig.colorbar(sc, ax=ax, label=f"{metric} (lower is better)")
        best = min(good, key=lambda r: r[metric])
        ax.scatter([best["alpha_cyc"]], [best["alpha_frc"]], s=300, facecolors="none", edgecolors="orange",
                   linewidths=2, label=f"best: {best['alpha_cyc']:.3g}, {best['alpha_frc']:.3g}")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha_cyc")
    ax.set_ylabel("alpha_frc")
    ax.set_title(f"{len(rows)} trials (red edge: stopped early by ASHA)")
    return save(fig, path)
