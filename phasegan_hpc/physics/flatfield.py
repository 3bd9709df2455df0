"""Flat/dark-field correction (DESIGN.md §3): (I - dark) / (flat - dark), with one flat for every frame
(:class:`FlatfieldCorrector`) or, for illumination that changes from pulse to pulse, a flat per frame from
eigen-flats (:class:`DynamicFlatfieldCorrector`, after Van Nieuwenhove et al., Opt. Express 23, 27975 (2015))."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _mean_frame(frames: ArrayT, ndim_frame: int) -> ArrayT:
    """Average a stack of reference frames down to one (H, W) frame; leave a single frame as it is."""
    if frames.ndim == ndim_frame:
        return frames
    if isinstance(frames, torch.Tensor):
        return frames.reshape(-1, *frames.shape[-2:]).double().mean(dim=0)
    return np.asarray(frames, dtype=np.float64).reshape(-1, *frames.shape[-2:]).mean(axis=0)


def flatfield_correct(frames: ArrayT, flats: ArrayT, darks: ArrayT, *, eps: float = 1e-6) -> ArrayT:
    """Flat- and dark-field correct detector frames.

    Args:
        frames: raw frames (..., H, W), any real dtype (uint8/uint16/float), numpy or torch.
        flats: flat fields (beam, no sample), (H, W) or a stack (..., H, W) that is averaged.
        darks: dark fields (no beam), (H, W) or a stack (..., H, W) that is averaged.
        eps: pixels whose flat - dark is <= eps (dead or saturated-dark pixels) get transmission 1.0
            instead of a division by ~zero.

    Returns:
        float32 transmission (I - dark) / (flat - dark), shape of ``frames``, same array type.
    """
    flat = _mean_frame(flats, 2)
    dark = _mean_frame(darks, 2)
    if isinstance(frames, torch.Tensor):
        flat = torch.as_tensor(flat, dtype=torch.float64, device=frames.device)
        dark = torch.as_tensor(dark, dtype=torch.float64, device=frames.device)
        denom = flat - dark
        good = denom > eps
        out = (frames.double() - dark) / torch.where(good, denom, torch.ones_like(denom))
        return torch.where(good, out, torch.ones_like(out)).float()
    flat = np.asarray(flat, dtype=np.float64)
    dark = np.asarray(dark, dtype=np.float64)
    denom = flat - dark
    good = denom > eps
    out = (np.asarray(frames, dtype=np.float64) - dark) / np.where(good, denom, 1.0)
    return np.where(good, out, 1.0).astype(np.float32)


class FlatfieldCorrector:
    """The same correction as :func:`flatfield_correct`, precomputed for a stream of frames, numpy or torch.

    ``(I - dark) * gain + offset`` in float32, with gain = 1 / (flat - dark) and offset 0 where flat - dark > eps,
    and gain 0, offset ``dead_value`` elsewhere (1.0, the free beam, as :func:`flatfield_correct`; NaN marks
    such dead pixels for the reconstruction's counts): one conversion and three in-place passes per frame
    instead of float64 temporaries (the reconstruction reader's hot loop; ``bench reconstruct``). Agrees with
    the float64 reference to float32 rounding (relative ~1e-7 of the transmission). Torch tensors (e.g. raw
    integer frames copied to a GPU: half the bytes of float32) get the same float32 operations in the same
    order on their own device, so on a CPU the two agree bit for bit.

    Args:
        flats: flat fields (H, W) or a stack (..., H, W); None: no division (gain 1), only the dark subtracted.
        darks: dark fields, likewise (None: zeros). Both None: only the conversion to float32.
        eps: as :func:`flatfield_correct`.
        dead_value: the transmission given to pixels whose flat is not above the dark.

    Attributes:
        dead_fraction: the fraction of pixels whose flat is not above the dark (0..1; 0 without flats).
    """

    def __init__(self, flats: np.ndarray | None, darks: np.ndarray | None, *, eps: float = 1e-6,
                 dead_value: float = 1.0) -> None:
        self._steps = flats is not None or darks is not None  # else: only the conversion
        ref = flats if flats is not None else darks
        frame = np.asarray(_mean_frame(np.asarray(ref), 2), np.float64) if ref is not None else np.zeros((1, 1))
        dark = np.zeros_like(frame) if darks is None else np.asarray(_mean_frame(np.asarray(darks), 2), np.float64)
        self.dark = dark.astype(np.float32)
        if flats is None:
            self.gain, self.offset, self.dead_fraction = None, None, 0.0
        else:
            denom = frame - dark
            good = denom > eps
            self.gain = np.where(good, 1.0 / np.where(good, denom, 1.0), 0.0).astype(np.float32)
            self.offset = np.where(good, 0.0, dead_value).astype(np.float32)
            self.dead_fraction = float(1.0 - good.mean())
        self._on_device: dict[torch.device, list[torch.Tensor | None]] = {}

    def __call__(self, raw: ArrayT) -> ArrayT:
        """raw (..., H, W) of any real dtype -> float32 transmission, same shape and array type (a new array,
        on the tensor's device)."""
        if isinstance(raw, torch.Tensor):
            out = raw.to(torch.float32, copy=True)  # exact for uint8/uint16 counts
            dark, gain, offset = self._tensors(raw.device)
        else:
            out = np.asarray(raw).astype(np.float32)
            dark, gain, offset = self.dark, self.gain, self.offset
        if self._steps:
            out -= dark
        if gain is not None:
            out *= gain
            out += offset
        return out

    def _tensors(self, device: torch.device) -> list[torch.Tensor | None]:
        """dark, gain, offset as float32 tensors on ``device`` (copied once per device)."""
        if device not in self._on_device:
            self._on_device[device] = [None if a is None else torch.from_numpy(a).to(device)
                                       for a in (self.dark, self.gain, self.offset)]
        return self._on_device[device]


def principal_components(stack: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of a stack of frames, through the small (n, n) Gram matrix.

    x = U S V^T (rows: the centred frames), x x^T = U S^2 U^T, V_k^T = U_k^T x / S_k: n^2 P work and n P memory
    for n frames of P pixels, where an SVD of x would need P^2.

    Args:
        stack: (n, ...) frames, any real dtype; n >= 2.
        k: the number of components kept (the largest), 1 <= k <= n (centred, n frames span at most n - 1
            directions: a k-th = n-th component has a singular value of ~0).

    Returns:
        mean float64 (...), components float64 (k, ...) orthonormal (flattened), singular values float64 (k,),
        largest first (the coefficient spread of component i over the stack is ``s[i] / sqrt(n - 1)``).
    """
    x = np.array(stack, dtype=np.float64)  # a private copy, centred in place
    n = len(x)
    if n < 2 or not 1 <= k <= n:
        raise ValueError(f"need 2 <= n and 1 <= k <= n for a PCA, got n={n}, k={k}")
    mean = x.mean(axis=0)
    x -= mean
    flat = x.reshape(n, -1)
    evals, evecs = np.linalg.eigh(flat @ flat.T)
    top = np.argsort(evals)[::-1][:k]
    s = np.sqrt(np.maximum(evals[top], 0.0))
    comps = (evecs[:, top].T @ flat) / np.maximum(s, 1e-300)[:, None]
    return mean, comps.reshape(k, *mean.shape), s


def _bin(x: ArrayT, b: int) -> ArrayT:
    """(..., H, W) -> (..., H // b, W // b) block means over b x b pixels (the edge rows/columns beyond a whole
    block are left out)."""
    h, w = (x.shape[-2] // b) * b, (x.shape[-1] // b) * b
    x = x[..., :h, :w].reshape(*x.shape[:-2], h // b, b, w // b, b)
    return x.mean(dim=(-3, -1)) if isinstance(x, torch.Tensor) else x.mean(axis=(-3, -1))


def _kept_median(r: ArrayT, keep: ArrayT) -> ArrayT:
    """The median (the lower one of an even count) of each row of ``r`` (B, P) over its ``keep`` (B, P) bool
    entries, by a sort along the row; numpy or torch."""
    idx = ((keep.sum(1) - 1) // 2).clip(min=0)[:, None]
    if isinstance(r, torch.Tensor):
        return torch.sort(torch.where(keep, r, float("inf")), dim=1).values.gather(1, idx)[:, 0]
    return np.take_along_axis(np.sort(np.where(keep, r, np.inf), axis=1), idx, axis=1)[:, 0]


class DynamicFlatfieldCorrector:
    """Flat-field correction with a flat of its own for every frame: F_j = mean + sum_k w_jk U_k.

    Dynamic flat-field correction after Van Nieuwenhove et al. (2015): the flats of a run (beam, no sample)
    give a mean flat and eigen-flats U_k (:func:`principal_components` of flats - dark); each frame's weights
    w_j are fitted to the frame itself, then (I_j - dark) / F_j as in :class:`FlatfieldCorrector`. Van
    Nieuwenhove et al. choose w_j to minimise the total variation of the corrected, downsampled frame; here the
    fit is linear least squares on a downsampled frame (``binning`` x ``binning`` block means, where the
    object's phase contrast averages out and the illumination's slow structure remains), made robust to the
    object: pixels whose residual exceeds ``clip`` robust standard deviations (1.4826 x the median absolute
    residual) are left out and the fit repeated, ``iterations`` times, so the fit rests on the frame's
    object-free statistics. A batched K x K solve per frame: cheap beside the retrieval.

    Args:
        flats: flat fields (n, H, W), n >= 2; any real dtype.
        darks: dark fields (H, W) or (..., H, W) (averaged), or None (zeros).
        n_components: eigen-flats K, 1 <= K <= n - 1.
        binning: the block side of the downsampled fit (1: every pixel); at most min(H, W).
        eps, dead_value: as :class:`FlatfieldCorrector` (a pixel whose fitted flat is <= eps gets
            ``dead_value``).
        iterations, clip: the robust refits, and their threshold in robust standard deviations.

    Attributes:
        dark, mean_flat: float32 (H, W); components: float32 (K, H, W); binning.
        dead_fraction: the fraction of pixels whose mean flat is not above the dark.
    """

    def __init__(self, flats: np.ndarray, darks: np.ndarray | None, *, n_components: int, binning: int = 1,
                 eps: float = 1e-6, dead_value: float = 1.0, iterations: int = 3, clip: float = 3.0) -> None:
        flats = np.asarray(flats)
        if flats.ndim != 3 or len(flats) < 2:
            raise ValueError(f"dynamic flat-field correction needs a stack of >= 2 flats (n, H, W), got {flats.shape}")
        if not 1 <= n_components <= len(flats) - 1:
            raise ValueError(f"{len(flats)} flats give 1 to {len(flats) - 1} eigen-flats, not {n_components}")
        h, w = flats.shape[-2:]
        if not 1 <= binning <= min(h, w):
            raise ValueError(f"binning must be in 1..{min(h, w)}, got {binning}")
        dark = np.zeros((h, w)) if darks is None else np.asarray(_mean_frame(np.asarray(darks), 2), np.float64)
        mean, comps, _ = principal_components(flats.astype(np.float64) - dark, n_components)
        self.dark, self.mean_flat, self.components = (a.astype(np.float32) for a in (dark, mean, comps))
        self.binning, self.eps, self.dead_value = binning, eps, dead_value
        self.iterations, self.clip = iterations, clip
        self.dead_fraction = float((mean <= eps).mean())
        # the least-squares design of the downsampled fit: (P, K) binned eigen-flats, and the binned mean (P,)
        self._design = _bin(comps, binning).reshape(n_components, -1).T.copy()
        self._mean_binned = _bin(mean, binning).reshape(-1)
        self._outer = (self._design[:, :, None] * self._design[:, None, :]).reshape(len(self._design), -1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def weights(self, frames_minus_dark: ArrayT) -> ArrayT:
        """The eigen-flat weights w (B, K) float64 of frames - dark (B, H, W): weighted least squares
        (U_b^T M U_b) w = U_b^T M (y - m_b) of each binned frame y, M the pixels kept (finite, and after each
        refit within ``clip`` robust standard deviations of the fit)."""
        torch_in = isinstance(frames_minus_dark, torch.Tensor)
        if torch_in:
            design, outer, mean_b = self._tensors(frames_minus_dark.device)[3:]
            x = frames_minus_dark.double()
        else:
            design, outer, mean_b = self._design, self._outer, self._mean_binned
            x = np.asarray(frames_minus_dark, np.float64)
        xp = torch if torch_in else np
        y = _bin(x, self.binning).reshape(len(x), -1) - mean_b
        keep = xp.isfinite(y)
        y = xp.where(keep, y, 0.0)
        k = design.shape[1]
        ridge = 1e-12 * float((design * design).sum()) / k  # keeps a frame with few pixels left solvable
        for it in range(self.iterations + 1):
            m = keep.to(design.dtype) if torch_in else keep.astype(np.float64)
            gram = (m @ outer).reshape(-1, k, k)  # sum_p m_p U_pk U_pl: one matrix product
            gram[:, range(k), range(k)] += ridge
            w = xp.linalg.solve(gram, ((m * y) @ design)[..., None])[..., 0]
            if it == self.iterations:
                break
            r = abs(y - w @ design.T)
            keep = keep & (r <= self.clip * 1.4826 * _kept_median(r, keep)[:, None] + 1e-12)
        return w

    def __call__(self, raw: ArrayT) -> ArrayT:
        """raw (..., H, W) of any real dtype -> float32 transmission (I - dark) / F_j, a flat fitted to each
        (H, W) frame; same shape and array type (a new array, on the tensor's device)."""
        shape = raw.shape
        if isinstance(raw, torch.Tensor):
            out = raw.reshape(-1, *shape[-2:]).to(torch.float32, copy=True)
            dark, mean, comps, *_ = self._tensors(raw.device)
        else:
            out = np.asarray(raw).reshape(-1, *shape[-2:]).astype(np.float32)
            dark, mean, comps = self.dark, self.mean_flat, self.components
        out -= dark
        w = self.weights(out)
        flat = (w.float() if isinstance(w, torch.Tensor) else w.astype(np.float32)) @ comps.reshape(len(comps), -1)
        flat = flat.reshape(out.shape) + mean
        good = flat > self.eps
        if isinstance(out, torch.Tensor):
            out = torch.where(good, out / torch.where(good, flat, torch.ones_like(flat)),
                              torch.full_like(out, self.dead_value))
        else:
            out = np.where(good, out / np.where(good, flat, 1.0), np.float32(self.dead_value)).astype(np.float32)
        return out.reshape(shape)

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """dark, mean flat, eigen-flats (float32) and the fit's design, its outer products and the binned mean
        (float64) on ``device``."""
        if device not in self._on_device:
            self._on_device[device] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (
                self.dark, self.mean_flat, self.components, self._design, self._outer, self._mean_binned))
        return self._on_device[device]
