"""Dynamic flat fields: ``--flats-reduction pca`` against mean (and median) flats on simulated archives whose
illumination changes from pulse to pulse (paper §3's flat-field model: every frame and every flat has an
illumination of its own drawn from the PCA basis, as at European XFEL).

The figure of merit is the residual flat-field error of a corrected frame: with ``ideal`` = (I - dark) / F the
frame corrected by the illumination F it was really recorded with (``/truth/flatfield``), the rms over
pixels of ``corrected / ideal - 1`` (= F / F_estimated - 1: the object and the frame's own shot noise cancel),
the median over frames; then the median over ``repeats`` archives of different seeds. Also the eigen-flats K
and the fit's binning, and the correction's speed against the mean flat's, timed in turns.
"""

from __future__ import annotations

import statistics
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from phasegan_hpc.bench import interleaved_times, machine
from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.archive import DEFAULT_EIGENFLATS, fit_binning
from phasegan_hpc.physics import DynamicFlatfieldCorrector, FlatfieldCorrector
from phasegan_hpc.simulate.movie import simulate_movie

#: The paper's photons per detector pixel (§3: ~6.6e7 per 256 x 256 frame).
PHOTONS_PER_PIXEL = 6.6e7 / 256**2


def flatfield_error(corrected: np.ndarray, ideal: np.ndarray) -> float:
    """Median over frames of the rms over pixels of ``corrected / ideal - 1`` (both (N, H, W))."""
    rel = corrected.astype(np.float64) / ideal - 1.0
    return float(np.median(np.sqrt(np.nanmean(rel**2, axis=(-2, -1)))))


def _archive(directory: Path, size: int, frames: int, flats: int, seed: int, strength: float) -> dict[str, Any]:
    cfg = with_overrides(load_config(None), {"simulate.size": size, "simulate.seed": seed,
                                             "flatfield.strength": strength,
                                             "detector.photons_per_frame": PHOTONS_PER_PIXEL * size * size})
    path = simulate_movie(directory / f"pulses-{seed}.h5", cfg, frames, n_flats=flats, pulse_flats=True)
    with h5py.File(path) as f:
        arrays = {k: f[f"exchange/{k}"][()] for k in ("data", "data_white", "data_dark")}
        truth = f["truth/flatfield"][()].astype(np.float64)
    dark = arrays["data_dark"].astype(np.float64).mean(0)
    ideal = (arrays["data"] - dark) / (truth * cfg.detector.photons_per_frame / size**2)
    return {**arrays, "ideal": ideal}


def bench_flatfield(size: int = 64, frames: int = 64, flats: int = 32, repeats: int = 5, strength: float = 1.0,
                    device: str = "cpu") -> dict[str, Any]:
    """Residual flat-field error of mean, median and PCA flats (K eigen-flats x fit binning), median over
    ``repeats`` simulated archives; ``mean_over_pca``: how many times smaller the default PCA's error is than
    the mean flat's; ``pca_speed_vs_mean``: the default PCA correction's frames/s over the mean flat's."""
    binning = fit_binning((size, size))
    ks = sorted({k for k in (4, 8, DEFAULT_EIGENFLATS, flats - 1) if 1 <= k <= flats - 1})
    default_k = min(DEFAULT_EIGENFLATS, flats - 1)
    bins = sorted({1, binning, 2 * binning, 4 * binning} & set(range(1, size + 1)))
    errors: dict[str, list[float]] = {}
    speed: list[float] = []
    mean_fps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="phasegan-bench-flatfield-") as tmp:
        for seed in range(repeats):
            a = _archive(Path(tmp), size, frames, flats, seed, strength)
            raw, white, dark = a["data"], a["data_white"], a["data_dark"]
            correctors: dict[str, Any] = {
                "mean": FlatfieldCorrector(white, dark),
                "median": FlatfieldCorrector(np.median(white.astype(np.float64), axis=0),
                                             np.median(dark.astype(np.float64), axis=0)),
            }
            for k in ks:
                for b in bins:
                    correctors[f"pca_k{k}_bin{b}"] = DynamicFlatfieldCorrector(white, dark, n_components=k, binning=b)
            correctors[f"pca_k{default_k}_bin{binning}_norefit"] = DynamicFlatfieldCorrector(
                white, dark, n_components=default_k, binning=binning, iterations=0)
            for name, correct in correctors.items():
                errors.setdefault(name, []).append(flatfield_error(correct(raw), a["ideal"]))
            default = correctors[f"pca_k{default_k}_bin{binning}"]
            times = interleaved_times({"mean": partial(correctors["mean"], raw), "pca": partial(default, raw)}, 5)
            speed.append(statistics.median(m / p for m, p in zip(times["mean"], times["pca"], strict=True)))
            mean_fps.append(frames / statistics.median(times["mean"]))
    median_errors = {name: statistics.median(v) for name, v in errors.items()}
    default_name = f"pca_k{default_k}_bin{binning}"
    return {"benchmark": "flatfield", **machine(device), "size": size, "frames": frames, "flats": flats,
            "strength": strength, "repeats": repeats, "default": default_name, "error": median_errors,
            "mean_over_pca": median_errors["mean"] / median_errors[default_name],
            "mean_frames_s": statistics.median(mean_fps), "pca_speed_vs_mean": statistics.median(speed)}
