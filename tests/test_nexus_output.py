"""The output as NeXus and DXchange (reconstruct/nexus.py), checked with silx's own NXdata parser (what silx
view uses to plot), and ``consolidate`` (reconstruct/consolidate.py): one self-contained file, identical."""

import shutil
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from movies import DATASETS, assert_identical, assert_one_line_error, counts, read, run_cli, sha, write_dxchange
from silx.io.nxdata import NXdata, get_default

from phasegan_hpc.errors import DataError
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct
from phasegan_hpc.reconstruct.consolidate import consolidate
from phasegan_hpc.reconstruct.output import open_reconstruction

pytestmark = pytest.mark.slow


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def test_output_is_nexus_that_silx_plots_and_dxchange_reads(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie, n=7)
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", batch_size=4, shard_frames=3,
                                       preview=False, roi="8:40,0:64", frames="1:7"))
    with h5py.File(s.output, "r") as f:
        default = get_default(f)  # the @default chain from the root, as silx view and h5web follow it
        assert default is not None and default.is_valid, getattr(default, "issues", None)
        assert default.group.name == "/entry/data" and default.signal.ndim == 3 and default.interpretation == "image"
        assert default.signal.name == "/entry/data/phase"
        assert default.auxiliary_signals_names == ["attenuation"]
        assert _strings(default.group.attrs["axes"]) == ["frame", "y", "x"]
        frame, y, x = (default.group[n][()] for n in ("frame", "y", "x"))
        pixel = float(f.attrs["pixel_size_m"])
        np.testing.assert_array_equal(frame, np.arange(1, 7))  # the archive's own frame numbers (--frames 1:7)
        np.testing.assert_allclose(y, (8 + np.arange(32)) * pixel, rtol=1e-12)  # offset by --roi, in m
        np.testing.assert_allclose(x, np.arange(64) * pixel, rtol=1e-12)
        assert default.group["y"].attrs["units"] == "m" and default.group["x"].attrs["units"] == "m"
        # Links, not copies: the same HDF5 objects as the root datasets every reader of ours uses.
        for link, name in (("entry/data/phase", "phase"), ("entry/data/attenuation", "attenuation"),
                           ("exchange/data", "phase"), ("exchange/data_attenuation", "attenuation"),
                           ("entry/scores/consistency", "consistency")):
            assert f[link].id == f[name].id, link
        np.testing.assert_array_equal(default.signal[()], f["phase"][()])
        assert f["phase"].shape == (6, 32, 64) and np.isfinite(f["phase"][()]).all()

        scores = NXdata(f["entry/scores"])
        assert scores.is_valid and scores.signal.ndim == 1 and scores.signal.name == "/entry/scores/consistency"
        assert set(scores.auxiliary_signals_names) == set(DATASETS) - {"phase", "attenuation", "consistency"} | {
            "scored"}
        np.testing.assert_array_equal(scores.axes[0][()], frame)

        process = f["entry/process"]
        assert process.attrs["NX_class"] == "NXprocess" and f["entry"].attrs["NX_class"] == "NXentry"
        assert process["program"][()].decode() == "phasegan-hpc"
        assert process["model_sha256"][()].decode() == f.attrs["model_sha256"] == sha(Path(movie_model))
        assert process["configuration/data"][()].decode() == f.attrs["config"] and "[train]" in f.attrs["config"]
        assert process["source_file"][()].decode() == str(archive)


def test_trains_and_pulses_get_axes_of_their_own(movie_model, movie, tmp_path):
    trains = tmp_path / "trains.h5"
    with h5py.File(trains, "w") as f:
        f.create_dataset("frames", data=counts(movie, movie["transmission"][:8]).reshape(4, 2, 64, 64),
                         chunks=(1, 2, 64, 64), **hdf5plugin.Blosc())
    s = reconstruct(ReconstructRequest(trains, model=movie_model, backend="local", preview=False, shard_frames=4))
    with h5py.File(s.output, "r") as f:
        default = get_default(f)
        assert default.is_valid and default.signal.ndim == 4
        assert _strings(default.group.attrs["axes"]) == ["train", "pulse", "y", "x"]
        np.testing.assert_array_equal(default.group["pulse"][()], [0, 1])
        scores = NXdata(f["entry/scores"])
        assert scores.is_valid and scores.signal.ndim == 2
        assert [a.id for a in scores.axes] == [f["entry/data/train"].id, f["entry/data/pulse"].id]


def test_consolidate_gives_one_self_contained_identical_file(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "c.h5", movie, n=6)
    request = ReconstructRequest(archive, model=movie_model, backend="local", batch_size=4, shard_frames=3,
                                 preview=False)
    out = reconstruct(request).output
    before, before_sha = read(out), sha(out)

    copy = tmp_path / "copy.h5"  # --output: a new file; the original and its shards stay as they are
    assert consolidate(out, copy).output == copy
    assert sha(out) == before_sha and (tmp_path / "c_phasegan.shards").is_dir()
    assert_identical(before, read(copy))

    proc = run_cli("consolidate", out)  # in place: then the shard files go
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "c_phasegan.shards").exists()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.move(out, alone / out.name)  # moves on its own now
    with open_reconstruction(alone / out.name) as f:
        assert not any(isinstance(d, h5py.Dataset) and d.is_virtual for d in f.values())
        assert f["entry/data/phase"].id == f["phase"].id and f["exchange/data"].id == f["phase"].id
        assert f["entry/scores/frame"].id == f["entry/data/frame"].id
        default = get_default(f)
        assert default.is_valid and default.signal.name == "/entry/data/phase"
        assert f.attrs["complete"] and "shards" not in f.attrs
    assert_identical(before, read(alone / out.name))

    assert_one_line_error(run_cli("consolidate", alone / out.name), "already self-contained")
    with pytest.raises(DataError, match="exists; choose another --output"):
        consolidate(tmp_path / "copy.h5", alone / out.name)
    shutil.move(alone / out.name, out)  # a consolidated output is still ours to --overwrite
    s = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", batch_size=4, shard_frames=3,
                                       preview=False, overwrite=True))
    assert_identical(before, read(s.output))


def test_consolidate_refuses_an_output_without_its_shards(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "d.h5", movie, n=3)
    out = reconstruct(ReconstructRequest(archive, model=movie_model, backend="local", preview=False)).output
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / out.name
    shutil.move(out, moved)
    before = sha(moved)
    assert_one_line_error(run_cli("consolidate", moved), "is missing")
    assert sha(moved) == before and not list(moved.parent.glob(".*partial"))
