"""Write the synthetic training and validation sets of paper §3 (DESIGN.md §4).

    objects.h5      /phase, /attenuation              N objects           (draw stream 0)
    intensities.h5  /intensity                        N detector frames   (stream 1: other objects)
    validation.h5   /intensity, /phase, /attenuation,  M paired frames     (stream 2)
                    /flatfield (the illumination each frame was recorded with)
    paired.h5       as validation.h5                  P paired frames     (stream 4; only if P > 0)
                    a paired training set for the paired and pix2pix baselines

Objects and detector frames come from independent draws, so the training sets are unpaired. A frame is
made as: thickness T -> (phase, attenuation) (eq. 5) -> psi_O; illumination psi_i = sqrt(F) from the
flat-field PCA model; detector intensity |H (psi_i psi_O)|^2 (H: Fresnel propagator); Poisson counts.

Work is split into chunks of frames, each with its own seed derived from (seed, stream, chunk), so the
output does not depend on the number of worker processes. Chunks are computed by a process pool (both
cores) with a bounded number in flight and written as they arrive: memory stays bounded for any N.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from phasegan_hpc import __version__
from phasegan_hpc.config import Config, config_to_toml
from phasegan_hpc.data.h5io import atomic_h5, create_frames
from phasegan_hpc.errors import DataError
from phasegan_hpc.physics import object_wavefield, thickness_to_phase_attenuation
from phasegan_hpc.progress import ProgressFn, Tally
from phasegan_hpc.simulate.detector import detect
from phasegan_hpc.simulate.flatfields import MIN_FLAT, FlatfieldBasis, load_basis, pca_basis, synthetic_flats
from phasegan_hpc.simulate.phantoms import random_thickness

STREAM_OBJECTS, STREAM_INTENSITIES, STREAM_VALIDATION, STREAM_BASIS, STREAM_PAIRED = 0, 1, 2, 3, 4
PAIRED_DATASETS = ("intensity", "phase", "attenuation", "flatfield")
#: stream -> (file name, datasets)
STREAMS = {
    STREAM_OBJECTS: ("objects.h5", ("phase", "attenuation")),
    STREAM_INTENSITIES: ("intensities.h5", ("intensity",)),
    STREAM_VALIDATION: ("validation.h5", PAIRED_DATASETS),
    STREAM_PAIRED: ("paired.h5", PAIRED_DATASETS),
}
OUTPUT_FILES = tuple(name for name, _ in STREAMS.values())

UNITS = {
    "phase": ("rad", "object phase phi = -k delta T"),
    "attenuation": ("1", "attenuation mu T = -ln |psi|^2"),
    "intensity": ("1", "detector counts / mean photons per pixel (free beam about 1)"),
    "flatfield": ("1", "illumination intensity |psi_i|^2 the frame was recorded with"),
}


def chunk_rng(seed: int, stream: int, chunk: int) -> np.random.Generator:
    """The random generator of one chunk of one stream; independent of how work is scheduled."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, chunk)))


def flatfield_basis(cfg: Config) -> FlatfieldBasis | None:
    """The flat-field PCA model the config asks for (None when flat-field variation is disabled)."""
    ff, size = cfg.flatfield, cfg.simulate.size
    if not ff.enabled:
        return None
    if ff.basis_file:
        return load_basis(ff.basis_file, size, ff.n_components)
    rng = chunk_rng(cfg.simulate.seed, STREAM_BASIS, 0)
    fraction = 1.0
    if ff.field_of_view_m > 0:  # features of a physical size: the frame is the centre of a wider field
        fraction = min(1.0, size * cfg.physics.pixel_size_m / ff.field_of_view_m)
    return pca_basis(synthetic_flats(rng, ff.n_flats, size, fraction), ff.n_components)


class FrameSimulator:
    """Makes objects and detector frames for chunks of a stream (runs inside the worker processes)."""

    def __init__(self, cfg: Config, basis: FlatfieldBasis | None) -> None:
        self.cfg = cfg
        self.basis = basis
        self.prop = cfg.physics.geometry().propagator((cfg.simulate.size,) * 2)

    def objects(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random objects: (phase [rad], attenuation), float64 (n, H, W) each."""
        c = self.cfg
        t = np.stack([random_thickness(rng, c.simulate.size, c.phantom) for _ in range(n)])
        return thickness_to_phase_attenuation(
            t, delta=c.phantom.delta, beta=c.phantom.beta, wavelength_m=c.physics.wavelength
        )

    def illumination(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` illuminations F (flat fields, mean about 1), float64 (n, H, W), drawn from the PCA basis
        (ones without flat-field variation), scaled by ``[flatfield] strength``: F = 1 + s (F - 1)."""
        size = self.cfg.simulate.size
        if self.basis is None:
            return np.ones((n, size, size))
        flats = self.basis.sample(rng, n)
        strength = self.cfg.flatfield.strength
        if strength != 1.0:
            flats = np.maximum(1.0 + strength * (flats - 1.0), MIN_FLAT)
        return flats

    def record(
        self, rng: np.random.Generator, phase: np.ndarray, attenuation: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Image objects: returns (noisy intensity float32, illumination F float64), each (n, H, W)."""
        flats = self.illumination(rng, len(phase))
        psi = object_wavefield(torch.from_numpy(phase), torch.from_numpy(attenuation))
        psi = psi * torch.from_numpy(np.sqrt(flats))  # variable illumination psi_i (paper §3)
        clean = self.prop.intensity(psi).numpy()
        return detect(rng, clean, self.cfg.detector.photons_per_frame), flats

    def chunk(self, stream: int, index: int, start: int, stop: int) -> dict[str, np.ndarray]:
        """Arrays (float32) for frames [start, stop) of one stream, keyed by dataset name."""
        rng = chunk_rng(self.cfg.simulate.seed, stream, index)
        phase, att = self.objects(rng, stop - start)
        if stream == STREAM_OBJECTS:
            return {"phase": phase.astype(np.float32), "attenuation": att.astype(np.float32)}
        intensity, flats = self.record(rng, phase, att)
        if stream == STREAM_INTENSITIES:
            return {"intensity": intensity}
        return {
            "intensity": intensity,
            "phase": phase.astype(np.float32),
            "attenuation": att.astype(np.float32),
            "flatfield": flats.astype(np.float32),
        }


_WORKER: FrameSimulator | None = None


def _init_worker(cfg: Config, basis: FlatfieldBasis | None) -> None:
    global _WORKER
    torch.set_num_threads(1)  # one process per core already
    _WORKER = FrameSimulator(cfg, basis)


def _run_chunk(task: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], dict[str, np.ndarray]]:
    assert _WORKER is not None
    return task, _WORKER.chunk(*task)


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite``; refuse a path that is a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output path {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"output directory {out_dir} is not empty; pass --overwrite to replace its data set")


def file_attrs(cfg: Config, kind: str) -> dict[str, object]:
    p = cfg.physics
    attrs: dict[str, object] = {
        "kind": kind,
        "pixel_size_m": p.pixel_size_m,
        "wavelength_m": p.wavelength,
        "distance_m": p.distance_m,
        "delta": cfg.phantom.delta,
        "beta": cfg.phantom.beta,
        "photons_per_frame": cfg.detector.photons_per_frame,
        "periodic": int(p.pad == 0),  # frames made with an unpadded (periodic) propagator
        "seed": cfg.simulate.seed,
        "generator": "phasegan_hpc.simulate (paper §3)",
        "config": config_to_toml(cfg),
        "software_version": __version__,
    }
    if p.energy_kev is not None:
        attrs["energy_kev"] = p.energy_kev
    return attrs


def simulate_dataset(
    out_dir: str | Path,
    cfg: Config,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Path]:
    """Simulate and write ``objects.h5``, ``intensities.h5``, ``validation.h5`` (and ``paired.h5``).

    Args:
        out_dir: output directory (created; must be empty unless ``overwrite``).
        cfg: configuration; ``cfg.simulate`` sets sizes, seed, chunking and worker count.
        overwrite: replace the three files in a non-empty directory (other files are left alone).
        progress: ``progress(done, total, {})`` in frames, after each chunk (``phasegan_hpc.progress``).

    Returns:
        Paths of the written files by name. Nothing appears under these names unless all are complete.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    sim = cfg.simulate
    basis = flatfield_basis(cfg)  # before touching the disk: a bad basis file changes nothing
    out_dir.mkdir(parents=True, exist_ok=True)

    counts = {STREAM_OBJECTS: sim.n_train, STREAM_INTENSITIES: sim.n_train, STREAM_VALIDATION: sim.n_val,
              STREAM_PAIRED: sim.n_paired}
    if sim.n_paired == 0:
        del counts[STREAM_PAIRED]
    tasks = [
        (stream, i, start, min(start + sim.chunk_frames, n))
        for stream, n in counts.items()
        for i, start in enumerate(range(0, n, sim.chunk_frames))
    ]
    shape = (sim.size, sim.size)
    tally = Tally(progress, sum(counts.values()))
    paths = {STREAMS[stream][0]: out_dir / STREAMS[stream][0] for stream in counts}
    with ExitStack() as stack:
        datasets: dict[int, dict[str, object]] = {}
        for stream in counts:
            name, names = STREAMS[stream]
            f = stack.enter_context(atomic_h5(paths[name], reserve=4 * counts[stream] * len(names) * sim.size**2))
            f.attrs.update(file_attrs(cfg, name.removesuffix(".h5")))
            datasets[stream] = {
                k: create_frames(f, k, counts[stream], shape, units=UNITS[k][0], description=UNITS[k][1])
                for k in names
            }

        def write(task: tuple[int, int, int, int], arrays: dict[str, np.ndarray]) -> None:
            stream, _, start, stop = task
            for k, arr in arrays.items():
                datasets[stream][k][start:stop] = arr
            tally.add(stop - start)

        n_workers = sim.workers or os.cpu_count() or 1
        if n_workers == 1 or len(tasks) == 1:
            worker = FrameSimulator(cfg, basis)
            for task in tasks:
                write(task, worker.chunk(*task))
        else:
            _run_pool(tasks, cfg, basis, n_workers, write)
    return paths


def _run_pool(tasks, cfg, basis, n_workers, write) -> None:
    """Compute chunks in ``n_workers`` processes, at most 2 per worker in flight, writing as they finish."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent with torch threads
    pending: set[Future] = set()
    todo = iter(tasks)
    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg, basis)) as pool:
        try:
            for task in todo:
                pending.add(pool.submit(_run_chunk, task))
                if len(pending) >= 2 * n_workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        write(*fut.result())
            for fut in list(pending):
                write(*fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise

