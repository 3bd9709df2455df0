"""Figures of reconstructions and of the Table 1 benchmark (the others live with their consumers). matplotlib is
imported lazily (Agg backend)."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters the data sets use)
import numpy as np

from phasegan_hpc.errors import DataError
from phasegan_hpc.plotting import image_grid as _grid


def convergence_figure(path: str | Path, curves: dict[str, list[list[dict]]], keys: tuple[str, ...]) -> Path:
    """Validation metrics per epoch of several methods, one panel per metric: a thin line per run (seed) and
    a thick one for the mean over runs. ``curves[method]`` holds each run's validation records (with
    "epoch" and the ``keys``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def reconstruction_preview(output: str | Path, archive, out_png: str | Path, n: int = 4) -> Path:
    """Raw frame, corrected frame, phase and attenuation of ``n`` frames spread over a reconstruction.

    Args:
        output: the reconstruction (``/phase``, ``/attenuation``, ``/consistency``).
        archive: its :class:`phasegan_hpc.data.archive.Archive` (read-only).
    """
    from phasegan_hpc.data.archive import FrameReader

    output = Path(output)
    total = archive.n_frames
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total))})
    reader = FrameReader(archive)
    rows = []
    try:
        with h5py.File(output, "r") as f:
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
    path = Path(out_png)
    _grid(path, rows, f"{output.name} ({total} frames)")
    return path


def movie_figure(archive: str | Path, reconstruction: str | Path, out_gif: str | Path, truth: str | Path | None = None,
                 dataset: str | None = None, strip_frames: int = 5, fps: int = 5) -> tuple[Path, Path]:
    """Paper Fig. 3 / Visualization 1-3 for a reconstructed movie: an animated GIF and a PNG strip.

    Columns: the raw detector frame, the reconstructed phase and attenuation, and (with ``truth``, a file
    with ``/phase``) the true phase. The strip shows ``strip_frames`` frames spread over the movie.

    Returns:
        (GIF path, PNG path: the GIF's path with suffix .png).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    from phasegan_hpc.data.archive import FrameReader, open_archive

    arc = open_archive(archive, dataset)
    reader = FrameReader(arc)
    try:
        n = arc.n_frames
        raw = np.concatenate([b.reshape(-1, *arc.frame_shape) for b in reader.blocks(0, n, 64)])[:n]
    finally:
        reader.close()
    try:
        with h5py.File(reconstruction, "r") as f:
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

    out_gif = Path(out_gif)
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    FuncAnimation(fig, show, frames=n, blit=False).save(out_gif, writer=PillowWriter(fps=fps))
    plt.close(fig)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(strip_frames, n))})
    rows = [[(f"{label}, frame {i}", arr[i]) for label, arr in panels] for i in picks]
    out_png = out_gif.with_suffix(".png")
    _grid(out_png, rows, f"{Path(reconstruction).name}")
    return out_gif, out_png


def table1_figure(path: str | Path, models: dict[str, str | Path], validation: str | Path, frame: int = 0) -> Path:
    """One validation patch per method (paper Table 1): phase and attenuation of each model, Paganin, truth."""
    import torch

    from phasegan_hpc.evaluate import paganin_pad
    from phasegan_hpc.models.artifact import load_model
    from phasegan_hpc.physics import paganin

    with h5py.File(validation, "r") as f:
        inten = f["intensity"][frame].astype(np.float32)
        truth = (f["phase"][frame], f["attenuation"][frame])
        a = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        flat = f["flatfield"][frame] if "flatfield" in f else np.ones_like(inten)
    rows = [[("I (detector)", inten), ("true phase", truth[0]), ("true attenuation", truth[1])]]
    for method, model_path in models.items():
        phase, att = load_model(model_path).retrieve(torch.from_numpy(inten)[None])
        rows.append([(f"{method} phase", phase[0].numpy()), (f"{method} attenuation", att[0].numpy())])
    ph, at = paganin(inten.astype(np.float64) / np.maximum(flat, 1e-6), pixel_size_m=a["pixel_size_m"],
                     distance_m=a["distance_m"], wavelength_m=a["wavelength_m"], delta_beta=a["delta"] / a["beta"],
                     pad=paganin_pad(a))
    rows.append([("paganin phase", ph), ("paganin attenuation", at)])
    path = Path(path)
    _grid(path, rows, f"validation frame {frame}")
    return path


def ranked_distributions(path: str | Path, rows: list) -> Path:
    """Supplement Fig. S4: each method's per-frame metric values sorted (best first), one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
