"""Phase retrieval of one batch of corrected detector frames: PhaseGAN's G_O, or the Paganin baseline.

Both give phase [rad] and attenuation (mu T) per frame (DESIGN.md §3) and a physics-consistency score:
the relative L1 distance between a frame I and the intensity its reconstruction predicts,

    score = mean |I_pred - I| / mean |I|,   I_pred = G_D |H G_O(I)|^2   (PhaseGAN's intensity cycle, eq. 3)
                                             I_pred = |H psi|^2         (no G_D in the model; Paganin)

so frames the model does not explain stand out. Nothing here imports Ray.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import LoadedModel, load_model
from phasegan_hpc.physics import FresnelPropagator, object_wavefield, paganin

METHODS = ("phasegan", "paganin")


@dataclass(frozen=True)
class Physics:
    """Geometry of the data (SI units); ``delta_beta`` is used by Paganin only."""

    pixel_size_m: float
    wavelength_m: float
    distance_m: float
    delta_beta: float | None = None
    pad: int = 0
    pad_mode: str = "edge"


def relative_l1(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """mean |pred - ref| / mean |ref| per frame: (B, H, W) -> (B,), float32."""
    num = (pred.float() - ref.float()).abs().mean(dim=(-2, -1))
    return num / ref.float().abs().mean(dim=(-2, -1)).clamp_min(1e-12)


class Retriever:
    """Maps corrected frames (B, H, W) float32 on ``device`` to (phase, attenuation, score).

    Args:
        method: "phasegan" (needs ``model``) or "paganin" (needs ``physics.delta_beta``).
        model: a loaded ``model.pt``, already on ``device``.
        physics: the geometry (for H and Paganin).
        shape: (H, W) of the frames.
        device: torch device; on CUDA, G_O and G_D run in bf16 autocast with channels_last.
    """

    def __init__(self, method: str, model: LoadedModel | None, physics: Physics, shape: tuple[int, int],
                 device: torch.device) -> None:
        if method not in METHODS:
            raise DataError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if method == "phasegan" and model is None:
            raise DataError("method phasegan needs a model")
        if method == "paganin" and physics.delta_beta is None:
            raise DataError("method paganin needs delta/beta (--delta-beta)")
        self.method, self.model, self.physics, self.device = method, model, physics, device
        self.propagator = FresnelPropagator(shape, pixel_size_m=physics.pixel_size_m,
                                            distance_m=physics.distance_m, wavelength_m=physics.wavelength_m,
                                            pad=physics.pad, pad_mode=physics.pad_mode)
        self.cuda = device.type == "cuda"
        if self.cuda and model is not None:
            model.generator.to(memory_format=torch.channels_last)
            if model.detector is not None:
                model.detector.to(memory_format=torch.channels_last)

    def _net(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()
        with ctx:
            return net(x).float()

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames (B, H, W) float32 -> phase [rad], attenuation (B, H, W) and score (B,), float32."""
        if self.method == "paganin":
            p = self.physics
            phase, att = paganin(frames, pixel_size_m=p.pixel_size_m, distance_m=p.distance_m,
                                 wavelength_m=p.wavelength_m, delta_beta=p.delta_beta)
            predicted = self.propagator.intensity(object_wavefield(phase, att))
            return phase, att, relative_l1(predicted, frames)
        m = self.model
        norm = m.normalisation
        obj = norm.denorm_object(self._net(m.generator, norm.norm_intensity(frames[:, None])))
        phase, att = obj[:, 0].contiguous(), obj[:, 1].contiguous()
        predicted = self.propagator.intensity(object_wavefield(phase, att))  # |H G_O(I)|^2, eq. 5
        if m.detector is not None:  # G_D works in normalised units, as in training (models.cycle)
            predicted = norm.denorm_intensity(self._net(m.detector, norm.norm_intensity(predicted[:, None])))[:, 0]
        return phase, att, relative_l1(predicted, frames)


def score_name(method: str, model: LoadedModel | None) -> str:
    """What the consistency score of ``method`` with ``model`` compares."""
    if method == "phasegan" and model is not None and model.detector is not None:
        return "relative L1 of G_D|H G_O(I)|^2 vs I"
    return "relative L1 of |H psi|^2 vs I"


def build_retriever(method: str, model_path: str | None, physics: Physics, shape: tuple[int, int],
                    device: torch.device) -> Retriever:
    """Load the model (if any) onto ``device`` and build the :class:`Retriever`; H uses the model's padding."""
    model = load_model(model_path, device) if model_path else None
    if model is not None and model.detector is not None:
        physics = Physics(physics.pixel_size_m, physics.wavelength_m, physics.distance_m, physics.delta_beta,
                          model.pad, model.pad_mode)
    return Retriever(method, model, physics, shape, device)
