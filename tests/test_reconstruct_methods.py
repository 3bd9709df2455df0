"""Retrieval methods (reconstruct/methods.py) through the pipeline, against independent references."""


import h5py
import numpy as np
import pytest
from movies import corrected_reference, read, write_dxchange

from phasegan_hpc.physics import paganin
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

pytestmark = pytest.mark.slow


def test_paganin_through_the_pipeline(movie, tmp_path):
    archive = write_dxchange(tmp_path / "p.h5", movie, n=10)
    s = reconstruct(ReconstructRequest(archive, method="paganin", backend="local", batch_size=4, preview=False,
                                       physics={"delta_beta": 1000.0, "pixel_size_m": 1e-6, "distance_m": 0.1,
                                                "energy_kev": 12.398419843}))
    assert s.output.name == "p_paganin.h5"
    out = read(s.output)
    with h5py.File(archive, "r") as f:
        corr = corrected_reference(movie, f["exchange/data"][()], f["exchange/data_white"][()],
                                   f["exchange/data_dark"][()])
    phase, att = paganin(corr.astype(np.float64), pixel_size_m=1e-6, distance_m=0.1, delta_beta=1000.0,
                         energy_kev=12.398419843)
    np.testing.assert_allclose(out["phase"], phase, rtol=1e-4, atol=1e-3)  # float32 FFTs vs float64
    np.testing.assert_allclose(out["attenuation"], att, rtol=1e-4, atol=1e-6)



def _detector_archive(path, frames, flat, dark):
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=frames, chunks=(3, *frames.shape[1:]))
        f["exchange/data_white"] = flat[None]
        f["exchange/data_dark"] = dark[None]
    return path


def _shimadzu(movie):
    """Six 250 x 400 uint16 frames (the HPV-X2's size) tiled from the movie, their flat and dark."""
    t = np.tile(movie["transmission"][:6], (1, 4, 7))[:, :250, :400]
    flat = np.tile(movie["flat"], (4, 7))[:250, :400]
    dark = np.tile(movie["dark"], (4, 7))[:250, :400]
    raw = np.round(t * (flat - dark) + dark).astype(np.uint16)
    return raw, np.round(flat).astype(np.uint16), np.round(dark).astype(np.uint16)


@pytest.mark.slow
def test_any_frame_size_equals_a_padded_reference_on_its_region(movie_model, movie, tmp_path):
    """A 250 x 400 archive (sides not multiples of 32) is padded to 256 x 416 by reflection, half on each side,
    and cropped back: equal, bit for bit, to the reconstruction of an archive padded by hand with numpy; its
    scores compare only the frame's own pixels (against a float64 reference on the region)."""
    import torch

    from phasegan_hpc.models.artifact import load_model
    from phasegan_hpc.physics.consistency import fresnel_residual, onto_frames

    raw, flat, dark = _shimadzu(movie)
    pad = ((0, 0), (3, 3), (8, 8))
    small = _detector_archive(tmp_path / "hpvx2.h5", raw, flat, dark)
    padded = _detector_archive(tmp_path / "padded.h5", np.pad(raw, pad, mode="reflect"),
                               np.pad(flat, pad[1:], mode="reflect"), np.pad(dark, pad[1:], mode="reflect"))
    common = dict(model=movie_model, backend="local", batch_size=3, shard_frames=6, preview=False)
    s = reconstruct(ReconstructRequest(small, output=tmp_path / "small.h5", **common))
    reconstruct(ReconstructRequest(padded, output=tmp_path / "padded_out.h5", **common))
    got, ref = read(tmp_path / "small.h5"), read(tmp_path / "padded_out.h5")
    region = (slice(None), slice(3, 253), slice(8, 408))
    assert got["phase"].shape == (6, 250, 400) and s.frames == 6
    for k in ("phase", "attenuation"):
        np.testing.assert_array_equal(got[k], ref[k][region], err_msg=k)
    # Scores on the region only: the padded object's prediction, cropped, against the frames (float64).
    model = load_model(movie_model)
    corrected = corrected_reference(movie, raw, flat, dark).astype(np.float64)
    phase, att = (torch.from_numpy(ref[k]) for k in ("phase", "attenuation"))
    hologram = model.hologram(phase, att)
    predicted = model.predict_intensity(phase, att, (256, 416), hologram).double().numpy()[region]
    consistency = np.abs(predicted - corrected).mean(axis=(1, 2)) / np.abs(corrected).mean(axis=(1, 2))
    np.testing.assert_allclose(got["consistency"], consistency, rtol=1e-5)
    frames = torch.from_numpy(corrected)
    residual = fresnel_residual(frames, onto_frames(hologram, (256, 416))[region].double())
    np.testing.assert_allclose(got["fresnel_residual"], residual.numpy(), rtol=1e-5)
    assert not np.allclose(got["consistency"], ref["consistency"], rtol=1e-3)  # the padding is not scored


@pytest.mark.slow
def test_a_region_of_interest_equals_the_same_pixels_stored_alone(movie_model, movie, tmp_path):
    raw, flat, dark = _shimadzu(movie)
    whole = _detector_archive(tmp_path / "hpvx2.h5", raw, flat, dark)
    y, x = slice(10, 74), slice(100, 164)
    alone = _detector_archive(tmp_path / "alone.h5", raw[:, y, x], flat[y, x], dark[y, x])
    common = dict(model=movie_model, backend="local", batch_size=3, shard_frames=6, preview=False)
    reconstruct(ReconstructRequest(whole, output=tmp_path / "roi.h5", roi="10:74,100:164", **common))
    reconstruct(ReconstructRequest(alone, output=tmp_path / "alone_out.h5", **common))
    got, ref = read(tmp_path / "roi.h5"), read(tmp_path / "alone_out.h5")
    for k in got:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    with h5py.File(tmp_path / "roi.h5") as f:
        assert f["phase"].shape == (6, 64, 64) and list(f.attrs["roi"]) == [10, 74, 100, 164]
