"""Correctness of the device fast path against CPU references, in one run (``phasegan-hpc bench check``).

What runs on a GPU only in production is checked there against what the test suite checks on a CPU:

- ``propagator``: |H psi|^2 (eq. 5) on the device in complex64 against float64 numpy;
- ``retriever``: the reconstruction retriever as run on the device (bf16 autocast, channels_last,
  ``torch.compile`` on CUDA) against the plain float32 retriever on the CPU, same model and frames:
  phase, attenuation and the consistency score;
- ``prepare``: the flat/dark correction, sanitising and counting of raw frames on the device
  (``--correct-on device``, the CUDA default) against numpy on the host, on the archive's frames with
  non-finite and negative pixels planted: frames within float32 rounding, counts exactly;
- ``reconstruct``: a whole ``reconstruct --backend local`` of a compressed archive on the device (pinned
  double buffers, one-batch-late writes) against the same on the CPU without the fast path;
- ``train``: a few PhaseGAN steps on the device (pinned non-blocking copies, batched loss reads) against the
  same steps on the CPU: the logged losses.

Each check gives a relative L2 error ``||device - reference|| / ||reference||`` and passes under a tolerance
set by the arithmetic: float32 1e-4; bf16 networks 3e-2; training 5e-2 (cuDNN may use TF32 convolutions,
and GAN losses amplify small differences over steps). On a CPU every check runs too (smoke size in the
tests), where the device and the reference differ only in the compiled networks.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from phasegan_hpc.bench import machine
from phasegan_hpc.bench.propagator import numpy_intensity
from phasegan_hpc.bench.reconstruct import make_archive, make_model
from phasegan_hpc.config import load_config, with_overrides
from phasegan_hpc.data.archive import FrameReader, open_archive
from phasegan_hpc.physics import FresnelPropagator, object_wavefield, paganin
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.reconstruct import PhaseGAN, ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.methods import build_retriever
from phasegan_hpc.reconstruct.prepare import count_negative, count_negative_tensor, sanitise, sanitise_tensor
from phasegan_hpc.simulate import simulate_dataset
from phasegan_hpc.train.local import train_local

FP32_TOL, BF16_TOL, TRAIN_TOL = 1e-4, 3e-2, 5e-2


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    if not np.isfinite(a).all():
        return float("inf")
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))


def _propagator(size: int, dev: torch.device) -> float:
    g = torch.Generator().manual_seed(1)
    psi = object_wavefield(-torch.rand(4, size, size, generator=g), 0.01 * torch.rand(4, size, size, generator=g))
    prop = FresnelPropagator((size, size), pixel_size_m=1e-6, distance_m=0.1, wavelength_m=1e-10)
    ref = numpy_intensity(psi.numpy().astype(np.complex128), 1e-6, 0.1, 1e-10)
    return _rel(prop.intensity(psi.to(dev)).cpu().numpy(), ref)


def _paganin(size: int, dev: torch.device) -> float:
    """Padded Paganin (float32 on ``dev``) against the same retrieval in float64 numpy on the CPU."""
    rng = np.random.default_rng(3)
    frames = 1.0 + 0.02 * rng.standard_normal((4, size, size + 16))
    kw = {"pixel_size_m": 1e-6, "distance_m": 0.1, "wavelength_m": 1e-10, "delta_beta": 1000.0}
    _, ref = paganin(frames, **kw)
    _, out = paganin(torch.from_numpy(frames).float().to(dev), **kw)
    return _rel(out.cpu().numpy(), ref)


def _retriever(model: Path, size: int, batch: int, dev: torch.device) -> dict[str, float]:
    g = torch.Generator().manual_seed(2)
    frames = 1.0 + 0.05 * torch.randn(batch, size, size, generator=g)
    geometry = Geometry(wavelength_m=1e-10, pixel_size_m=1e-6, distance_m=0.1)
    ref_out, ref_scores = build_retriever(PhaseGAN(), str(model), geometry, (size, size), torch.device("cpu"))(frames)
    fast = build_retriever(PhaseGAN(), str(model), geometry, (size, size), dev, compile=dev.type == "cuda")
    out, scores = fast(frames.to(dev))
    errs = {k: _rel(out[k].cpu().numpy(), ref_out[k].numpy()) for k in ref_out}
    errs["score"] = _rel(scores["consistency"].cpu().numpy(), ref_scores["consistency"].numpy())
    errs["fresnel_residual"] = _rel(scores["fresnel_residual"].cpu().numpy(), ref_scores["fresnel_residual"].numpy())
    return errs


def _prepare(archive: Path, dev: torch.device) -> dict[str, float]:
    """Raw frames corrected, sanitised and counted on ``dev`` vs on the host (NaN, inf, negatives planted)."""
    reader = FrameReader(open_archive(archive))
    try:
        a = reader.archive
        raw = next(reader.blocks(0, a.n_frames, a.n_frames, corrected=False)).astype(np.float32)
        raw[0, :3, :3] = np.nan
        raw[1, 0, :] = np.inf
        raw[2] = np.nan  # no finite pixel
        raw[3, 1:4, 1:4] = 0.0  # below the dark: negative
        host = reader.correct(raw)
        negative, (clean, nonfinite) = count_negative(host), sanitise(host)
        x = reader.correct(torch.from_numpy(raw).to(dev))
        d_negative, (d_clean, d_nonfinite) = count_negative_tensor(x), sanitise_tensor(x)
    finally:
        reader.close()
    return {"frames": _rel(d_clean.cpu().numpy(), clean),
            "counts": float(np.mean((d_nonfinite.cpu().numpy() != nonfinite) | (d_negative.cpu().numpy() != negative)))}


def _reconstruct(archive: Path, model: Path, tmp: Path, batch: int, dev: torch.device) -> dict[str, float]:
    runs = {}
    for name, device, compile in (("ref", "cpu", False), ("dev", str(dev), dev.type == "cuda")):
        s = reconstruct(ReconstructRequest(archive, model=model, output=tmp / f"{name}.h5", backend="local",
                                           batch_size=batch, shard_frames=2 * batch, device=device, preview=False,
                                           compile=compile))
        with h5py.File(s.output, "r") as f:
            runs[name] = {k: f[k][()] for k in ("phase", "attenuation", "consistency")}
    return {k: _rel(runs["dev"][k], runs["ref"][k]) for k in runs["ref"]}


def _train(tmp: Path, size: int, dev: torch.device) -> float:
    cfg = with_overrides(load_config(Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"), {
        "simulate.size": size, "simulate.n_train": 16, "simulate.n_paired": 0, "simulate.n_val": 4,
        "train.data_dir": str(tmp / "data"), "train.runs_dir": str(tmp / "runs"), "train.method": "phasegan",
        "train.epochs": 1, "train.max_steps": 4, "train.batch_size": 4, "train.log_every": 2, "train.val_frames": 4,
        "train.checkpoint_every": 100, "train.augment": False})
    simulate_dataset(tmp / "data", cfg, overwrite=True)
    losses = {}
    for name, device in (("ref", "cpu"), ("dev", str(dev))):
        run = with_overrides(cfg, {"train.name": name})
        train_local(run, device=device)
        lines = [json.loads(x) for x in (tmp / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [[r[k] for k in sorted(r) if k.startswith("loss_")] for r in lines if "loss_g" in r]
        if not losses[name]:
            raise RuntimeError(f"the {name} run logged no losses")
    return _rel(np.array(losses["dev"]), np.array(losses["ref"]))


def bench_check(size: int = 64, batch: int = 16, frames: int = 64, filters: int = 8, device: str = "cpu",
                workdir: str | None = None) -> dict[str, Any]:
    """Run every check on ``device``; ``ok`` is False when any relative error is over its tolerance.

    Args:
        size: frame side [px]. batch: frames per batch. frames: frames of the archive. filters: U-Net base
        filters. workdir: where the archive and runs go (a temporary directory, removed afterwards).
    """
    dev = torch.device(device)
    net_tol = BF16_TOL if dev.type == "cuda" else FP32_TOL
    tmp = Path(tempfile.mkdtemp(prefix="bench-check-", dir=workdir))
    try:
        model = make_model(tmp / "model.pt", filters)
        archive = make_archive(tmp / "movie.h5", frames, size, chunk=batch)
        errors: dict[str, tuple[float, float]] = {"propagator": (_propagator(size, dev), FP32_TOL),
                                                  "paganin": (_paganin(size, dev), FP32_TOL)}
        errors |= {f"retriever.{k}": (v, net_tol) for k, v in _retriever(model, size, batch, dev).items()}
        prepared = _prepare(archive, dev)
        errors |= {"prepare.frames": (prepared["frames"], FP32_TOL), "prepare.counts": (prepared["counts"], 0.0)}
        errors |= {f"reconstruct.{k}": (v, net_tol) for k, v in _reconstruct(archive, model, tmp, batch, dev).items()}
        errors["train.losses"] = (_train(tmp, size, dev), TRAIN_TOL if dev.type == "cuda" else FP32_TOL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    checks = {k: {"relative_error": e, "tolerance": t, "ok": bool(e <= t)} for k, (e, t) in errors.items()}
    return {"benchmark": "check", **machine(dev), "size": size, "batch": batch, "frames": frames, "filters": filters,
            "checks": checks, "ok": all(c["ok"] for c in checks.values())}
