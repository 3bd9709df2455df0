"""Retrieval methods of the reconstruction pipeline: one object per method, one interface.

    PhaseGAN   G_O of a trained model: phase [rad] and attenuation (mu T) (DESIGN.md §3); a cross-resolution
               model (paper §4) returns objects twice the frame size, at half the pixel size
    Paganin    the classical single-material TIE baseline on the corrected frames
    Tie        paper §4's object domain from a clean camera: resampling to a target pixel size, total-
               variation denoising (scikit-image, Chambolle), then Paganin
    FlatField  only the flat/dark-corrected frames (``/intensity``): a detector domain for training

A method is a small frozen dataclass (it travels to Ray actors and MPI ranks inside the worker's ``Job``)
that says what it needs (a model, delta/beta), what it writes (:meth:`Method.layout`) and what it records
in the shard manifest (:meth:`Method.options`). On a worker, :meth:`Method.bind` turns it into a
:class:`Retriever`: a callable from corrected frames to outputs and trust scores. Adding a method is one
class here and one entry in :data:`METHODS`; nothing in the driver or the workers switches on its name.

Each method also gives two trust scores per frame (:data:`SCORES`; 0 for FlatField), so that frames the
model does not explain stand out:

    consistency       mean |I_pred - I| / mean |I|,  I_pred = G_D |H G_O(I)|^2  (PhaseGAN's intensity cycle,
                      eq. 3), or |H psi|^2 (no G_D in the model; Paganin, TIE)
    fresnel_residual  the same against F |H psi|^2 with a smooth illumination F fitted per frame and no
                      network (``physics.consistency``): a G_O that invents structure cannot hide it behind
                      a G_D that learnt to decode it

Nothing here imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.restoration import denoise_tv_chambolle

from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import PhaseModel, load_model
from phasegan_hpc.models.unet import SIZE_MULTIPLE
from phasegan_hpc.physics import object_wavefield, paganin
from phasegan_hpc.physics.consistency import hologram_scores
from phasegan_hpc.physics.geometry import Geometry

#: How frames whose sides are not multiples of the U-Net's (``SIZE_MULTIPLE``, 32) go through G_O: padded by
#: reflection about their edge pixels (no step at the border; the frame's own statistics), half on each side,
#: and the outputs cropped back; the scores compare only the frame's own pixels (``PhaseModel.scores``).
PAD_MODE = "reflect"

#: The per-frame trust scores every method writes (see the module docstring).
SCORES = ("consistency", "fresnel_residual")
OBJECT_OUTPUTS = {"phase": ("rad", "object phase phi = -k delta T"),
                  "attenuation": ("1", "attenuation mu T = -ln |psi|^2")}
INTENSITY_OUTPUTS = {"intensity": ("1", "flat/dark-corrected detector frame")}

Outputs = dict[str, torch.Tensor]  # name -> (B, h, w) float32
Scores = dict[str, torch.Tensor]  # score name -> (B,) float32


@dataclass(frozen=True)
class Layout:
    """What a method writes per frame: datasets (name -> units, description), their (H, W), pixel size."""

    outputs: dict[str, tuple[str, str]]
    shape: tuple[int, int]
    pixel_size_m: float


@dataclass(frozen=True)
class Method:
    """The interface of a retrieval method (subclasses override what differs)."""

    name: ClassVar[str]
    needs_model: ClassVar[bool] = False  # reconstruct fails without a model
    needs_delta_beta: ClassVar[bool] = False  # reconstruct fails without --delta-beta (or archive delta/beta)
    model_geometry: ClassVar[bool] = False  # the frames' geometry is the model's (it was trained for it)

    def check(self) -> None:
        """Raise DataError for options no run can use (before anything is written)."""

    def options(self) -> dict[str, Any] | None:
        """The options that change the result, for the shard manifest (a resumed run must match them)."""
        return None

    def layout(self, model: PhaseModel | None, frame_shape: tuple[int, int], geometry: Geometry) -> Layout:
        """The output for frames of ``frame_shape`` (their pixel: ``geometry.detector_pixel_size_m``)."""
        return Layout(OBJECT_OUTPUTS, frame_shape, geometry.detector_pixel_size_m)

    def score_name(self, model: PhaseModel | None) -> str:
        """What the consistency score compares (the output's ``score`` attribute)."""
        return "relative L1 of |H psi|^2 vs I"

    def bind(self, model: PhaseModel | None, geometry: Geometry, frame_shape: tuple[int, int],
             delta_beta: float | None) -> Retriever:
        """This method ready to run on a worker (``model`` already on its device)."""
        if self.needs_model and model is None:
            raise DataError(f"method {self.name} needs a model")
        if self.needs_delta_beta and delta_beta is None:
            raise DataError(f"method {self.name} needs delta/beta (--delta-beta)")
        return Retriever(self, model, geometry, self.layout(model, frame_shape, geometry), delta_beta)

    def retrieve(self, r: Retriever, frames: torch.Tensor, which: torch.Tensor) -> tuple[Outputs, Scores]:
        """frames (B, H, W) float32 -> ({name: (B, h, w)}, {score: (len(which),)} for the frames ``which``
        (int64 indices; the scores' cost is the user's choice, ``--score``)), using what ``r`` holds."""
        raise NotImplementedError


@dataclass(frozen=True)
class PhaseGAN(Method):
    """G_O of the model; its scores use G_D (if the model has one) and the model's propagator."""

    name: ClassVar[str] = "phasegan"
    needs_model: ClassVar[bool] = True
    model_geometry: ClassVar[bool] = True

    def layout(self, model, frame_shape, geometry):
        if model is not None and model.scale == 2:
            h, w = frame_shape
            return Layout(OBJECT_OUTPUTS, (2 * h, 2 * w), geometry.detector_pixel_size_m / 2)
        return super().layout(model, frame_shape, geometry)

    def score_name(self, model):
        if model is not None and model.detector is not None:
            return "relative L1 of G_D|H G_O(I)|^2 vs I"
        return super().score_name(model)

    def retrieve(self, r, frames, which):
        padded, region = pad_to_multiple(frames, SIZE_MULTIPLE)
        phase, att = r.model.retrieve(padded)
        scores = r.model.scores(padded[which], phase[which], att[which], region)
        if padded is frames:
            return {"phase": phase, "attenuation": att}, scores
        s = r.model.scale  # the object grid is s times the frame grid
        rows, cols = (slice(k.start * s, k.stop * s) for k in region)
        return {"phase": phase[:, rows, cols].contiguous(), "attenuation": att[:, rows, cols].contiguous()}, scores


@dataclass(frozen=True)
class Paganin(Method):
    """Paganin's single-material phase retrieval of the corrected frames (``physics.paganin``)."""

    name: ClassVar[str] = "paganin"
    needs_delta_beta: ClassVar[bool] = True

    def retrieve(self, r, frames, which):
        return r.paganin_with_scores(frames, r.geometry.detector_pixel_size_m, which)


@dataclass(frozen=True)
class Tie(Method):
    """Paper §4's TIE object domain: resample to ``resample_pixel_size_m`` (None: keep), then ``tv_iterations``
    of Chambolle's total-variation denoising with scikit-image's ``weight`` (0: none), then Paganin."""

    name: ClassVar[str] = "tie"
    needs_delta_beta: ClassVar[bool] = True
    resample_pixel_size_m: float | None = None
    tv_weight: float = 0.0
    tv_iterations: int = 100

    def check(self) -> None:
        if self.resample_pixel_size_m is not None and self.resample_pixel_size_m <= 0:
            raise DataError("--resample-pixel-size-m must be > 0")

    def options(self) -> dict[str, Any]:
        return {"resample_pixel_size_m": self.resample_pixel_size_m, "tv_weight": self.tv_weight,
                "tv_iterations": self.tv_iterations}

    def layout(self, model, frame_shape, geometry):
        if not self.resample_pixel_size_m:
            return super().layout(model, frame_shape, geometry)
        factor = geometry.detector_pixel_size_m / self.resample_pixel_size_m
        h, w = frame_shape
        return Layout(OBJECT_OUTPUTS, (round(h * factor), round(w * factor)), self.resample_pixel_size_m)

    def retrieve(self, r, frames, which):
        factor = r.geometry.detector_pixel_size_m / r.layout.pixel_size_m
        prepared = tie_prepare(frames.cpu().numpy(), factor, r.layout.shape, self.tv_weight, self.tv_iterations)
        return r.paganin_with_scores(torch.from_numpy(prepared).float().to(frames.device), r.layout.pixel_size_m,
                                     which)


@dataclass(frozen=True)
class FlatField(Method):
    """The corrected frames themselves (no retrieval; scores 0)."""

    name: ClassVar[str] = "flatfield"

    def layout(self, model, frame_shape, geometry):
        return Layout(INTENSITY_OUTPUTS, frame_shape, geometry.detector_pixel_size_m)

    def score_name(self, model):
        return "none (0)"

    def retrieve(self, r, frames, which):
        return {"intensity": frames}, {k: torch.zeros(len(which), device=frames.device) for k in SCORES}


#: Every method by its ``--method`` name.
METHODS: dict[str, type[Method]] = {m.name: m for m in (PhaseGAN, Paganin, Tie, FlatField)}


def method_named(name: str, **options: Any) -> Method:
    """The method called ``name`` with those of ``options`` it takes (the CLI passes all of its options; TIE's
    apply only to TIE).

    Raises:
        DataError: an unknown name.
    """
    if name not in METHODS:
        raise DataError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = cls.__dataclass_fields__
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def tie_prepare(frames: np.ndarray, factor: float, out_shape: tuple[int, int], tv_weight: float,
                tv_iterations: int) -> np.ndarray:
    """Resample (linear interpolation) by ``factor`` to ``out_shape`` and TV-denoise each frame.

    Args:
        frames: corrected intensities (B, H, W) float32.

    Returns:
        float64 (B, *out_shape).
    """
    out = np.empty((len(frames), *out_shape))
    for i, frame in enumerate(frames.astype(np.float64)):
        if factor != 1:
            frame = ndimage.zoom(frame, (out_shape[0] / frame.shape[0], out_shape[1] / frame.shape[1]), order=1,
                                 mode="nearest", grid_mode=True)
        if tv_weight > 0:
            frame = denoise_tv_chambolle(frame, weight=tv_weight, max_num_iter=tv_iterations)
        out[i] = frame
    return out


def pad_to_multiple(frames: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """Frames (B, H, W) padded (:data:`PAD_MODE`; "replicate" for a side shorter than its padding) to sides that
    are multiples of ``multiple``, and the region (rows, columns) of the original frames in them. Frames that
    fit already come back as they are (the same tensor)."""
    h, w = frames.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    top, left = ph // 2, pw // 2
    region = (slice(top, top + h), slice(left, left + w))
    if not ph and not pw:
        return frames, region
    mode = PAD_MODE if ph < h and pw < w else "replicate"
    return F.pad(frames[:, None], (left, pw - left, top, ph - top), mode=mode)[:, 0], region


class Retriever:
    """A method bound to a worker: maps corrected frames (B, H, W) float32 on the model's device to
    ({output name: (B, h, w)}, {score: (B,)}). Build it with :meth:`Method.bind` or :func:`build_retriever`.

    Attributes:
        method, model (on the device, or None), geometry (of the frames; PhaseGAN: the model's), layout,
        delta_beta (Paganin, TIE).
    """

    def __init__(self, method: Method, model: PhaseModel | None, geometry: Geometry, layout: Layout,
                 delta_beta: float | None) -> None:
        self.method, self.model, self.geometry, self.layout = method, model, geometry, layout
        self.delta_beta = delta_beta
        self._propagator = None  # H on the output grid, for the scores of physics-only methods

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, scored: torch.Tensor | None = None) -> tuple[Outputs, Scores]:
        """frames (B, H, W) float32 -> ({name: (B, h, w) float32}, {score name: (B,) float32} of :data:`SCORES`),
        scored where ``scored`` (bool (B,); None: every frame) and NaN elsewhere (computed only there)."""
        if scored is None:
            return self.method.retrieve(self, frames, torch.arange(len(frames), device=frames.device))
        which = torch.nonzero(scored.to(frames.device)).reshape(-1)
        outputs, some = self.method.retrieve(self, frames, which)
        scores = {}
        for name, values in some.items():
            scores[name] = torch.full((len(frames),), float("nan"), dtype=values.dtype, device=values.device)
            scores[name][which] = values
        return outputs, scores

    def paganin_with_scores(self, frames: torch.Tensor, pixel_size_m: float,
                            which: torch.Tensor) -> tuple[Outputs, Scores]:
        """Paganin's phase and attenuation of ``frames`` at ``pixel_size_m``; the frames ``which`` scored
        against |H psi|^2."""
        g = self.geometry
        phase, att = paganin(frames, pixel_size_m=pixel_size_m, distance_m=g.distance_m,
                             wavelength_m=g.wavelength_m, delta_beta=self.delta_beta)
        if self._propagator is None:
            self._propagator = replace(g, pixel_size_m=self.layout.pixel_size_m).propagator(self.layout.shape)
        hologram = self._propagator.intensity(object_wavefield(phase[which], att[which]))
        return {"phase": phase, "attenuation": att}, hologram_scores(frames[which], hologram)


def build_retriever(method: Method, model_path: str | None, geometry: Geometry, shape: tuple[int, int],
                    device: torch.device, compile: bool = False, delta_beta: float | None = None) -> Retriever:
    """Load the model (if any) onto ``device`` (``compile``: through ``torch.compile``, the fastest variant of
    ``bench inference`` on GPUs; on CUDA, G_O and G_D run in bf16 autocast with channels_last) and bind
    ``method`` to it for frames of ``shape`` (PhaseGAN's H uses the model's geometry and padding)."""
    model = load_model(model_path, device) if model_path else None
    if model is not None:
        model.accelerate(compile)
    return method.bind(model, geometry, shape, delta_beta)
