"""`simulate_dataset` writes DESIGN.md §4's training and validation files, with the paper's §3 physics."""

import dataclasses
import hashlib

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.errors import DataError
from phasegan_hpc.physics import FresnelPropagator, object_wavefield
from phasegan_hpc.simulate import FrameSimulator, simulate_dataset


@pytest.fixture
def dataset(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    simulate_dataset(out, tiny_config)
    return out


def read(path, *names):
    with h5py.File(path, "r") as f:
        return [f[n][()] for n in names]


def test_files_follow_the_data_contract(dataset, tiny_config):
    n, m, s = tiny_config.simulate.n_train, tiny_config.simulate.n_val, tiny_config.simulate.size
    layout = {
        "objects.h5": {"phase": n, "attenuation": n},
        "intensities.h5": {"intensity": n},
        "validation.h5": {"intensity": m, "phase": m, "attenuation": m, "flatfield": m},
    }
    assert sorted(p.name for p in dataset.iterdir()) == sorted(layout)  # no paired.h5 unless asked
    for name, datasets in layout.items():
        with h5py.File(dataset / name, "r") as f:
            assert set(f.keys()) == set(datasets)
            for key, count in datasets.items():
                ds = f[key]
                assert ds.dtype == np.float32 and ds.shape == (count, s, s)
                assert ds.chunks == (1, s, s)
                assert str(hdf5plugin.BLOSC_ID) in ds._filters  # compressed
                assert "units" in ds.attrs
            assert f.attrs["pixel_size_m"] == 1e-6 and f.attrs["wavelength_m"] == 1e-10
            assert f.attrs["distance_m"] == 0.1 and f.attrs["seed"] == 7
            assert "[simulate]" in f.attrs["config"]


def test_objects_have_paper_phase_and_attenuation(dataset, tiny_config):
    phase, att = read(dataset / "objects.h5", "phase", "attenuation")
    # Single material: phase / attenuation = -delta / (2 beta) wherever there is material.
    mask = att > 1e-6
    np.testing.assert_allclose(phase[mask] / att[mask], -1e-3 / 2e-6, rtol=1e-3)
    assert phase.max() <= 0 and phase.min() < -0.1  # tens of nm of material -> tenths of a radian


def _chi2(intensity, phase, att, flats, cfg):
    """Mean squared Poisson-normalised residual of intensities against their objects' forward model."""
    prop = FresnelPropagator((cfg.simulate.size,) * 2, pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    psi = object_wavefield(torch.from_numpy(phase).double(), torch.from_numpy(att).double())
    model = prop.intensity(psi * torch.from_numpy(np.sqrt(flats)).double()).numpy()
    per_pixel = cfg.detector.photons_per_frame / cfg.simulate.size**2
    return float(np.mean((intensity - model) ** 2 / (model / per_pixel))), model, per_pixel


def test_validation_intensities_are_explained_by_their_own_objects(dataset, tiny_config):
    inten, phase, att, flats = read(dataset / "validation.h5", "intensity", "phase", "attenuation", "flatfield")
    chi2, model, per_pixel = _chi2(inten, phase, att, flats, tiny_config)
    assert chi2 == pytest.approx(1.0, abs=0.1)  # Poisson noise at the configured photon count, nothing else
    # Photon budget: counted photons agree with the model's expectation to Poisson precision.
    counts, expected = inten.sum() * per_pixel, model.sum() * per_pixel
    assert abs(counts - expected) < 5 * np.sqrt(expected)
    assert np.mean(flats) == pytest.approx(1.0, abs=0.15)
    # Shifting the pairing by one frame breaks it.
    chi2_wrong, _, _ = _chi2(inten, np.roll(phase, 1, 0), np.roll(att, 1, 0), flats, tiny_config)
    assert chi2_wrong > 3.0


def test_training_sets_are_unpaired_and_distinct_from_validation(dataset, tiny_config):
    (inten,) = read(dataset / "intensities.h5", "intensity")
    phase, att = read(dataset / "objects.h5", "phase", "attenuation")
    (vphase,) = read(dataset / "validation.h5", "phase")
    # Detector frames are not images of the object set (independent draws): no flat field explains them.
    chi2, _, _ = _chi2(inten, phase, att, np.ones_like(phase), tiny_config)
    assert chi2 > 3.0
    # No validation object appears among the training objects.
    train_hashes = {hashlib.sha1(p.tobytes()).hexdigest() for p in phase}
    assert not any(hashlib.sha1(p.tobytes()).hexdigest() in train_hashes for p in vphase)
    assert len(train_hashes) == len(phase)


def test_output_does_not_depend_on_worker_count(tiny_config, tmp_path):
    cfg1 = tiny_config
    cfg2 = with_overrides(tiny_config, {"simulate.workers": 2})
    simulate_dataset(tmp_path / "one", cfg1)
    simulate_dataset(tmp_path / "two", cfg2)
    for name, keys in [("objects.h5", ("phase", "attenuation")), ("validation.h5", ("intensity", "flatfield"))]:
        for a, b in zip(read(tmp_path / "one" / name, *keys), read(tmp_path / "two" / name, *keys), strict=True):
            np.testing.assert_array_equal(a, b)
    # ... but does depend on the seed.
    simulate_dataset(tmp_path / "other", with_overrides(tiny_config, {"simulate.seed": 8}))
    assert not np.array_equal(read(tmp_path / "one" / "objects.h5", "phase")[0],
                              read(tmp_path / "other" / "objects.h5", "phase")[0])


def _snapshot(d):
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest()) for p in d.iterdir()}


def test_non_empty_output_needs_overwrite(tiny_config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(DataError, match="not empty"):
        simulate_dataset(out, tiny_config)
    assert _snapshot(out) == before
    simulate_dataset(out, tiny_config, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert {"objects.h5", "intensities.h5", "validation.h5"} <= {p.name for p in out.iterdir()}


def test_crash_leaves_no_finished_looking_file(tiny_config, tmp_path, monkeypatch):
    calls = []

    def failing_chunk(self, stream, index, start, stop):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(self, stream, index, start, stop)

    original = FrameSimulator.chunk
    monkeypatch.setattr(FrameSimulator, "chunk", failing_chunk)
    with pytest.raises(RuntimeError, match="simulated crash"):
        simulate_dataset(tmp_path / "out", tiny_config)
    assert list((tmp_path / "out").iterdir()) == []  # no final name, and the partial files are gone


def test_real_basis_file_is_used(tiny_config, tmp_path):
    from phasegan_hpc.simulate.flatfields import FlatfieldBasis, save_basis

    s = tiny_config.simulate.size
    ramp = np.linspace(0.5, 1.5, s)[None, :].repeat(s, 0)
    comp = np.zeros((4, s, s))
    comp[np.arange(4), np.arange(4), 0] = 1.0
    save_basis(tmp_path / "b.h5", FlatfieldBasis(ramp, comp, np.zeros(4)))
    cfg = dataclasses.replace(tiny_config, flatfield=dataclasses.replace(tiny_config.flatfield,
                                                                          basis_file=str(tmp_path / "b.h5")))
    simulate_dataset(tmp_path / "out", cfg)
    (flats,) = read(tmp_path / "out" / "validation.h5", "flatfield")
    np.testing.assert_allclose(flats[0], ramp / ramp.mean(), rtol=1e-6)


def test_bad_basis_file_changes_nothing(tiny_config, tmp_path):
    cfg = dataclasses.replace(tiny_config, flatfield=dataclasses.replace(tiny_config.flatfield,
                                                                          basis_file=str(tmp_path / "missing.h5")))
    with pytest.raises(DataError, match="not found"):
        simulate_dataset(tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_paired_training_set_is_paired_and_new(tiny_config, tmp_path):
    cfg = with_overrides(tiny_config, {"simulate.n_paired": 5})
    simulate_dataset(tmp_path / "out", cfg)
    inten, phase, att, flats = read(tmp_path / "out" / "paired.h5", "intensity", "phase", "attenuation", "flatfield")
    assert inten.shape == (5, 32, 32)
    assert _chi2(inten, phase, att, flats, cfg)[0] == pytest.approx(1.0, abs=0.15)
    (vphase,) = read(tmp_path / "out" / "validation.h5", "phase")
    assert not any(np.array_equal(p, v) for p in phase for v in vphase)


def test_no_validation_frames_gives_empty_paired_set(tiny_config, tmp_path):
    simulate_dataset(tmp_path / "out", with_overrides(tiny_config, {"simulate.n_val": 0}))
    with h5py.File(tmp_path / "out" / "validation.h5", "r") as f:
        assert f["intensity"].shape == (0, 32, 32) and f["phase"].shape == (0, 32, 32)


def test_default_config_is_the_paper_scale():
    cfg = load_config(None)
    assert (cfg.simulate.n_train, cfg.simulate.size) == (10000, 256)
