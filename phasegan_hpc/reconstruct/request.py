"""What a reconstruction is asked (:class:`ReconstructRequest`) and what it answers (:class:`Summary`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phasegan_hpc.data.archive import READERS, REDUCTIONS, expand_archives, parse_frames, parse_roi
from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct.backends import BACKENDS
from phasegan_hpc.reconstruct.methods import SCORES, Method, PhaseGAN, method_named
from phasegan_hpc.reconstruct.output import default_output
from phasegan_hpc.reconstruct.prepare import CORRECT_ON

MODEL_ENV = "PHASEGAN_HPC_MODEL"
DEFAULT_MODEL = Path("runs/latest/model.pt")
#: The score that flags frames by default: the one whose per-frame values follow the true phase error more
#: closely on paired validation data (Spearman, ``evaluate``; docs/benchmarks.md).
DEFAULT_FLAG_BY = "fresnel_residual"
#: The summary's lists of flagged, non-finite and negative frames name the first this many frames each (their
#: counts are whole: ``Summary.flagged_frames``...), so that a summary is small whatever the archive's length.
LISTED_FRAMES = 1000
#: Geometry a request may override (``physics``); energy_kev is turned into wavelength_m.
GEOMETRY_OVERRIDES = ("pixel_size_m", "distance_m", "wavelength_m", "energy_kev", "delta_beta")
#: ``--output-dtype`` values: of phase and attenuation (and /intensity); float16 keeps a relative precision of
#: 2**-11 (~4.9e-4: <= 2.4e-4 rad for |phase| < 1 rad, <= 9.8e-4 rad below 4 rad; README, DESIGN.md §4).
OUTPUT_DTYPES = ("float32", "float16")


def score_every(score: str) -> int:
    """``--score``'s value as a stride: "all" -> 1, "every:N" -> N, "none" -> 0.

    Raises:
        DataError: anything else.
    """
    if score in ("all", "none"):
        return 1 if score == "all" else 0
    kind, _, n = score.partition(":")
    if kind == "every" and n.isdigit() and int(n) >= 1:
        return int(n)
    raise DataError(f"--score must be all, none or every:N with N >= 1, not {score!r}")


def archives_of(args: tuple[str, ...] | list[str], sequence: bool) -> list[tuple[Path, tuple[Path, ...]]]:
    """``reconstruct ARCHIVE...`` -> the runs to make, each (archive, the further files of its sequence): glob
    patterns expanded in name order (``data.archive.expand_archives``); with ``sequence`` every file is one
    movie (one run), else each file is a run of its own.

    Raises:
        DataError: no file, or a pattern matching none.
    """
    paths = expand_archives(args)
    return [(paths[0], tuple(paths[1:]))] if sequence else [(p, ()) for p in paths]


def requests_for(runs: list[tuple[Path, tuple[Path, ...]]], **options: Any) -> list[ReconstructRequest]:
    """One :class:`ReconstructRequest` per run of :func:`archives_of`, with the same ``options``.

    Raises:
        DataError: ``output`` given for several archives (each gets its default output), or what a request
            refuses.
    """
    if len(runs) > 1 and options.get("output") is not None:
        raise DataError(f"--output names one file, but {len(runs)} archives are given: leave it out (each gets "
                        "<stem>_<method>.h5 beside it) or use --sequence to read them as one movie")
    return [ReconstructRequest(archive, sequence=further, **options) for archive, further in runs]


@dataclass(frozen=True)
class ReconstructRequest:
    """One reconstruction: what to read, how to retrieve, where to write, and on what to run.

    Attributes:
        archive: the HDF5 movie archive (opened read-only, never modified).
        sequence: further archives read after ``archive`` as one movie (``--sequence``: sequence files of a
            run, ``data.archive.open_sequence``); one output, named after the first file without its
            sequence number.
        model: ``model.pt``; None: ``$PHASEGAN_HPC_MODEL`` or ``runs/latest/model.pt`` (optional unless the
            method needs one).
        output: output file; None: ``<stem>_<method>.h5`` next to the archive.
        dataset: frames dataset (None: DXchange, NXtomo or the single >= 3-D dataset).
        method: a :class:`~phasegan_hpc.reconstruct.methods.Method` or its name ("phasegan", "paganin",
            "tie", "flatfield"), all through the same pipeline.
        batch_size: frames per forward pass.
        shard_frames: frames per shard (None: about 256 MiB of float32 input).
        overwrite: replace a finished output (and discard an unfinished one of other settings).
        physics: overrides of the archive's geometry (:data:`GEOMETRY_OVERRIDES`; None values are ignored).
        flag_by: the per-frame score that flags frames, one of ``methods.SCORES`` (both are written).
        preview: write a PNG of a few frames next to the output.
        compile: ``torch.compile`` the networks (None: on CUDA devices, the fastest variant of
            ``bench inference``; off on CPUs, where compiling costs more than it saves on short runs).
        backend: "ray" (``RAY_ADDRESS`` or a local Ray), "mpi" (call on every rank) or "local".
        workers: Ray actors (None: one per GPU, or per ``cpus_per_worker`` CPUs).
        cpus_per_worker: CPUs (and torch threads) of each worker.
        gpus_per_worker: GPUs of each Ray actor (> 0: CUDA; None: 1 / ``DEFAULT_WORKERS_PER_GPU`` of
            ``backends.ray_actors`` where the cluster has GPUs, else 0).
        device: torch device of the workers (None: the backend's default, CUDA where present).
        reader: "chunks" (decoded in Python, ``cpus_per_worker`` threads; a corrupt chunk is NaN frames) or
            "h5py" (HDF5's own filters, one call at a time: the baseline, and a fallback).
        score: which frames get the per-frame scores: "all", "every:N" (frames whose index is a multiple of
            N) or "none"; the others are marked unscored (``/scored`` 0, NaN scores), never flagged by them.
        output_chunk_frames: frames per chunk of the shards' frame datasets (None: about 2 MiB each,
            ``h5io.frame_chunks``; 1 is the writer of earlier versions, kept for ``bench pipeline``).
        correct_on: where the flat/dark correction, sanitising and counting run (``prepare``): "host" (numpy),
            "device" (torch, on the raw integer frames copied to the device) or "auto" (device on CUDA).
        output_dtype: of the frame datasets, one of :data:`OUTPUT_DTYPES` (float16: half the bytes).
        roi: "Y0:Y1,X0:X1": reconstruct only those pixel rows and columns of the frames (None: all).
        frames: "START:STOP[:STEP]": reconstruct only those rows of the first leading axis (NXtomo: of the
            projections); the output holds them in order (its attribute ``frames`` says which); None: all.
        flats, darks: "FILE[:DATASET]": the flats / darks from another file (None: the archive's).
        flats_reduction: how the flats and darks are reduced (``data.archive.REDUCTIONS``): "mean" or "median"
            to one frame each (the median ignores zingers and a few bad flats), or "pca": a flat for every frame
            from eigen-flats of the flats, for illumination that changes from pulse to pulse (darks: mean).
        eigenflats: "pca": the eigen-flats (None: ``data.archive.default_eigenflats``, min(15, flats - 1)).
        zinger_threshold: replace pixels more than this above their 3 x 3 median (corrected transmission
            units; counted per frame in ``/zinger_pixels``); None: off.
        mask: "FILE[:DATASET]": bad pixels and module gaps (non-zero), inpainted before retrieval from their
            nearest unmasked pixel and written to the output as ``/mask``; None: none.
        force_geometry: PhaseGAN: reconstruct with the model's geometry even where the archive or ``physics``
            states another (refused otherwise).
        follow: the archive is still being written (``--follow``, ``reconstruct.live``): shards are taken as
            their frames are written, the output republished as they finish, until the acquisition ends.
        idle_timeout: ``follow``: seconds without new frames after which the writer is taken for dead.
        recorrect: ``follow``: if flats or darks were written after the projections, reconstruct the finished
            archive again with them (a batch run over the follow's output); without it they are not used.

    Raises (on construction):
        DataError: an unknown method, backend, score or geometry key, or options no run can use.
    """

    archive: Path
    sequence: tuple[Path, ...] = ()
    model: Path | None = None
    output: Path | None = None
    dataset: str | None = None
    method: Method = field(default_factory=PhaseGAN)
    batch_size: int = 32
    shard_frames: int | None = None
    overwrite: bool = False
    physics: dict[str, float | None] = field(default_factory=dict)
    flag_by: str = DEFAULT_FLAG_BY
    preview: bool = True
    compile: bool | None = None
    backend: str = "ray"
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    device: str | None = None
    reader: str = "chunks"
    output_chunk_frames: int | None = None
    score: str = "all"
    correct_on: str = "auto"
    output_dtype: str = "float32"
    roi: str | None = None
    frames: str | None = None
    force_geometry: bool = False
    flats: str | None = None
    darks: str | None = None
    flats_reduction: str = "mean"
    eigenflats: int | None = None
    zinger_threshold: float | None = None
    mask: str | None = None
    follow: bool = False
    idle_timeout: float = 60.0
    recorrect: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "archive", Path(self.archive))
        set_(self, "sequence", tuple(Path(p) for p in self.sequence))
        set_(self, "model", Path(self.model) if self.model is not None else None)
        set_(self, "output", Path(self.output) if self.output is not None else None)
        if isinstance(self.method, str):
            set_(self, "method", method_named(self.method))
        set_(self, "physics", {k: v for k, v in (self.physics or {}).items() if v is not None})
        if self.backend not in BACKENDS:
            raise DataError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        score_every(self.score)  # validates
        if self.reader not in READERS:
            raise DataError(f"unknown reader {self.reader!r}; choose from {', '.join(READERS)}")
        parse_roi(self.roi)  # validates the form; the bounds are checked against the archive
        parse_frames(self.frames)  # likewise
        zinger = self.zinger_threshold
        if zinger is not None and not (zinger > 0 and math.isfinite(zinger)):
            raise DataError(f"--zinger-threshold must be a positive number, not {self.zinger_threshold}")
        if self.flats_reduction not in REDUCTIONS:
            raise DataError(f"unknown --flats-reduction {self.flats_reduction!r}; choose from {', '.join(REDUCTIONS)}")
        if self.eigenflats is not None and (self.flats_reduction != "pca" or self.eigenflats < 1):
            raise DataError(f"--eigenflats {self.eigenflats}: needs --flats-reduction pca and at least 1 eigen-flat")
        if self.correct_on not in CORRECT_ON:
            raise DataError(f"unknown --correct-on {self.correct_on!r}; choose from {', '.join(CORRECT_ON)}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise DataError(f"unknown --output-dtype {self.output_dtype!r}; choose from {', '.join(OUTPUT_DTYPES)}")
        if self.flag_by not in SCORES:
            raise DataError(f"unknown score {self.flag_by!r} for --flag-by; choose from {', '.join(SCORES)}")
        unknown = sorted(set(self.physics) - set(GEOMETRY_OVERRIDES))
        if unknown:
            raise DataError(f"unknown geometry {', '.join(unknown)}; choose from {', '.join(GEOMETRY_OVERRIDES)}")
        if self.follow and (self.sequence or self.frames):
            raise DataError("--follow reads one growing file from its first frame: it takes no --sequence or "
                            "--frames")
        if self.recorrect and not self.follow:
            raise DataError("--recorrect re-corrects a --follow; give both")
        if self.recorrect and self.backend == "mpi":
            raise DataError("--recorrect is not supported with --backend mpi yet; rerun with --overwrite instead")
        if not (self.idle_timeout > 0 and math.isfinite(self.idle_timeout)):
            raise DataError(f"--idle-timeout must be a positive number of seconds, not {self.idle_timeout}")
        self.method.check()

    def output_path(self) -> Path:
        """``output`` as an absolute path, else ``<stem>_<method>.h5`` next to the (resolved) archive."""
        if self.output is not None:
            return self.output.expanduser().absolute()
        return default_output(self.archive.expanduser().resolve(), self.method.name, bool(self.sequence))

    def model_path(self) -> Path | None:
        """``model``, else ``$PHASEGAN_HPC_MODEL``, else ``./runs/latest/model.pt``; None if there is none and the
        method does not need one.

        Raises:
            DataError: no model for a method that needs one, saying how to get one.
        """
        if self.model is not None:
            return self.model
        if os.environ.get(MODEL_ENV):
            return Path(os.environ[MODEL_ENV])
        if DEFAULT_MODEL.is_file():
            return DEFAULT_MODEL
        if self.method.needs_model:
            raise DataError(f"no model: give --model PATH, set {MODEL_ENV}, or train one "
                            "(`phasegan-hpc train ...` writes runs/latest/model.pt)")
        return None


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
    flagged: list[tuple[int, float]] = field(default_factory=list)  # (frame, score): the first LISTED_FRAMES
    flag_by: str = DEFAULT_FLAG_BY
    nonfinite: list[tuple[int, int]] = field(default_factory=list)  # (frame, non-finite or unreadable pixels): ditto
    negative: list[tuple[int, int]] = field(default_factory=list)  # (frame, pixels below zero): ditto
    scored_frames: int = 0  # frames whose scores were computed (--score)
    # how many frames each of the three lists would name in full (None: as many as it does)
    flagged_frames: int | None = None
    nonfinite_frames: int | None = None
    negative_frames: int | None = None
    preview: Path | None = None
    setup_seconds: float = 0.0  # the slowest worker's start-up (model load, compilation)
    pipeline_seconds: float = 0.0  # the busiest worker's time inside shards (read, compute, write)
    replaced_workers: int = 0  # workers lost (killed, node gone) and replaced during the run
    lost_workers: list[str] = field(default_factory=list)  # one line per lost worker: where, which shard redone
    hosts: dict[str, int] = field(default_factory=dict)  # shards written in this run, per host
    rejected_shards: list[int] = field(default_factory=list)  # shard files that did not verify, redone
    geometry_sources: dict[str, str] = field(default_factory=dict)  # where each geometry value came from
    live: dict[str, Any] = field(default_factory=dict)  # --follow: latency, backlog, how the acquisition ended

    def __post_init__(self) -> None:
        for name in ("flagged", "nonfinite", "negative"):
            if getattr(self, f"{name}_frames") is None:
                setattr(self, f"{name}_frames", len(getattr(self, name)))

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
        """The summary as JSON-ready values (``reconstruct --json``)."""
        return {"output": str(self.output), "frames": self.frames, "computed_frames": self.computed_frames,
                "reused_shards": self.reused_shards, "shards": self.shards, "backend": self.backend,
                "workers": self.workers, "seconds": self.seconds, "setup_seconds": self.setup_seconds,
                "pipeline_seconds": self.pipeline_seconds, "frames_per_s": self.frames_per_s,
                "pipeline_frames_per_s": self.pipeline_frames_per_s, "threshold": self.threshold,
                "flagged": self.flagged, "flag_by": self.flag_by, "nonfinite": self.nonfinite,
                "negative": self.negative, "scored_frames": self.scored_frames,
                "flagged_frames": self.flagged_frames, "nonfinite_frames": self.nonfinite_frames,
                "negative_frames": self.negative_frames,
                "replaced_workers": self.replaced_workers, "lost_workers": self.lost_workers, "hosts": self.hosts,
                "rejected_shards": self.rejected_shards,
                "geometry_sources": self.geometry_sources, **({"live": self.live} if self.live else {}),
                "preview": str(self.preview) if self.preview else None}


@dataclass
class DryRun:
    """What a reconstruction would do (``reconstruct --dry-run``): nothing written, no worker started."""

    archive: Path
    dataset: str
    frames: int
    frame_shape: tuple[int, int]
    roi: tuple[int, int, int, int] | None
    selection: tuple[int, int, int] | None  # --frames: (start, stop, step) of the first leading axis
    files: int  # 1, or the files of a sequence (``archive`` is the first)
    method: str
    model: Path | None
    output: Path
    output_exists: bool
    shards: int
    shard_frames: int  # frames of the largest shard
    batch_size: int
    backend: str
    workers: int | None  # None: the backend's default (Ray: one per GPU share or per --cpus-per-worker CPUs)
    output_shape: tuple[int, ...]
    output_bytes: int  # an upper bound: uncompressed
    geometry: dict[str, float]
    geometry_sources: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (``--json``)."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items()}
