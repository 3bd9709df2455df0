"""One model, every path: both object encodings train, export, reload, and give the same arrays through
`PhaseModel.retrieve`, `evaluate`, `reconstruct` (local, Ray, MPI) and the reconstruction's score."""

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tools import EXE, MPIEXEC

from phasegan_hpc.config import with_overrides
from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.evaluate import evaluate
from phasegan_hpc.losses.metrics import METRICS
from phasegan_hpc.models.artifact import PhaseModel, load_model
from phasegan_hpc.physics import FresnelPropagator
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.train.local import train_local

pytestmark = pytest.mark.slow


def decode_by_hand(model: PhaseModel, frames: np.ndarray) -> np.ndarray:
    """G_O written out longhand in float64 after the network: (N, H, W) -> (N, 2, H, W) phase, attenuation."""
    n = model.normalisation
    with torch.no_grad():
        out = model.generator(n.norm_intensity(torch.from_numpy(frames)[:, None])).double().numpy()
    c = out * np.array(n.object_std)[None, :, None, None] + np.array(n.object_mean)[None, :, None, None]
    if model.output == "phase_attenuation":
        return c
    return np.stack([np.arctan2(c[:, 1], c[:, 0]), -np.log(c[:, 0] ** 2 + c[:, 1] ** 2)], 1)


@pytest.mark.parametrize("output", ["real_imag", "phase_attenuation"])
def test_every_path_gives_the_same_arrays(output, tiny_train_config, tiny_data, tmp_path, ray_cluster):
    cfg = with_overrides(tiny_train_config, {"model.output": output, "train.epochs": 1, "train.name": output})
    model_path = Path(train_local(cfg)["model_path"])
    model = load_model(model_path)
    assert model.output == output and model.normalisation.object_std[0] == model.normalisation.object_std[1]
    val = FrameStack(tiny_data / "validation.h5", ("intensity", "phase", "attenuation"))[np.arange(8)]
    frames = val[:, 0]
    phase, att = model.retrieve(torch.from_numpy(frames))
    np.testing.assert_allclose(torch.stack([phase, att], 1).numpy(), decode_by_hand(model, frames), atol=1e-5)

    # A reload gives the same arrays; so does a save of the reloaded model (the only writer).
    again = PhaseModel.load(model.save(tmp_path / "copy.pt"))
    assert torch.equal(again.retrieve(torch.from_numpy(frames))[0], phase)

    # evaluate scored exactly these arrays.
    (row,) = evaluate(model_path, tiny_data / "validation.h5")
    expected = METRICS["l2"](phase.double(), torch.from_numpy(val[:, 1]).double()).numpy()
    np.testing.assert_allclose(row.per_frame["phase_l2"], expected, rtol=1e-6, atol=1e-12)

    # reconstruct, every backend, on the same frames as a float32 archive (no flats: used as they are).
    archive = tmp_path / "movie.h5"
    with h5py.File(archive, "w") as f:
        f.create_dataset("frames", data=frames, chunks=(2, 64, 64))
    outs = {"local": reconstruct(ReconstructRequest(archive, model=model_path, output=tmp_path / "local.h5",
                                                    backend="local", batch_size=3, shard_frames=4, preview=False))}
    if output == "phase_attenuation":  # the default encoding's backends are compared in test_reconstruct
        outs["ray"] = reconstruct(ReconstructRequest(archive, model=model_path, output=tmp_path / "ray.h5",
                                                     backend="ray", workers=2, batch_size=3, shard_frames=4,
                                                     preview=False))
        proc = subprocess.run([MPIEXEC, "-n", "2", EXE, "reconstruct", str(archive), "--model", str(model_path),
                               "--backend", "mpi", "--output", str(tmp_path / "mpi.h5"), "--batch-size", "3",
                               "--shard-frames", "4", "--no-preview"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs["mpi"] = None
    for name in outs:
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            np.testing.assert_allclose(f["phase"][()], phase.numpy(), atol=1e-6, err_msg=name)
            np.testing.assert_allclose(f["attenuation"][()], att.numpy(), atol=1e-6, err_msg=name)
            score = f["consistency"][()]
        # the score: relative L1 of G_D|H psi|^2 against the frame, recomputed here
        prop = FresnelPropagator((64, 64), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
        holo = prop.intensity(torch.polar(torch.exp(-0.5 * att), phase))
        n = model.normalisation
        with torch.no_grad():
            pred = n.denorm_intensity(model.detector(n.norm_intensity(holo[:, None])))[:, 0].numpy()
        ref = np.abs(pred - frames).mean(axis=(1, 2)) / np.abs(frames).mean(axis=(1, 2))
        np.testing.assert_allclose(score, ref, rtol=1e-4, err_msg=name)
