"""Figures for people: a preview of a simulated data set. matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters the data sets use)
import numpy as np

from phasegan_hpc.errors import DataError


def preview_dataset(data_dir: str | Path, out_png: str | Path, n: int = 4) -> Path:
    """Plot ``n`` paired validation objects (phase, attenuation) next to their holograms.

    Falls back to the unpaired training files when the data set has no validation frames.

    Returns:
        The path of the written PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data_dir = Path(data_dir)
    val, obj, inten = (data_dir / n_ for n_ in ("validation.h5", "objects.h5", "intensities.h5"))
    try:
        if val.is_file() and _length(val, "intensity") > 0:
            with h5py.File(val, "r") as f:
                k = min(n, len(f["intensity"]))
                cols = [f["phase"][:k], f["attenuation"][:k], f["intensity"][:k]]
            title = "validation.h5 (paired)"
        elif obj.is_file() and inten.is_file():
            with h5py.File(obj, "r") as fo, h5py.File(inten, "r") as fi:
                k = min(n, len(fo["phase"]), len(fi["intensity"]))
                cols = [fo["phase"][:k], fo["attenuation"][:k], fi["intensity"][:k]]
            title = "objects.h5 / intensities.h5 (unpaired)"
        else:
            raise DataError(f"{data_dir} holds no data set (run `phasegan-hpc simulate {data_dir}` first)")
    except (OSError, KeyError) as exc:
        raise DataError(f"{data_dir}: cannot read data set ({exc})") from None

    labels = ["phase [rad]", "attenuation (mu T)", "detector intensity"]
    fig, axes = plt.subplots(k, 3, figsize=(9, 3 * k), squeeze=False)
    for row in range(k):
        for col, (label, arr) in enumerate(zip(labels, cols, strict=True)):
            ax = axes[row, col]
            im = ax.imshow(np.asarray(arr[row]), cmap="gray")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label)
    fig.suptitle(f"{data_dir.name}: {title}")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


def _length(path: Path, name: str) -> int:
    with h5py.File(path, "r") as f:
        return len(f[name]) if name in f else 0


def _grid(path: Path, rows: list[list[tuple[str, np.ndarray]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def cycle_figure(path: Path, intensity, obj, out, norm, prop) -> Path:
    """The two PhaseGAN cycles of Supplement Fig. S2 for the first frame of a batch.

    Args:
        intensity: (B, 1, H, W) physical detector frames; obj: (B, 2, H, W) physical (phase, attenuation).
        out: :class:`phasegan_hpc.models.cycle.CycleOutputs` of the generator pair (normalised).
        norm: the run's normalisation; prop: the Fresnel propagator H.
    """
    import torch

    from phasegan_hpc.physics import object_wavefield

    def holo(o):  # |H psi|^2 of a physical object (B, 2, H, W)
        return prop.intensity(object_wavefield(o[:, 0].float(), o[:, 1].float()))

    def np0(t):
        return t[0].detach().float().cpu().numpy().squeeze()

    with torch.no_grad():
        fake_o = norm.denorm_object(out.fake_object)
        row1 = [("I", np0(intensity)), ("G_O(I) phase", np0(fake_o[:, 0])),
                ("G_O(I) attenuation", np0(fake_o[:, 1])), ("|H G_O(I)|^2", np0(holo(fake_o)))]
        rows = [row1]
        if out.reconstructed_intensity is not None:
            row1.append(("G_D(...) (= I?)", np0(norm.denorm_intensity(out.reconstructed_intensity))))
            rec_o = norm.denorm_object(out.reconstructed_object)
            rows.append([("psi phase", np0(obj[:, 0])), ("psi attenuation", np0(obj[:, 1])),
                         ("|H psi|^2", np0(holo(obj))),
                         ("G_D(...)", np0(norm.denorm_intensity(out.fake_intensity))),
                         ("G_O(G_D(...)) phase (= psi?)", np0(rec_o[:, 0]))])
        else:
            row1.append(("true phase", np0(obj[:, 0])))
    path = Path(path)
    _grid(path, rows, f"cycles: {path.stem}")
    return path


def loss_curves(path: Path, records: list[dict]) -> Path:
    """Training losses (and validation metrics where logged) against the step, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if "loss_g" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    keys = [k for k in (train[0] if train else {}) if k not in ("step", "epoch", "lr_scale", "time")
            and not k.startswith("grad_")]
    for k in keys:
        ax_t.plot([r["step"] for r in train], [max(abs(r[k]), 1e-12) for r in train], label=k)
    vkeys = sorted({k for r in val for k in r if k.startswith("val_")})
    for k in vkeys:
        ax_v.plot([r["step"] for r in val], [max(abs(r.get(k, np.nan)), 1e-12) for r in val], "o-", label=k)
    for ax, title in ((ax_t, "training losses"), (ax_v, "validation metrics")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


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


def search_figure(path: Path, rows: list[dict], metric: str) -> Path:
    """alpha_cyc vs alpha_frc of every trial (log axes), coloured by the tuned metric; best trial ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
