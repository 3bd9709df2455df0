"""PatchGAN discriminator (pix2pix / CycleGAN; paper Supplement 1).

4x4 convolutions, widths d, 2d, 4d, 8d (d = 64: 64 -> 512), a normalisation after all but the first
(:data:`NORMS`), LeakyReLU 0.2, a final 4x4 conv to one logit per patch. Receptive field 70 x 70 px; a 256 x 256
input gives 30 x 30 logits. About 2.76 M parameters at d = 64.
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them: with the initial
    statistics (mean 0, variance 1) a learnt per-channel affine map. Train-mode BatchNorm over an all-real
    or all-fake batch removes the global offsets a discriminator should see; the reference code's BN,
    frozen in effect, does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, eps=self.eps)


#: Normalisations of the PatchGAN's hidden layers ([model] disc_norm).
NORMS = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d,
         "instance": lambda c: nn.InstanceNorm2d(c, affine=True), "none": lambda c: nn.Identity()}


class PatchGAN(nn.Module):
    """Args:
        in_channels: channels of the images judged (2 for objects, 1 for intensities).
        base_filters: width d of the first layer (64 in the paper).
        norm: a key of :data:`NORMS`.

    Shapes: (B, in_channels, H, W) -> (B, 1, H / 8 - 2, W / 8 - 2) logits (no sigmoid), float32.
    """

    def __init__(self, in_channels: int = 1, base_filters: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {tuple(NORMS)}, got {norm!r}")
        d, make_norm = base_filters, NORMS[norm]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, d, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        for cin, cout, stride in [(d, 2 * d, 2), (2 * d, 4 * d, 2), (4 * d, 8 * d, 1)]:
            layers += [nn.Conv2d(cin, cout, 4, stride=stride, padding=1, bias=norm == "none"), make_norm(cout),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(8 * d, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
