"""Photon-counting detector model (paper §3): Poisson noise at a given photon count per frame."""

from __future__ import annotations

import numpy as np


def detect(rng: np.random.Generator, intensity: np.ndarray, photons_per_frame: float) -> np.ndarray:
    """Record noiseless intensities with a photon-counting detector.

    Args:
        rng: random generator (consumed).
        intensity: float (..., H, W), relative intensity (1.0 = the mean free beam).
        photons_per_frame: expected counts in a frame of intensity 1 everywhere; per pixel that is
            photons_per_frame / (H W) (paper: 6.6e7 / 256^2 = 1007).

    Returns:
        float32 (..., H, W): counts / photons-per-pixel, so the free beam reads about 1 and a pixel with
        mean m has variance m / photons-per-pixel.
    """
    h, w = intensity.shape[-2:]
    per_pixel = photons_per_frame / (h * w)
    counts = rng.poisson(np.maximum(intensity, 0.0) * per_pixel)
    return (counts / per_pixel).astype(np.float32)
