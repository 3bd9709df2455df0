"""Corrected frames made ready for retrieval: masked pixels inpainted, non-finite ones replaced, negative ones
counted, zingers removed.

These steps come in two forms, chosen by ``--correct-on`` (:func:`correct_on_device`): numpy on the host
(after the reader's flat/dark correction), or torch on the retrieval's device, where the raw integer frames
were copied and corrected (``FrameReader.correct`` on a tensor): half the bytes of float32 cross the bus, and
nothing waits for the GPU, so the host reads and writes while it computes. Both give the same values: the
tensor form is tested on the CPU against the numpy one in ``make test``, and ``bench check`` compares them on
a GPU.

A frame's non-finite pixels (NaN, +-inf: unreadable chunks, dead pixels, overflows) are replaced by the
median of its finite ones (for an even count, the mean of the two middle values, as ``np.median``); a frame
with no finite pixel is filled with 1.0 (the free beam) and its outputs are set to NaN by the worker.
Negative pixels are finite values below zero after the correction (kept as they are, counted per frame).
Zingers (``--zinger-threshold T``: direct hits of scattered X-rays or cosmic rays on the sensor, as tomopy's
``remove_outlier``) are pixels more than T (in units of the corrected transmission) above the median of their
3 x 3 neighbourhood (mirrored at the borders); they are replaced by that median, after the non-finite pixels,
and counted per frame.
Masked pixels (``--mask``: bad pixels, module gaps; fixed for the detector) are inpainted first, right after
the correction (so they count neither as non-finite nor as negative): each takes the value of its nearest
unmasked pixel (Euclidean; ``scipy.ndimage.distance_transform_edt``), through an index map computed once
(:func:`fill_index`), so the masked pixels' own values never reach the retrieval.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

#: ``--correct-on`` values: "auto" is "device" on CUDA and "host" elsewhere.
CORRECT_ON = ("auto", "host", "device")


def correct_on_device(correct_on: str, device: torch.device) -> bool:
    """Whether frames are corrected and prepared on ``device`` (True) or on the host."""
    if correct_on not in CORRECT_ON:
        raise ValueError(f"correct_on must be one of {CORRECT_ON}, not {correct_on!r}")
    return correct_on == "device" or (correct_on == "auto" and device.type == "cuda")


def sanitise(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace non-finite pixels of each frame by the median of its finite ones (see the module docstring).

    Args:
        batch: (B, H, W) float32 corrected frames.

    Returns:
        (clean batch (the same array when nothing was replaced), non-finite pixel count per frame (B,) int64;
        a count of H * W marks a frame with no finite pixel, filled with 1.0).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf is NaN here, as it should be
        total = batch.sum() if len(batch) else np.nan
    if np.isfinite(total):  # the usual case: one pass (inf/NaN propagate; an overflow to inf only takes the exact
        # path), nothing to replace
        return batch, np.zeros(len(batch), np.int64)
    bad = ~np.isfinite(batch)
    counts = np.count_nonzero(bad.reshape(len(batch), -1), axis=1).astype(np.int64)
    if counts.any():
        batch = batch.copy()
        for i in np.flatnonzero(counts):
            batch[i][bad[i]] = 1.0 if counts[i] == bad[i].size else np.median(batch[i][~bad[i]])
    return batch, counts


def count_negative(batch: np.ndarray) -> np.ndarray:
    """Finite pixels below zero per frame of (B, H, W) (NaN and -inf are counted as non-finite), int64 (B,)."""
    if not len(batch) or batch.min() >= 0:  # the usual case: one pass (a NaN minimum takes the exact count)
        return np.zeros(len(batch), np.int64)
    below = (batch < 0) & (batch > -np.inf)
    return np.count_nonzero(below.reshape(len(batch), -1), axis=1).astype(np.int64)


def sanitise_tensor(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sanitise` on a tensor's device: (B, H, W) float32 -> (clean, counts (B,) int64 on that device).

    On CUDA nothing synchronises with the host: every batch's medians are computed (a sort of each frame, a
    few microseconds on a GPU) and applied where a pixel is bad. On the CPU a batch without a non-finite pixel
    takes one pass (its sum), as numpy's.
    """
    b = len(batch)
    if batch.device.type == "cpu" and b and bool(torch.isfinite(batch.sum())):  # one pass, as numpy's
        return batch, torch.zeros(b, dtype=torch.int64)
    flat = batch.reshape(b, -1)
    bad = ~torch.isfinite(flat)
    counts = bad.sum(dim=1)
    n = flat.shape[1]
    finite = n - counts
    # Bad pixels sort last as +inf; the median of the first ``finite`` values is that of the finite pixels.
    ordered = torch.where(bad, torch.full_like(flat, float("inf")), flat).sort(dim=1).values
    lo = ((finite - 1).clamp(min=0) // 2).unsqueeze(1)
    hi = (finite // 2).clamp(max=n - 1).unsqueeze(1)
    median = (ordered.gather(1, lo) + ordered.gather(1, hi)) / 2
    median = torch.where((finite == 0).unsqueeze(1), torch.ones_like(median), median)
    return torch.where(bad, median, flat).reshape(batch.shape), counts


def count_negative_tensor(batch: torch.Tensor) -> torch.Tensor:
    """:func:`count_negative` on a tensor's device: (B, H, W) float32 -> (B,) int64 on that device (on the CPU,
    one pass when nothing is below zero, as numpy's; on CUDA the count, without synchronising)."""
    if batch.device.type == "cpu" and (not len(batch) or bool(batch.min() >= 0)):
        return torch.zeros(len(batch), dtype=torch.int64)
    return ((batch < 0) & (batch > float("-inf"))).reshape(len(batch), -1).sum(dim=1)


def remove_zingers(batch: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Zingers of (B, H, W) float32 finite frames replaced by their 3 x 3 median (see the module docstring).

    Returns:
        (frames (a new array where any pixel was replaced), replaced pixels per frame (B,) int64).
    """
    median = ndimage.median_filter(batch, size=(1, 3, 3), mode="mirror")
    hot = batch - median > threshold
    counts = np.count_nonzero(hot.reshape(len(batch), -1), axis=1).astype(np.int64)
    return (np.where(hot, median, batch) if counts.any() else batch), counts


def remove_zingers_tensor(batch: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`remove_zingers` on a tensor's device (the same medians: 9 values, the middle one)."""
    b, h, w = batch.shape
    padded = F.pad(batch[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]  # numpy's / scipy's "mirror"
    windows = padded.unfold(1, 3, 1).unfold(2, 3, 1).reshape(b, h, w, 9)
    median = windows.median(dim=-1).values
    hot = batch - median > threshold
    return torch.where(hot, median, batch), hot.reshape(b, -1).sum(dim=1)


def fill_index(mask: np.ndarray) -> np.ndarray:
    """For a (H, W) bool mask (True: bad), the flat index (H * W,) int64 of the pixel whose value each pixel
    takes: itself where unmasked, its nearest unmasked pixel where masked.

    Raises:
        ValueError: a mask with no unmasked pixel.
    """
    if mask.all():
        raise ValueError("the mask covers every pixel")
    _, (rows, cols) = ndimage.distance_transform_edt(mask, return_indices=True)
    return (rows * mask.shape[1] + cols).reshape(-1).astype(np.int64)


def inpaint(batch: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B, H, W) frames with their masked pixels filled through :func:`fill_index`'s ``index`` (a new array)."""
    return batch.reshape(len(batch), -1)[:, index].reshape(batch.shape)


def inpaint_tensor(batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """:func:`inpaint` on a tensor's device (``index`` on that device)."""
    return batch.reshape(len(batch), -1)[:, index].reshape(batch.shape)
