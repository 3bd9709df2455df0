"""The reconstruction plan (reconstruct/plan.py): shards of whole chunk rows, independent of workers."""


import pytest
from movies import write_dxchange

from phasegan_hpc.data.archive import open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct.plan import make_plan


def test_plan_is_chunk_aligned_and_independent_of_workers(tmp_path, movie):
    arc = open_archive(write_dxchange(tmp_path / "a.h5", movie))
    plan = make_plan(arc, batch_size=4, shard_frames=7)
    assert [(s.start, s.stop) for s in plan] == [(0, 6), (6, 12), (12, 18), (18, 22)]  # chunks of 3 frames
    assert all(s.start % 3 == 0 for s in plan)
    with pytest.raises(DataError, match="batch-size"):
        make_plan(arc, batch_size=0)

