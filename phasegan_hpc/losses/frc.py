"""Fourier ring correlation (paper eq. 4; van Heel & Schatz 2005), batched and vectorised.

    FRC(a, b)(r) = Re sum_{f in ring r} A(f) B*(f) / sqrt( sum |A(f)|^2  sum |B(f)|^2 )

Rings are one frequency step wide (1 / min(H, W) cycles per pixel) up to Nyquist (0.5); the corners beyond
Nyquist are left out. Ring sums are one ``index_add`` over a cached ring-index map: no Python loop over
rings. Works on any (..., H, W) real or complex tensors, square or rectangular, and is differentiable.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=32)
def ring_index(h: int, w: int, device: torch.device, half: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Ring map of an (h, w) spectrum in FFT order (``half``: the rfft2 half spectrum, (h, w // 2 + 1)).

    Returns:
        (rings: int64 ring of every spectrum pixel, flattened, with ``n_rings`` for pixels beyond Nyquist;
        weights: float32 multiplicity of each pixel in the full spectrum (1, or 2 for the half-spectrum
        columns whose conjugate twin is not stored); n_rings). Ring r holds round(|f| min(h, w)) == r.
    """
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64) if half else torch.fft.fftfreq(w, dtype=torch.float64)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * min(h, w)
    n_rings = min(h, w) // 2 + 1
    ring = torch.round(radius).long().clamp_(max=n_rings)
    weights = torch.ones(len(fy), len(fx), dtype=torch.float32)
    if half:
        # Columns 1 .. ceil(w / 2) - 1 stand for themselves and their conjugate twins; column 0 and, for even
        # w, the Nyquist column w / 2 are their own twins.
        weights[:, 1 : (w + 1) // 2] = 2.0
    return ring.flatten().to(device), weights.flatten().to(device), n_rings


def ring_sizes(h: int, w: int) -> torch.Tensor:
    """Number of spectrum pixels in each ring (for the half-bit threshold), float64 (n_rings,)."""
    rings, _, n = ring_index(h, w, torch.device("cpu"))
    return torch.bincount(rings, minlength=n + 1)[:n].double()


def frc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Fourier ring correlation of two batches of images.

    Args:
        a, b: (..., H, W) tensors of the same shape (real or complex). Real images use the half spectrum
            (rfft2) with conjugate-twin weights: the same sums at half the cost.
        eps: added under the square root against empty spectra.

    Returns:
        (..., n_rings) real tensor in [-1, 1]; ring 0 is the mean (DC) term.
    """
    if a.shape != b.shape:
        raise ValueError(f"frc: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    h, w = a.shape[-2:]
    half = not (a.is_complex() or b.is_complex())
    rings, weights, n_rings = ring_index(h, w, a.device, half)
    fft = torch.fft.rfft2 if half else torch.fft.fft2
    cross, pa, pb = _ring_sums(fft(a).flatten(-2), fft(b).flatten(-2), rings, weights, n_rings)
    return cross / torch.sqrt(pa * pb + eps)


def _ring_sums(fa: torch.Tensor, fb: torch.Tensor, rings: torch.Tensor, weights: torch.Tensor,
               n_rings: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted ring sums of Re(A B*), |A|^2, |B|^2 over flattened spectra (..., P) -> 3 x (..., n_rings)."""
    weights = weights.to(fa.real.dtype)
    stacked = torch.stack([fa.real * fb.real + fa.imag * fb.imag, fa.real.square() + fa.imag.square(),
                           fb.real.square() + fb.imag.square()]) * weights
    sums = stacked.new_zeros(*stacked.shape[:-1], n_rings + 1).index_add_(-1, rings, stacked)[..., :n_rings]
    return sums.unbind(0)


class _FRCLoss(torch.autograd.Function):
    """mean((1 - FRC(a, b))^2) for real images, with an analytic backward: one irfft2 per input.

    With S = sqrt(P Q + eps) per ring, dFRC/dA_k = B_k / S - C Q A_k / S^3 (and symmetrically for B);
    the gradient spectrum G is Hermitian, so dL/da = H W irfft2(G on the half spectrum).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: D102
        h, w = a.shape[-2:]
        rings, weights, n_rings = ring_index(h, w, a.device, True)
        fa, fb = torch.fft.rfft2(a).flatten(-2), torch.fft.rfft2(b).flatten(-2)
        cross, pa, pb = _ring_sums(fa, fb, rings, weights, n_rings)
        norm = torch.sqrt(pa * pb + eps)
        curve = cross / norm
        ctx.save_for_backward(fa, fb, cross, pa, pb, norm, curve, rings)
        ctx.shape = (h, w)
        return (1.0 - curve).square().mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        fa, fb, cross, pa, pb, norm, curve, rings = ctx.saved_tensors
        h, w = ctx.shape
        d_curve = grad * (-2.0 / curve.numel()) * (1.0 - curve)  # dL/dFRC_r
        pad = d_curve.new_zeros(*d_curve.shape[:-1], 1)  # the ring of frequencies beyond Nyquist: no gradient

        def spectrum_grad(own: torch.Tensor, other: torch.Tensor, own_power: torch.Tensor,
                          other_power: torch.Tensor) -> torch.Tensor:
            k_other = torch.cat([d_curve / norm, pad], -1)[..., rings]
            k_own = torch.cat([-d_curve * cross * other_power / norm**3, pad], -1)[..., rings]
            g = (k_other * other + k_own * own).unflatten(-1, (h, w // 2 + 1))
            return torch.fft.irfft2(g, s=(h, w)) * (h * w)

        ga = spectrum_grad(fa, fb, pa, pb) if ctx.needs_input_grad[0] else None
        gb = spectrum_grad(fb, fa, pb, pa) if ctx.needs_input_grad[1] else None
        return ga, gb, None


def frc_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Paper eq. 4 term: || 1 - FRC(a, b) ||^2 averaged over rings, then over everything else; scalar.

    Real images take a fused path with an analytic gradient (checked against autograd by gradcheck);
    complex fields go through :func:`frc` and autograd.
    """
    if a.shape != b.shape:
        raise ValueError(f"frc_loss: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.is_complex() or b.is_complex():
        return (1.0 - frc(a, b, eps)).square().mean()
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)  # no half-precision FFT
    return _FRCLoss.apply(a.to(dtype), b.to(dtype), eps)


def halfbit_threshold(h: int, w: int) -> torch.Tensor:
    """The half-bit information threshold per ring (van Heel & Schatz 2005), float64 (n_rings,)."""
    n = ring_sizes(h, w).clamp_min(1.0)
    return (0.2071 + 1.9102 / torch.sqrt(n)) / (1.2071 + 0.9102 / torch.sqrt(n))


def frc_resolution_px(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Resolution [px] where FRC(a, b) first drops below the half-bit threshold, per image.

    Returns:
        (...,) float tensor: min(H, W) / r for the first ring r >= 1 below threshold (2 px = Nyquist when
        it never drops).
    """
    h, w = a.shape[-2:]
    curve = frc(a.double(), b.double())[..., 1:]
    below = curve < halfbit_threshold(h, w)[1:].to(curve.device)
    n = curve.shape[-1]
    first = torch.where(below.any(-1), below.float().argmax(-1), torch.full(below.shape[:-1], n - 1,
                                                                             device=curve.device)) + 1
    return min(h, w) / first.double().clamp_min(1.0)


def frc_reference_loop(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-ring Python loop, the plain definition: the reference for tests and the benchmark baseline."""
    h, w = a.shape[-2:]
    fa, fb = torch.fft.fft2(a), torch.fft.fft2(b)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=a.device)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=a.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * min(h, w)
    out = []
    for r in range(min(h, w) // 2 + 1):
        m = (radius >= r - 0.5) & (radius < r + 0.5)
        num = (fa[..., m] * fb[..., m].conj()).real.sum(-1)
        den = torch.sqrt((fa[..., m].abs() ** 2).sum(-1) * (fb[..., m].abs() ** 2).sum(-1) + 1e-12)
        out.append(num / den)
    return torch.stack(out, -1)

