"""The output (reconstruct/output.py): virtual datasets that move with their shards; --overwrite never
deletes a directory it did not write; resume reuses only shards that verify and read what the archive holds."""

import dataclasses
import json
import os
import shutil
import subprocess

import faults
import h5py
import pytest
from movies import assert_identical, read, run_dir, sha, write_dxchange
from tools import EXE

from phasegan_hpc.data.archive import open_archive
from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.output import plan_id, published_run, verify_shard
from phasegan_hpc.reconstruct.plan import make_plan

pytestmark = pytest.mark.slow


def test_output_moves_with_its_shards(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=6)
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", preview=False, shard_frames=3))
    expected = read(s.output)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(s.output, moved / s.output.name)
    shutil.move(tmp_path / "a_phasegan.shards", moved / "a_phasegan.shards")
    assert_identical(expected, read(moved / s.output.name))


def test_overwrite_never_deletes_a_directory_it_did_not_write(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "b.h5", movie, n=3)
    foreign = tmp_path / "b_phasegan.shards"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match="not a reconstruction's shard directory"):
        reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", overwrite=True, preview=False))
    assert (foreign / "notes.txt").read_text() == "mine\n" and not (tmp_path / "b_phasegan.h5").exists()



def test_links_planted_at_temporary_names_are_never_followed(movie_model, movie, tmp_path):
    """In a shared directory anyone may plant a link at the predictable partial names; the run removes the
    link and writes its own file, and the link's target is untouched."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=6)
    request = ReconstructRequest(archive, model=movie_model, output=tmp_path / "o.h5", backend="local",
                                 batch_size=4, shard_frames=3, preview=False)
    ref = read(reconstruct(request).output)
    victims = {name: tmp_path / f"victim-{name}.txt" for name in ("output", "shard")}
    for v in victims.values():
        v.write_text("precious\n")
    shards = run_dir(tmp_path / "o.h5")
    (tmp_path / "o.h5").unlink()
    (shards / "shard-000001.h5").unlink()
    (tmp_path / ".o.h5.partial").symlink_to(victims["output"])
    (shards / ".shard-000001.h5.partial").symlink_to(victims["shard"])
    s = reconstruct(request)  # resumes: shard 1 and the output are written again
    assert s.reused_shards == 1
    assert_identical(ref, read(s.output))
    assert all(v.read_text() == "precious\n" for v in victims.values())
    assert not (tmp_path / ".o.h5.partial").is_symlink() and not list(shards.glob(".*.partial"))


def test_resume_reuses_only_shards_that_verify(movie_model, movie, tmp_path):
    """A shard file is reused only if it carries this plan's identity, its own index and range, and content
    matching its checksum; anything else is redone (and said), and the result equals an uninterrupted run."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=12)
    request = ReconstructRequest(archive, model=movie_model, output=tmp_path / "o.h5", backend="local",
                                 batch_size=4, shard_frames=3, preview=False)
    ref = read(reconstruct(request).output)
    shards = run_dir(tmp_path / "o.h5")
    (tmp_path / "o.h5").unlink()
    shutil.copy(shards / "shard-000000.h5", shards / "shard-000001.h5")  # another shard's file
    (shards / "shard-000002.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")  # not HDF5 at all
    with h5py.File(shards / "shard-000003.h5", "r+") as f:  # one value changed after the fact
        f["phase"][0, 0, 0] += 1.0
    s = reconstruct(request)
    assert s.rejected_shards == [1, 2, 3] and s.reused_shards == 1 and s.computed_frames == 9
    assert_identical(ref, read(s.output))
    plan = make_plan(open_archive(archive), 4, 3)
    pid = plan_id(json.loads((shards / "plan.json").read_text()))
    assert all(verify_shard(shards / sh.name, sh, pid) is None for sh in plan)  # all redone shards verify
    assert "plan_sha256" in verify_shard(shards / plan[0].name, plan[0], "0" * 64)  # not another plan's


def test_overwrite_is_transactional(movie_model, movie, tmp_path):
    """--overwrite builds the new result beside the published one: a run killed midway leaves the previous
    output readable and unchanged; the rerun finishes, publishes with one rename, and only then removes the
    previous run's own files (a user's file among them stays)."""
    archive = write_dxchange(tmp_path / "a.h5", movie)
    out = tmp_path / "o.h5"
    first = reconstruct(ReconstructRequest(archive, model=movie_model, output=out, backend="local", batch_size=4,
                                           shard_frames=3, preview=False))
    old_dir, before = run_dir(out), read(out)
    (old_dir / "notes.txt").write_text("mine\n")
    expected = read(reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5",
                                                   backend="local", batch_size=2, shard_frames=3,
                                                   preview=False)).output)
    args = [EXE, "reconstruct", archive, "--model", movie_model, "--output", out, "--backend", "local",
            "--batch-size", 2, "--shard-frames", 3, "--overwrite", "--no-preview"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = tmp_path / "o.shards"
    new = faults.wait_for(lambda: [p for p in root.glob("*/shard-000000.h5") if p.parent != old_dir] or None,
                          120, "the new run's first shard")[0].parent
    run = [proc.pid] + [p.pid for p in faults.descendants(proc.pid)]  # the supervisor and its command
    for pid in run:
        faults.freeze(pid)
    for pid in run:
        faults.kill(pid)
    proc.wait()
    assert_identical(before, read(out))  # the previous result, as it was
    assert sorted(p.name for p in root.iterdir()) == sorted([old_dir.name, new.name])
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_identical(expected, read(out))
    assert published_run(out) == new.resolve() and first.frames == 22
    assert [p.name for p in old_dir.iterdir()] == ["notes.txt"]  # the previous run's files went, not the user's


def test_a_same_size_rewrite_of_the_archive_is_refused_on_resume(movie_model, movie, tmp_path):
    """Size and time say nothing: the archive rewritten in place (same size, mtime restored) changes the stored
    bytes of one shard's chunks, which that shard's record of what it read (input_checksum) does not match.
    The resume is refused in one line and changes nothing; --overwrite redoes that shard only."""
    archive = write_dxchange(tmp_path / "a.h5", movie, compression={}, n=12)  # uncompressed: edits keep the size
    request = ReconstructRequest(archive, model=movie_model, output=tmp_path / "o.h5", backend="local",
                                 batch_size=4, shard_frames=3, preview=False)
    reconstruct(request)
    (tmp_path / "o.h5").unlink()  # as if the run had died before publishing: its shards wait to be reused
    st = archive.stat()
    with h5py.File(archive, "r+") as f:
        f["exchange/data"][7] += 1
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (archive.stat().st_size, archive.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    shards = run_dir(tmp_path / "o.h5")
    before = {p.name: sha(p) for p in shards.iterdir()}
    with pytest.raises(DataError, match=r"has changed since this reconstruction began: frames 6-8 are not what"):
        reconstruct(request)
    assert {p.name: sha(p) for p in shards.iterdir()} == before
    s = reconstruct(dataclasses.replace(request, overwrite=True))
    assert s.rejected_shards == [2] and s.reused_shards == 3 and s.computed_frames == 3
    fresh = reconstruct(dataclasses.replace(request, output=tmp_path / "fresh.h5"))
    assert_identical(read(fresh.output), read(s.output))


def test_frames_appended_to_the_archive_are_new_shards(movie_model, movie, tmp_path):
    """A growing archive is not a changed one: the shards of the frames already there are reused, the short
    last one and the new frames are computed, and the result equals a run over the whole archive."""
    archive = write_dxchange(tmp_path / "a.h5", movie, n=10)
    request = ReconstructRequest(archive, model=movie_model, output=tmp_path / "o.h5", backend="local",
                                 batch_size=4, shard_frames=5, preview=False)  # shards of 6 frames (2 chunks)
    reconstruct(request)
    (tmp_path / "o.h5").unlink()
    write_dxchange(archive, movie, n=22)  # the same first 10 frames, 12 more
    s = reconstruct(request)
    assert (s.frames, s.reused_shards, s.rejected_shards, s.computed_frames) == (22, 1, [1], 16)
    fresh = reconstruct(dataclasses.replace(request, output=tmp_path / "fresh.h5"))
    assert_identical(read(fresh.output), read(s.output))
    listed = json.loads((run_dir(tmp_path / "o.h5") / "plan.json").read_text())["shards"]
    assert [(sh["start"], sh["stop"]) for sh in listed] == [(0, 6), (6, 12), (12, 18), (18, 22)]
