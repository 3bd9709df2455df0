"""Batch reconstruction of HDF5 movie archives (``phasegan-hpc reconstruct``; DESIGN.md §4-5).

    plan.py      shards of whole chunk rows, independent of workers and backend
    retrieve.py  one batch -> phase, attenuation, consistency score (G_O or Paganin)
    worker.py    one worker: prefetching reader -> retriever -> shard file (atomic)
    backends.py  local, Ray actors, MPI ranks (the only Ray code here)
    output.py    shard directory, manifest, the assembled output (HDF5 virtual datasets)
    run.py       the driver: checks, plan, resume, backend, assembly, summary

The movie-archive reader (frames, flats, darks; read-only) is :mod:`phasegan_hpc.data.archive`.
"""

from phasegan_hpc.reconstruct.run import BACKENDS, Summary, reconstruct

__all__ = ["BACKENDS", "Summary", "reconstruct"]
