"""The reconstruction driver: check everything, plan, run a backend, assemble the output, summarise.

Every check a user's input can fail (archive, dataset, model, physics, output path, resources) runs before
anything is written. A rerun after a crash continues the same plan: finished shards are kept, unfinished
ones are redone from their start, and the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phasegan_hpc.data.archive import (
    Archive,
    FrameReader,
    load_mask,
    open_sequence,
    parse_frames,
    parse_reference,
    parse_roi,
)
from phasegan_hpc.data.metadata import Stated
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import PhaseModel, load_model
from phasegan_hpc.physics.geometry import Geometry, attr_float
from phasegan_hpc.physics.optics import resolve_wavelength_m
from phasegan_hpc.progress import ProgressFn, Tally
from phasegan_hpc.reconstruct.backends import Backend, backend_named
from phasegan_hpc.reconstruct.figures import reconstruction_preview
from phasegan_hpc.reconstruct.live import LIVE_SHARD_FRAMES, LiveShards, Publisher
from phasegan_hpc.reconstruct.methods import Layout, Method
from phasegan_hpc.reconstruct.output import (
    ARCHIVE_CHANGED,
    OutputLock,
    assemble,
    check_output,
    check_space,
    is_complete,
    is_reconstruction,
    manifest,
    open_reconstruction,
    per_frame_blocks,
    plan_id,
    prepare_shards_dir,
    record_plan,
    retire,
    retire_empty,
    verified,
)
from phasegan_hpc.reconstruct.plan import Shard, make_plan, rows_per_shard
from phasegan_hpc.reconstruct.request import LISTED_FRAMES, DryRun, ReconstructRequest, Summary, score_every
from phasegan_hpc.reconstruct.source import FixedShards, ShardSource, tasks
from phasegan_hpc.reconstruct.worker import Job, frame_bytes

#: A frame is flagged when its score (``flag_by``) exceeds median + FLAG_MADS x (1.4826 MAD) of all frames,
FLAG_MADS = 5.0
#: or, whatever the others look like, when more than this fraction of its pixels were not finite (or had a
#: flat field not above the dark, or were unreadable), or more than this fraction were negative, or its score is
#: not finite.
MAX_BAD_PIXEL_FRACTION = 0.01
#: A run is refused when more than this fraction of the flat-field pixels are not above the dark.
MAX_DEAD_FRACTION = 0.5


@dataclass(frozen=True)
class Prepared:
    """The driver's set-up, shared with every process (MPI: broadcast from rank 0)."""

    job: Job
    plan: list[Shard]
    pending: list[Shard]  # the plan's shards without a file that verifies
    rejected: dict[int, str]  # shards whose file did not verify (redone), and why
    created: bool  # the run directory was made by this run (not resumed)
    output: Path
    layout: Layout
    attrs: dict[str, Any]  # the output's attributes
    geometry_sources: dict[str, str]  # where each geometry value came from (model, a flag, the archive's field)


def reconstruct(request: ReconstructRequest, *, progress: ProgressFn | None = None,
                backend: Backend | None = None) -> Summary | None:
    """Reconstruct phase and attenuation of every frame of a movie archive.

    Args:
        request: what to reconstruct, how, and on what (:class:`ReconstructRequest`).
        progress: ``progress(done, total, {})`` in frames, by the driver (``phasegan_hpc.progress``).
        backend: where the workers run (None: ``request.backend`` with the request's resources; pass one to
            choose, e.g., an MPI communicator).

    Returns:
        A :class:`Summary` (None on MPI ranks other than 0).

    Raises:
        DataError, ResourceError: a user-fixable problem; nothing was written or replaced.
    """
    return reconstruct_all([request], progress=progress, backend=backend)[0]


def reconstruct_all(requests: list[ReconstructRequest], *, progress: ProgressFn | None = None,
                    backend: Backend | None = None) -> list[Summary | None]:
    """Reconstruct several archives (``reconstruct A.h5 B.h5 ...``), one output each, on one pool of workers:
    every request is checked and prepared first (a problem with any of them is raised before any work, and
    what the earlier ones had set up is removed), then the shards of all run on the same workers, then each
    output is verified and published and summarised on its own. Resources (backend, workers) are the first
    request's.

    Returns:
        One :class:`Summary` per request, in order (Nones on MPI ranks other than 0).

    Raises:
        DataError, ResourceError: as :func:`reconstruct`; also two requests writing one output.
    """
    first = requests[0]
    if first.follow:
        if len(requests) > 1:
            raise DataError("--follow takes one archive (the file being written)")
        return [follow(first, progress=progress, backend=backend)]
    outputs = [r.output_path() for r in requests]
    if len(set(outputs)) < len(outputs):
        twice = next(o for o in outputs if outputs.count(o) > 1)
        raise DataError(f"two archives would be reconstructed to {twice}; give each its own --output")
    if backend is None:
        backend = backend_named(first.backend, workers=first.workers, cpus_per_worker=first.cpus_per_worker,
                                gpus_per_worker=first.gpus_per_worker)
    with contextlib.ExitStack() as locks:
        if backend.is_driver():
            for out in outputs:
                locks.enter_context(OutputLock(out))
        prepared: list[Prepared] = []
        try:
            for r in requests:
                prepared.append(backend.prepare(lambda r=r: prepare(r, backend)))
            return _run_prepared(requests, backend, progress, prepared)
        except BaseException:
            for p in prepared:
                run_dir = Path(p.job.shards_dir)
                if backend.is_driver() and p.created and not any(run_dir.glob("shard-*.h5")):
                    retire_empty(run_dir)  # failed before any shard: leave nothing behind, not even plan.json
            raise


def follow(request: ReconstructRequest, *, progress: ProgressFn | None = None,
           backend: Backend | None = None) -> Summary | None:
    """Reconstruct an archive while it is being written (``reconstruct --follow``, :mod:`.live`): the batch
    plan's shards run as their frames are written, the output is republished (``complete = false``) after
    each finished shard, and when the acquisition ends (its end marker, or ``request.idle_timeout`` s
    without new frames) the run finishes like a batch run of the archive as it then is: the same shards, the
    same result. A follow that is killed resumes where it was (its finished shards verify).

    Returns:
        A :class:`Summary` with ``live`` (latency p50/p99 from a frame first seen to its phase visible, the
        largest backlog, how the acquisition ended); None on MPI ranks other than 0.

    Raises:
        DataError, ResourceError: as :func:`reconstruct`.
    """
    r = dataclasses.replace(request, shard_frames=request.shard_frames or LIVE_SHARD_FRAMES)
    if backend is None:
        backend = backend_named(r.backend, workers=r.workers, cpus_per_worker=r.cpus_per_worker,
                                gpus_per_worker=r.gpus_per_worker)
    driver = backend.is_driver()
    out = r.output_path()
    with contextlib.ExitStack() as locked:
        if driver:
            locked.enter_context(OutputLock(out))
        prepared = backend.prepare(lambda: (_refuse_grown_since(r, out), prepare(r, backend))[1])
        try:
            summary = _follow_prepared(r, backend, prepared, out, progress)
        except BaseException:
            run_dir = Path(prepared.job.shards_dir)
            if driver and prepared.created and not any(run_dir.glob("shard-*.h5")):
                retire_empty(run_dir)  # failed before any shard: leave nothing behind
            raise
    if summary is None or not r.recorrect or not summary.live["unused_references"]:
        return summary
    # Flats or darks written after the projections: the finished archive again, with them (a batch run).
    again = reconstruct(dataclasses.replace(r, follow=False, recorrect=False, overwrite=True), progress=progress,
                        backend=backend)
    assert again is not None
    again.live = {**summary.live, "recorrected": True, "unused_references": []}
    return again


def _follow_prepared(r: ReconstructRequest, backend: Backend, prepared: Prepared, out: Path,
                     progress: ProgressFn | None) -> Summary | None:
    """:func:`follow` once its output is locked and its run prepared: the live run, then its finish."""
    driver = backend.is_driver()
    job, shards_dir = prepared.job, Path(prepared.job.shards_dir)
    reused = {s.index for s in prepared.plan} - {s.index for s in prepared.pending}
    tally = Tally(progress if driver else None, job.archive.n_frames,
                  sum(s.frames for s in prepared.plan if s.index in reused))
    source: ShardSource = FixedShards([])  # MPI ranks other than 0 are given their shards by rank 0
    live = None
    with contextlib.ExitStack() as running:
        if driver:
            def planned(plan: list[Shard]) -> None:  # the archive grew: plan.json, and the progress bar's total
                record_plan(shards_dir, plan)
                tally.total = sum(s.frames for s in plan)

            def publish(done: list[Shard], rows: int) -> None:
                assemble(out, shards_dir, _grown(job.archive, rows), done, prepared.layout, prepared.attrs,
                         job.output_dtype, job.mask, complete=False)

            live = running.enter_context(contextlib.closing(LiveShards(
                job.archive, 0, r.batch_size, r.shard_frames, reused, r.idle_timeout, on_plan=planned)))
            source = live
            running.enter_context(Publisher(live, shards_dir, publish, reused))
        t0 = time.perf_counter()
        rows = backend.run([job], source, tally.add)
        seconds = time.perf_counter() - t0
    # here the publisher has stopped: the finished output replaces its last one
    if not driver:
        return None
    assert live is not None
    final = _grown(job.archive, live.rows)
    plan = make_plan(final, r.batch_size, r.shard_frames) if live.rows else []
    if not plan:
        raise DataError(f"--follow: {final.path}:{final.dataset} held no frame when the acquisition ended "
                        f"({live.live.ended_by}); nothing was reconstructed")
    record_plan(shards_dir, plan)
    done = dataclasses.replace(prepared, job=dataclasses.replace(job, archive=final), plan=plan,
                               pending=[s for s in plan if s.index not in reused])
    summary = _finish(r, backend, done, [{**row, "job": 0} for row in rows], seconds)
    latency = live.live.latencies(plan)
    summary.live = {
        "ended_by": live.live.ended_by, "frames_seen": final.n_frames, "republished": live.live.republished,
        "latency_p50_s": float(np.percentile(latency, 50)) if len(latency) else None,
        "latency_p99_s": float(np.percentile(latency, 99)) if len(latency) else None,
        "max_backlog_frames": live.live.backlog, "shard_frames": r.shard_frames,
        # a writer that died mid-chunk: frames its shape declared in a chunk row never written whole
        "left_out_frames": (live.declared - live.rows) * final.frames_per_row,
        "recorrected": False, "unused_references": _references_came_later(r, job.archive),
    }
    return summary


def _references_came_later(r: ReconstructRequest, started: Archive) -> list[str]:
    """"flats" and/or "darks": those the archive holds now that it did not hold when the follow started
    (written after the projections; not used unless ``--recorrect``)."""
    now = _archive_of(r)
    return [what for what, a, b in (("flats", started.flats, now.flats), ("darks", started.darks, now.darks))
            if a is None and b is not None]


def _refuse_grown_since(r: ReconstructRequest, out: Path) -> None:
    """Refuse, without ``overwrite``, to follow an archive whose finished reconstruction ``out`` holds fewer
    frames than it does now: frames appended after its acquisition ended.

    Raises:
        DataError: naming both counts.
    """
    if r.overwrite or not is_reconstruction(out) or not is_complete(out):
        return
    with open_reconstruction(out) as f:
        done = int(f["consistency"].shape[0])
    now = open_sequence([r.archive], r.dataset, live=True).lead_shape[0]
    if now > done:
        raise DataError(f"{out} is the finished reconstruction of {done} frames, but {r.archive} now holds {now}: "
                        "frames were appended after its acquisition ended; add --overwrite to reconstruct it anew")


def _grown(archive: Archive, rows: int) -> Archive:
    """``archive`` as it is once it holds ``rows`` rows of its first axis (a live archive grows)."""
    return dataclasses.replace(archive, shape=(rows, *archive.shape[1:]), lead_shape=(rows, *archive.lead_shape[1:]))


def _run_prepared(requests: list[ReconstructRequest], backend: Backend, progress: ProgressFn | None,
                  prepared: list[Prepared]) -> list[Summary | None]:
    driver = backend.is_driver()
    n = sum(p.job.archive.n_frames for p in prepared)
    tally = Tally(progress if driver else None, n, n - sum(s.frames for p in prepared for s in p.pending))
    tally.add(0)  # where a resumed run starts
    todo = [t for i, p in enumerate(prepared) for t in tasks(p.pending, i)]
    t0 = time.perf_counter()
    rows = backend.run([p.job for p in prepared], FixedShards(todo), tally.add) if todo else []
    seconds = time.perf_counter() - t0
    if not driver:
        return [None] * len(requests)
    return [_finish(r, backend, p, [row for row in rows if row.get("job") == i], seconds)
            for i, (r, p) in enumerate(zip(requests, prepared, strict=True))]


def _finish(request: ReconstructRequest, backend: Backend, prepared: Prepared, rows: list[dict[str, Any]],
            seconds: float) -> Summary:
    """Verify every shard of one output, publish it and summarise it (the driver)."""
    job, plan, pending, out = prepared.job, prepared.plan, prepared.pending, prepared.output
    # Every shard, before anything is published: those written now by the checksum their worker returned.
    written = {int(r["shard"]): str(r["checksum"]) for r in rows if "checksum" in r}
    good, bad = verified(Path(job.shards_dir), plan, job.plan_id, written=written)
    missing = sorted(set(s.index for s in plan) - good)
    if missing:  # never assemble a partial or mixed volume
        why = f" ({bad[missing[0]]})" if missing[0] in bad else ""
        raise DataError(f"{out}: shards {missing[:5]} did not finish or do not verify{why}; rerun the same "
                        "command to resume")
    assemble(out, Path(job.shards_dir), job.archive, plan, prepared.layout, prepared.attrs,  # one rename
             job.output_dtype, job.mask)
    retire(out, Path(job.shards_dir))  # only now: the files of the run it replaced
    summary = _summarise(out, job, plan, pending, rows, seconds, request)
    summary.replaced_workers = backend.replaced
    summary.lost_workers = list(backend.lost)
    summary.geometry_sources = dict(prepared.geometry_sources)
    summary.rejected_shards = sorted(prepared.rejected)
    if summary.frames > 1 and summary.flagged_frames == summary.frames:
        raise DataError(f"every one of the {summary.frames} frames was flagged (non-finite input or output, or "
                        f"{summary.flag_by} far from the rest): check the archive's flats and darks, the model and "
                        f"the geometry; {out} is kept for inspection")
    return summary


#: Relative difference at which a stated geometry value is another geometry than the model's (metadata are
#: often rounded: an energy of 12.4 keV, a pixel of 0.65 um).
GEOMETRY_RTOL = 1e-4
GEOMETRY_KEYS = ("pixel_size_m", "wavelength_m", "distance_m")


def _geometry(method: Method, model: PhaseModel | None, archive: Archive, overrides: dict[str, float],
              force: bool = False) -> tuple[Geometry, float | None, dict[str, str]]:
    """(geometry of the frames, delta/beta, where each geometry value came from). PhaseGAN: the model's, always;
    what the flags and the archive state (``data.metadata``) is checked against it (a mismatch is refused unless
    ``force``). Other methods: flag, else archive, else model. The frames' pixel is the geometry's detector
    pixel.

    Raises:
        DataError: a mismatch with the model (naming both values and the source), or a value no one states.
    """
    attrs = archive.attrs
    given = dict(overrides)
    if "energy_kev" in given:
        given["wavelength_m"] = resolve_wavelength_m(None, given.pop("energy_kev"))
    delta_beta = given.get("delta_beta")
    where = str(archive.path)
    if delta_beta is None and "delta" in attrs and "beta" in attrs and attr_float(attrs, "beta", where) > 0:
        delta_beta = attr_float(attrs, "delta", where) / attr_float(attrs, "beta", where)
    if method.needs_delta_beta and delta_beta is None:
        raise DataError(f"--method {method.name} needs --delta-beta (the archive has no delta/beta attributes)")
    flagged = {k: Stated(float(given[k]), "--" + ("energy-kev" if k == "wavelength_m" and "energy_kev" in overrides
                                                   else k.replace("_", "-")))
               for k in GEOMETRY_KEYS if k in given}
    stated = archive.stated
    if model is not None and method.model_geometry:  # the geometry it was trained for
        g = model.geometry
        ours = {"pixel_size_m": g.detector_pixel_size_m, "wavelength_m": g.wavelength_m, "distance_m": g.distance_m}
        sources = {}
        for key, value in ours.items():
            sources[key] = "model"
            for other in (flagged.get(key), stated.get(key)):
                if other is None:
                    continue
                if not math.isclose(other.value, value, rel_tol=GEOMETRY_RTOL):
                    if not force:
                        raise DataError(f"{where}: {key} = {other.value:g} ({other.source}), but the model was "
                                        f"trained for {value:g}; --force-geometry reconstructs with the model's")
                    sources[key] = f"model (forced over {other.source})"
                elif sources[key] == "model":
                    sources[key] = f"model ({other.source} agrees)"
        return g, delta_beta, sources
    known = model.geometry.to_attrs() if model is not None else {}
    values: dict[str, float] = {}
    sources = {}
    for key in GEOMETRY_KEYS:
        if key in flagged:
            values[key], sources[key] = flagged[key].value, flagged[key].source
        elif key in stated:
            values[key], sources[key] = stated[key].value, stated[key].source
        elif key in known:
            values[key], sources[key] = float(known[key]), "model"
        else:
            flag = "--" + key.replace("_", "-")
            raise DataError(f"{archive.path} states no {key} (attribute, DXchange or NXtomo field): give {flag}")
    return Geometry(values["wavelength_m"], values["pixel_size_m"], values["distance_m"]), delta_beta, sources


def _identity_physics(geometry: Geometry, delta_beta: float | None) -> dict[str, Any]:
    """The geometry in a shard manifest, with the keys manifests have always had (so old shards resume)."""
    return {"pixel_size_m": geometry.detector_pixel_size_m, "wavelength_m": geometry.wavelength_m,
            "distance_m": geometry.distance_m, "delta_beta": delta_beta, "pad": 0, "pad_mode": "edge"}


def prepare(request: ReconstructRequest, backend: Backend) -> Prepared:
    """All checks, then the shard directory (the first thing written): what every backend's workers need.

    Raises:
        DataError, ResourceError: a user-fixable problem; nothing was written or replaced.
    """
    archive = _archive_of(request)
    reader = FrameReader(archive)
    try:
        return _prepare(request, backend, archive, reader)
    finally:
        reader.close()


@dataclass
class _Checked:
    """What the checks of a request found: the model, geometry, output path, plan and layout."""

    model_path: Path | None
    loaded: PhaseModel | None
    geometry: Geometry
    delta_beta: float | None
    sources: dict[str, str]
    output: Path
    plan: list[Shard]
    layout: Layout
    mask: np.ndarray | None  # (H, W) bool of the pixels to inpaint (``--mask``)


def _checked(r: ReconstructRequest, archive: Archive, reader: FrameReader) -> _Checked:
    """Every check of the request against the archive, the model and the output path; nothing is written."""
    dead = reader.dead_fraction
    if dead > MAX_DEAD_FRACTION:
        raise DataError(f"{dead:.0%} of the pixels of {archive.path} have a flat field not above the dark: the "
                        "flats or darks are wrong (swapped, empty, or of another detector)")
    model_path = r.model_path()
    loaded = load_model(model_path) if model_path is not None else None
    geometry, delta_beta, sources = _geometry(r.method, loaded, archive, r.physics, r.force_geometry)
    out = r.output_path()
    check_output(out, [p for p, _ in archive.parts or [(archive.path, 0)]], r.overwrite)
    plan = make_plan(archive, r.batch_size, r.shard_frames)
    layout = r.method.layout(loaded, archive.frame_shape, geometry)
    mask = load_mask(parse_reference(r.mask, "mask"), archive) if r.mask else None
    return _Checked(model_path, loaded, geometry, delta_beta, sources, out, plan, layout, mask)


def output_bytes(plan: list[Shard], layout: Layout, output_dtype: str) -> int:
    """An upper bound of the output's size: its frames and per-frame values uncompressed."""
    return sum(s.frames for s in plan) * frame_bytes(layout, output_dtype)


def _archive_of(r: ReconstructRequest) -> Archive:
    """The request's archive (one file, or a sequence of files read as one movie): its region of interest, its
    rows (``--frames``), and flats and darks (from it or other files) reduced as asked."""
    archive = open_sequence([r.archive, *r.sequence], r.dataset, live=r.follow)
    archive = archive.with_roi(parse_roi(r.roi)).with_frames(parse_frames(r.frames))
    return archive.with_references(parse_reference(r.flats, "flats"), parse_reference(r.darks, "darks"),
                                   r.flats_reduction, r.eigenflats)


@contextlib.contextmanager
def _checked_request(request: ReconstructRequest) -> Iterator[tuple[Archive, FrameReader, _Checked]]:
    """The request's archive, a reader of it (closed on exit) and every check a run makes before work."""
    archive = _archive_of(request)
    reader = FrameReader(archive)
    try:
        yield archive, reader, _checked(request, archive, reader)
    finally:
        reader.close()


def dry_run(request: ReconstructRequest) -> DryRun:
    """What ``reconstruct`` would do (``--dry-run``): every check, the plan, the output's size bound and the
    geometry with its sources; nothing is written and no worker starts.

    Raises:
        DataError, ResourceError: what the run itself would refuse before starting.
    """
    with _checked_request(request) as (archive, _, c):
        pass
    g = c.geometry
    return DryRun(archive=archive.path, dataset=archive.dataset, frames=archive.n_frames,
                  frame_shape=archive.frame_shape, roi=archive.roi, selection=archive.frames,
                  files=len(archive.parts) if archive.parts else 1,
                  method=request.method.name,
                  model=c.model_path, output=c.output, output_exists=c.output.exists(), shards=len(c.plan),
                  shard_frames=max((s.frames for s in c.plan), default=0), batch_size=request.batch_size,
                  backend=request.backend, workers=request.workers,
                  output_shape=(*archive.lead_shape, *c.layout.shape),
                  output_bytes=output_bytes(c.plan, c.layout, request.output_dtype),
                  geometry={"pixel_size_m": g.detector_pixel_size_m, "wavelength_m": g.wavelength_m,
                            "distance_m": g.distance_m},
                  geometry_sources=c.sources)


def _identity(r: ReconstructRequest, archive: Archive, reader: FrameReader, c: _Checked) -> dict[str, Any]:
    """What a plan is made from besides the archive (``output.manifest``): a rerun must share it to resume."""
    return {"method": r.method.name, "model_sha256": c.loaded.sha256 if c.loaded else None,
            "batch_size": r.batch_size, "shard_rows": rows_per_shard(archive, r.batch_size, r.shard_frames),
            "references_sha256": reader.references_sha256,
            "physics": _identity_physics(c.geometry, c.delta_beta), "tie": r.method.options(), "score": r.score,
            "output_dtype": r.output_dtype, **({"roi": list(archive.roi)} if archive.roi else {}),
            **({"frames": list(archive.frames)} if archive.frames else {}),
            **({"zinger_threshold": r.zinger_threshold} if r.zinger_threshold else {}),
            **({"mask_sha256": hashlib.sha256(np.packbits(c.mask).tobytes()).hexdigest()} if c.mask is not None
               else {})}


def planned_manifest(request: ReconstructRequest) -> dict[str, Any]:
    """The manifest a run of ``request`` would write as its ``plan.json`` (``output.manifest_text``), after every
    check a dry run makes; nothing is written (``bench plan`` measures it for archives too large to run).

    Raises:
        DataError, ResourceError: what the run itself would refuse before starting.
    """
    with _checked_request(request) as (archive, reader, c):
        return manifest(archive, _identity(request, archive, reader, c), c.plan)


def _prepare(request: ReconstructRequest, backend: Backend, archive: Archive, reader: FrameReader) -> Prepared:
    r, method = request, request.method
    c = _checked(r, archive, reader)
    model_path, loaded, geometry, delta_beta, sources = c.model_path, c.loaded, c.geometry, c.delta_beta, c.sources
    out, plan = c.output, c.plan
    device = backend.device(r.device)
    layout = c.layout
    compiled = device.startswith("cuda") if r.compile is None else r.compile
    _check_batch_memory(r.batch_size if compiled else min(r.batch_size, max((s.frames for s in plan),
                                                                             default=r.batch_size)),
                        archive.frame_shape, layout)
    mask = c.mask
    wanted = manifest(archive, _identity(r, archive, reader, c), plan)
    shards_dir, resumed = prepare_shards_dir(out, wanted, r.overwrite)
    # A resumed run reuses only shards that verify and read what the archive holds now.
    done, rejected = verified(shards_dir, plan, plan_id(wanted),
                              lambda s: reader.input_checksum(s.start, s.stop, r.batch_size))
    changed = sorted(i for i, why in rejected.items() if why == ARCHIVE_CHANGED)
    if changed and not r.overwrite:
        s = plan[changed[0]]
        more = f" (and {len(changed) - 1} more shards)" if len(changed) > 1 else ""
        raise DataError(f"{archive.path} has changed since this reconstruction began: frames {s.start}-{s.stop - 1}"
                        f"{more} are not what was reconstructed from them; add --overwrite to reconstruct them anew")
    try:  # beside the previous result, if any: it stays until the new one is complete
        check_space(shards_dir, output_bytes([s for s in plan if s.index not in done], layout, r.output_dtype),
                    f"the reconstruction of {archive.n_frames} frames (uncompressed)")
    except DataError:
        if not resumed:
            retire_empty(shards_dir)
        raise
    job = Job(archive, str(shards_dir), method, str(Path(model_path).resolve()) if model_path else None, geometry,
              delta_beta, r.batch_size, device, max(1, int(r.cpus_per_worker)), archive.lead_shape[1:],
              compiled, plan_id(wanted), r.reader, r.output_chunk_frames, score_every(r.score), r.correct_on,
              r.output_dtype, r.zinger_threshold or 0.0, mask)
    attrs = {
        "method": method.name, "model_sha256": loaded.sha256 if loaded else "", "model_path": str(model_path or ""),
        "model_method": loaded.method if loaded else "", "config": (loaded.info.get("config", "") if loaded else ""),
        "pixel_size_m": layout.pixel_size_m, "detector_pixel_size_m": geometry.detector_pixel_size_m,
        "wavelength_m": geometry.wavelength_m, "distance_m": geometry.distance_m,
        "delta_beta": delta_beta, "batch_size": r.batch_size,
        "score": method.score_name(loaded),
        "roi": list(archive.roi) if archive.roi else None,  # (y0, y1, x0, x1) of the archive's frames
        "frames": list(archive.frames) if archive.frames else None,  # --frames: (start, stop, step) of axis 0
        "geometry_sources": json.dumps(sources),
        "reconstruct_options": json.dumps({"backend": backend.name, "batch_size": r.batch_size,
                                           "method": method.name, "dataset": archive.dataset,
                                           "shard_frames": r.shard_frames, "roi": r.roi, "frames": r.frames,
                                           "score": r.score,
                                           "output_dtype": r.output_dtype}),
    }
    return Prepared(job, plan, [s for s in plan if s.index not in done], rejected, not resumed, out, layout, attrs,
                    sources)


#: Copies of a batch a worker holds at once (prefetched input, the batch, its results, the previous results).
BATCH_COPIES = 4


def _check_batch_memory(frames: int, frame_shape: tuple[int, int], layout: Layout) -> None:
    """Refuse a batch (``frames`` frames in, ``layout`` out; compiled networks pad every batch to the full
    batch size) whose arrays alone exceed this machine's available memory, before anything is allocated: a
    huge ``--batch-size`` or a tiny ``--resample-pixel-size-m`` (TIE) would otherwise take a worker down.
    The networks' activations come on top; this is the floor of what a worker needs."""
    per_frame = 4 * int(np.prod(frame_shape)) + 4 * len(layout.outputs) * int(np.prod(layout.shape))
    need = BATCH_COPIES * frames * per_frame
    have = memory_available()
    if have is not None and need > have:
        raise DataError(f"a batch of {frames:,} frames of {layout.shape[0]} x {layout.shape[1]} px needs "
                        f"{need / 2**30:,.1f} GiB of memory per worker, more than the {have / 2**30:,.1f} GiB "
                        "available; lower --batch-size (or raise --resample-pixel-size-m)")


def memory_available() -> int | None:
    """This machine's available memory [bytes] (Linux ``MemAvailable``), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _flag_threshold(out: Path, flag_by: str) -> float:
    """median + FLAG_MADS x (1.4826 MAD) of the finite ``flag_by`` scores of the scored frames, NaN without any
    (every frame is then flagged by the absolute rules). The one per-frame value held whole (4 bytes a frame, the
    median needs them all)."""
    finite = np.concatenate([s[scored & np.isfinite(s)] for _, s, _, _, scored in per_frame_blocks(out, flag_by)])
    if not len(finite):
        return float("nan")
    med = float(np.median(finite))
    mad = 1.4826 * float(np.median(np.abs(finite - med)))
    return med + FLAG_MADS * max(mad, 1e-3 * abs(med), 1e-12)


def _summarise(out: Path, job: Job, plan: list[Shard], pending: list[Shard], rows: list[dict[str, Any]],
               seconds: float, request: ReconstructRequest) -> Summary:
    threshold = _flag_threshold(out, request.flag_by)
    limit = MAX_BAD_PIXEL_FRACTION * int(np.prod(job.archive.frame_shape))
    # Read in blocks, listing the first LISTED_FRAMES of each kind: the summary's size does not follow the frames.
    flagged: list[tuple[int, float]] = []
    nonfinite: list[tuple[int, int]] = []
    negative: list[tuple[int, int]] = []
    counts = {"flagged": 0, "nonfinite": 0, "negative": 0, "scored": 0}
    for first, scores, bad_pixels, below, scored in per_frame_blocks(out, request.flag_by):
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero((scored & ~np.isfinite(scores)) | (scores > threshold) | (bad_pixels > limit)
                                 | (below > limit))
        for name, listed, frames, values, kind in (
                ("flagged", flagged, bad, scores, float),
                ("nonfinite", nonfinite, np.flatnonzero(bad_pixels > 0), bad_pixels, int),
                ("negative", negative, np.flatnonzero(below > 0), below, int)):
            counts[name] += len(frames)
            listed.extend((first + int(i), kind(values[i])) for i in frames[:LISTED_FRAMES - len(listed)])
        counts["scored"] += int(scored.sum())
    busy: dict[str, float] = {}
    hosts: dict[str, int] = {}
    for r in rows:
        if "seconds" in r:
            busy[r["worker"]] = busy.get(r["worker"], 0.0) + r["seconds"]
        if "worker" in r:
            host = str(r["worker"]).rsplit(":", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
    summary = Summary(out, job.archive.n_frames, sum(s.frames for s in pending), len(plan) - len(pending), len(plan),
                      seconds, request.backend, request.workers, threshold, flagged, request.flag_by,
                      nonfinite, negative, scored_frames=counts["scored"], flagged_frames=counts["flagged"],
                      nonfinite_frames=counts["nonfinite"], negative_frames=counts["negative"],
                      setup_seconds=max((r.get("setup_seconds", 0.0) for r in rows), default=0.0),
                      pipeline_seconds=max(busy.values(), default=0.0), hosts=dict(sorted(hosts.items())))
    if request.preview:
        summary.preview = reconstruction_preview(out, job.archive, out.with_suffix(".png"))
    return summary
