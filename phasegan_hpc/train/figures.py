"""Figures of a training run (``runs/NAME/figures/``): the two cycles of Supplement Fig. S2, loss curves.

They take arrays; ``train/loop.py`` runs the generators and H and passes what they made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phasegan_hpc.plotting import image_grid, pyplot, save


@dataclass(frozen=True)
class CycleImages:
    """One frame of each image of the two cycles, 2-D arrays in physical units (phase [rad], attenuation,
    intensity). The ``None`` fields are absent for methods without the cycles (paired, pix2pix).

    Attributes:
        intensity: the detector frame I.
        fake_phase, fake_attenuation: G_O(I). fake_hologram: |H G_O(I)|^2.
        true_phase, true_attenuation: the object psi shown beside it. true_hologram: |H psi|^2.
        reconstructed_intensity: G_D|H G_O(I)|^2 (= I?).
        fake_intensity: G_D|H psi|^2. reconstructed_phase: the phase of G_O(G_D|H psi|^2) (= psi?).
    """

    intensity: np.ndarray
    fake_phase: np.ndarray
    fake_attenuation: np.ndarray
    fake_hologram: np.ndarray
    true_phase: np.ndarray
    true_attenuation: np.ndarray
    true_hologram: np.ndarray | None = None
    reconstructed_intensity: np.ndarray | None = None
    fake_intensity: np.ndarray | None = None
    reconstructed_phase: np.ndarray | None = None


def cycle_figure(path: str | Path, images: CycleImages) -> Path:
    """The two PhaseGAN cycles of Supplement Fig. S2 (without the cycles: G_O(I) beside the true phase)."""
    im = images
    row1 = [("I", im.intensity), ("G_O(I) phase", im.fake_phase), ("G_O(I) attenuation", im.fake_attenuation),
            ("|H G_O(I)|^2", im.fake_hologram)]
    rows = [row1]
    if im.reconstructed_intensity is not None:
        row1.append(("G_D(...) (= I?)", im.reconstructed_intensity))
        rows.append([("psi phase", im.true_phase), ("psi attenuation", im.true_attenuation),
                     ("|H psi|^2", im.true_hologram), ("G_D(...)", im.fake_intensity),
                     ("G_O(G_D(...)) phase (= psi?)", im.reconstructed_phase)])
    else:
        row1.append(("true phase", im.true_phase))
    path = Path(path)
    return image_grid(path, rows, f"cycles: {path.stem}")


def loss_curves(path: str | Path, records: list[dict]) -> Path:
    """Training losses (and validation metrics where logged) against the step, log scale."""
    plt = pyplot()
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
    return save(fig, path)
