"""``phasegan-hpc preview``: a figure of a few objects and their holograms from a simulated data set."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the compression filters the data sets use)
import numpy as np

from phasegan_hpc.errors import DataError
from phasegan_hpc.plotting import pyplot, save


def preview_dataset(data_dir: str | Path, out_png: str | Path, n: int = 4) -> Path:
    """Plot ``n`` paired validation objects (phase, attenuation) next to their holograms.

    Falls back to the unpaired training files when the data set has no validation frames.

    Returns:
        The path of the written PNG.
    """
    plt = pyplot()
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
    return save(fig, out_png)


def _length(path: Path, name: str) -> int:
    with h5py.File(path, "r") as f:
        return len(f[name]) if name in f else 0
