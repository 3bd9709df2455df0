"""Hostile and careless input, as a table: each case runs the real CLI entry point in-process (``main``, the
console script's function) and must give exit status 1, exactly one line on stderr that says what is wrong
(printed literally: brackets in a path are not markup), no traceback, and leave every input file as it was
(sha256 before and after) with no output started. Adding a case is one line in :data:`CASES`.

Signals, crashes and full disks need real subprocesses; they live with the modules they test.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from movies import write_dxchange

from phasegan_hpc.cli import main
from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, movie, movie_model) -> Path:
    """A directory of good and bad inputs (read-only to every case)."""
    d = tmp_path_factory.mktemp("hostile")
    write_dxchange(d / "good.h5", movie, n=6)
    (d / "text.h5").write_text("not hdf5\n")
    (d / "model.pt").write_bytes(Path(movie_model).read_bytes())
    torch.save({"weights": torch.zeros(3)}, d / "other.pt")
    with h5py.File(d / "flat2d.h5", "w") as f:
        f["image"] = np.ones((64, 64), np.float32)
    (d / "latin1.toml").write_bytes("[train]\nname = 'caf\xe9'\n".encode("latin-1"))
    (d / "section.toml").write_text("[train2]\nepochs = 1\n")
    (d / "data_file").write_text("a file, not a directory\n")
    payload = torch.load(movie_model, weights_only=True)
    crafted = {  # model files a careless or hostile hand made from a real one
        "huge.pt": {**payload, "arch": {**payload["arch"], "base_filters": 4096}},
        "noarch.pt": {k: v for k, v in payload.items() if k != "arch"},
        "archlist.pt": {**payload, "arch": [1, 2]},
        "nophysics.pt": {k: v for k, v in payload.items() if k != "physics"},
        "strphysics.pt": {**payload, "physics": {**payload["physics"], "distance_m": "far"}},
        "badweights.pt": {**payload, "state_dict": {"w": [1, 2, 3]}},
    }
    for name, content in crafted.items():
        torch.save(content, d / name)
    with h5py.File(d / "textattrs.h5", "w") as f:
        f["frames"] = np.ones((4, 64, 64), np.float32)
        f.attrs.update({"pixel_size_m": "one micron", "distance_m": 0.1, "wavelength_m": 1e-10})
    with h5py.File(d / "arrayattrs.h5", "w") as f:
        f["frames"] = np.ones((4, 64, 64), np.float32)
        f.attrs.update({"pixel_size_m": [1e-6, 2e-6], "distance_m": 0.1, "wavelength_m": 1e-10})
    done = reconstruct(ReconstructRequest(d / "good.h5", model=movie_model, output=d / "o.h5", backend="local",
                                          preview=False))
    (d / "moved").mkdir()
    (d / "moved" / "orphan.h5").write_bytes(done.output.read_bytes())  # moved without its .shards directory
    write_dxchange(d / "four.h5", movie, n=4)
    with h5py.File(d / "small_flats.h5", "w") as f:
        f["exchange/data_white"] = np.ones((2, 32, 32), np.uint16)
    with h5py.File(d / "declared.h5", "w") as f:  # 1.6 kB declaring 2^40 frames (no chunk written)
        f.create_dataset("frames", shape=(2**40, 64, 64), dtype="uint16", chunks=(1, 64, 64))
        f.attrs.update({"pixel_size_m": 1e-6, "distance_m": 0.1, "wavelength_m": 1e-10})
    with h5py.File(d / "swapped.h5", "w") as f:  # flats and darks swapped: no pixel's flat is above its dark
        f["exchange/data"] = np.full((6, 64, 64), 400, np.uint16)
        f["exchange/data_white"] = np.full((2, 64, 64), 50, np.uint16)
        f["exchange/data_dark"] = np.full((2, 64, 64), 900, np.uint16)
    return d


# (id, arguments with {d} for the inputs directory, the text the one error line must hold)
CASES = [
    # reconstruct: paths and values
    ("missing-with-brackets", "reconstruct {d}/scan[raw].h5 --backend local", "scan[raw].h5 not found"),
    ("text-file", "reconstruct {d}/text.h5 --model {d}/model.pt --backend local", "is not an HDF5 file"),
    ("no-frames", "reconstruct {d}/flat2d.h5 --model {d}/model.pt --backend local", "no frames dataset"),
    ("not-a-model", "reconstruct {d}/good.h5 --model {d}/other.pt --backend local", "not a phasegan-hpc model"),
    ("flats-below-darks", "reconstruct {d}/swapped.h5 --model {d}/model.pt --backend local",
     "100% of the pixels of"),
    ("model-huge-architecture", "reconstruct {d}/good.h5 --model {d}/huge.pt --backend local",
     "architecture does not match the stored weights"),
    ("model-no-arch", "reconstruct {d}/good.h5 --model {d}/noarch.pt --backend local",
     "unknown generator architecture"),
    ("model-arch-list", "reconstruct {d}/good.h5 --model {d}/archlist.pt --backend local",
     "unknown generator architecture 'list'"),
    ("model-no-physics", "reconstruct {d}/good.h5 --model {d}/nophysics.pt --backend local", "no geometry"),
    ("model-text-physics", "reconstruct {d}/good.h5 --model {d}/strphysics.pt --backend local",
     "'distance_m' of"),
    ("model-bad-weights", "reconstruct {d}/good.h5 --model {d}/badweights.pt --backend local",
     "the weights are not a dict of tensors"),
    ("archive-text-attribute", "reconstruct {d}/textattrs.h5 --method paganin --delta-beta 100 --backend local",
     "attribute 'pixel_size_m' of"),
    ("archive-array-attribute", "reconstruct {d}/arrayattrs.h5 --method paganin --delta-beta 100 --backend local",
     "not a finite number"),
    ("report-under-a-file", "reconstruct {d}/good.h5 --json {d}/data_file/r.json --backend local",
     "--json {d}/data_file/r.json: {d}/data_file is not a directory"),
    ("evaluate-json-under-a-file", "evaluate --data {d}/good.h5 --json {d}/data_file/e.json",
     "{d}/data_file is not a directory"),
    ("bench-json-under-a-file", "bench propagator --json {d}/data_file/b.json", "is not a directory"),
    ("report-is-a-directory", "reconstruct {d}/good.h5 --json {d}/moved --backend local",
     "--json {d}/moved is a directory"),
    ("overwrite-foreign-file", "reconstruct {d}/good.h5 --model {d}/model.pt --output {d}/flat2d.h5 --overwrite "
     "--backend local", "flat2d.h5 is not a phasegan-hpc reconstruction: --overwrite replaces only those"),
    ("declared-2^40-frames", "reconstruct {d}/declared.h5 --method paganin --delta-beta 100 --backend local",
     "declares 1,099,511,627,776 frames"),
    ("figure-of-an-orphan-output", "movie-figure {d}/good.h5 {d}/moved/orphan.h5", "orphan.h5: shard file o.shards/"),
    ("figure-mismatched-reconstruction", "movie-figure {d}/four.h5 {d}/o.h5", "is not a reconstruction of the 4"),
    ("figure-not-gif", "movie-figure {d}/good.h5 {d}/o.h5 --output {d}/x.h5", "--output {d}/x.h5 must end in .gif"),
    ("batch-beyond-memory", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --compile "
     "--batch-size 100000000", "a batch of 100,000,000 frames of 64 x 64 px needs"),
    ("tie-resample-beyond-memory", "tie {d}/good.h5 --output {d}/objects.h5 --backend local --delta-beta 100 "
     "--pixel-size-m 1e-6 --distance-m 0.1 --energy-kev 12.4 --resample-pixel-size-m 1e-9",
     "raise --resample-pixel-size-m"),
    ("bogus-device", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --device bogus",
     "--device 'bogus' is not a torch device"),
    ("roi-not-a-region", "reconstruct {d}/good.h5 --roi top", "--roi must be Y0:Y1,X0:X1 (pixel rows and columns"),
    ("roi-reversed", "reconstruct {d}/good.h5 --roi 40:8,0:64", "--roi 40:8,0:64: needs 0 <= Y0 < Y1 and 0 <= X0 < X1"),
    ("roi-outside-the-frames", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --roi 0:65,0:64",
     "--roi 0:65,0:64 is not a region of the 64 x 64 frames of"),
    ("flats-file-missing", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --flats {d}/nope.h5",
     "nope.h5"),
    ("flats-of-another-size", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --flats {d}/small_flats.h5",
     "flats are 32 x 32 but the frames are 64 x 64"),
    ("mask-of-every-pixel", "reconstruct {d}/good.h5 --model {d}/model.pt --backend local --mask {d}/flat2d.h5",
     "flat2d.h5:/image masks every pixel of the frames read"),
    ("zinger-threshold-0", "reconstruct {d}/good.h5 --zinger-threshold 0", "'--zinger-threshold': 0.0 is not in"),
    ("output-dtype-unknown", "reconstruct {d}/good.h5 --output-dtype int8", "'--output-dtype': 'int8' is not one of"),
    ("batch-0", "reconstruct {d}/good.h5 --batch-size 0", "'--batch-size': 0 is not in the range x>=1"),
    ("shard-frames-0", "reconstruct {d}/good.h5 --shard-frames 0", "'--shard-frames': 0 is not in the range"),
    ("workers-0", "reconstruct {d}/good.h5 --workers 0", "'--workers': 0 is not in the range"),
    ("cpus-0", "reconstruct {d}/good.h5 --cpus-per-worker 0", "'--cpus-per-worker': 0.0 is not in the range"),
    ("gpus-negative", "reconstruct {d}/good.h5 --gpus-per-worker -1", "'--gpus-per-worker': -1.0 is not in"),
    ("delta-beta-negative", "reconstruct {d}/good.h5 --method paganin --delta-beta -5", "'--delta-beta'"),
    ("pixel-negative", "reconstruct {d}/good.h5 --pixel-size-m -1", "'--pixel-size-m': -1.0 is not in"),
    ("distance-0", "reconstruct {d}/good.h5 --distance-m 0", "'--distance-m': 0.0 is not in the range"),
    ("energy-nan", "reconstruct {d}/good.h5 --energy-kev nan", "'--energy-kev': nan is not a finite number"),
    ("delta-beta-inf", "reconstruct {d}/good.h5 --delta-beta inf", "'--delta-beta': inf is not a finite number"),
    ("flag-by-unknown", "reconstruct {d}/good.h5 --flag-by sharpness", "'--flag-by': 'sharpness' is not one of"),
    ("method-unknown", "reconstruct {d}/good.h5 --method magic", "'--method': 'magic' is not one of"),
    ("unknown-option", "reconstruct {d}/good.h5 --frobnicate", "No such option '--frobnicate'"),
    ("batch-not-a-number", "reconstruct {d}/good.h5 --batch-size many", "'many' is not a valid integer"),
    # tie and correct
    ("tie-iterations-negative", "tie {d}/good.h5 --output {d}/objects.h5 --tv-iterations -5", "'--tv-iterations': -5"),
    ("tie-weight-negative", "tie {d}/good.h5 --output {d}/objects.h5 --tv-weight -1", "'--tv-weight': -1.0 is not in"),
    ("tie-resample-negative", "tie {d}/good.h5 --output {d}/objects.h5 --resample-pixel-size-m -1",
     "'--resample-pixel-size-m': -1.0"),
    ("tie-batch-0", "tie {d}/good.h5 --output {d}/objects.h5 --batch-size 0", "'--batch-size': 0 is not in the range"),
    ("correct-pixel-negative", "correct {d}/good.h5 --output {d}/i.h5 --pixel-size-m -1", "'--pixel-size-m': -1.0"),
    ("correct-missing", "correct {d}/none.h5 --output {d}/i.h5", "none.h5 not found"),
    # simulate
    ("simulate-movie-negative", "simulate {d}/sim --movie -5", "'--movie': -5 is not in the range x>=0"),
    ("simulate-size-0", "simulate {d}/sim --size 0", "'--size': 0 is not in the range x>=1"),
    ("simulate-train-0", "simulate {d}/sim --train 0", "'--train': 0 is not in the range x>=1"),
    ("simulate-seed-negative", "simulate {d}/sim --seed -1", "'--seed': -1 is not in the range x>=0"),
    ("simulate-latin1-config", "simulate {d}/sim --config {d}/latin1.toml", "not UTF-8 text"),
    ("simulate-unknown-section", "simulate {d}/sim --config {d}/section.toml", "[train2]"),
    ("simulate-foam-frames-0", "simulate-foam {d}/foam --photron-frames 0", "'--photron-frames': 0 is not in"),
    # train, tune, evaluate, preview, bench
    ("train-epochs-0", "train --epochs 0", "'--epochs': 0 is not in the range x>=1"),
    ("train-max-steps-negative", "train --max-steps -5", "'--max-steps': -5 is not in the range x>=1"),
    ("train-workers-0", "train --workers 0", "'--workers': 0 is not in the range x>=1"),
    ("train-max-failures-negative", "train --max-failures -1", "'--max-failures': -1 is not in the range"),
    ("train-latin1-config", "train --config {d}/latin1.toml", "not UTF-8 text"),
    ("train-data-is-a-file", "train --data {d}/data_file", "data_file is a file, not a data directory"),
    ("tune-trials-0", "tune --trials 0", "'--trials': 0 is not in the range x>=1"),
    ("tune-gpus-negative", "tune --gpus-per-trial -1", "'--gpus-per-trial': -1.0 is not in the range"),
    ("evaluate-frames-negative", "evaluate --data {d}/good.h5 --frames -1", "'--frames': -1 is not in the range"),
    ("evaluate-missing", "evaluate --data {d}/none.h5 --baseline paganin", "none.h5"),
    ("preview-n-0", "preview {d} -n 0", "'-n': 0 is not in the range x>=1"),
    ("bench-size-0", "bench propagator --size 0", "'--size': 0 is not in the range x>=1"),
    ("bench-foreign-option", "bench propagator --frames 4", "bench propagator takes no --frames"),
    ("score-every-0", "reconstruct {d}/good.h5 --model {d}/model.pt --score every:0", "or every:N with N >= 1"),
    ("score-word", "reconstruct {d}/good.h5 --model {d}/model.pt --score some", "not 'some'"),
    ("bench-device-bogus", "bench propagator --device bogus", "--device 'bogus' is not a torch device"),
    ("bench-device-absent", "bench inference --device cuda:7", "device cuda:7 requested but this machine has no"),  # noqa: E501
    ("bench-read-codec", "bench read --codecs lzma", "unknown codec lzma; choose from"),
    ("unknown-command", "reconstrct {d}/good.h5", "No such command 'reconstrct'"),
]


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("args", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_literal_line_and_changes_nothing(inputs, tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)  # no runs/latest/model.pt to fall back on
    monkeypatch.delenv("PHASEGAN_HPC_MODEL", raising=False)
    monkeypatch.setenv("PHASEGAN_HPC_NO_SUPERVISOR", "1")  # in-process: no fork of the test process
    monkeypatch.setattr(sys, "argv", ["phasegan-hpc", *args.format(d=inputs).split()])
    before = _snapshot(inputs)
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    assert stop.value.code == 1, err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err + out, err
    assert lines[0].startswith("error: ") and needle.format(d=inputs) in lines[0], lines[0]
    assert _snapshot(inputs) == before
    assert not os.listdir(tmp_path)  # nothing started in the working directory either

