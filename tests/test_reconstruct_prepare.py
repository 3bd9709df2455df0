"""Frame preparation on the device (``--correct-on device``: torch, here on the CPU) against the host's numpy
path, and the float16 output (``--output-dtype``) against the float32 one rounded."""

import h5py
import numpy as np
import pytest
import torch
from movies import DATASETS, counts, read, write_dxchange

from phasegan_hpc.data.archive import FrameReader, open_archive
from phasegan_hpc.physics import FlatfieldCorrector
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.prepare import count_negative, count_negative_tensor, sanitise, sanitise_tensor


def _hostile_batch(rng: np.random.Generator) -> np.ndarray:
    """Six 9 x 7 frames: clean; a NaN (even finite count); NaN and +-inf (odd count); all NaN; one finite
    pixel; negatives next to -inf."""
    b = rng.normal(1.0, 0.5, (6, 9, 7)).astype(np.float32)
    b[1, 2, 3] = np.nan
    b[2, 0, :2] = np.inf
    b[2, 5, 5] = -np.inf
    b[2, 8, 6] = np.nan
    b[3] = np.nan
    b[4] = np.nan
    b[4, 4, 4] = 0.25
    b[5, 0, 0] = -np.inf
    b[5, 1, :3] = -0.5
    return b


def test_sanitise_and_count_on_a_tensor_equal_numpy_bit_for_bit():
    b = _hostile_batch(np.random.default_rng(0))
    clean, nonfinite = sanitise(b)
    t_clean, t_nonfinite = sanitise_tensor(torch.from_numpy(b.copy()))
    np.testing.assert_array_equal(t_clean.numpy(), clean)
    np.testing.assert_array_equal(t_nonfinite.numpy(), nonfinite)
    assert nonfinite.tolist() == [0, 1, 4, 63, 62, 1]
    # The replacement is the median of the frame's finite pixels (np.median: mean of the two middle values).
    assert clean[1, 2, 3] == np.median(np.delete(b[1].ravel(), 2 * 7 + 3))
    assert (clean[3] == 1.0).all() and (clean[4] == 0.25).all()
    np.testing.assert_array_equal(count_negative_tensor(torch.from_numpy(b)).numpy(), count_negative(b))
    assert count_negative(b)[5] == np.count_nonzero((b[5] < 0) & np.isfinite(b[5])) >= 3  # -inf: non-finite
    clean_batch = np.abs(b[:1])
    same, none = sanitise_tensor(torch.from_numpy(clean_batch))
    assert none.tolist() == [0]
    np.testing.assert_array_equal(same.numpy(), clean_batch)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int16", "float32"])
@pytest.mark.parametrize("refs", ["flats_and_darks", "flats", "darks", "none"])
def test_correction_of_raw_tensors_equals_numpy(dtype, refs):
    rng = np.random.default_rng(1)
    top = 200 if dtype == "uint8" else 4000
    raw = rng.integers(0, top, (5, 8, 6)).astype(dtype)
    flats = rng.uniform(top / 2, top, (3, 8, 6))
    darks = rng.uniform(0, top / 20, (2, 8, 6))
    flats[0, 0, 0] = flats[1, 0, 0] = flats[2, 0, 0] = 0.0  # a dead pixel: flat below dark
    corrector = FlatfieldCorrector(flats if "flats" in refs else None, darks if "darks" in refs else None,
                                   dead_value=np.nan)
    host = corrector(raw)
    device = corrector(torch.from_numpy(raw))
    assert host.dtype == np.float32 and device.dtype == torch.float32
    np.testing.assert_array_equal(device.numpy(), host)
    reference = raw.astype(np.float64)
    if "darks" in refs:
        reference = reference - darks.mean(axis=0)
    if "flats" in refs:
        denom = flats.mean(axis=0) - (darks.mean(axis=0) if "darks" in refs else 0)
        reference = np.where(denom > 1e-6, reference / np.where(denom > 1e-6, denom, 1), np.nan)
    np.testing.assert_allclose(host, reference, rtol=2e-6, atol=1e-6)
    assert np.isnan(host[:, 0, 0]).all() == ("flats" in refs)
    raw_tensor = torch.from_numpy(raw)
    corrector(raw_tensor)  # the input is never modified, even when it is float32 already
    np.testing.assert_array_equal(raw_tensor.numpy(), raw)


def _bad_archive(movie, path):
    """uint16 counts with five dead pixels (flat below dark) and 100 pixels below the dark in frame 4, and the
    same as float32 with NaN (a frame with no finite pixel too) in a second dataset."""
    t = movie["transmission"][:10]
    raw = counts(movie, t)
    raw[4, 40:50, :10] = 10  # below the dark: negative after the correction
    flat = np.stack([counts(movie, np.ones((64, 64)))] * 2)
    flat[:, 0, :5] = 40  # dead: NaN after the correction, counted and replaced
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=raw, chunks=(3, 64, 64))
        nan = raw.astype(np.float32)
        nan[2, 20:30, :10] = np.nan
        nan[7] = np.nan  # no finite pixel: NaN outputs
        f["nan/data"] = nan
        for group in ("exchange", "nan"):
            f[f"{group}/data_white"] = flat
            f[f"{group}/data_dark"] = np.stack([np.full((64, 64), 50, np.uint16)] * 2)
    return path


@pytest.mark.slow
def test_correction_on_the_device_gives_the_hosts_result(movie_model, movie, tmp_path):
    archive = _bad_archive(movie, tmp_path / "bad.h5")
    for dataset in ("exchange/data", "nan/data"):
        results = {}
        for where in ("host", "device"):
            out = tmp_path / f"{dataset.split('/')[0]}-{where}.h5"
            s = reconstruct(ReconstructRequest(archive, model=movie_model, output=out, dataset=dataset,
                                               backend="local", batch_size=4, shard_frames=6, preview=False,
                                               correct_on=where))
            results[where] = (read(out), s.nonfinite, s.negative)
        host, device = results["host"], results["device"]
        for k in DATASETS:
            np.testing.assert_array_equal(device[0][k], host[0][k], err_msg=f"{dataset}: {k}")
        assert device[1:] == host[1:]
        assert dict(host[2]) == {4: 100}
        assert dict(host[1])[0] == 5 and (dataset == "exchange/data" or dict(host[1])[7] == 64 * 64)
        assert np.isnan(host[0]["phase"][7]).all() == (dataset == "nan/data")


@pytest.mark.slow
def test_float16_output_is_the_float32_result_rounded(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=10)
    common = dict(model=movie_model, backend="local", batch_size=4, shard_frames=6, preview=False)
    reconstruct(ReconstructRequest(archive, output=tmp_path / "f32.h5", **common))
    s = reconstruct(ReconstructRequest(archive, output=tmp_path / "f16.h5", output_dtype="float16",
                                       **(common | {"preview": True})))
    assert s.preview is not None and s.preview.is_file()  # readers of the output take float16
    f32, f16 = read(tmp_path / "f32.h5"), read(tmp_path / "f16.h5")
    for k in ("phase", "attenuation"):
        assert f16[k].dtype == np.float16 and f32[k].dtype == np.float32
        np.testing.assert_array_equal(f16[k], f32[k].astype(np.float16), err_msg=k)
        # The stated precision: half an ulp, 2**-11 of the value (2**-25 absolute among float16's subnormals).
        err = np.abs(f16[k].astype(np.float64) - f32[k])
        assert (err <= np.maximum(np.abs(f32[k]) * 2.0**-11, 2.0**-25)).all(), k
    for k in ("consistency", "fresnel_residual", "nonfinite_pixels"):
        np.testing.assert_array_equal(f16[k], f32[k], err_msg=k)
    with h5py.File(tmp_path / "f16.h5") as f:
        assert f["phase"].is_virtual and f["phase"].dtype == np.float16
    assert s.computed_frames == 10
    # The shards hold half the bytes of float32 frames (compressed; scores alike in both).
    f16_bytes = sum(p.stat().st_size for p in (tmp_path / "f16.shards").rglob("shard-*.h5"))
    f32_bytes = sum(p.stat().st_size for p in (tmp_path / "f32.shards").rglob("shard-*.h5"))
    assert f16_bytes < 0.7 * f32_bytes


def test_the_reader_corrects_tensors_like_arrays(movie, tmp_path):
    archive = open_archive(write_dxchange(tmp_path / "a.h5", movie, n=6))
    reader = FrameReader(archive)
    try:
        raw = next(reader.blocks(0, 6, 6, corrected=False))
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(reader.correct(torch.from_numpy(raw)).numpy(), next(reader.blocks(0, 6, 6)))
    finally:
        reader.close()


def test_zingers_are_replaced_by_their_3x3_median_as_a_plain_loop_says():
    from phasegan_hpc.reconstruct.prepare import remove_zingers, remove_zingers_tensor

    rng = np.random.default_rng(3)
    b = rng.normal(1.0, 0.05, (3, 11, 9)).astype(np.float32)
    b[0, 4, 4] = 9.0  # inside
    b[1, 0, 0] = 5.0  # a corner (mirrored border)
    b[1, 10, 3] = 3.0  # the last row
    b[2, 5, 5] = 1.3  # below a threshold of 0.5: kept
    padded = np.pad(b, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    median = np.empty_like(b)
    for k in range(3):
        for y in range(11):
            for x in range(9):
                median[k, y, x] = np.median(padded[k, y:y + 3, x:x + 3])
    expected = np.where(b - median > 0.5, median, b)
    clean, counts = remove_zingers(b, 0.5)
    np.testing.assert_array_equal(clean, expected)
    assert counts.tolist() == [1, 2, 0] and clean[2, 5, 5] == np.float32(1.3)
    t_clean, t_counts = remove_zingers_tensor(torch.from_numpy(b), 0.5)
    np.testing.assert_array_equal(t_clean.numpy(), expected)
    assert t_counts.tolist() == [1, 2, 0]


@pytest.mark.slow
def test_zingers_counted_per_frame_on_the_host_and_the_device(movie_model, movie, tmp_path):
    raw = counts(movie, movie["transmission"][:6])
    hits = {0: [(3, 3)], 2: [(10, 20), (40, 41), (63, 0)], 5: [(30, 30)]}
    for k, pixels in hits.items():
        for y, x in pixels:
            raw[k, y, x] = 60000
    archive = tmp_path / "zingers.h5"
    with h5py.File(archive, "w") as f:
        f["exchange/data"] = raw
        f["exchange/data_white"] = np.stack([counts(movie, np.ones((64, 64)))] * 2)
        f["exchange/data_dark"] = np.stack([np.round(movie["dark"]).astype(np.uint16)] * 2)
    got = {}
    for where in ("host", "device"):
        reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / f"{where}.h5", backend="local",
                                       batch_size=4, preview=False, correct_on=where, zinger_threshold=2.0))
        got[where] = read(tmp_path / f"{where}.h5")
    for k in DATASETS:
        np.testing.assert_array_equal(got["device"][k], got["host"][k], err_msg=k)
    assert got["host"]["zinger_pixels"].tolist() == [len(hits.get(k, [])) for k in range(6)]
    reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "off.h5", backend="local",
                                   batch_size=4, preview=False))
    off = read(tmp_path / "off.h5")
    assert not off["zinger_pixels"].any() and np.abs(off["phase"][2] - got["host"]["phase"][2]).max() > 0


def test_masked_pixels_take_a_nearest_unmasked_pixels_value():
    from phasegan_hpc.reconstruct.prepare import fill_index, inpaint, inpaint_tensor

    rng = np.random.default_rng(6)
    mask = np.zeros((12, 10), bool)
    mask[:, 4:6] = True  # a module gap two columns wide
    mask[0, 0] = mask[9, 8] = True  # bad pixels, one in a corner
    b = rng.normal(size=(2, 12, 10)).astype(np.float32)
    filled = inpaint(b, fill_index(mask))
    np.testing.assert_array_equal(inpaint_tensor(torch.from_numpy(b), torch.from_numpy(fill_index(mask))).numpy(),
                                  filled)
    good = np.argwhere(~mask)
    for y, x in np.argwhere(mask):  # plain loop: the value of one of the unmasked pixels at the least distance
        d2 = ((good - (y, x)) ** 2).sum(axis=1)
        nearest = good[d2 == d2.min()]
        for k in range(2):
            assert filled[k, y, x] in {b[k, yy, xx] for yy, xx in nearest}, (k, y, x)
    np.testing.assert_array_equal(filled[:, ~mask], b[:, ~mask])
    with pytest.raises(ValueError, match="covers every pixel"):
        fill_index(np.ones((3, 3), bool))


@pytest.mark.slow
def test_masked_pixels_never_reach_the_result(movie_model, movie, tmp_path):
    """Two archives that differ only under the mask give the same output, on the host and the device; the
    mask is in the output; a mask of another shape is one clear error."""
    from phasegan_hpc.errors import DataError

    mask = np.zeros((64, 64), np.uint8)
    mask[:, 30:32] = 1
    mask[5, 50] = 7  # any non-zero value
    with h5py.File(tmp_path / "mask.h5", "w") as f:
        f["detector/pixel_mask"] = mask
        f["detector/angles"] = np.arange(3.0)  # 1-D: not a candidate
    outputs = {}
    for garbage in (0, 65535):
        raw = counts(movie, movie["transmission"][:6])
        raw[:, mask != 0] = garbage
        archive = write_dxchange(tmp_path / f"g{garbage}.h5", movie, n=6)
        with h5py.File(archive, "a") as f:
            f["exchange/data"][...] = raw
        for where in ("host", "device"):
            out = tmp_path / f"g{garbage}-{where}.h5"
            reconstruct(ReconstructRequest(archive, model=movie_model, output=out, backend="local", batch_size=4,
                                           preview=False, correct_on=where, mask=str(tmp_path / "mask.h5")))
            outputs[garbage, where] = read(out)
    for key, result in outputs.items():
        for k in DATASETS:
            np.testing.assert_array_equal(result[k], outputs[0, "host"][k], err_msg=f"{key} {k}")
    with h5py.File(tmp_path / "g0-host.h5") as f:
        np.testing.assert_array_equal(f["mask"][()], (mask != 0).astype(np.uint8))
    with h5py.File(tmp_path / "small.h5", "w") as f:
        f["m"] = np.zeros((32, 32), np.uint8)
    with pytest.raises(DataError, match="is 32 x 32 but the frames are 64 x 64"):
        reconstruct(ReconstructRequest(tmp_path / "g0.h5", model=movie_model, backend="local", preview=False,
                                       mask=str(tmp_path / "small.h5"), overwrite=True))
