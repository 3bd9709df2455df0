"""Score a trained G_O (and the Paganin baseline) on a paired validation set: paper §3, Table 1.

For every frame: L2, DSSIM and FRCM of the retrieved phase and attenuation against the truth; the table
holds their mean and standard deviation over the frames. And how far each per-frame trust score that
``reconstruct`` writes (``consistency``, ``fresnel_residual``) can be trusted: its Spearman rank correlation
with the true per-frame phase error (L2), on these frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.errors import DataError
from phasegan_hpc.losses.metrics import METRICS
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.models.unet import SIZE_MULTIPLE
from phasegan_hpc.physics import object_wavefield, paganin
from phasegan_hpc.physics.consistency import hologram_scores
from phasegan_hpc.physics.geometry import Geometry

BASELINES = ("paganin",)
CHANNELS = ("phase", "attenuation")


@dataclass(frozen=True)
class EvalRow:
    """One method's scores: ``stats[f"{channel}_{metric}"] = (mean, std)`` over ``n`` frames, and the
    per-frame values behind them (``per_frame``, same keys; for distribution plots)."""

    method: str
    n: int
    stats: dict[str, tuple[float, float]]
    per_frame: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    #: Spearman correlation of each trust score with the per-frame phase L2 (NaN when undefined)
    score_spearman: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"method": self.method, "n": self.n,
                **{k: {"mean": m, "std": s} for k, (m, s) in self.stats.items()},
                **({"score_spearman": dict(self.score_spearman)} if self.score_spearman else {})}


def check_compatible(geometry: Geometry, attrs: dict, shape: tuple[int, int], where: str) -> None:
    """Refuse data a model cannot reconstruct: another geometry (:meth:`Geometry.check_against`), or frame
    sides that are not multiples of 32.

    Raises:
        DataError: naming the first mismatch.
    """
    if shape[0] % SIZE_MULTIPLE or shape[1] % SIZE_MULTIPLE:
        raise DataError(f"{where}: frames are {shape[0]} x {shape[1]}; the model needs multiples of {SIZE_MULTIPLE}")
    geometry.check_against(attrs, where)


def _score(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, np.ndarray]:
    out = {}
    for c, name in enumerate(CHANNELS):
        for metric, fn in METRICS.items():
            out[f"{name}_{metric}"] = fn(pred[:, c].double(), ref[:, c].double()).cpu().numpy()
    return out


def _row(method: str, per_frame: dict[str, list[np.ndarray]]) -> EvalRow:
    values = {k: np.concatenate(parts) for k, parts in per_frame.items()}
    scores = {k[len("score_"):]: values.pop(k) for k in list(values) if k.startswith("score_")}
    stats = {k: (float(v.mean()), float(v.std())) for k, v in values.items()}
    spearman = {k: spearman_correlation(v, values["phase_l2"]) for k, v in scores.items()}
    return EvalRow(method, len(values["phase_l2"]), stats, values | {f"score_{k}": v for k, v in scores.items()},
                   spearman)


def spearman_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two per-frame series (NaN with fewer than 3 finite pairs or a constant)."""
    # lazy: scipy.stats takes ~1 s to import, and most importers of this module never need it
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


def evaluate(model_path: str | Path | None, validation_path: str | Path, baselines: tuple[str, ...] = (),
             batch_size: int = 16, max_frames: int = 0, device: str | None = None) -> list[EvalRow]:
    """Evaluate a model and/or baselines on ``validation.h5``.

    Args:
        model_path: ``model.pt`` (None: baselines only).
        validation_path: paired HDF5 with ``/intensity``, ``/phase``, ``/attenuation`` (and optionally
            ``/flatfield``, used by Paganin as the flat-field correction). The truth may be on a finer grid
            than the frames (paper §4: ``object_pixel_size_m`` attribute, e.g. 256 x 256 truth for 128 x 128
            frames); Paganin's result is then interpolated (linear) onto it.
        baselines: any of :data:`BASELINES`. Paganin uses delta/beta and the geometry from the file.
        max_frames: score only the first frames (0 = all).

    Returns:
        One :class:`EvalRow` per method, the model first.

    Raises:
        DataError: unreadable model or data, mismatched sizes, unknown baseline.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    if model_path is None and not baselines:
        raise DataError("nothing to evaluate: give --model and/or --baseline")
    stack = FrameStack(validation_path, ("intensity",))
    truth = FrameStack(validation_path, ("phase", "attenuation"))
    if len(truth) != len(stack):
        raise DataError(f"{validation_path}: {len(stack)} frames but {len(truth)} true objects")
    n = len(stack) if max_frames <= 0 else min(max_frames, len(stack))
    if n == 0:
        raise DataError(f"{validation_path} holds no frames")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(model_path, dev) if model_path is not None else None
    if model is not None:
        check_compatible(model.geometry, stack.attrs, stack.shape, str(validation_path))
        scale = model.scale
        if (stack.shape[0] * scale, stack.shape[1] * scale) != truth.shape:
            raise DataError(f"{validation_path}: the model maps {stack.shape[0]} x {stack.shape[1]} frames to "
                            f"{stack.shape[0] * scale} x {stack.shape[1] * scale} objects; the truth is "
                            f"{truth.shape[0]} x {truth.shape[1]}")
    use_paganin = "paganin" in baselines
    flats = None
    if use_paganin:
        for key in ("pixel_size_m", "distance_m", "wavelength_m", "delta", "beta"):
            if key not in stack.attrs:
                raise DataError(f"{validation_path} lacks attribute {key!r} needed by the Paganin baseline")
        flats = _flatfield_stack(Path(validation_path), stack)
        a = stack.attrs
        paganin_h = Geometry.from_attrs(a, str(validation_path)).propagator(stack.shape)  # scores Paganin's objects
    rows: dict[str, dict[str, list[np.ndarray]]] = {}
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        inten, ref = torch.from_numpy(stack[idx]), torch.from_numpy(truth[idx])
        if model is not None:
            frames = inten[:, 0].to(dev)
            phase, att = model.retrieve(frames)
            pred = torch.stack([phase, att], 1).cpu()
            scores = {f"score_{k}": v for k, v in model.scores(frames, phase, att).items()}
            for k, v in (_score(pred, ref) | {k: v.cpu().numpy() for k, v in scores.items()}).items():
                rows.setdefault(model.method, {}).setdefault(k, []).append(v)
        if use_paganin:
            corrected = inten[:, 0].double()
            if flats is not None:
                corrected = corrected / torch.from_numpy(flats[idx][:, 0]).double().clamp_min(1e-6)
            phase, att = paganin(corrected, pixel_size_m=a["pixel_size_m"], distance_m=a["distance_m"],
                                 wavelength_m=a["wavelength_m"], delta_beta=a["delta"] / a["beta"],
                                 pad=paganin_pad(a))
            # scored against the frames Paganin read, as reconstruct --method paganin scores them
            scores = {f"score_{k}": v for k, v in hologram_scores(
                corrected, paganin_h.intensity(object_wavefield(phase, att))).items()}
            for k, v in (_score(_onto(torch.stack([phase, att], 1), truth.shape), ref)
                         | {k: v.cpu().numpy() for k, v in scores.items()}).items():
                rows.setdefault("paganin", {}).setdefault(k, []).append(v)
    return [_row(method, per_frame) for method, per_frame in rows.items()]



def paganin_pad(attrs: dict) -> bool:
    """Paganin's padding for frames with these attributes: none for frames simulated periodic (``periodic``
    = 1: an unpadded propagator, where padding would break the periodicity they were made with), else the
    default edge padding against wrap-around (``physics.paganin``)."""
    return not bool(int(attrs.get("periodic", 0)))


def _flatfield_stack(path: Path, stack: FrameStack) -> FrameStack | None:
    """The per-frame illumination ``/flatfield`` if the file has it (an oracle correction), else None."""
    with h5py.File(path, "r") as f:
        ok = "flatfield" in f and f["flatfield"].shape == (len(stack), *stack.shape)
    return FrameStack(path, ("flatfield",)) if ok else None


def _onto(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) interpolated (linear, pixel-centre aligned) onto (B, C, *shape); unchanged if equal."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return torch.nn.functional.interpolate(x, size=shape, mode="bilinear", align_corners=False)
