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
        archive: its :class:`phasegan_hpc.reconstruct.archive.Archive` (read-only).
    """
    from phasegan_hpc.reconstruct.archive import FrameReader

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
                rows.append([(f"frame {i}: raw", raw.astype(np.float32)), ("corrected", reader.correct(raw)),
                             (f"phase [rad] (score {float(f['consistency'][idx]):.3g})", f["phase"][idx]),
                             ("attenuation", f["attenuation"][idx])])
    finally:
        reader.close()
    path = Path(out_png)
    _grid(path, rows, f"{output.name} ({total} frames)")
    return path
