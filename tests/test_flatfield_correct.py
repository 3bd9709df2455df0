import numpy as np
import torch

from phasegan_hpc.physics import FlatfieldCorrector, flatfield_correct


def _stack(rng):
    dark = rng.uniform(90, 110, (5, 16, 20))
    flat = dark.mean(0) + rng.uniform(800, 1200, (7, 16, 20))
    transmission = rng.uniform(0.2, 1.2, (3, 16, 20))
    frames = dark.mean(0) + transmission * (flat.mean(0) - dark.mean(0))
    return frames, flat, dark, transmission


def test_recovers_transmission_from_averaged_references():
    frames, flat, dark, transmission = _stack(np.random.default_rng(1))
    out = flatfield_correct(frames.astype(np.float64), flat, dark)
    assert out.dtype == np.float32 and out.shape == frames.shape
    np.testing.assert_allclose(out, transmission, rtol=1e-5)


def test_zero_denominator_pixels_are_neutral_not_inf():
    frames, flat, dark, _ = _stack(np.random.default_rng(2))
    flat[:, 3, 4] = dark.mean(0)[3, 4]  # dead pixel: flat == dark
    with np.errstate(all="raise"):
        out = flatfield_correct(frames, flat, dark)
    assert np.isfinite(out).all()
    assert (out[:, 3, 4] == 1.0).all()


def test_uint16_numpy_and_torch_agree():
    frames, flat, dark, _ = _stack(np.random.default_rng(3))
    frames16, flat16, dark16 = (np.round(a).astype(np.uint16) for a in (frames, flat, dark))
    out_np = flatfield_correct(frames16, flat16, dark16)
    out_t = flatfield_correct(torch.from_numpy(frames16.astype(np.int32)), torch.from_numpy(flat16.astype(np.int32)),
                              torch.from_numpy(dark16.astype(np.int32)))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-6)
    # A single (H, W) flat and dark are used as they are.
    np.testing.assert_allclose(flatfield_correct(frames16, flat16.mean(0), dark16.mean(0)), out_np, rtol=1e-6)


def test_streaming_corrector_matches_the_float64_reference_on_counts_and_dead_pixels():
    rng = np.random.default_rng(3)
    dark = rng.poisson(100.0, (4, 16, 20)).astype(np.uint16)
    flat = rng.poisson(1000.0, (6, 16, 20)).astype(np.uint16)
    flat[:, 3, 4] = dark.mean(0)[3, 4]  # dead pixel
    flat[:, 5, 6] = 0  # flat below dark
    raw = rng.poisson(700.0, (9, 16, 20)).astype(np.uint16)
    fast = FlatfieldCorrector(flat, dark)(raw)
    assert fast.dtype == np.float32 and fast.shape == raw.shape
    ref = flatfield_correct(raw, flat, dark)  # float64 arithmetic
    np.testing.assert_allclose(fast, ref, rtol=2e-6, atol=1e-7)
    assert (fast[:, 3, 4] == 1.0).all() and (fast[:, 5, 6] == 1.0).all()
    no_dark = FlatfieldCorrector(flat, None)(raw)
    np.testing.assert_allclose(no_dark, flatfield_correct(raw, flat, np.zeros((16, 20))), rtol=2e-6)
