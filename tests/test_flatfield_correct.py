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


def _pulse_to_pulse(rng, n_flats=12, n_frames=5, h=40, w=48):
    """Flats and frames whose illumination is mean + a mix of three smooth patterns that changes every pulse;
    the frames hold an absorbing disc (transmission 0.6) over part of the field."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    mean = 1000.0 * (1.2 - (y - 0.5) ** 2 - (x - 0.5) ** 2)
    patterns = np.stack([80 * np.sin(2 * np.pi * 3 * y), 60 * np.cos(2 * np.pi * 2 * x), 50 * (x - y)])
    dark = np.full((h, w), 100.0)

    def beams(n):
        return mean + np.tensordot(rng.standard_normal((n, 3)), patterns, axes=1)

    transmission = np.ones((n_frames, h, w))
    transmission[:, (y - 0.3) ** 2 + (x - 0.6) ** 2 < 0.04] = 0.6
    truth = beams(n_frames)
    return beams(n_flats) + dark, dark, transmission * truth + dark, transmission, truth


def test_dynamic_flats_recover_each_pulses_illumination():
    from phasegan_hpc.physics import DynamicFlatfieldCorrector, principal_components

    flats, dark, frames, transmission, _ = _pulse_to_pulse(np.random.default_rng(4))
    # The eigen-flats against numpy's SVD of the centred flats (float64): the same subspace.
    mean, comps, s = principal_components(flats - dark, 3)
    centred = (flats - dark - (flats - dark).mean(0)).reshape(len(flats), -1)
    _, s_ref, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(s, s_ref[:3], rtol=1e-8)
    np.testing.assert_allclose(np.abs(comps.reshape(3, -1) @ vt[:3].T), np.eye(3), atol=1e-8)
    # Three patterns, three eigen-flats: each frame's flat is found despite the disc, and the transmission with it.
    dynamic = DynamicFlatfieldCorrector(flats, dark, n_components=3, binning=4)
    out = dynamic(frames)
    assert out.dtype == np.float32 and out.shape == frames.shape
    np.testing.assert_allclose(out, transmission, rtol=2e-4)
    static = flatfield_correct(frames, flats, dark)
    assert np.abs(static / transmission - 1).max() > 0.05  # one mean flat cannot follow the pulses
    # (..., H, W) stacks and a single frame; torch (float32 on the CPU) agrees to float32 rounding.
    np.testing.assert_allclose(dynamic(frames[None, :2])[0], out[:2], rtol=1e-6)
    np.testing.assert_allclose(dynamic(frames[1]), out[1], rtol=1e-6)
    out_t = dynamic(torch.from_numpy(frames.astype(np.float32)))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-5)


def test_dynamic_fit_is_weighted_least_squares_and_robust_to_the_object():
    from phasegan_hpc.physics import DynamicFlatfieldCorrector
    from phasegan_hpc.physics.flatfield import _bin

    rng = np.random.default_rng(5)
    flats, dark, frames, _, truth = _pulse_to_pulse(rng)
    frames = frames + rng.normal(0, 3, frames.shape)  # a little noise: the fit is not exact
    plain = DynamicFlatfieldCorrector(flats, dark, n_components=3, binning=2, iterations=0)
    # No refit: ordinary least squares on the binned frame, as numpy's lstsq solves it frame by frame.
    design = _bin(plain.components.astype(np.float64), 2).reshape(3, -1).T
    mean_b = _bin(plain.mean_flat.astype(np.float64), 2).reshape(-1)
    got = plain.weights(frames - dark)
    for j, frame in enumerate(frames - dark):
        ref = np.linalg.lstsq(design, _bin(frame, 2).reshape(-1) - mean_b, rcond=None)[0]
        np.testing.assert_allclose(got[j], ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # The refits leave the disc out: their flats are closer to the truth than the plain fit's.
    robust = DynamicFlatfieldCorrector(flats, dark, n_components=3, binning=2)

    def flat_error(c):
        fitted = c.mean_flat + np.tensordot(c.weights(frames - dark), c.components, axes=1)
        return np.abs(fitted / truth - 1).mean()

    assert flat_error(robust) < 0.5 * flat_error(plain)


def test_dynamic_flats_refuse_what_they_cannot_fit():
    import pytest

    from phasegan_hpc.physics import DynamicFlatfieldCorrector

    flats, dark, *_ = _pulse_to_pulse(np.random.default_rng(6), n_flats=4)
    with pytest.raises(ValueError, match="4 flats give 1 to 3 eigen-flats, not 4"):
        DynamicFlatfieldCorrector(flats, dark, n_components=4)
    with pytest.raises(ValueError, match="stack of >= 2 flats"):
        DynamicFlatfieldCorrector(flats[:1], dark, n_components=1)
    with pytest.raises(ValueError, match="binning must be in 1..40"):
        DynamicFlatfieldCorrector(flats, dark, n_components=2, binning=41)
