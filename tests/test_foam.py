"""The experimental pipeline of paper §4 on the simulated foam: TIE object domain, cross-resolution networks,
field-of-view-matched augmentation, and the whole chain (simulate-foam -> tie -> correct -> train through Ray
Train -> reconstruct -> evaluate -> movie figure) at a tiny size, with real HDF5 files and a real local Ray."""

import json
import subprocess

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import torch
from tools import EXE, REPO

from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.augment import crop_flip_rotate_pad
from phasegan_hpc.data.frames import open_training_data
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.cycle import DetectorModel, GeneratorPair
from phasegan_hpc.models.registry import build_from_arch, generator_arch
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.reconstruct import ReconstructRequest, Tie, reconstruct
from phasegan_hpc.simulate.foam import simulate_foam
from phasegan_hpc.train.loop import network_shapes

TINY = REPO / "configs" / "foam-tiny.toml"


def run_cli(*args, cwd=None, timeout=600):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def rel_error(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.linalg.norm(p - q) / np.linalg.norm(q))


@pytest.mark.slow
def test_tie_recovers_the_foam_phase_in_the_tie_regime(tmp_path):
    # Large cells with smooth walls, short distance, no detector blur: Paganin's assumptions hold.
    cfg = with_overrides(load_config(TINY), {
        "foam.cell_radius_m": 40e-6, "foam.wall_m": 12e-6, "foam.photron_blur_px": 0.0, "phantom.delta": 4e-6,
        "phantom.beta": 4e-9, "physics.distance_m": 1e-3, "foam.photron_frames": 1, "foam.shimadzu_frames": 1,
        "foam.validation_frames": 4, "foam.movie_frames": 4})
    raw = tmp_path / "raw"
    simulate_foam(raw, cfg)
    s = reconstruct(ReconstructRequest(raw / "photron_movie.h5", output=tmp_path / "objects.h5",
                                       method=Tie(1.6e-6, 0.0, 100), backend="local", preview=False))
    with h5py.File(s.output, "r") as f, h5py.File(raw / "photron_validation.h5", "r") as g:
        phase, truth = f["phase"][()], g["phase"][()]
        assert f.attrs["pixel_size_m"] == pytest.approx(1.6e-6) and f.attrs["detector_pixel_size_m"] == 2e-6
    assert phase.shape == truth.shape == (4, 50, 100)  # 40 x 80 px at 2 um resampled to 1.6 um
    assert rel_error(phase, truth) < 0.06
    # TV denoising (paper: 100 iterations) smooths: the retrieved phase varies less from pixel to pixel.
    tv = reconstruct(ReconstructRequest(raw / "photron_movie.h5", output=tmp_path / "tv.h5",
                                        method=Tie(1.6e-6, 0.05, 100), backend="local", preview=False))
    with h5py.File(tv.output, "r") as f:
        smooth = f["phase"][()]
    assert np.abs(np.diff(smooth, axis=-1)).mean() < np.abs(np.diff(phase, axis=-1)).mean()


def test_cross_resolution_networks_shapes_and_pixel_sizes():
    cfg = load_config(TINY)
    m = cfg.model
    g_o, g_d = build_from_arch(generator_arch(m, "g_o")), build_from_arch(generator_arch(m, "g_d"))
    assert generator_arch(m, "g_o")["resize"] == "up2" and generator_arch(m, "g_d")["resize"] == "down2"
    prop = FresnelPropagator((64, 64), pixel_size_m=cfg.physics.pixel_size_m, distance_m=cfg.physics.distance_m,
                             energy_kev=cfg.physics.energy_kev)
    from phasegan_hpc.data.normalise import Normalisation

    gens = GeneratorPair(g_o, g_d, DetectorModel(prop, Normalisation(1.0, 0.1, (-5.0, 0.02), (2.0, 0.01))))
    out = gens(torch.randn(3, 1, 32, 32), torch.randn(3, 2, 64, 64))
    assert out.fake_object.shape == (3, 2, 64, 64)  # 32 px at 3.2 um -> 64 px at 1.6 um
    assert out.reconstructed_intensity.shape == (3, 1, 32, 32)  # G_D |H G_O(I)|^2 back on the detector grid
    assert out.fake_intensity.shape == (3, 1, 32, 32) and out.reconstructed_object.shape == (3, 2, 64, 64)
    with pytest.raises(ValueError, match="multiples of 64"):
        g_d(torch.randn(1, 1, 32, 32))


def test_augmentation_keeps_the_fields_of_view_matched():
    cfg = load_config(TINY)
    t = cfg.train
    # 24 px at 3.2 um and 48 px at 1.6 um are the same 76.8 um (paper: 100 px at 3.2 um, 200 px at 1.6 um)
    assert t.detector_crop * cfg.foam.shimadzu_pixel_m == pytest.approx(t.object_crop * cfg.physics.pixel_size_m)
    rng = np.random.default_rng(0)
    frames = np.arange(2 * 50 * 100, dtype=np.float32).reshape(1, 2, 50, 100).repeat(6, axis=0)
    out = crop_flip_rotate_pad(frames, rng, crop=48, size=64, flip=True, rotate=True)
    assert out.shape == (6, 2, 64, 64)
    for sample in out:
        inner = sample[:, 8:56, 8:56]
        # the crop is a rotated / flipped 48 x 48 window of the frame: consecutive values along one axis
        steps = {float(abs(np.diff(inner[0], axis=a)).max()) for a in (0, 1)}
        assert steps == {1.0, 100.0}
        assert set(np.unique(inner[1] - inner[0])) == {50 * 100}  # both channels cropped alike
        assert np.all(sample[:, :8] == sample[:, 8:9])  # edge padding
    # the two domains' network sizes are checked against [model] upsample
    data = type("D", (), {"shape": (32, 32), "object_shape": (50, 100)})()
    assert network_shapes(cfg, data) == ((32, 32), (64, 64))
    with pytest.raises(DataError, match="do not match detector frames"):
        network_shapes(with_overrides(cfg, {"train.object_size": 96}), data)
    with pytest.raises(DataError, match="object_crop = 72 is larger than the object frames"):
        network_shapes(with_overrides(cfg, {"train.object_size": 96, "train.object_crop": 72}), data)


@pytest.mark.slow
def test_foam_chain_through_ray_train_reconstruct_and_evaluate(foam_data, ray_cluster, tmp_path):
    from phasegan_hpc.models.artifact import load_model
    from phasegan_hpc.train.fit import fit

    data = open_training_data(foam_data / "data", paired=False, upsample=2)
    assert data.object_shape == (50, 100) and data.shape == (32, 32)
    assert data.geometry.pixel_size_m == pytest.approx(1.6e-6)
    assert data.geometry.detector_pixel_size_m == pytest.approx(3.2e-6)
    cfg = with_overrides(load_config(TINY), {"train.data_dir": str(foam_data / "data"),
                                             "train.runs_dir": str(tmp_path / "runs"), "train.epochs": 1})
    result = fit(cfg, workers=1)
    model = load_model(result["model_path"])
    assert model.arch["resize"] == "up2" and model.detector is not None
    assert model.geometry.detector_pixel_size_m == pytest.approx(3.2e-6)

    raw = foam_data / "raw"
    out = tmp_path / "movie_phasegan.h5"
    s = reconstruct(ReconstructRequest(raw / "shimadzu_movie.h5", model=result["model_path"], output=out,
                                       backend="local", batch_size=8, preview=False))
    with h5py.File(out, "r") as f:
        assert f["phase"].shape == (16, 64, 64)  # 32 px frames at 3.2 um -> 64 px at 1.6 um
        assert f.attrs["pixel_size_m"] == pytest.approx(1.6e-6) and np.isfinite(f["phase"][()]).all()
    assert s.frames == 16
    table = tmp_path / "eval.json"
    ev = run_cli("evaluate", "--model", result["model_path"], "--data", raw / "shimadzu_validation.h5",
                 "--baseline", "paganin", "--json", table)
    assert ev.returncode == 0, ev.stderr
    rows = {r["method"]: r for r in json.loads(table.read_text())}
    assert set(rows) == {"phasegan", "paganin"} and all(r["n"] == 16 for r in rows.values())
    photron = run_cli("evaluate", "--data", raw / "photron_validation.h5", "--baseline", "paganin")
    assert photron.returncode == 0, photron.stderr
    fig = run_cli("movie-figure", raw / "shimadzu_movie.h5", out, "--truth", raw / "shimadzu_validation.h5",
                  "--output", tmp_path / "fig" / "foam.gif")
    assert fig.returncode == 0, fig.stderr
    assert (tmp_path / "fig" / "foam.gif").stat().st_size > 0 and (tmp_path / "fig" / "foam.png").is_file()
