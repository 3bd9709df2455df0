"""Per-frame trust scores that rest on the physics alone (no learnt network).

PhaseGAN's own score, the intensity cycle G_D|H G_O(I)|^2 against I (eq. 3), uses the G_D that was trained
together with G_O: a G_O that invents structure can be matched by a G_D that learnt to decode it, and the
score then looks good. The *Fresnel residual* asks the physics instead: does the retrieved object, through
H alone, explain the frame, up to a smooth illumination?

    I_hat = F * |H psi|^2,    F = blur(I) / blur(|H psi|^2)      (a smooth flat field fitted per frame)
    r     = mean |I - I_hat| / mean |I|

``blur`` is a Gaussian of ``sigma_px`` pixels (reflecting borders): the illumination may vary on scales
larger than ~sigma (the flat field's beam profile and drift, paper §3), everything finer must come from the
object. A correct object leaves the noise and the flat field's fine structure; invented structure adds its
own hologram to the residual.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Default width [px] of the illumination fit: below ~1 / (2 pi sigma) = 0.04 px^-1 the flat field dominates
#: the frame and phase barely reaches the detector (2 sin(pi lambda z f^2) << 1 in the paper's geometry).
SIGMA_PX = 4.0


def onto_frames(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Object-grid images (B, h, w) onto the detector grid ``shape`` (B, H, W): each detector pixel the mean
    of the s x s object pixels it covers (s = h / H, an integer: 2 for paper §4's models), else unchanged.

    Raises:
        ValueError: ``shape`` not an integer fraction of (h, w).
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(shape):
        return x
    s = h // shape[0]
    if s < 1 or (h, w) != (s * shape[0], s * shape[1]):
        raise ValueError(f"{h} x {w} images do not bin onto {shape[0]} x {shape[1]} frames")
    return F.avg_pool2d(x[:, None], s)[:, 0]


def relative_l1(predicted: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """mean |predicted - measured| / mean |measured| per frame: (B, H, W) -> (B,), float32. The score of
    an intensity cycle (eq. 3's second term, relative) with no illumination fitted."""
    num = (predicted.float() - measured.float()).abs().mean(dim=(-2, -1))
    return num / measured.float().abs().mean(dim=(-2, -1)).clamp_min(1e-12)


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur with reflecting borders.

    Args:
        x: (B, H, W) real tensor.
        sigma_px: standard deviation [px], > 0; the kernel spans +-3 sigma (clipped to the frame).

    Returns:
        (B, H, W), same dtype and device.
    """
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    h, w = x.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma_px)), h - 1, w - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y[:, 0]


def fitted_illumination(measured: torch.Tensor, hologram: torch.Tensor, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """The smooth flat field F that best scales ``hologram`` onto ``measured``: blur(I) / blur(|H psi|^2).

    Args:
        measured: detector frames I (B, H, W), any positive units.
        hologram: the object's noiseless intensity |H psi|^2 (B, H, W), free beam = 1.

    Returns:
        F (B, H, W), in the units of ``measured``.
    """
    return gaussian_blur(measured, sigma_px) / gaussian_blur(hologram, sigma_px).clamp_min(1e-12)


def illumination_matched(predicted: torch.Tensor, measured: torch.Tensor, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """``predicted`` times the smooth illumination that best matches it to ``measured`` (the fit of
    :func:`fitted_illumination`, held constant: no gradient flows through it), so that a loss between the
    result and ``measured`` sees only what is finer than the illumination.

    Args:
        predicted, measured: (B, H, W) intensities in the same physical units (free beam ~ 1).

    Returns:
        (B, H, W), differentiable in ``predicted``.
    """
    with torch.no_grad():
        illumination = fitted_illumination(measured, predicted, sigma_px)
    return illumination * predicted


def fresnel_residual(measured: torch.Tensor, hologram: torch.Tensor, sigma_px: float = SIGMA_PX) -> torch.Tensor:
    """The Fresnel residual per frame: mean |I - F |H psi|^2| / mean |I| with F from :func:`fitted_illumination`.

    Args:
        measured: detector frames I (B, H, W).
        hologram: |H psi|^2 of the retrieved objects on the same grid (B, H, W).

    Returns:
        (B,) float32, >= 0; NaN where a frame is not finite.
    """
    m, hol = measured.double(), hologram.double()
    predicted = fitted_illumination(m, hol, sigma_px) * hol
    num = (m - predicted).abs().mean(dim=(-2, -1))
    return (num / m.abs().mean(dim=(-2, -1)).clamp_min(1e-12)).float()


def hologram_scores(measured: torch.Tensor, hologram: torch.Tensor,
                    sigma_px: float = SIGMA_PX) -> dict[str, torch.Tensor]:
    """Both trust scores of an object with no detector model (Paganin, TIE): ``consistency`` = relative L1 of
    |H psi|^2 against the frames, ``fresnel_residual`` = :func:`fresnel_residual`; each (B,) float32."""
    return {"consistency": relative_l1(hologram, measured),
            "fresnel_residual": fresnel_residual(measured, hologram, sigma_px)}
