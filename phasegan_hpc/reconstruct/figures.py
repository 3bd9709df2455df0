"""Figures of a reconstruction: the preview written beside it, and ``phasegan-hpc movie-figure`` (paper Fig. 3).

Both read what is on disk (the archive, read-only, through :mod:`phasegan_hpc.data.archive`; the output
volumes); no model runs here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters the outputs use)
import numpy as np

from phasegan_hpc.data.archive import Archive, FrameReader, open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.plotting import image_grid, pyplot
from phasegan_hpc.reconstruct.output import open_reconstruction


def reconstruction_preview(output: str | Path, archive: Archive, out_png: str | Path, n: int = 4) -> Path:
    """Raw frame, corrected frame, phase and attenuation of ``n`` frames spread over a reconstruction.

    Args:
        output: the reconstruction (``/phase``, ``/attenuation``, ``/consistency``).
        archive: its archive (read-only).
    """
    output = Path(output)
    total = archive.n_frames
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total))})
    reader = FrameReader(archive)
    rows = []
    try:
        with open_reconstruction(output) as f:
            for i in picks:
                idx = np.unravel_index(i, archive.lead_shape)
                row = idx[0]
                raw = reader.raw_rows(row, row + 1)[i - row * archive.frames_per_row]
                shown = [k for k in ("phase", "attenuation", "intensity") if k in f]
                rows.append([(f"frame {i}: raw", raw.astype(np.float32)), ("corrected", reader.correct(raw)),
                             *((f"{k} (score {float(f['consistency'][idx]):.3g})" if k == shown[0] else k, f[k][idx])
                               for k in shown)])
    finally:
        reader.close()
    return image_grid(out_png, rows, f"{output.name} ({total} frames)")


def movie_figure(archive: str | Path, reconstruction: str | Path, out_gif: str | Path, truth: str | Path | None = None,
                 dataset: str | None = None, strip_frames: int = 5, fps: int = 5) -> tuple[Path, Path]:
    """Paper Fig. 3 / Visualization 1-3 for a reconstructed movie: an animated GIF and a PNG strip.

    Columns: the raw detector frame, the reconstructed phase and attenuation, and (with ``truth``, a file
    with ``/phase``) the true phase. The strip shows ``strip_frames`` frames spread over the movie.

    Returns:
        (GIF path, PNG path: the GIF's path with suffix .png).
    """
    out_gif = Path(out_gif)
    if out_gif.suffix.lower() != ".gif":
        raise DataError(f"--output {out_gif} must end in .gif (the PNG strip goes beside it)")
    plt = pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter  # lazy: matplotlib only to draw, Agg set first

    arc = open_archive(archive, dataset)
    reader = FrameReader(arc)
    try:
        n = arc.n_frames
        raw = np.concatenate([b.reshape(-1, *arc.frame_shape) for b in reader.blocks(0, n, 64)])[:n]
    finally:
        reader.close()
    try:
        with open_reconstruction(reconstruction) as f:
            if "phase" not in f or f["phase"].size // int(np.prod(f["phase"].shape[-2:])) != n:
                raise DataError(f"{reconstruction} is not a reconstruction of the {n} frames of {arc.path}")
            phase = f["phase"][()].reshape(n, *f["phase"].shape[-2:])
            att = f["attenuation"][()].reshape(n, *f["attenuation"].shape[-2:])
        true_phase = None
        if truth is not None:
            with h5py.File(truth, "r") as f:
                true_phase = f["phase"][:n]
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read the reconstruction or the truth ({exc})") from None
    panels = [("detector frame (corrected)", raw), ("phase [rad]", phase), ("attenuation", att)]
    if true_phase is not None:
        panels.append(("true phase [rad]", true_phase))
    limits = [(np.nanpercentile(a, 1), np.nanpercentile(a, 99)) for _, a in panels]

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), squeeze=False)
    images = []
    for ax, (label, arr), (lo, hi) in zip(axes[0], panels, limits, strict=True):
        images.append(ax.imshow(arr[0], cmap="gray", vmin=lo, vmax=hi))
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    title = fig.suptitle("frame 0")
    fig.tight_layout()

    def show(i: int):
        for im, (_, arr) in zip(images, panels, strict=True):
            im.set_data(arr[i])
        title.set_text(f"frame {i}")
        return images

    out_gif.parent.mkdir(parents=True, exist_ok=True)
    FuncAnimation(fig, show, frames=n, blit=False).save(out_gif, writer=PillowWriter(fps=fps))
    plt.close(fig)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(strip_frames, n))})
    rows = [[(f"{label}, frame {i}", arr[i]) for label, arr in panels] for i in picks]
    out_png = out_gif.with_suffix(".png")
    image_grid(out_png, rows, f"{Path(reconstruction).name}")
    return out_gif, out_png
