"""U-Net generator and PatchGAN discriminator of Supplement 1; the VGG11 encoder initialisation."""

import pytest
import torch

from phasegan_hpc.models import PatchGAN, UNet, build_discriminator, build_generator, count_parameters
from phasegan_hpc.models.registry import load_encoder_weights
from phasegan_hpc.models.unet import VGG11_CONV_INDICES


def test_full_size_generator_matches_paper():
    g = UNet(1, 2, 32)
    assert count_parameters(g) == pytest.approx(22.93e6, rel=0.001)  # "22.93 million learnable parameters"
    with torch.no_grad():
        assert g(torch.zeros(1, 1, 256, 256)).shape == (1, 2, 256, 256)
    assert count_parameters(UNet(1, 1, 32)) == pytest.approx(22.93e6, rel=0.001)  # G_D


def test_full_size_discriminator_matches_paper():
    d = PatchGAN(1, 64)
    assert count_parameters(d) == pytest.approx(2.76e6, rel=0.002)
    with torch.no_grad():
        assert d(torch.zeros(2, 1, 256, 256)).shape == (2, 1, 30, 30)  # 30 x 30 patches of 70 x 70 px
        assert PatchGAN(2, 64, "instance")(torch.zeros(1, 2, 256, 256)).shape == (1, 1, 30, 30)


def test_patchgan_receptive_field_is_70px():
    d = PatchGAN(1, 8).eval()
    x = torch.zeros(1, 1, 256, 256, requires_grad=True)
    d(x)[0, 0, 15, 15].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert int(rows.max() - rows.min() + 1) == 70 and int(cols.max() - cols.min() + 1) == 70


def test_small_generator_shapes_and_size_check():
    g = UNet(1, 2, 4)
    assert g(torch.randn(3, 1, 64, 96)).shape == (3, 2, 64, 96)  # rectangular works
    with pytest.raises(ValueError, match="multiples of 32"):
        g(torch.randn(1, 1, 48, 64))


@torch.no_grad()
def test_initialisation_is_normal_0_02():
    g = build_generator("unet", 1, 2, 8)
    w = torch.cat([m.weight.detach().flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.mean())) < 2e-3 and float(w.std()) == pytest.approx(0.02, rel=0.05)
    assert all(float(m.bias.abs().max()) == 0 for m in g.modules() if isinstance(m, torch.nn.Conv2d))
    d = build_discriminator("patchgan", 2, 8, "batch")
    bn = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(abs(float(m.weight.mean()) - 1) < 0.05 for m in bn)


def _fake_vgg11(in_rgb: int = 3) -> dict[str, torch.Tensor]:
    """A state_dict in torchvision's vgg11().features layout (random values: no download here)."""
    widths = [(in_rgb, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    g = torch.Generator().manual_seed(0)
    sd = {}
    for idx, (cin, cout) in zip(VGG11_CONV_INDICES, widths, strict=True):
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g)
    sd["classifier.0.weight"] = torch.randn(4, 4, generator=g)  # other keys are ignored
    return sd


def test_vgg11_encoder_weights_load_from_local_file(tmp_path):
    sd = _fake_vgg11()
    path = tmp_path / "vgg11.pth"
    torch.save(sd, path)
    g = build_generator("unet", 1, 2, 32)
    load_encoder_weights(g, str(path))
    torch.testing.assert_close(g.encoder[5].weight, sd["features.13.weight"])
    torch.testing.assert_close(g.encoder[7].bias, sd["features.18.bias"])
    # RGB filters averaged into the single detector channel (x 3: a grey image responds as in RGB).
    torch.testing.assert_close(g.encoder[0].weight, sd["features.0.weight"].sum(1, keepdim=True))


def test_vgg11_weights_refused_for_other_widths(tmp_path):
    path = tmp_path / "vgg11.pth"
    torch.save(_fake_vgg11(), path)
    with pytest.raises(ValueError, match="base_filters = 32"):
        load_encoder_weights(build_generator("unet", 1, 2, 8), str(path))
    sd = _fake_vgg11()
    del sd["features.16.weight"]
    torch.save(sd, path)
    with pytest.raises(ValueError, match="features.16"):
        load_encoder_weights(build_generator("unet", 1, 2, 32), str(path))


@torch.no_grad()
def test_kaiming_initialisation_keeps_activation_scale():
    g = build_generator("unet", 1, 2, 8, init="kaiming")
    conv = g.encoder[3]
    fan_in = conv.in_channels * 9
    assert float(conv.weight.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    out_k = g(torch.randn(2, 1, 64, 64)).std()
    out_n = build_generator("unet", 1, 2, 8, init="normal")(torch.randn(2, 1, 64, 64)).std()
    assert float(out_k) > 100 * float(out_n)  # N(0, 0.02) at 8 filters all but silences the output
