"""Image-quality metrics of paper §3 (Table 1): L2, DSSIM = (1 - SSIM) / 2, FRCM; per image.

All take (..., H, W) tensors (prediction, reference) and return one value per image (...,).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from phasegan_hpc.losses.frc import frc

#: SSIM constants and Gaussian window of Wang et al. 2004 (and skimage's ``gaussian_weights=True``).
K1, K2, SIGMA, RADIUS = 0.01, 0.03, 1.5, 5


def l2(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image."""
    return (pred - ref).square().mean(dim=(-2, -1))


@functools.lru_cache(maxsize=8)
def _gaussian_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(device=device, dtype=dtype)[None, None]


def ssim(pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor | float | None = None) -> torch.Tensor:
    """Structural similarity per image (Gaussian 11 x 11 window, sigma 1.5, borders excluded).

    Args:
        pred, ref: (..., H, W), H and W >= 11.
        data_range: value range of the images; default: max - min of ``ref`` per image.

    Returns:
        (...,) SSIM, the mean of the SSIM map over the valid (unpadded) region; agrees with
        ``skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``.
    """
    lead = pred.shape[:-2]
    x = pred.reshape(-1, 1, *pred.shape[-2:])
    y = ref.reshape(-1, 1, *ref.shape[-2:])
    if data_range is None:
        data_range = (y.amax(dim=(-2, -1)) - y.amin(dim=(-2, -1))).reshape(-1, 1, 1, 1)
    elif isinstance(data_range, torch.Tensor):
        data_range = data_range.reshape(-1, 1, 1, 1)
    win = _gaussian_window(x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead)


def dssim(pred: torch.Tensor, ref: torch.Tensor, data_range: torch.Tensor | float | None = None) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 per image."""
    return (1.0 - ssim(pred, ref, data_range)) / 2.0


def frcm(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """FRC metric: mean over rings of (1 - FRC)^2, per image (paper §3)."""
    return (1.0 - frc(pred, ref)).square().mean(dim=-1)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, n_quantiles: int = 1001, max_samples: int = 1 << 20) -> float:
    """Earth mover's distance between the value distributions of two tensors (any shapes), via quantiles.

    W1 = integral over q of |F_a^-1(q) - F_b^-1(q)|, approximated on ``n_quantiles`` levels; tensors larger
    than ``max_samples`` are subsampled on a fixed stride. Same units as the values.
    """
    def sample(t: torch.Tensor) -> torch.Tensor:
        flat = t.detach().flatten().double()
        step = max(1, flat.numel() // max_samples)
        return flat[::step]

    q = torch.linspace(0, 1, n_quantiles, dtype=torch.float64)
    qa = torch.quantile(sample(a), q.to(a.device))
    qb = torch.quantile(sample(b), q.to(b.device))
    return float((qa.cpu() - qb.cpu()).abs().mean())


#: Metric name -> function, in the order tables show them.
METRICS = {"l2": l2, "dssim": dssim, "frcm": frcm}
