"""Flat-field variation from a PCA basis (paper §3 and Supplement 1).

The paper drew each frame's illumination from 15 principal components of European XFEL MHz flat fields.
Those flats are not public, so by default the basis is learnt from synthetic flats that show what such
flats show: a smooth beam profile that wanders, horizontal stripes from the optics, blobs from dust and
scratches, and a drifting overall intensity. A basis from real flats (:func:`pca_basis` on a stack of
them, saved with :func:`save_basis`) can be given instead in ``[flatfield] basis_file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from skimage.transform import resize

from phasegan_hpc.data.h5io import atomic_h5
from phasegan_hpc.errors import DataError
from phasegan_hpc.physics.flatfield import principal_components

#: Flat fields are clipped below at this fraction of the mean beam, so the illumination stays positive.
MIN_FLAT = 0.05


@dataclass(frozen=True)
class FlatfieldBasis:
    """A PCA model of flat fields: F = mean + sum_k c_k components[k], with c_k ~ N(0, std[k]^2).

    Attributes:
        mean: float64 (H, W), mean flat, normalised to a spatial mean of 1.
        components: float64 (K, H, W), orthonormal principal components (flattened).
        std: float64 (K,), standard deviation of each coefficient (same normalisation as ``mean``).
    """

    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mean.shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` flat fields, float64 (n, H, W), clipped below at :data:`MIN_FLAT`."""
        coeffs = rng.standard_normal((n, len(self.std))) * self.std
        flats = self.mean + np.tensordot(coeffs, self.components, axes=1)
        return np.maximum(flats, MIN_FLAT)


def synthetic_flats(rng: np.random.Generator, n: int, size: int, frame_fraction: float = 1.0) -> np.ndarray:
    """Synthetic MHz-camera flat fields: beam profile, stripes, blobs and intensity drift.

    Args:
        frame_fraction: the frame's side as a fraction of the field of view the flats are drawn for (<= 1:
            the frame is the centre of the field, its features larger in pixels).

    Returns:
        float64 (n, size, size), mean about 1.
    """
    y = ((np.arange(size)[:, None] + 0.5) / size - 0.5) * frame_fraction  # field coordinates in [-0.5, 0.5)
    x = ((np.arange(size)[None, :] + 0.5) / size - 0.5) * frame_fraction
    flats = np.empty((n, size, size))
    for i in range(n):
        cy, cx = rng.normal(0.0, 0.08, 2)
        sy, sx = rng.uniform(0.45, 0.9, 2)
        beam = np.exp(-((y - cy) ** 2) / (2 * sy**2) - ((x - cx) ** 2) / (2 * sx**2))
        stripes = 1.0
        for _ in range(rng.integers(1, 4)):
            stripes = stripes + rng.uniform(0.01, 0.06) * np.sin(
                2 * np.pi * (rng.uniform(2, 12) * y + rng.uniform(0.01, 0.3) * x) + rng.uniform(0, 2 * np.pi)
            )
        blobs = 1.0
        for _ in range(rng.integers(0, 6)):
            by, bx = rng.uniform(-0.5, 0.5, 2)
            s = rng.uniform(0.01, 0.06)
            blobs = blobs - rng.uniform(-0.08, 0.15) * np.exp(-((y - by) ** 2 + (x - bx) ** 2) / (2 * s * s))
        drift = rng.normal(1.0, 0.05)
        flats[i] = drift * beam * stripes * blobs
    flats /= flats.mean()
    return flats


def pca_basis(flats: np.ndarray, n_components: int) -> FlatfieldBasis:
    """Principal components of a stack of flat fields.

    Args:
        flats: (n, H, W) flat fields (any positive scale; normalised here to a mean of 1), n >= n_components.
        n_components: number of components K to keep.

    Returns:
        The :class:`FlatfieldBasis`; coefficient spreads are the singular values / sqrt(n - 1).
    """
    flats = np.asarray(flats, dtype=np.float64)
    n = len(flats)
    if flats.ndim != 3 or n < max(2, n_components):
        raise DataError(f"need a stack (n, H, W) of at least {max(2, n_components)} flats, got {flats.shape}")
    mean, comps, s = principal_components(flats / flats.mean(), n_components)
    return FlatfieldBasis(mean, comps, s / np.sqrt(n - 1))


def save_basis(path: str | Path, basis: FlatfieldBasis) -> None:
    """Write a basis to HDF5 (``/mean``, ``/components``, ``/std``) for ``[flatfield] basis_file``."""
    with atomic_h5(path) as f:
        f["mean"] = basis.mean
        f["components"] = basis.components
        f["std"] = basis.std


def load_basis(path: str | Path, size: int, n_components: int) -> FlatfieldBasis:
    """Read a basis written by :func:`save_basis`, keep ``n_components``, resample to ``size`` if needed.

    Raises:
        DataError: missing file or datasets, inconsistent shapes, too few components.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"flat-field basis file not found: {p}")
    try:
        with h5py.File(p, "r") as f:
            missing = [k for k in ("mean", "components", "std") if k not in f]
            if missing:
                raise DataError(f"{p}: flat-field basis lacks dataset(s) {', '.join('/' + m for m in missing)}")
            mean, comps, std = f["mean"][()], f["components"][()], f["std"][()]
    except OSError as exc:
        raise DataError(f"{p}: not a readable HDF5 file ({exc})") from None
    if mean.ndim != 2 or comps.ndim != 3 or comps.shape[1:] != mean.shape or std.shape != comps.shape[:1]:
        raise DataError(f"{p}: expected /mean (H, W), /components (K, H, W), /std (K,)")
    if len(std) < n_components:
        raise DataError(f"{p}: has {len(std)} components, config asks for {n_components}")
    comps, std = comps[:n_components].astype(np.float64), std[:n_components].astype(np.float64)
    mean = mean.astype(np.float64)
    if mean.shape != (size, size):
        mean = resize(mean, (size, size), order=1, anti_aliasing=True)
        comps = np.stack([resize(c, (size, size), order=1, anti_aliasing=True) for c in comps])
        norms = np.linalg.norm(comps.reshape(len(comps), -1), axis=1)
        comps, std = comps / norms[:, None, None], std * norms  # keep the same flats, unit-norm components
    scale = mean.mean()
    return FlatfieldBasis(mean / scale, comps, std / scale)
