"""A raw-detector movie archive in the DXchange layout, for ``reconstruct`` demos and benchmarks.

    movie.h5   /exchange/data        uint16 (N, H, W)  raw counts: Poisson(I x photons per pixel) + dark
               /exchange/data_white  uint16 (F, H, W)  flats: the mean illumination, same detector, or with
                                                       ``pulse_flats`` an illumination of their own each
                                                       (pulse-to-pulse, as European XFEL's flats)
               /exchange/data_dark   uint16 (D, H, W)  darks: the detector offset with read noise
               /truth/flatfield      float32 (N, H, W) with ``pulse_flats`` only: the illumination each
                                                       frame was recorded with (the reference of ``bench
                                                       flatfield`` and the dynamic flat-field tests)
               root attributes as the other synthetic files (pixel_size_m, wavelength_m, distance_m, ...)

Frames are drawn like the detector domain of paper §3 (own draw stream), chunk by chunk (bounded memory),
bitshuffle-LZ4 compressed, written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import hdf5plugin
import numpy as np

from phasegan_hpc.config import Config
from phasegan_hpc.data.h5io import atomic_h5
from phasegan_hpc.errors import DataError
from phasegan_hpc.progress import ProgressFn, Tally
from phasegan_hpc.simulate.dataset import FrameSimulator, chunk_rng, file_attrs, flatfield_basis

STREAM_MOVIE = 5
#: Detector offset [counts] and its read noise.
DARK_LEVEL, READ_NOISE = 100.0, 3.0


def simulate_movie(path: str | Path, cfg: Config, n_frames: int, *, overwrite: bool = False,
                   n_flats: int = 8, n_darks: int = 4, chunk_frames: int = 16, pulse_flats: bool = False,
                   progress: ProgressFn | None = None) -> Path:
    """Write an ``n_frames`` raw-detector movie of the ``cfg`` geometry to ``path`` (DXchange).

    ``pulse_flats``: the ``n_flats`` flats are drawn like the frames' illumination (each its own, from the
    flat-field basis), not all from the mean one, and ``/truth/flatfield`` records each frame's illumination.

    Raises:
        DataError: ``path`` exists and ``overwrite`` is false, or a non-positive frame count.
    """
    path = Path(path)
    if n_frames < 1:
        raise DataError(f"a movie needs at least one frame, got {n_frames}")
    if path.exists() and not overwrite:
        raise DataError(f"{path} exists; pass --overwrite to replace it")
    size = cfg.simulate.size
    per_pixel = cfg.detector.photons_per_frame / (size * size)
    basis = flatfield_basis(cfg)
    sim = FrameSimulator(cfg, basis)
    rng = chunk_rng(cfg.simulate.seed, STREAM_MOVIE, 1 << 20)
    mean_flat = basis.mean if basis is not None else np.ones((size, size))
    tally = Tally(progress, n_frames)

    def raw(intensity: np.ndarray) -> np.ndarray:
        counts = intensity * per_pixel + DARK_LEVEL + READ_NOISE * rng.standard_normal(intensity.shape)
        return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    comp = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    with atomic_h5(path) as f:
        f.attrs.update(file_attrs(cfg, "movie"))
        f.attrs["dark_level_counts"] = DARK_LEVEL
        data = f.create_dataset("exchange/data", shape=(n_frames, size, size), dtype="uint16",
                                chunks=(min(chunk_frames, n_frames), size, size), **comp)
        truth = f.create_dataset("truth/flatfield", shape=(n_frames, size, size), dtype="float32",
                                 chunks=data.chunks, **comp) if pulse_flats else None
        for i, start in enumerate(range(0, n_frames, chunk_frames)):
            stop = min(start + chunk_frames, n_frames)
            crng = chunk_rng(cfg.simulate.seed, STREAM_MOVIE, i)
            phase, att = sim.objects(crng, stop - start)
            intensity, illumination = sim.record(crng, phase, att)  # counts / photons per pixel, flat included
            data[start:stop] = raw(intensity)
            if truth is not None:
                truth[start:stop] = illumination
            tally.add(stop - start)
        if pulse_flats:
            beams = sim.illumination(chunk_rng(cfg.simulate.seed, STREAM_MOVIE, 1 << 21), n_flats)
        else:
            beams = np.broadcast_to(mean_flat, (n_flats, size, size))
        flats = rng.poisson(beams * per_pixel) / per_pixel
        f.create_dataset("exchange/data_white", data=raw(flats), **comp)
        f.create_dataset("exchange/data_dark", data=raw(np.zeros((n_darks, size, size))), **comp)
    return path
