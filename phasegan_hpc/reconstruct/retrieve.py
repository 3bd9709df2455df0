"""Per-batch retrieval methods of the reconstruction pipeline.

    phasegan   G_O of a trained model: phase [rad] and attenuation (mu T) (DESIGN.md §3); a cross-resolution
               model (paper §4) returns objects twice the frame size, at half the pixel size
    paganin    the classical single-material TIE baseline on the corrected frames
    tie        paper §4's object domain from a clean camera: resampling to a target pixel size, total-
               variation denoising (scikit-image, Chambolle), then Paganin
    flatfield  only the flat/dark-corrected frames (``/intensity``): a detector domain for training

Each also gives two trust scores per frame (:data:`SCORES`; 0 for flatfield), so that frames the model
does not explain stand out:

    consistency       mean |I_pred - I| / mean |I|,  I_pred = G_D |H G_O(I)|^2  (PhaseGAN's intensity cycle,
                      eq. 3), or |H psi|^2 (no G_D in the model; Paganin, TIE)
    fresnel_residual  the same against F |H psi|^2 with a smooth illumination F fitted per frame and no
                      network (``physics.consistency``): a G_O that invents structure cannot hide it behind
                      a G_D that learnt to decode it

Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import PhaseModel, load_model
from phasegan_hpc.physics import object_wavefield, paganin
from phasegan_hpc.physics.consistency import hologram_scores
from phasegan_hpc.physics.geometry import Geometry

METHODS = ("phasegan", "paganin", "tie", "flatfield")
#: The per-frame trust scores every method writes (see the module docstring).
SCORES = ("consistency", "fresnel_residual")
OBJECT_OUTPUTS = {"phase": ("rad", "object phase phi = -k delta T"),
                  "attenuation": ("1", "attenuation mu T = -ln |psi|^2")}
INTENSITY_OUTPUTS = {"intensity": ("1", "flat/dark-corrected detector frame")}


@dataclass(frozen=True)
class TieOptions:
    """Paper §4's TIE object domain: resample to ``resample_pixel_size_m`` (None: keep), then ``tv_iterations``
    of Chambolle's total-variation denoising with scikit-image's ``weight`` (0: none), then Paganin."""

    resample_pixel_size_m: float | None = None
    tv_weight: float = 0.0
    tv_iterations: int = 100


@dataclass(frozen=True)
class Layout:
    """What a method writes per frame: datasets (name -> units, description), their (H, W), pixel size."""

    outputs: dict[str, tuple[str, str]]
    shape: tuple[int, int]
    pixel_size_m: float


def output_layout(method: str, model: PhaseModel | None, frame_shape: tuple[int, int], geometry: Geometry,
                  tie: TieOptions | None = None) -> Layout:
    """The output of ``method`` for frames of ``frame_shape`` (their pixel: ``geometry.detector_pixel_size_m``)."""
    h, w = frame_shape
    pixel = geometry.detector_pixel_size_m
    if method == "flatfield":
        return Layout(INTENSITY_OUTPUTS, frame_shape, pixel)
    if method == "phasegan" and model is not None and model.scale == 2:
        return Layout(OBJECT_OUTPUTS, (2 * h, 2 * w), pixel / 2)
    if method == "tie" and tie is not None and tie.resample_pixel_size_m:
        factor = pixel / tie.resample_pixel_size_m
        return Layout(OBJECT_OUTPUTS, (round(h * factor), round(w * factor)), tie.resample_pixel_size_m)
    return Layout(OBJECT_OUTPUTS, frame_shape, pixel)


def tie_prepare(frames: np.ndarray, factor: float, out_shape: tuple[int, int], tv_weight: float,
                tv_iterations: int) -> np.ndarray:
    """Resample (linear interpolation) by ``factor`` to ``out_shape`` and TV-denoise each frame.

    Args:
        frames: corrected intensities (B, H, W) float32.

    Returns:
        float64 (B, *out_shape).
    """
    from scipy import ndimage
    from skimage.restoration import denoise_tv_chambolle

    out = np.empty((len(frames), *out_shape))
    for i, frame in enumerate(frames.astype(np.float64)):
        if factor != 1:
            frame = ndimage.zoom(frame, (out_shape[0] / frame.shape[0], out_shape[1] / frame.shape[1]), order=1,
                                 mode="nearest", grid_mode=True)
        if tv_weight > 0:
            frame = denoise_tv_chambolle(frame, weight=tv_weight, max_num_iter=tv_iterations)
        out[i] = frame
    return out


class Retriever:
    """Maps corrected frames (B, H, W) float32 on ``device`` to ({output name: (B, h, w)}, {score: (B,)}).

    Args:
        method: one of :data:`METHODS` ("phasegan" needs ``model``; "paganin" and "tie" need ``delta_beta``).
        model: a loaded ``model.pt``, already on ``device``.
        geometry: of the frames (their pixel is ``detector_pixel_size_m``; for PhaseGAN the model's geometry).
        shape: (H, W) of the frames.
        device: torch device; on CUDA, G_O and G_D run in bf16 autocast with channels_last.
        tie: options of the "tie" method.
        compile: run G_O and G_D through ``torch.compile`` (the fastest variant of ``bench inference`` on
            GPUs; one compilation per batch shape).
        delta_beta: the material's delta / beta, for Paganin and TIE.
    """

    def __init__(self, method: str, model: PhaseModel | None, geometry: Geometry, shape: tuple[int, int],
                 device: torch.device, tie: TieOptions | None = None, compile: bool = False,
                 delta_beta: float | None = None) -> None:
        if method not in METHODS:
            raise DataError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if method == "phasegan" and model is None:
            raise DataError("method phasegan needs a model")
        if method in ("paganin", "tie") and delta_beta is None:
            raise DataError(f"method {method} needs delta/beta (--delta-beta)")
        self.method, self.model, self.geometry, self.device = method, model, geometry, device
        self.delta_beta = delta_beta
        self.tie = tie or TieOptions()
        self.layout = output_layout(method, model, shape, geometry, self.tie)
        self.propagator = None
        if method in ("paganin", "tie"):  # H on the output grid, for the scores
            self.propagator = replace(geometry, pixel_size_m=self.layout.pixel_size_m).propagator(self.layout.shape)
        if model is not None:
            model.accelerate(compile)

    def _paganin(self, frames: torch.Tensor, pixel_size_m: float) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.geometry
        return paganin(frames, pixel_size_m=pixel_size_m, distance_m=g.distance_m, wavelength_m=g.wavelength_m,
                       delta_beta=self.delta_beta)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """frames (B, H, W) float32 -> ({name: (B, h, w) float32}, {score name: (B,) float32} of :data:`SCORES`)."""
        if self.method == "flatfield":
            return {"intensity": frames}, {k: torch.zeros(len(frames), device=frames.device) for k in SCORES}
        if self.method == "paganin":
            phase, att = self._paganin(frames, self.geometry.detector_pixel_size_m)
            return self._with_score(phase, att, frames)
        if self.method == "tie":
            t = self.tie
            factor = self.geometry.detector_pixel_size_m / self.layout.pixel_size_m
            prepared = torch.from_numpy(tie_prepare(frames.cpu().numpy(), factor, self.layout.shape, t.tv_weight,
                                                    t.tv_iterations)).float().to(frames.device)
            phase, att = self._paganin(prepared, self.layout.pixel_size_m)
            return self._with_score(phase, att, prepared)
        phase, att = self.model.retrieve(frames)
        return {"phase": phase, "attenuation": att}, self.model.scores(frames, phase, att)

    def _with_score(self, phase: torch.Tensor, att: torch.Tensor, frames: torch.Tensor):
        hologram = self.propagator.intensity(object_wavefield(phase, att))
        return {"phase": phase, "attenuation": att}, hologram_scores(frames, hologram)


def score_name(method: str, model: PhaseModel | None) -> str:
    """What the consistency score of ``method`` with ``model`` compares."""
    if method == "flatfield":
        return "none (0)"
    if method == "phasegan" and model is not None and model.detector is not None:
        return "relative L1 of G_D|H G_O(I)|^2 vs I"
    return "relative L1 of |H psi|^2 vs I"


def build_retriever(method: str, model_path: str | None, geometry: Geometry, shape: tuple[int, int],
                    device: torch.device, tie: TieOptions | None = None, compile: bool = False,
                    delta_beta: float | None = None) -> Retriever:
    """Load the model (if any) onto ``device`` and build the :class:`Retriever` (PhaseGAN's H uses the model's
    geometry and padding)."""
    model = load_model(model_path, device) if model_path else None
    return Retriever(method, model, geometry, shape, device, tie, compile, delta_beta)
