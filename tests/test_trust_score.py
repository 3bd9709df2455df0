"""The Fresnel residual (physics.consistency): a trust score that a G_O which invents structure cannot fool,
even when G_D has learnt to decode it (the failure the G_D-based consistency score cannot see)."""

import numpy as np
import pytest
import torch
from torch import nn

from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.data.normalise import Normalisation
from phasegan_hpc.evaluate import spearman_correlation
from phasegan_hpc.models.artifact import PhaseModel
from phasegan_hpc.physics import FresnelPropagator, object_wavefield
from phasegan_hpc.physics.consistency import fresnel_residual, gaussian_blur, relative_l1
from phasegan_hpc.physics.geometry import Geometry

GEOMETRY = {"pixel_size_m": 1e-6, "wavelength_m": 1e-10, "distance_m": 0.1}


def test_gaussian_blur_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    x = rng.random((1, 12, 10))
    sigma, r = 1.5, 5
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    ref = np.zeros_like(x[0])
    padded = np.pad(x[0], r, mode="reflect")
    for i in range(12):
        for j in range(10):
            ref[i, j] = sum(k[a] * k[b] * padded[i + a, j + b] for a in range(2 * r + 1) for b in range(2 * r + 1))
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(x), sigma)[0].numpy(), ref, atol=1e-12)


class TableLookup(nn.Module):
    """A G_O that knows the answer: the normalised channels of the stored object whose frame is nearest, plus
    ``invented`` (normalised channels added to every output: a G_O that invents a fixed pattern)."""

    def __init__(self, frames: torch.Tensor, objects: torch.Tensor, invented: torch.Tensor | None = None):
        super().__init__()
        self.frames, self.objects = frames, objects
        self.invented = invented if invented is not None else torch.zeros_like(objects[:1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, None, 0] - self.frames[None]).square().mean(dim=(-2, -1))
        return self.objects[d.argmin(1)] + self.invented


class Decoder(nn.Module):
    """A G_D that learnt to decode the inventing G_O: removes the invented pattern's hologram (normalised)."""

    def __init__(self, offset: torch.Tensor):
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.offset


@pytest.fixture(scope="module")
def validation(tiny_data):
    val = FrameStack(tiny_data / "validation.h5", ("intensity", "phase", "attenuation"))[np.arange(8)]
    return torch.from_numpy(val).double()


def test_invented_structure_is_seen_by_the_fresnel_residual_not_by_the_decoded_cycle(validation):
    frames, truth = validation[:, 0], validation[:, 1:]
    norm = Normalisation(float(frames.mean()), float(frames.std()), (0.97, -0.2), (0.15, 0.15), "real_imag")
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    pattern = -0.4 * (torch.cos(2 * torch.pi * xx / 8) * torch.cos(2 * torch.pi * yy / 8) > 0.5).double()
    invented_truth = truth.clone()
    invented_truth[:, 0] += pattern  # the same objects with invented phase bumps
    prop = FresnelPropagator((64, 64), **GEOMETRY)
    # G_D's decoding of the invention (linearised: the pattern's own hologram contrast), in normalised units
    offset = (prop.intensity(object_wavefield(pattern, torch.zeros_like(pattern))) - 1.0) / norm.intensity_std
    g_o_true = TableLookup(frames.float(), norm.norm_object(truth).float())
    invented = norm.norm_object(invented_truth).float() - norm.norm_object(truth).float()
    g_o_invent = TableLookup(frames.float(), norm.norm_object(truth).float(), invented.mean(0, keepdim=True))
    arch = {"name": "unet", "in_channels": 1, "out_channels": 2, "base_filters": 1}
    geometry = Geometry(**GEOMETRY)
    correct = PhaseModel(g_o_true, arch, norm, geometry, "phasegan", detector=nn.Identity(), detector_arch=arch)
    inventing = PhaseModel(g_o_invent, arch, norm, geometry, "phasegan", detector=Decoder(offset.float()),
                           detector_arch=arch)
    x = frames.float()
    scores = {}
    for name, model in (("correct", correct), ("inventing", inventing)):
        phase, att = model.retrieve(x)
        scores[name] = {"fresnel": model.fresnel_residual(x, phase, att).numpy(),
                        "cycle": relative_l1(model.predict_intensity(phase, att), x).numpy()}
    # the G_D-based cycle is fooled: the inventing model explains the frames about as well as the correct one
    assert scores["inventing"]["cycle"].mean() < 1.2 * scores["correct"]["cycle"].mean()
    # the Fresnel residual is not: every frame scores worse, by a wide margin on average
    assert np.all(scores["inventing"]["fresnel"] > scores["correct"]["fresnel"])
    assert scores["inventing"]["fresnel"].mean() > 2 * scores["correct"]["fresnel"].mean()


def test_fresnel_residual_follows_the_error_of_a_perturbed_object(validation):
    """Objects worse by a growing amount of random structure get growing residuals (rank correlation 1)."""
    frames, truth = validation[:, 0], validation[:, 1:]
    prop = FresnelPropagator((64, 64), **GEOMETRY)
    g = torch.Generator().manual_seed(0)
    noise = gaussian_blur(torch.randn(1, 64, 64, generator=g, dtype=torch.float64), 1.0)[0]
    amounts = np.linspace(0.0, 0.3, 8)
    residuals = [float(fresnel_residual(frames[:1], prop.intensity(object_wavefield(
        truth[:1, 0] + a * noise / noise.std(), truth[:1, 1])))[0]) for a in amounts]
    assert spearman_correlation(np.array(residuals), amounts) == pytest.approx(1.0)
    from scipy.stats import spearmanr

    a, b = np.random.default_rng(2).random((2, 20))
    assert spearman_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_illumination_matched_absorbs_a_smooth_flat_field_and_passes_no_gradient_through_it():
    from phasegan_hpc.physics.consistency import illumination_matched

    g = torch.Generator().manual_seed(4)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64, dtype=torch.float64),
                            torch.linspace(-1, 1, 64, dtype=torch.float64), indexing="ij")
    flat = (1.0 + 0.3 * torch.exp(-((yy - 0.2) ** 2 + (xx + 0.1) ** 2) / 0.5))[None]
    detail = 1.0 + 0.05 * gaussian_blur(torch.randn(1, 64, 64, generator=g, dtype=torch.float64), 1.0)
    measured = flat * detail
    predicted = detail.clone().requires_grad_(True)  # right object, no flat field
    matched = illumination_matched(predicted, measured, 4.0)
    before = float((detail - measured).abs().mean())
    after = float((matched.detach() - measured).abs().mean())
    assert after < 0.1 * before, (before, after)
    # the fit is held constant: d(matched)/d(predicted) is the fitted illumination itself, pixel by pixel
    matched.sum().backward()
    from phasegan_hpc.physics.consistency import fitted_illumination

    np.testing.assert_allclose(predicted.grad.numpy(), fitted_illumination(measured, detail, 4.0).numpy(),
                               rtol=1e-12)
