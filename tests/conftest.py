"""Shared fixtures: tiny configurations so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray-using tests (later issues) must start quietly; set before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

from tools import EXE, REPO

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




@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 64 px data set (configs/tiny.toml physics): 32 unpaired + 32 paired training frames, 8 validation."""
    from phasegan_hpc.simulate import simulate_dataset

    out = tmp_path_factory.mktemp("tiny-data") / "data"
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "simulate.n_train": 32, "simulate.n_val": 8, "simulate.n_paired": 32, "simulate.chunk_frames": 16,
        "simulate.workers": 1, "flatfield.n_flats": 20, "flatfield.n_components": 4,
    })
    simulate_dataset(out, cfg)
    return out


@pytest.fixture
def tiny_train_config(tiny_data, tmp_path) -> Config:
    """configs/tiny.toml training on ``tiny_data``: 4 steps per epoch (batch 8), runs under tmp_path."""
    return with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.data_dir": str(tiny_data), "train.runs_dir": str(tmp_path / "runs"), "train.epochs": 2,
        "train.val_frames": 8, "train.log_every": 1, "train.checkpoint_every": 3,
    })


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (2 CPUs, no dashboard); yields its GCS address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """One real one-node Slurm cluster (phasegan_hpc/testbed/slurm.py) for the whole session: test_slurm.py's and
    test_slurm_requeue.py's jobs share it, so its daemons start once."""
    from phasegan_hpc.testbed import slurm as slurm_cluster

    cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def foam_data(tmp_path_factory) -> Path:
    """The tiny foam experiment (configs/foam-tiny.toml) through the real console script: simulate-foam ->
    tie (Photron, 2 -> 1.6 um, TV) -> correct (Shimadzu). ``raw/`` holds the archives and truth, ``data/``
    the training set (objects.h5 at 1.6 um, intensities.h5 at 3.2 um)."""
    import subprocess

    root = tmp_path_factory.mktemp("foam")
    steps = [("simulate-foam", root / "raw", "--config", REPO / "configs" / "foam-tiny.toml"),
             ("tie", root / "raw" / "photron.h5", "--output", root / "data" / "objects.h5", "--resample-pixel-size-m",
              "1.6e-6", "--backend", "local"),
             ("correct", root / "raw" / "shimadzu.h5", "--output", root / "data" / "intensities.h5", "--backend",
              "local")]
    for step in steps:
        proc = subprocess.run([EXE, *map(str, step)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="session")
def movie_model(tiny_data, tmp_path_factory) -> str:
    """A PhaseGAN model (with G_D) trained for one epoch on the tiny 64 px data: the reconstruction tests'."""
    from phasegan_hpc.train.local import train_local

    runs = tmp_path_factory.mktemp("recon-runs")
    cfg = with_overrides(load_config(REPO / "configs" / "tiny.toml"), {
        "train.data_dir": str(tiny_data), "train.runs_dir": str(runs), "train.epochs": 1, "train.name": "m",
        "train.val_frames": 4, "train.log_every": 4, "train.checkpoint_every": 100})
    return train_local(cfg)["model_path"]


@pytest.fixture(scope="session")
def movie(tiny_data) -> dict:
    """22 detector frames (64 px, transmission about 1) with a flat and a dark to make raw counts of
    (``movies.write_dxchange``)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(5)
    with h5py.File(tiny_data / "validation.h5", "r") as f:
        inten = f["intensity"][()]
    frames = np.concatenate([inten, inten[:, ::-1], inten[:, :, ::-1]])[:22]
    flat = 900.0 + 200.0 * rng.random((64, 64))
    dark = 50.0 + 5.0 * rng.random((64, 64))
    return {"transmission": frames.astype(np.float64), "flat": flat, "dark": dark}
