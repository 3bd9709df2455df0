"""Batch reconstruction of HDF5 movie archives (``phasegan-hpc reconstruct``; DESIGN.md §4-5).

    request.py   ReconstructRequest (what to read, how, where to, on what) and the Summary it answers
    run.py       the driver: checks, plan, resume, backend, assembly, summary
    plan.py      shards of whole chunk rows, independent of workers and backend
    source.py    where backends take tasks from (shards of one or several jobs; a growing archive tomorrow)
    methods.py   retrieval methods as objects (PhaseGAN, Paganin, Tie, FlatField) + trust scores
    worker.py    one worker: prefetching reader -> retriever -> shard file (atomic)
    backends/    local, Ray actors (lost ones replaced), MPI ranks: one Backend protocol
    output.py    shard directory, manifest, the assembled output (HDF5 virtual datasets)
    figures.py   the preview PNG and the movie figure

The movie-archive reader (frames, flats, darks; read-only) is :mod:`phasegan_hpc.data.archive`.
"""

from phasegan_hpc.reconstruct.backends import BACKENDS
from phasegan_hpc.reconstruct.methods import METHODS, FlatField, Method, Paganin, PhaseGAN, Tie
from phasegan_hpc.reconstruct.request import ReconstructRequest, Summary
from phasegan_hpc.reconstruct.run import reconstruct, reconstruct_all

__all__ = ["BACKENDS", "METHODS", "FlatField", "Method", "Paganin", "PhaseGAN", "ReconstructRequest", "Summary",
           "Tie", "reconstruct", "reconstruct_all"]
