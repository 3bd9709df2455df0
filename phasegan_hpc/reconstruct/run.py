"""The reconstruction driver: check everything, plan, run a backend, assemble the output, summarise.

Every check a user's input can fail (archive, dataset, model, physics, output path, resources) runs before
anything is written. A rerun after a crash continues the same plan: finished shards are kept, unfinished
ones are redone from their start, and the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phasegan_hpc.data.archive import Archive, open_archive
from phasegan_hpc.errors import DataError, PhaseganError
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.physics.optics import resolve_wavelength_m
from phasegan_hpc.progress import ProgressFn, Tally
from phasegan_hpc.reconstruct import backends
from phasegan_hpc.reconstruct.figures import reconstruction_preview
from phasegan_hpc.reconstruct.output import (
    assemble,
    check_output,
    default_output,
    finished,
    manifest,
    prepare_shards_dir,
    read_scores,
)
from phasegan_hpc.reconstruct.plan import make_plan
from phasegan_hpc.reconstruct.retrieve import METHODS, SCORES, TieOptions, output_layout, score_name
from phasegan_hpc.reconstruct.worker import Job

BACKENDS = ("ray", "mpi", "local")
MODEL_ENV = "PHASEGAN_HPC_MODEL"
DEFAULT_MODEL = Path("runs/latest/model.pt")
#: A frame is flagged when its score (``flag_by``) exceeds median + FLAG_MADS x (1.4826 MAD) of all frames.
FLAG_MADS = 5.0
#: The score that flags frames by default: the one whose per-frame values follow the true phase error more
#: closely on paired validation data (Spearman, ``evaluate``; docs/benchmarks.md).
DEFAULT_FLAG_BY = "fresnel_residual"


@dataclass
class Summary:
    """What a reconstruction did (shown by the CLI)."""

    output: Path
    frames: int
    computed_frames: int
    reused_shards: int
    shards: int
    seconds: float
    backend: str
    workers: int | None
    threshold: float
    flagged: list[tuple[int, float]] = field(default_factory=list)
    flag_by: str = DEFAULT_FLAG_BY
    nonfinite: list[tuple[int, int]] = field(default_factory=list)
    preview: Path | None = None
    setup_seconds: float = 0.0  # the slowest worker's start-up (model load, compilation)
    pipeline_seconds: float = 0.0  # the busiest worker's time inside shards (read, compute, write)

    @property
    def frames_per_s(self) -> float:
        """Computed frames over the whole run's wall time (worker start-up included)."""
        return self.computed_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def pipeline_frames_per_s(self) -> float:
        """Computed frames over the busiest worker's time in shards: the rate a long archive approaches, once
        the fixed start-up cost is spread over it."""
        return self.computed_frames / self.pipeline_seconds if self.pipeline_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (``reconstruct --report``)."""
        return {"output": str(self.output), "frames": self.frames, "computed_frames": self.computed_frames,
                "reused_shards": self.reused_shards, "shards": self.shards, "backend": self.backend,
                "workers": self.workers, "seconds": self.seconds, "setup_seconds": self.setup_seconds,
                "pipeline_seconds": self.pipeline_seconds, "frames_per_s": self.frames_per_s,
                "pipeline_frames_per_s": self.pipeline_frames_per_s, "threshold": self.threshold,
                "flagged": self.flagged, "flag_by": self.flag_by, "nonfinite": self.nonfinite,
                "preview": str(self.preview) if self.preview else None}


def resolve_model(model: str | Path | None, required: bool) -> Path | None:
    """``--model``, else ``$PHASEGAN_HPC_MODEL``, else ``./runs/latest/model.pt``; None if absent and not
    required.

    Raises:
        DataError: no model, saying how to get one.
    """
    if model is not None:
        return Path(model)
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    if required:
        raise DataError(f"no model: give --model PATH, set {MODEL_ENV}, or train one "
                        "(`phasegan-hpc train ...` writes runs/latest/model.pt)")
    return None


def _geometry(method: str, model, archive: Archive,
              overrides: dict[str, float | None]) -> tuple[Geometry, float | None]:
    """(geometry of the frames, delta/beta): flags, else the model's (PhaseGAN: the model's always), else the
    archive's attributes. The frames' pixel is the geometry's detector pixel."""
    attrs = archive.attrs
    given = {k: v for k, v in overrides.items() if v is not None}
    if "energy_kev" in given:
        given["wavelength_m"] = resolve_wavelength_m(None, given.pop("energy_kev"))
    delta_beta = given.get("delta_beta")
    if delta_beta is None and "delta" in attrs and "beta" in attrs and float(attrs["beta"]) > 0:
        delta_beta = float(attrs["delta"]) / float(attrs["beta"])
    if method in ("paganin", "tie") and delta_beta is None:
        raise DataError(f"--method {method} needs --delta-beta (the archive has no delta/beta attributes)")
    if model is not None and method == "phasegan":  # the geometry it was trained for
        return model.geometry, delta_beta
    known = model.geometry.to_attrs() if model is not None else {}
    values: dict[str, float] = {}
    for key in ("pixel_size_m", "wavelength_m", "distance_m"):
        if key in given:
            values[key] = float(given[key])
        elif key in known:
            values[key] = float(known[key])
        elif key in attrs:
            values[key] = float(attrs[key])
        else:
            flag = "--" + key.replace("_", "-")
            raise DataError(f"{archive.path} has no attribute {key!r}: give {flag}")
    return Geometry(values["wavelength_m"], values["pixel_size_m"], values["distance_m"]), delta_beta


def _identity_physics(geometry: Geometry, delta_beta: float | None) -> dict[str, Any]:
    """The geometry in a shard manifest, with the keys manifests have always had (so old shards resume)."""
    return {"pixel_size_m": geometry.detector_pixel_size_m, "wavelength_m": geometry.wavelength_m,
            "distance_m": geometry.distance_m, "delta_beta": delta_beta, "pad": 0, "pad_mode": "edge"}


def _device(backend: str, gpus_per_worker: float, device: str | None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available() and backend != "ray":
            raise DataError(f"device {device} requested but this machine has no CUDA device")
        return device
    if backend == "ray":
        return "cuda" if gpus_per_worker > 0 else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def reconstruct(archive_path: str | Path, *, model: str | Path | None = None, output: str | Path | None = None,
                dataset: str | None = None, backend: str = "ray", workers: int | None = None,
                cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, batch_size: int = 32,
                method: str = "phasegan", overwrite: bool = False, shard_frames: int | None = None,
                device: str | None = None, physics: dict[str, float | None] | None = None,
                preview: bool = True, progress: ProgressFn | None = None,
                comm=None, tie: TieOptions | None = None, compile: bool | None = None,
                flag_by: str = DEFAULT_FLAG_BY) -> Summary | None:
    """Reconstruct phase and attenuation of every frame of a movie archive.

    Args:
        archive_path: the HDF5 archive (opened read-only, never modified).
        model: ``model.pt``; None: ``$PHASEGAN_HPC_MODEL`` or ``runs/latest/model.pt`` (optional for paganin).
        output: output file; None: ``<stem>_<method>.h5`` next to the archive.
        dataset: frames dataset (None: DXchange, NXtomo or the single >= 3-D dataset).
        backend: "ray" (``RAY_ADDRESS`` or a local Ray), "mpi" (call on every rank) or "local".
        workers: Ray actors (None: one per GPU, or per ``cpus_per_worker`` CPUs).
        cpus_per_worker: CPUs (and torch threads) of each worker.
        gpus_per_worker: GPUs of each Ray actor (> 0: CUDA).
        batch_size: frames per forward pass.
        method: "phasegan" (the model's G_O), "paganin" (the classical baseline), "tie" (resampling, TV
            denoising and Paganin: paper §4's object domain) or "flatfield" (corrected frames only), all
            through the same pipeline.
        overwrite: replace a finished output (and discard an unfinished one of other settings).
        shard_frames: frames per shard (None: about 256 MiB of float32 input).
        device: torch device of local and MPI workers (None: CUDA if present).
        physics: overrides pixel_size_m, distance_m, wavelength_m or energy_kev, delta_beta (Paganin).
        preview: write a PNG of a few frames next to the output.
        progress: ``progress(done, total, {})`` in frames, by the driver (``phasegan_hpc.progress``).
        comm: MPI communicator for the "mpi" backend (None: ``MPI.COMM_WORLD``).
        tie: options of the "tie" method.
        compile: ``torch.compile`` the networks (None: on CUDA devices, the fastest variant of
            ``bench inference``; off on CPUs, where compiling costs more than it saves on short runs).
        flag_by: the per-frame score that flags frames, one of ``retrieve.SCORES`` (both are written).

    Returns:
        A :class:`Summary` (None on MPI ranks other than 0).

    Raises:
        DataError, ResourceError: a user-fixable problem; nothing was written or replaced.
    """
    if backend not in BACKENDS:
        raise DataError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if flag_by not in SCORES:
        raise DataError(f"unknown score {flag_by!r} for --flag-by; choose from {', '.join(SCORES)}")
    if backend == "mpi":
        if comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        setup: Any = None
        if comm.Get_rank() == 0:
            try:
                setup = _prepare(archive_path, model, output, dataset, backend, cpus_per_worker, gpus_per_worker,
                                 batch_size, method, overwrite, shard_frames, device, physics or {}, tie, compile)
            except PhaseganError as exc:
                setup = exc
        setup = comm.bcast(setup, root=0)
        if isinstance(setup, PhaseganError):
            if comm.Get_rank() == 0:
                raise setup
            raise SystemExit(1)  # rank 0 prints the one error line
        if setup["job"].device.startswith("cuda") and comm.Get_size() > 1:
            import torch

            setup["job"] = _with_device(setup["job"], f"cuda:{comm.Get_rank() % max(1, torch.cuda.device_count())}")
    else:
        setup = _prepare(archive_path, model, output, dataset, backend, cpus_per_worker, gpus_per_worker,
                         batch_size, method, overwrite, shard_frames, device, physics or {}, tie, compile)
    job, plan, pending, out = setup["job"], setup["plan"], setup["pending"], setup["output"]
    rank0 = backend != "mpi" or comm.Get_rank() == 0
    total = sum(s.frames for s in pending)
    tally = Tally(progress if rank0 else None, job.archive.n_frames, job.archive.n_frames - total)
    tally.add(0)  # where a resumed run starts
    advance = tally.add
    t0 = time.perf_counter()
    if not pending:  # every shard finished before: only the assembly is left
        rows = []
    elif backend == "local":
        rows = backends.run_local(job, pending, advance)
    elif backend == "ray":
        rows = backends.run_ray(job, pending, advance, workers=workers, cpus_per_worker=cpus_per_worker,
                                gpus_per_worker=gpus_per_worker)
    else:
        rows = backends.run_mpi(job, pending, advance, comm)
    seconds = time.perf_counter() - t0
    if not rank0:
        return None
    missing = set(s.index for s in plan) - finished(Path(job.shards_dir), plan)
    if missing:  # a worker returned without its file: never assemble a partial volume
        raise DataError(f"shards {sorted(missing)[:5]} did not finish; rerun the same command to resume")
    assemble(out, Path(job.shards_dir), job.archive, plan, setup["layout"], setup["attrs"])
    return _summarise(out, job, plan, pending, rows, seconds, backend, workers, preview, flag_by)


def _with_device(job: Job, device: str) -> Job:
    import dataclasses

    return dataclasses.replace(job, device=device)


def _prepare(archive_path, model, output, dataset, backend, cpus_per_worker, gpus_per_worker, batch_size, method,
             overwrite, shard_frames, device, physics, tie, compile) -> dict[str, Any]:
    """All checks, then the shard directory (the first thing written). Returns job, plan, pending, output."""
    from phasegan_hpc.evaluate import check_compatible
    from phasegan_hpc.models.artifact import load_model

    archive = open_archive(archive_path, dataset)
    model_path = resolve_model(model, required=method == "phasegan")
    loaded = load_model(model_path) if model_path is not None else None
    if loaded is not None and method == "phasegan":
        check_compatible(loaded.geometry, archive.attrs, archive.frame_shape, str(archive.path))
    geometry, delta_beta = _geometry(method, loaded, archive, physics)
    out = Path(output).expanduser().absolute() if output else default_output(archive.path, method)
    check_output(out, archive.path, overwrite)
    plan = make_plan(archive, batch_size, shard_frames)
    dev = _device(backend, gpus_per_worker, device)
    if method == "tie" and tie is not None and tie.resample_pixel_size_m is not None \
            and tie.resample_pixel_size_m <= 0:
        raise DataError("--resample-pixel-size-m must be > 0")
    layout = output_layout(method, loaded, archive.frame_shape, geometry, tie)
    identity = {"method": method, "model_sha256": loaded.sha256 if loaded else None, "batch_size": batch_size,
                "physics": _identity_physics(geometry, delta_beta),
                "tie": dict(vars(tie)) if tie and method == "tie" else None}
    shards_dir, _resumed = prepare_shards_dir(out, manifest(archive, identity, plan), overwrite)
    done = finished(shards_dir, plan)
    job = Job(archive, str(shards_dir), method, str(Path(model_path).resolve()) if model_path else None, geometry,
              delta_beta, batch_size, dev, max(1, int(cpus_per_worker)), archive.lead_shape[1:],
              tie if method == "tie" else None, dev.startswith("cuda") if compile is None else compile)
    attrs = {
        "method": method, "model_sha256": loaded.sha256 if loaded else "", "model_path": str(model_path or ""),
        "model_method": loaded.method if loaded else "", "config": (loaded.info.get("config", "") if loaded else ""),
        "pixel_size_m": layout.pixel_size_m, "detector_pixel_size_m": geometry.detector_pixel_size_m,
        "wavelength_m": geometry.wavelength_m, "distance_m": geometry.distance_m,
        "delta_beta": delta_beta, "batch_size": batch_size,
        "score": score_name(method, loaded),
        "reconstruct_options": json.dumps({"backend": backend, "batch_size": batch_size, "method": method,
                                           "dataset": archive.dataset, "shard_frames": shard_frames}),
    }
    return {"job": job, "plan": plan, "pending": [s for s in plan if s.index not in done], "output": out,
            "attrs": attrs, "layout": layout}


def _summarise(out: Path, job: Job, plan, pending, rows, seconds, backend, workers, preview: bool,
               flag_by: str) -> Summary:
    scores, nonfinite = read_scores(out, flag_by)
    finite = scores[np.isfinite(scores)]
    threshold = float("nan")
    flagged: list[tuple[int, float]] = []
    if len(finite):
        med = float(np.median(finite))
        mad = 1.4826 * float(np.median(np.abs(finite - med)))
        threshold = med + FLAG_MADS * max(mad, 1e-3 * abs(med), 1e-12)
        bad = np.flatnonzero(~np.isfinite(scores) | (scores > threshold))
        flagged = [(int(i), float(scores[i])) for i in bad]
    busy: dict[str, float] = {}
    for r in rows:
        if "seconds" in r:
            busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["seconds"]
    summary = Summary(out, job.archive.n_frames, sum(s.frames for s in pending), len(plan) - len(pending), len(plan),
                      seconds, backend, workers, threshold, flagged, flag_by,
                      [(int(i), int(nonfinite[i])) for i in np.flatnonzero(nonfinite > 0)],
                      setup_seconds=max((r.get("setup_seconds", 0.0) for r in rows), default=0.0),
                      pipeline_seconds=max(busy.values(), default=0.0))
    if preview:
        summary.preview = reconstruction_preview(out, job.archive, out.with_suffix(".png"))
    return summary
