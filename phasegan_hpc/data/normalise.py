"""Input/output normalisation of the networks, computed from the training data and stored with the model.

Networks see normalised tensors: the detector intensity (1 channel) as (I - mean) / std, and the object as
two channels in one of two encodings (``[model] output``; paper §2: "real/imag or phase/amplitude"):

    "real_imag"          (Re psi, Im psi), the authors' choice: H takes them as they are (psi is linear in the
                         outputs), and phase = arg psi, attenuation = -ln |psi|^2 are derived
    "phase_attenuation"  (phi [rad], A = mu T), psi = exp(-A / 2 + i phi) (DESIGN.md §3)

and one of three scalings (``[model] object_scale``):

    "shared"   both channels divided by one scale (the rms of their deviations), so each channel keeps its
               physical weight: one normalised unit of either channel changes psi by about as much
    "ctf"      the phase-like channel (phase, Im psi) z-scored; the other (attenuation, Re psi) given the
               scale at which one normalised unit moves the detector intensity as much as one unit of the
               phase-like channel does, by the contrast transfer function of the geometry
               (:func:`phasegan_hpc.physics.propagator.contrast_transfer_gains`). For strong phase objects
               seen at short distance (the foam of paper §4: phase std 7 rad, chi <= 0.07), where "shared"
               gives attenuation a 5-neper scale (exp overflows at initialisation) and "channel" leaves it
               inert (34x less gradient)
    "channel"  each channel z-scored on its own (files written before the encodings existed). With
               (phase, attenuation) of a weak absorber (std 3e-4 against phase's 0.1) this makes the
               attenuation channel inert inside H: its intensity-cycle gradient is ~1000x smaller.

Whatever the encoding, :meth:`Normalisation.denorm_object` gives (phase, attenuation) and
:meth:`Normalisation.wavefield` gives psi: callers never branch on the encoding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.errors import DataError

#: Object encodings of G_O's two output channels (``[model] output``).
OBJECT_OUTPUTS = ("real_imag", "phase_attenuation")
#: Scalings of the two object channels (``[model] object_scale``).
OBJECT_SCALES = ("shared", "ctf", "channel")
#: Largest attenuation scale [neper] "shared" may give (exp(-A) of a few units already overflows the cycle).
MAX_SHARED_ATTENUATION_STD = 1.0


@dataclass(frozen=True)
class Normalisation:
    """Per-channel statistics. Intensity: scalars; object: a (mean, std) pair per channel of ``output``.

    ``output`` says what the object channels are (:data:`OBJECT_OUTPUTS`); files from before it existed
    load as "phase_attenuation".
    """

    intensity_mean: float
    intensity_std: float
    object_mean: tuple[float, float]
    object_std: tuple[float, float]
    output: str = "phase_attenuation"

    def __post_init__(self) -> None:
        if self.output not in OBJECT_OUTPUTS:
            raise ValueError(f"object output must be one of {OBJECT_OUTPUTS}, got {self.output!r}")

    def to_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Normalisation:
        return cls(float(d["intensity_mean"]), float(d["intensity_std"]),
                   tuple(float(v) for v in d["object_mean"]), tuple(float(v) for v in d["object_std"]),
                   str(d.get("output", "phase_attenuation")))

    def _obj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.object_mean, dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
        s = torch.tensor(self.object_std, dtype=x.dtype, device=x.device).view(1, 2, 1, 1)
        return m, s

    def norm_intensity(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.intensity_mean) / self.intensity_std

    def denorm_intensity(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.intensity_std + self.intensity_mean

    def norm_object(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) physical (phase [rad], attenuation) -> the network's normalised channels."""
        m, s = self._obj(x)
        return (encode_object(x, self.output) - m) / s

    def denorm_object(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) normalised network channels -> physical (phase [rad], attenuation).

        With "real_imag" the phase is arg psi, wrapped to (-pi, pi]."""
        m, s = self._obj(x)
        return decode_object(x * s + m, self.output)

    def wavefield(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) normalised network channels -> psi (B, H, W) complex, differentiable (eq. 5).

        "real_imag": psi = Re + i Im, linear in the outputs; "phase_attenuation": exp(-A / 2 + i phi)."""
        m, s = self._obj(x)
        c = x * s + m
        if self.output == "real_imag":
            return torch.complex(c[:, 0], c[:, 1])
        return torch.polar(torch.exp(-0.5 * c[:, 1]), c[:, 0])


def encode_object(obj: torch.Tensor | np.ndarray, output: str):
    """Physical (phase [rad], attenuation) (B, 2, H, W) -> the channels of ``output`` (same type, float)."""
    if output == "phase_attenuation":
        return obj
    lib = torch if isinstance(obj, torch.Tensor) else np
    amplitude = lib.exp(-0.5 * obj[:, 1])
    return lib.stack([amplitude * lib.cos(obj[:, 0]), amplitude * lib.sin(obj[:, 0])], 1)


def decode_object(channels: torch.Tensor, output: str) -> torch.Tensor:
    """Channels of ``output`` (B, 2, H, W), physical units -> (phase [rad], attenuation) (B, 2, H, W)."""
    if output == "phase_attenuation":
        return channels
    re, im = channels[:, 0], channels[:, 1]
    return torch.stack([torch.atan2(im, re), -torch.log((re.square() + im.square()).clamp_min(1e-30))], 1)


def _sample(stack: FrameStack, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.sort(rng.choice(len(stack), size=min(n, len(stack)), replace=False))
    return stack[idx].astype(np.float64)


def object_statistics(objects: np.ndarray, output: str, scale: str,
                      ctf_gains: tuple[float, float] | None = None) -> tuple[tuple[float, float],
                                                                             tuple[float, float]]:
    """(means, stds) of the two channels of ``output`` over physical objects (N, 2, H, W) float64.

    ``scale`` "shared" gives both channels one std, sqrt of the mean of the two variances; "channel" each
    its own; "ctf" the phase-like channel its own std s and the other s * g_phase / g_att, with ``ctf_gains``
    = (g_att, g_phase) of :func:`~phasegan_hpc.physics.propagator.contrast_transfer_gains` (Re psi moves I
    twice as much as attenuation does: dI = 2 cos(chi) dRe). Stds are floored at 1e-12.

    Raises:
        DataError: "shared" (phase, attenuation) whose scale would exceed
            :data:`MAX_SHARED_ATTENUATION_STD` nepers (a strong phase object: use "ctf").
        ValueError: an unknown scale, or "ctf" without gains.
    """
    enc = encode_object(objects, output)
    means = tuple(float(enc[:, c].mean()) for c in range(2))
    stds = [max(float(enc[:, c].std()), 1e-12) for c in range(2)]
    if scale == "shared":
        stds = [max(float(np.sqrt((stds[0] ** 2 + stds[1] ** 2) / 2)), 1e-12)] * 2
        if output == "phase_attenuation" and stds[1] > MAX_SHARED_ATTENUATION_STD:
            raise DataError(f"object_scale \"shared\" would scale attenuation by {stds[1]:.3g} nepers (phase "
                            f"std {float(enc[:, 0].std()):.3g} rad): set [model] object_scale = \"ctf\"")
    elif scale == "ctf":
        if ctf_gains is None:
            raise ValueError('object scale "ctf" needs the contrast transfer gains of the geometry')
        g_att, g_phase = ctf_gains
        if output == "phase_attenuation":  # (phase, attenuation): dI = 2 sin(chi) dphi - cos(chi) dA
            stds[1] = max(stds[0] * g_phase / max(g_att, 1e-12), 1e-12)
        else:  # (Re, Im): dI = 2 cos(chi) dRe + 2 sin(chi) dIm at |psi| ~ 1
            stds[0] = max(stds[1] * g_phase / max(2 * g_att, 1e-12), 1e-12)
    elif scale != "channel":
        raise ValueError(f"object scale must be one of {OBJECT_SCALES}, got {scale!r}")
    return means, (stds[0], stds[1])


def compute_normalisation(intensity: FrameStack, intensity_channel: int, objects: FrameStack,
                          object_channels: tuple[int, int], n_frames: int, seed: int,
                          output: str = "phase_attenuation", scale: str = "channel",
                          ctf_gains: tuple[float, float] | None = None) -> Normalisation:
    """Statistics from up to ``n_frames`` random frames of the training sets (deterministic in ``seed``).

    Args:
        intensity, intensity_channel: the detector frames and their channel in ``intensity``'s rows.
        objects, object_channels: the objects and the (phase, attenuation) channels in ``objects``' rows.
        output, scale: the object encoding and scaling (:data:`OBJECT_OUTPUTS`, :data:`OBJECT_SCALES`).
        ctf_gains: (attenuation, phase) gains of the geometry, for ``scale`` "ctf".

    Raises:
        DataError: "real_imag" for objects whose phase leaves (-pi, pi] (arg psi would wrap it); "shared"
            (phase, attenuation) of a strong phase object (:func:`object_statistics`).
    """
    rng = np.random.default_rng(seed)
    inten = _sample(intensity, n_frames, rng)[:, intensity_channel]
    obj = _sample(objects, n_frames, rng)[:, list(object_channels)]
    if output == "real_imag" and np.abs(obj[:, 0]).max() > np.pi:
        raise DataError(f"{objects.path}: object phases reach {np.abs(obj[:, 0]).max():.3g} rad; (Re, Im psi) "
                        "would wrap them: set [model] output = \"phase_attenuation\"")
    means, stds = object_statistics(obj, output, scale, ctf_gains)
    return Normalisation(float(inten.mean()), max(float(inten.std()), 1e-12), means, stds, output)
