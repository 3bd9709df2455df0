"""Shared fixtures: tiny configurations so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import pytest

# Ray-using tests (later issues) must start quietly; set before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

from phasegan_hpc.config import Config, load_config, with_overrides  # noqa: E402


@pytest.fixture
def tiny_config() -> Config:
    """Paper §3 physics on 32 x 32 frames, a handful of frames, 4 flat-field components."""
    return with_overrides(load_config(None), {
        "simulate.size": 32, "simulate.n_train": 12, "simulate.n_val": 6, "simulate.chunk_frames": 4,
        "simulate.workers": 1, "simulate.seed": 7,
        "flatfield.n_components": 4, "flatfield.n_flats": 16,
        "detector.photons_per_frame": 6.6e7 * (32 * 32) / (256 * 256),  # paper's ~1007 photons per pixel
    })
