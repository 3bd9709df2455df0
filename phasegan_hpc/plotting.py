"""What every figure module shares: matplotlib (imported lazily, Agg backend), a labelled image grid, saving.

The figures themselves live with their consumers (``simulate/preview.py``, ``train/figures.py``,
``tune/figures.py``, ``reconstruct/figures.py``, ``bench/figures.py``) and take arrays, never models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phasegan_hpc.files import atomic_file


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (matplotlib is imported only here, on use)."""
    import matplotlib  # lazy: only figures need matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no interactive backend is ever loaded

    return plt


def save(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (80 dpi) and close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as f:  # a temporary file of its own, renamed when complete
        fig.savefig(f, dpi=80, format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path


def image_grid(path: str | Path, rows: list[list[tuple[str, np.ndarray]]], title: str) -> Path:
    """Rows of labelled 2-D images (grey, each with its colour bar); short rows leave their cells empty."""
    plt = pyplot()
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols, 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            label, img = row[c]
            im = ax.imshow(img, cmap="gray")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(label, fontsize=8)
    fig.suptitle(title)
    return save(fig, path)
