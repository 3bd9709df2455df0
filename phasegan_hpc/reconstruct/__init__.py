"""Batch reconstruction of HDF5 movie archives (``phasegan-hpc reconstruct``; DESIGN.md §4-5).

    archive.py   find the frames, flats and darks of an archive; read corrected frames (read-only)
    plan.py      shards of whole chunk rows, independent of workers and backend
    retrieve.py  one batch -> phase, attenuation, consistency score (G_O or Paganin)
    worker.py    one worker: prefetching reader -> retriever -> shard file (atomic)
    backends.py  local, Ray actors, MPI ranks (the only Ray code here)
    output.py    shard directory, manifest, the assembled output (HDF5 virtual datasets)
    run.py       the driver: checks, plan, resume, backend, assembly, summary
"""

from phasegan_hpc.reconstruct.run import BACKENDS, Summary, reconstruct

__all__ = ["BACKENDS", "Summary", "reconstruct"]
