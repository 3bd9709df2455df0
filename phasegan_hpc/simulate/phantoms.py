"""Random phantoms of paper §3: 1..N circles and (rotated) rectangles of one material.

Each shape has its own thickness, uniform in [0, t_max]; where shapes overlap the thicknesses add, as in
the overlapping circles of the paper's Table 1 line profile.
"""

from __future__ import annotations

import math

import numpy as np

from phasegan_hpc.config import PhantomConfig


def _circle(rng: np.random.Generator, size: int, cfg: PhantomConfig):
    r = rng.uniform(cfg.min_size, cfg.max_size) * size

    def mask(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return yy * yy + xx * xx <= r * r

    return r, mask


def _rectangle(rng: np.random.Generator, size: int, cfg: PhantomConfig):
    a, b = rng.uniform(cfg.min_size, cfg.max_size, 2) * size  # half sides
    c, s = math.cos(theta := rng.uniform(0.0, math.pi)), math.sin(theta)

    def mask(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return (np.abs(xx * c + yy * s) <= a) & (np.abs(-xx * s + yy * c) <= b)

    return math.hypot(a, b), mask


def random_thickness(rng: np.random.Generator, size: int, cfg: PhantomConfig) -> np.ndarray:
    """One random thickness map.

    Args:
        rng: random generator (consumed).
        size: image side N [px].
        cfg: shape count, sizes and maximum thickness.

    Returns:
        float64 array (N, N): projected thickness T [m], >= 0.
    """
    t = np.zeros((size, size))
    n_shapes = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(n_shapes):
        cy, cx = rng.uniform(0, size, 2)
        thickness = rng.uniform(0.0, cfg.t_max_m)
        reach, mask = (_circle if rng.random() < 0.5 else _rectangle)(rng, size, cfg)
        # Rasterise inside the bounding box only; pixel centres relative to the shape centre.
        y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 2)
        x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 2)
        yy = np.arange(y0, y1)[:, None] + 0.5 - cy
        xx = np.arange(x0, x1)[None, :] + 0.5 - cx
        t[y0:y1, x0:x1] += thickness * mask(yy, xx)
    return t
