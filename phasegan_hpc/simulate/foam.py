"""A metallic-foam experiment like paper §4, simulated: cellular foams with a rupturing cell wall, imaged
by two detectors, plus the ground truth (the APS data of the paper is not public).

Object: a foam layer of thickness ``slab_m`` whose gas cells are the Voronoi regions of close-packed
seeds, parted by thin metal walls (``wall_m``) with rounded Plateau borders; along the beam the metal
thickness is the slab minus each cell's void depth (``foam_thickness``). In each movie the wall between
two neighbouring cells near the middle thins and ruptures: a hole opens at its midpoint and grows until
the two cells have coalesced.

Image formation on a fine grid (``fine_factor`` fine pixels per object pixel): projection approximation
(eq. 5) with ``[phantom] delta, beta``, illumination with a smooth flat field (beam profile, stripes; the
Shimadzu's drifts from frame to frame), Fresnel propagation over ``[physics] distance_m``, Gaussian
blur (the detector's PSF), binning to the detector pixel, Poisson counts over the integrated pulses, a
dark offset with read noise, uint16.

    photron.h5             DXchange, 2 um pixels, 31 pulses, many photons, mild blur  (the TIE camera)
    shimadzu.h5            DXchange, 3.2 um pixels, one pulse, few photons, stronger blur, drifting flats
    shimadzu_movie.h5      one held-out Shimadzu movie (DXchange) to reconstruct and evaluate
    shimadzu_validation.h5 its corrected frames (/intensity, 3.2 um) with the truth (/phase, /attenuation
                           at the object pixel of [physics] pixel_size_m): the file `evaluate` scores
    photron_movie.h5       a held-out Photron movie (DXchange), and
    photron_validation.h5  its corrected frames with their truth (the Paganin-on-Photron row)

Photron and Shimadzu frames show different foams (unpaired), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from phasegan_hpc import __version__
from phasegan_hpc.config import Config, FoamConfig, config_to_toml
from phasegan_hpc.data.h5io import atomic_h5, create_frames
from phasegan_hpc.errors import DataError
from phasegan_hpc.physics import FresnelPropagator, flatfield_correct, object_wavefield, thickness_to_phase_attenuation
from phasegan_hpc.progress import ProgressFn, Tally
from phasegan_hpc.simulate.dataset import check_output_dir, chunk_rng

STREAM_PHOTRON, STREAM_SHIMADZU, STREAM_MOVIE, STREAM_PHOTRON_VAL = 10, 11, 12, 13
FOAM_FILES = ("photron.h5", "shimadzu.h5", "shimadzu_movie.h5", "shimadzu_validation.h5", "photron_movie.h5",
              "photron_validation.h5")


@dataclass(frozen=True)
class Detector:
    """One camera of the experiment (paper §4)."""

    name: str
    pixel_size_m: float
    shape: tuple[int, int]  # (rows, cols) of a frame
    photons_per_pixel: float  # per pulse, free beam
    pulses: int
    blur_px: float  # Gaussian PSF sigma, detector pixels
    drift: float  # relative amplitude of the frame-to-frame flat-field drift


def detectors(f: FoamConfig) -> tuple[Detector, Detector]:
    """(Photron, Shimadzu) from the ``[foam]`` section."""
    return (Detector("photron", f.photron_pixel_m, tuple(f.photron_shape), f.photron_photons, f.photron_pulses,
                     f.photron_blur_px, 0.0),
            Detector("shimadzu", f.shimadzu_pixel_m, tuple(f.shimadzu_shape), f.shimadzu_photons, 1,
                     f.shimadzu_blur_px, f.shimadzu_drift))


def _fine_pixel(cfg: Config) -> float:
    return cfg.physics.pixel_size_m / cfg.foam.fine_factor


def _bin_factor(pixel_m: float, fine_m: float, what: str) -> int:
    k = pixel_m / fine_m
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise DataError(f"{what} pixel {pixel_m:g} m is not a whole number of fine pixels of {fine_m:g} m")
    return int(round(k))


def foam_cells(rng: np.random.Generator, extent_m: tuple[float, float], f: FoamConfig) -> np.ndarray:
    """Seeds (n, 2) [m] (y, x) of the foam's cells over an area plus a margin: a random close packing
    (dart throwing with a minimum distance), so cells have similar sizes, about ``2 cell_radius_m`` across."""
    margin = 2 * f.cell_radius_m
    lo = np.array([-margin, -margin])
    hi = np.array([extent_m[0] + margin, extent_m[1] + margin])
    min_d = 2 * f.cell_radius_m * (1 - f.cell_radius_spread)
    target = int(float(np.prod(hi - lo)) / (0.75 * min_d**2)) + 1
    pts = np.empty((0, 2))
    for _ in range(40):  # batches of candidates; keep those far enough from all kept points
        for p in lo + rng.random((4 * target, 2)) * (hi - lo):
            if len(pts) == 0 or np.min(np.sum((pts - p) ** 2, axis=1)) >= min_d**2:
                pts = np.vstack([pts, p])
        if len(pts) >= target:
            break
    return pts


def foam_thickness(shape: tuple[int, int], pixel_m: float, seeds: np.ndarray, f: FoamConfig,
                   pair: tuple[int, int] | None = None, wall_scale: float = 1.0, neck_m: float = 0.0,
                   offset_m: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Projected metal thickness T [m], float64 (H, W), of a foam layer on a grid of ``pixel_m``.

    Cells are the Voronoi regions of ``seeds``; a pixel's distance to its cell's wall is the distance to
    the bisector with the nearest other seed. The gas void along the beam is ``slab - 2 wall`` deep in a
    cell's interior and closes smoothly (a cubic step over ``cell_radius / 3``) towards the walls, which
    are ``wall_m`` thick: smooth Plateau borders, wider where walls meet.

    Args:
        pair: (i, j): the cells whose shared wall ruptures (paper §4's cell-wall rupture).
        wall_scale: that wall's thickness relative to ``wall_m`` (it thins before it breaks).
        neck_m: radius of the hole in that wall around its midpoint (0: intact).
        offset_m: position of the grid's corner in the foam's frame (y, x) [m] (the movie's drift).
    """
    h, w = shape
    yy, xx = np.meshgrid(offset_m[0] + (np.arange(h) + 0.5) * pixel_m, offset_m[1] + (np.arange(w) + 0.5) * pixel_m,
                         indexing="ij")
    pts = np.stack([yy.ravel(), xx.ravel()], axis=1)
    _, idx = cKDTree(seeds).query(pts, k=3)
    s1 = seeds[idx[:, 0]]

    def bisector_distance(k: int) -> np.ndarray:
        sk = seeds[idx[:, k]]
        return (np.sum((pts - sk) ** 2, 1) - np.sum((pts - s1) ** 2, 1)) / (2 * np.linalg.norm(sk - s1, axis=1))

    d2, d3 = bisector_distance(1), bisector_distance(2)
    wall = np.full(len(pts), f.wall_m)
    if pair is not None:
        i, j = pair
        on_pair = ((idx[:, 0] == i) & (idx[:, 1] == j)) | ((idx[:, 0] == j) & (idx[:, 1] == i))
        wall[on_pair] *= wall_scale
        mid = 0.5 * (seeds[i] + seeds[j])
        hole = on_pair & (np.sum((pts - mid) ** 2, 1) < neck_m**2)
        d2 = np.where(hole, np.maximum(d3, d2), d2)  # the wall is gone: the next wall bounds the void
    dist = np.minimum(d2, d3) - 0.5 * wall
    rounding = f.cell_radius_m / 3
    u = np.clip(dist / rounding, 0.0, 1.0)
    void = (f.slab_m - 2 * f.wall_m) * u * u * (3 - 2 * u)  # smooth (C1) Plateau borders
    return (f.slab_m - void).reshape(shape)


def _rupture_pair(seeds: np.ndarray, extent_m: tuple[float, float]) -> tuple[int, int]:
    """Two neighbouring cells near the middle of the field of view."""
    mid = np.array(extent_m) / 2
    i = int(np.argmin(np.sum((seeds - mid) ** 2, 1)))
    d = np.sum((seeds - seeds[i]) ** 2, 1)
    d[i] = np.inf
    return i, int(np.argmin(d))


def _flat(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth beam profile with horizontal stripes, mean 1 (the mean illumination of a camera)."""
    h, w = shape
    y = (np.arange(h)[:, None] + 0.5) / h - 0.5
    x = (np.arange(w)[None, :] + 0.5) / w - 0.5
    beam = np.exp(-(y**2) / 0.8 - (x**2) / 1.2)
    stripes = 1 + 0.03 * np.sin(2 * np.pi * (rng.uniform(4, 9) * y + rng.random()))
    flat = beam * stripes
    return flat / flat.mean()


def _drift(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """A frame's multiplicative flat-field drift: a random low-order smooth field around 1."""
    if amplitude <= 0:
        return np.ones(shape)
    h, w = shape
    y = (np.arange(h)[:, None] + 0.5) / h - 0.5
    x = (np.arange(w)[None, :] + 0.5) / w - 0.5
    c = rng.normal(0, amplitude, 4)
    return np.clip(1 + c[0] + c[1] * y + c[2] * x + c[3] * (x * x + y * y), 0.2, None)


class FoamImager:
    """Movies of foams as one detector sees them: truth on the object grid and raw frames."""

    def __init__(self, cfg: Config, det: Detector) -> None:
        self.cfg, self.det, self.f = cfg, det, cfg.foam
        self.fine_m = _fine_pixel(cfg)
        self.bin = _bin_factor(det.pixel_size_m, self.fine_m, det.name)
        self.obj_bin = cfg.foam.fine_factor
        self.extent_m = (det.shape[0] * det.pixel_size_m, det.shape[1] * det.pixel_size_m)
        self.fine_shape = (det.shape[0] * self.bin, det.shape[1] * self.bin)
        if self.fine_shape[0] % self.obj_bin or self.fine_shape[1] % self.obj_bin:
            raise DataError(f"{det.name}: field of view is not a whole number of object pixels")
        p = cfg.physics
        self.prop = FresnelPropagator(self.fine_shape, pixel_size_m=self.fine_m, distance_m=p.distance_m,
                                      wavelength_m=p.wavelength, pad=p.pad * self.obj_bin, pad_mode="edge")
        self.flat = _flat(np.random.default_rng(cfg.foam.seed + len(det.name)), det.shape)

    @property
    def object_shape(self) -> tuple[int, int]:
        return self.fine_shape[0] // self.obj_bin, self.fine_shape[1] // self.obj_bin

    def movie(self, rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``n`` frames of one foam whose central wall ruptures mid-movie.

        Returns:
            (fine thickness maps [m] per frame, truth phase (n, Ho, Wo), truth attenuation (n, Ho, Wo)) on
            the object grid.
        """
        f = self.f
        seeds = foam_cells(rng, self.extent_m, f)
        pair = _rupture_pair(seeds, self.extent_m)
        t_rupture = rng.uniform(0.3, 0.6) * n
        neck_max = f.cell_radius_m
        drift_v = rng.normal(0, 0.2 * self.fine_m * self.obj_bin, 2)  # slow drift of the sample [m/frame]
        thick, phases, atts = [], [], []
        for t in range(n):
            if t < t_rupture:  # the wall thins before it breaks
                scale, neck = 1.0 - 0.6 * t / max(t_rupture, 1.0), 0.0
            else:
                scale, neck = 0.4, neck_max * min(1.0, (t - t_rupture + 1) / max(1.0, 0.25 * n))
            tk = foam_thickness(self.fine_shape, self.fine_m, seeds, f, pair, scale, neck, tuple(t * drift_v))
            thick.append(tk)
            t_obj = tk.reshape(self.object_shape[0], self.obj_bin, self.object_shape[1], self.obj_bin).mean((1, 3))
            c = self.cfg
            ph, at = thickness_to_phase_attenuation(t_obj, delta=c.phantom.delta, beta=c.phantom.beta,
                                                    wavelength_m=c.physics.wavelength)
            phases.append(ph)
            atts.append(at)
        return thick, np.array(phases), np.array(atts)

    def record(self, rng: np.random.Generator, thickness: np.ndarray) -> np.ndarray:
        """Raw uint16 counts (H, W) of one frame of thickness ``thickness`` [m] on the fine grid."""
        c, p = self.cfg, self.det
        phase, att = thickness_to_phase_attenuation(thickness, delta=c.phantom.delta, beta=c.phantom.beta,
                                                    wavelength_m=c.physics.wavelength)
        inten = self.prop.intensity(object_wavefield(torch.from_numpy(phase), torch.from_numpy(att))).numpy()
        inten = ndimage.gaussian_filter(inten, p.blur_px * self.bin, mode="nearest")
        det = inten.reshape(p.shape[0], self.bin, p.shape[1], self.bin).mean((1, 3))
        det *= self.flat * _drift(rng, p.shape, p.drift)
        return self._counts(rng, det)

    def _counts(self, rng: np.random.Generator, relative: np.ndarray) -> np.ndarray:
        f, p = self.f, self.det
        counts = rng.poisson(np.maximum(relative, 0) * p.photons_per_pixel * p.pulses).astype(np.float64)
        counts += f.dark_counts + f.read_noise * rng.standard_normal(counts.shape)
        return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    def references(self, rng: np.random.Generator, n_flats: int = 8, n_darks: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Flats (beam, no sample) and darks (no beam), uint16 (n, H, W)."""
        flats = np.stack([self._counts(rng, self.flat) for _ in range(n_flats)])
        darks = np.stack([self._counts(rng, np.zeros(self.det.shape)) for _ in range(n_darks)])
        return flats, darks


def _attrs(cfg: Config, det: Detector, kind: str) -> dict[str, object]:
    p = cfg.physics
    return {"kind": kind, "detector": det.name, "pixel_size_m": det.pixel_size_m, "wavelength_m": p.wavelength,
            "distance_m": p.distance_m, "delta": cfg.phantom.delta, "beta": cfg.phantom.beta,
            "pulses": det.pulses, "photons_per_pixel_per_pulse": det.photons_per_pixel,
            "generator": "phasegan_hpc.simulate.foam (paper §4)", "config": config_to_toml(cfg),
            "software_version": __version__, **({"energy_kev": p.energy_kev} if p.energy_kev else {})}


def _write_archive(path: Path, imager: FoamImager, rng: np.random.Generator, stream: int, n_frames: int, seed: int,
                   progress: Tally, truth: dict[str, list] | None = None) -> None:
    """A DXchange archive of ``n_frames`` frames from consecutive movies (``movie_frames`` each)."""
    det, f = imager.det, imager.f
    comp = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    with atomic_h5(path) as h5:
        h5.attrs.update(_attrs(imager.cfg, det, "raw detector frames"))
        data = h5.create_dataset("exchange/data", shape=(n_frames, *det.shape), dtype="uint16",
                                 chunks=(1, *det.shape), **comp)
        done = 0
        movie = 0
        while done < n_frames:
            n = min(f.movie_frames, n_frames - done)
            mrng = chunk_rng(seed, stream, movie)
            thick, phase, att = imager.movie(mrng, n)
            for k, tk in enumerate(thick):
                data[done + k] = imager.record(mrng, tk)
            if truth is not None:
                truth["phase"].append(phase)
                truth["attenuation"].append(att)
            done += n
            movie += 1
            progress.add(n)
        flats, darks = imager.references(rng)
        h5.create_dataset("exchange/data_white", data=flats, **comp)
        h5.create_dataset("exchange/data_dark", data=darks, **comp)


def _write_validation(path: Path, archive: Path, imager: FoamImager, truth: dict[str, list]) -> None:
    """Corrected frames of ``archive`` (as reconstruct corrects them) with their truth on the object grid."""
    cfg, det = imager.cfg, imager.det
    with h5py.File(archive, "r") as src:
        corrected = flatfield_correct(src["exchange/data"][()], src["exchange/data_white"][()],
                                      src["exchange/data_dark"][()])
    phase, att = np.concatenate(truth["phase"]), np.concatenate(truth["attenuation"])
    with atomic_h5(path) as h5:
        h5.attrs.update(_attrs(cfg, det, "paired validation: corrected frames + truth"))
        h5.attrs["object_pixel_size_m"] = cfg.physics.pixel_size_m
        create_frames(h5, "intensity", len(corrected), det.shape, units="1",
                      description="flat/dark-corrected detector frame")[...] = corrected
        for name, arr, units in (("phase", phase, "rad"), ("attenuation", att, "1")):
            create_frames(h5, name, len(arr), imager.object_shape, units=units,
                          description=f"true {name} on the object grid")[...] = arr.astype(np.float32)


def simulate_foam(out_dir: str | Path, cfg: Config, *, overwrite: bool = False,
                  progress: ProgressFn | None = None) -> dict[str, Path]:
    """Write the foam experiment's files (module docstring) into ``out_dir``; ``progress(done, total, {})``
    counts frames over all of them.

    Raises:
        DataError: a non-empty ``out_dir`` without ``overwrite``, or pixel sizes that are not whole
            multiples of the fine grid.
    """
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    f = cfg.foam
    photron, shimadzu = (FoamImager(cfg, d) for d in detectors(f))  # checks the geometry first
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FOAM_FILES}
    rng = chunk_rng(f.seed, 99, 0)
    progress = Tally(progress, f.photron_frames + f.shimadzu_frames + 2 * f.validation_frames)
    _write_archive(paths["photron.h5"], photron, rng, STREAM_PHOTRON, f.photron_frames, f.seed, progress)
    _write_archive(paths["shimadzu.h5"], shimadzu, rng, STREAM_SHIMADZU, f.shimadzu_frames, f.seed, progress)
    truth: dict[str, list] = {"phase": [], "attenuation": []}
    _write_archive(paths["shimadzu_movie.h5"], shimadzu, rng, STREAM_MOVIE, f.validation_frames, f.seed, progress,
                   truth)
    _write_validation(paths["shimadzu_validation.h5"], paths["shimadzu_movie.h5"], shimadzu, truth)
    ptruth: dict[str, list] = {"phase": [], "attenuation": []}
    _write_archive(paths["photron_movie.h5"], photron, rng, STREAM_PHOTRON_VAL, f.validation_frames, f.seed,
                   progress, ptruth)
    _write_validation(paths["photron_validation.h5"], paths["photron_movie.h5"], photron, ptruth)
    return paths
