"""Phantoms, flat-field PCA model and the photon-counting detector of paper §3."""

import numpy as np
import pytest

from phasegan_hpc.config import PhantomConfig
from phasegan_hpc.errors import DataError
from phasegan_hpc.simulate.detector import detect
from phasegan_hpc.simulate.flatfields import load_basis, pca_basis, save_basis, synthetic_flats
from phasegan_hpc.simulate.phantoms import random_thickness


def test_single_shape_phantom_is_one_flat_shape_within_t_max():
    cfg = PhantomConfig(min_objects=1, max_objects=1, min_size=0.1, max_size=0.2)
    for seed in range(20):
        t = random_thickness(np.random.default_rng(seed), 64, cfg)
        levels = np.unique(t)
        assert len(levels) == 2 and levels[0] == 0.0 and 0 < levels[1] <= cfg.t_max_m
        area = (t > 0).sum()
        # radius / half side in [6.4, 12.8] px; a shape may be cut by the border but never vanishes.
        assert 1 <= area <= np.pi * 12.8**2 + 1


def test_phantom_counts_and_overlaps_add():
    cfg = PhantomConfig()
    maps = [random_thickness(np.random.default_rng(s), 64, cfg) for s in range(30)]
    assert all(m.min() >= 0 for m in maps)
    assert max(m.max() for m in maps) > cfg.t_max_m  # overlapping shapes add their thickness
    assert max(m.max() for m in maps) <= cfg.max_objects * cfg.t_max_m


def test_poisson_statistics_match_photon_count():
    rng = np.random.default_rng(0)
    photons = 6.6e7 * (64 * 64) / (256 * 256)  # paper: 6.6e7 per 256^2 frame -> ~1007 per pixel
    frames = detect(rng, np.full((50, 64, 64), 0.7), photons)
    per_pixel = photons / (64 * 64)
    assert frames.dtype == np.float32
    assert frames.mean() == pytest.approx(0.7, rel=2e-3)
    # Poisson: var(counts) = mean(counts) -> var(I) = 0.7 / per_pixel
    assert frames.var() * per_pixel / 0.7 == pytest.approx(1.0, rel=0.03)
    # total photons per frame as configured (times the mean intensity)
    assert (frames.sum(axis=(1, 2)) * per_pixel).mean() == pytest.approx(0.7 * photons, rel=1e-3)


def test_pca_basis_of_synthetic_flats():
    flats = synthetic_flats(np.random.default_rng(1), 60, 32)
    assert flats.mean() == pytest.approx(1.0) and flats.min() > 0
    basis = pca_basis(flats, 6)
    comps = basis.components.reshape(6, -1)
    np.testing.assert_allclose(comps @ comps.T, np.eye(6), atol=1e-10)
    assert np.all(np.diff(basis.std) <= 0) and basis.std[0] > 0
    # Sampled flats have the model's coefficient spreads along the components.
    samples = basis.sample(np.random.default_rng(2), 4000)
    proj = (samples - basis.mean).reshape(4000, -1) @ comps.T
    np.testing.assert_allclose(proj.std(axis=0), basis.std, rtol=0.08)
    # The basis explains most of the variance of the flats it came from.
    centred = (flats / flats.mean() - basis.mean).reshape(60, -1)
    resid = centred - (centred @ comps.T) @ comps
    assert (resid**2).sum() < 0.2 * (centred**2).sum()


def test_basis_file_round_trip_and_resampling(tmp_path):
    basis = pca_basis(synthetic_flats(np.random.default_rng(3), 20, 32), 5)
    path = tmp_path / "basis.h5"
    save_basis(path, basis)
    same = load_basis(path, 32, 5)
    np.testing.assert_allclose(same.components, basis.components)
    np.testing.assert_allclose(same.mean, basis.mean)
    small = load_basis(path, 16, 3)
    assert small.mean.shape == (16, 16) and small.components.shape == (3, 16, 16)
    assert small.mean.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(small.components.reshape(3, -1), axis=1), 1.0)
    with pytest.raises(DataError, match="has 5 components"):
        load_basis(path, 32, 9)
    with pytest.raises(DataError, match="not found"):
        load_basis(tmp_path / "nope.h5", 32, 5)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_basis(tmp_path / "junk.h5", 32, 5)
