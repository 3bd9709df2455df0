"""Flat/dark-field correction (DESIGN.md §3): (I - dark) / (flat - dark)."""

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
