"""The plan of a reconstruction: the archive's output frames cut into shards aligned to its HDF5 chunks.

A shard is a range of whole rows of the first leading axis (for trains x pulses: whole trains), starting and
ending on chunk boundaries, so every chunk is read by one worker, once. The plan depends on the archive,
the batch size and the shard size only, never on the number of workers or the backend: a run resumed with
other resources continues the same plan, and every backend computes the same batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from phasegan_hpc.data.archive import Archive
from phasegan_hpc.errors import DataError

#: Default shard size: this many bytes of float32 input frames (4096 frames of 128 x 128).
SHARD_BYTES = 256 << 20
#: The most shards a plan may have (the plan and its manifest are O(shards)): 10^6 shards of the default size
#: are 256 TiB of input; more means a wrong declaration or a far too small --shard-frames.
MAX_SHARDS = 1_000_000


@dataclass(frozen=True)
class Shard:
    """Output frames [start, stop), which are rows [row_start, row_stop) of the first leading axis."""

    index: int
    row_start: int
    row_stop: int
    start: int
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        """File name of the finished shard."""
        return f"shard-{self.index:06d}.h5"

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def rows_per_shard(archive: Archive, batch_size: int, shard_frames: int | None = None) -> int:
    """Rows of the first leading axis per shard: about ``shard_frames`` frames (None: :data:`SHARD_BYTES` of
    float32 input), whole chunk rows. It does not depend on the archive's length, so the shards of a grown
    archive are the earlier ones plus new ones (the last earlier one, if short, is redone).

    Raises:
        DataError: non-positive batch or shard size.
    """
    if batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {batch_size}")
    if shard_frames is not None and shard_frames < 1:
        raise DataError(f"--shard-frames must be >= 1, got {shard_frames}")
    h, w = archive.frame_shape
    target = shard_frames or max(batch_size, SHARD_BYTES // (4 * h * w))
    per_row, unit = archive.frames_per_row, archive.chunk_rows
    return max(1, round(target / (per_row * unit))) * unit


def make_plan(archive: Archive, batch_size: int, shard_frames: int | None = None) -> list[Shard]:
    """Cut the archive's frames into shards of :func:`rows_per_shard` rows.

    Args:
        archive: from :func:`phasegan_hpc.data.archive.open_archive`.
        batch_size: frames per forward pass (a shard holds at least one batch unless the archive is smaller).
        shard_frames: target frames per shard; None: :data:`SHARD_BYTES` of float32 input. Rounded to whole
            chunk rows of the archive.

    Raises:
        DataError: non-positive batch or shard size; more than :data:`MAX_SHARDS` shards.
    """
    rows = rows_per_shard(archive, batch_size, shard_frames)
    per_row = archive.frames_per_row
    n_rows = archive.lead_shape[0]
    count = -(-n_rows // rows)  # counted before any shard is made: planning is O(shards), refused above this
    if count > MAX_SHARDS:
        raise DataError(f"{archive.path} declares {archive.n_frames:,} frames: {count:,} shards of {rows * per_row:,} "
                        f"frames, more than {MAX_SHARDS:,}; check the archive, or give a larger --shard-frames")
    shards = []
    for i, r0 in enumerate(range(0, n_rows, rows)):
        r1 = min(n_rows, r0 + rows)
        shards.append(Shard(i, r0, r1, r0 * per_row, r1 * per_row))
    return shards
