"""Input/output normalisation of the networks, computed from the training data and stored with the model.

Networks see (x - mean) / std per channel: detector intensity (1 channel), object (phase, attenuation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from phasegan_hpc.data.frames import FrameStack


@dataclass(frozen=True)
class Normalisation:
    """Per-channel statistics. Intensity: scalars; object: (phase, attenuation) pairs."""

    intensity_mean: float
    intensity_std: float
    object_mean: tuple[float, float]
    object_std: tuple[float, float]

    def to_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Normalisation:
        return cls(float(d["intensity_mean"]), float(d["intensity_std"]),
                   tuple(float(v) for v in d["object_mean"]), tuple(float(v) for v in d["object_std"]))

    def _obj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.object_mean, dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
        s = torch.tensor(self.object_std, dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
        return m, s

    def norm_intensity(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.intensity_mean) / self.intensity_std

    def denorm_intensity(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.intensity_std + self.intensity_mean

    def norm_object(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) physical (phase [rad], attenuation) -> normalised."""
        m, s = self._obj(x)
        return (x - m) / s

    def denorm_object(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) normalised -> physical (phase [rad], attenuation)."""
        m, s = self._obj(x)
        return x * s + m


def _mean_std(stack: FrameStack, channels: list[int], n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    idx = np.sort(rng.choice(len(stack), size=min(n, len(stack)), replace=False))
    frames = stack[idx].astype(np.float64)
    return [(float(frames[:, c].mean()), max(float(frames[:, c].std()), 1e-12)) for c in channels]


def compute_normalisation(intensity: FrameStack, intensity_channel: int, objects: FrameStack,
                          object_channels: tuple[int, int], n_frames: int, seed: int) -> Normalisation:
    """Statistics from up to ``n_frames`` random frames of the training sets (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    ((im, is_),) = _mean_std(intensity, [intensity_channel], n_frames, rng)
    (pm, ps), (am, as_) = _mean_std(objects, list(object_channels), n_frames, rng)
    return Normalisation(im, is_, (pm, am), (ps, as_))
