"""Movie archives for the reconstruction tests: raw counts from transmissions, DXchange files, independent
references (float64 flat/dark correction, G_O frame by frame), and comparison helpers."""

import hashlib
import subprocess
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import torch
from tools import EXE

from phasegan_hpc.models.artifact import load_model

DATASETS = ("phase", "attenuation", "consistency", "fresnel_residual", "nonfinite_pixels", "negative_pixels",
            "zinger_pixels")


def counts(movie, transmission):
    return np.round(transmission * (movie["flat"] - movie["dark"]) + movie["dark"]).astype(np.uint16)


def write_dxchange(path: Path, movie, compression=None, n=None) -> Path:
    t = movie["transmission"][:n]
    comp = dict(compression if compression is not None else hdf5plugin.Bitshuffle(cname="lz4"))
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=counts(movie, t), chunks=(3, 64, 64), **comp)
        f.create_dataset("exchange/data_white", data=np.stack([counts(movie, np.ones((64, 64)))] * 4), **comp)
        f.create_dataset("exchange/data_dark", data=np.stack([np.round(movie["dark"]).astype(np.uint16)] * 2))
    return path


def corrected_reference(movie, raw: np.ndarray, flats: np.ndarray, darks: np.ndarray) -> np.ndarray:
    """(raw - mean dark) / (mean flat - mean dark) in float64, written out longhand."""
    flat = flats.reshape(-1, *flats.shape[-2:]).astype(np.float64).mean(axis=0)
    dark = darks.reshape(-1, *darks.shape[-2:]).astype(np.float64).mean(axis=0)
    return ((raw.astype(np.float64) - dark) / (flat - dark)).astype(np.float32)


def g_o_reference(model_path, corrected: np.ndarray) -> np.ndarray:
    """G_O applied to one frame at a time: (N, H, W) -> (N, 2, H, W) phase, attenuation."""
    m = load_model(model_path)
    out = []
    with torch.no_grad():
        for frame in corrected:
            x = m.normalisation.norm_intensity(torch.from_numpy(frame)[None, None])
            out.append(m.normalisation.denorm_object(m.generator(x))[0].numpy())
    return np.stack(out)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in DATASETS}


def assert_identical(a: dict, b: dict) -> None:
    for k in DATASETS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def run_cli(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def assert_one_line_error(proc, needle):
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha(p) for p in sorted(d.rglob("*")) if p.is_file()}



def run_dir(output: Path) -> Path | None:
    """The run directory of ``output``'s shards (``<stem>.shards/RUN``), None before there is one."""
    root = output.with_name(f"{output.stem}.shards")
    runs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    assert len(runs) <= 1, runs
    return runs[0] if runs else None
