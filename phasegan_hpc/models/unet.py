"""The U-Net generator of PhaseGAN (paper Supplement 1, Fig. S1): TernausNet-style UNet11.

Encoder = VGG11 features (3x3 conv + ReLU, five 2x2 max-pools, 256 -> 8 px at the bottom, widths
e, 2e, 4e, 4e, 8e, 8e, 8e, 8e with e = 2 f). Decoder = blocks of (3x3 conv + ReLU, 3x3 transposed conv
stride 2 + ReLU) with skip concatenation, then a 1x1 conv to the output channels. With f = 32 base filters
(e = 64, VGG11's own widths) it has 22.93 M parameters at one input and two output channels, the paper's
count. The output is linear: the networks work in normalised units (see ``phasegan_hpc.data.normalise``).
"""

from __future__ import annotations

import torch
from torch import nn

#: Indices of the conv layers in torchvision's ``vgg11().features``, in encoder order.
VGG11_CONV_INDICES = (0, 3, 6, 8, 11, 13, 16, 18)
#: Input sides must be multiples of this (five 2x2 pools).
SIZE_MULTIPLE = 32


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


#: How the decoder doubles the resolution: "transpose" (3x3 stride-2 transposed conv, Supplement 1) or
#: "resize" (nearest-neighbour x2, then a 3x3 conv: no checkerboard artefacts; Odena et al., Distill 2016).
UPSAMPLINGS = ("transpose", "resize")


def _up(cin: int, cout: int, upsampling: str) -> nn.Sequential:
    """Doubles the resolution, then ReLU."""
    if upsampling == "transpose":
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                             nn.ReLU(inplace=True))
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                         nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    """3x3 conv + ReLU, then a x2 upsampling + ReLU (:data:`UPSAMPLINGS`)."""

    def __init__(self, cin: int, cmid: int, cout: int, upsampling: str = "transpose") -> None:
        super().__init__()
        self.block = nn.Sequential(_conv_relu(cin, cmid), *_up(cmid, cout, upsampling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


#: Output size relative to the input: "same"; "up2" (paper §4's G_O: an extra transposed-conv stage, a
#: 128 px detector frame gives a 256 px object at half the pixel size); "down2" (§4's G_D: the last
#: transposed conv becomes a plain conv, 256 -> 128).
RESIZES = ("same", "up2", "down2")


class UNet(nn.Module):
    """U-Net with a VGG11-like encoder.

    Args:
        in_channels: input channels (1 for a detector frame).
        out_channels: output channels (2 for phase and attenuation, 1 for G_D).
        base_filters: decoder width f (encoder width 2 f); 32 is the paper's size.
        resize: one of :data:`RESIZES`.
        upsampling: one of :data:`UPSAMPLINGS`.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, s H, s W) with s = 1, 2 or 1/2 (``resize``), H and W
    multiples of 32 (64 for "down2"), float32.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base_filters: int = 32,
                 resize: str = "same", upsampling: str = "transpose") -> None:
        super().__init__()
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")
        self.upsampling = upsampling
        f, e = base_filters, 2 * base_filters
        self.in_channels, self.out_channels, self.base_filters = in_channels, out_channels, base_filters
        self.resize = resize
        widths = [(in_channels, e), (e, 2 * e), (2 * e, 4 * e), (4 * e, 4 * e),
                  (4 * e, 8 * e), (8 * e, 8 * e), (8 * e, 8 * e), (8 * e, 8 * e)]
        self.encoder = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in widths)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU(inplace=True)
        u = upsampling
        self.center = _DecoderBlock(16 * f, 16 * f, 8 * f, u)
        self.dec5 = _DecoderBlock(24 * f, 16 * f, 8 * f, u)
        self.dec4 = _DecoderBlock(24 * f, 16 * f, 4 * f, u)
        self.dec3 = _DecoderBlock(12 * f, 8 * f, 2 * f, u)
        if resize == "down2":  # paper §4's G_D: no upsampling in the last block; skip from pooled conv1
            self.dec2 = nn.Sequential(_conv_relu(6 * f, 4 * f), _conv_relu(4 * f, f))
        else:
            self.dec2 = _DecoderBlock(6 * f, 4 * f, f, u)
        self.dec1 = _conv_relu(3 * f, f)
        if resize == "up2":  # paper §4's G_O: one more transposed-conv stage doubles the output size
            self.up = _up(f, f, u)
        self.final = nn.Conv2d(f, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = SIZE_MULTIPLE * (2 if self.resize == "down2" else 1)
        if h % multiple or w % multiple:
            raise ValueError(f"U-Net input sides must be multiples of {multiple}, got {h} x {w}")
        c = self.encoder
        conv1 = self.relu(c[0](x))
        conv2 = self.relu(c[1](self.pool(conv1)))
        conv3 = self.relu(c[3](self.relu(c[2](self.pool(conv2)))))
        conv4 = self.relu(c[5](self.relu(c[4](self.pool(conv3)))))
        conv5 = self.relu(c[7](self.relu(c[6](self.pool(conv4)))))
        center = self.center(self.pool(conv5))
        dec5 = self.dec5(torch.cat([center, conv5], 1))
        dec4 = self.dec4(torch.cat([dec5, conv4], 1))
        dec3 = self.dec3(torch.cat([dec4, conv3], 1))
        dec2 = self.dec2(torch.cat([dec3, conv2], 1))
        dec1 = self.dec1(torch.cat([dec2, self.pool(conv1) if self.resize == "down2" else conv1], 1))
        if self.resize == "up2":
            dec1 = self.up(dec1)
        return self.final(dec1)

    def load_vgg11_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Initialise the encoder from an ImageNet VGG11 state_dict (torchvision layout, ``features.N.*``).

        The RGB filters of the first layer are averaged into ``in_channels`` channels (scaled by
        3 / in_channels so a grey image gives the same response as the RGB one).

        Raises:
            ValueError: keys missing, or shapes that do not fit (the encoder must have VGG11's widths:
                base_filters = 32).
        """
        for conv, idx in zip(self.encoder, VGG11_CONV_INDICES, strict=True):
            wkey, bkey = f"features.{idx}.weight", f"features.{idx}.bias"
            if wkey not in state_dict or bkey not in state_dict:
                raise ValueError(f"VGG11 weights lack {wkey!r} / {bkey!r}")
            weight, bias = state_dict[wkey], state_dict[bkey]
            if conv is self.encoder[0] and weight.shape[1] != self.in_channels:
                weight = weight.mean(dim=1, keepdim=True).repeat(1, self.in_channels, 1, 1)
                weight = weight * (3.0 / self.in_channels)
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                raise ValueError(
                    f"VGG11 layer features.{idx} has shape {tuple(weight.shape)}, the encoder needs "
                    f"{tuple(conv.weight.shape)} (VGG11 weights fit base_filters = 32 only)"
                )
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
