"""Training-time augmentation of one domain's batch (paper §4): random crops that match the two domains'
fields of view, random flips and 90-degree rotations (both commute with the isotropic propagator H), and
edge padding to the network's input size.

The paper cropped 200 x 200 object patches at 1.6 um against 100 x 100 detector patches at 3.2 um (the
same 320 um field of view) and padded them to 256 and 128. Each domain is augmented with its own random
draws: the domains are unpaired.
"""

from __future__ import annotations

import numpy as np


def crop_flip_rotate_pad(batch: np.ndarray, rng: np.random.Generator, crop: int = 0, size: int = 0,
                         flip: bool = True, rotate: bool = False) -> np.ndarray:
    """Augment a batch of frames, each sample with its own draw.

    Args:
        batch: float32 (B, C, H, W).
        rng: random generator (consumed; the caller seeds it per step, rank and domain).
        crop: side of a random square crop (0: the whole frame).
        size: edge-pad the (cropped) frames to size x size (0: no padding).
        flip: random vertical and horizontal flips.
        rotate: random rotation by a multiple of 90 degrees (square frames only).

    Returns:
        float32 (B, C, S, S) with S = size, else crop, else (H, W) unchanged.
    """
    b, _, h, w = batch.shape
    if crop > min(h, w):
        raise ValueError(f"crop {crop} is larger than the frames ({h} x {w})")
    out = []
    for i in range(b):
        a = batch[i]
        if crop:
            y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            a = a[:, y:y + crop, x:x + crop]
        if flip:
            if rng.random() < 0.5:
                a = a[:, ::-1, :]
            if rng.random() < 0.5:
                a = a[:, :, ::-1]
        if rotate and a.shape[1] == a.shape[2]:
            a = np.rot90(a, int(rng.integers(0, 4)), axes=(1, 2))
        out.append(pad_to(a, size))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def center_crop_pad(batch: np.ndarray, crop: int = 0, size: int = 0) -> np.ndarray:
    """The deterministic counterpart (figures): a centred crop, then edge padding; (B, C, H, W)."""
    if crop:
        h, w = batch.shape[-2:]
        y, x = (h - crop) // 2, (w - crop) // 2
        batch = batch[..., y:y + crop, x:x + crop]
    return np.ascontiguousarray(np.stack([pad_to(a, size) for a in batch]), dtype=np.float32)


def pad_to(frame: np.ndarray, size: int) -> np.ndarray:
    """Edge-pad (C, h, w) to (C, size, size), centred; unchanged when ``size`` is 0."""
    if not size:
        return frame
    _, h, w = frame.shape
    if h > size or w > size:
        raise ValueError(f"frame {h} x {w} does not fit the network size {size}")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(frame, ((0, 0), (top, size - h - top), (left, size - w - left)), mode="edge")
