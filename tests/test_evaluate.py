"""`evaluate`: per-frame metrics of a model and the Paganin baseline against the paired truth."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from tools import EXE

from phasegan_hpc.config import with_overrides
from phasegan_hpc.data.frames import FrameStack
from phasegan_hpc.errors import DataError
from phasegan_hpc.evaluate import evaluate
from phasegan_hpc.losses.metrics import dssim
from phasegan_hpc.physics import paganin
from phasegan_hpc.train.local import train_local


@pytest.fixture
def model_path(tiny_train_config):
    return train_local(with_overrides(tiny_train_config, {"train.method": "paired", "train.epochs": 1}))["model_path"]


def test_model_and_paganin_rows_match_direct_computation(model_path, tiny_data):
    rows = evaluate(model_path, tiny_data / "validation.h5", ("paganin",), batch_size=3)
    assert [r.method for r in rows] == ["paired", "paganin"] and all(r.n == 8 for r in rows)
    assert set(rows[0].stats) == {f"{c}_{m}" for c in ("phase", "attenuation") for m in ("l2", "dssim", "frcm")}
    # Recompute the Paganin phase DSSIM by hand from the file.
    val = FrameStack(tiny_data / "validation.h5", ("intensity", "phase", "flatfield"))[np.arange(8)]
    a = FrameStack(tiny_data / "validation.h5", ("intensity",)).attrs
    assert a["periodic"] == 1  # simulated with an unpadded propagator: Paganin must not pad either
    phase, _ = paganin(val[:, 0].astype(np.float64) / val[:, 2], pixel_size_m=a["pixel_size_m"],
                       distance_m=a["distance_m"], wavelength_m=a["wavelength_m"],
                       delta_beta=a["delta"] / a["beta"], pad=False)
    per_frame = dssim(torch.from_numpy(phase), torch.from_numpy(val[:, 1].astype(np.float64))).numpy()
    mean, std = rows[1].stats["phase_dssim"]
    assert mean == pytest.approx(per_frame.mean(), rel=1e-5) and std == pytest.approx(per_frame.std(), rel=1e-4)
    # each trust score's Spearman correlation with the per-frame phase L2, recomputed with scipy
    from scipy.stats import spearmanr

    for r in rows:
        assert set(r.score_spearman) == {"consistency", "fresnel_residual"}
        for k, rho in r.score_spearman.items():
            ref = spearmanr(r.per_frame[f"score_{k}"], r.per_frame["phase_l2"]).statistic
            assert rho == pytest.approx(ref) and -1 <= rho <= 1


def test_frame_limit_and_errors(model_path, tiny_data, tmp_path):
    (row,) = evaluate(model_path, tiny_data / "validation.h5", max_frames=3)
    assert row.n == 3
    with pytest.raises(DataError, match="unknown baseline"):
        evaluate(model_path, tiny_data / "validation.h5", ("tie",))
    with pytest.raises(DataError, match="nothing to evaluate"):
        evaluate(None, tiny_data / "validation.h5")
    with pytest.raises(DataError, match="not found"):
        evaluate(model_path, tmp_path / "none.h5")
    with pytest.raises(DataError, match="no dataset /phase"):
        evaluate(model_path, tiny_data / "intensities.h5")


def test_cli_prints_table_and_writes_json(model_path, tiny_data, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run([EXE, "evaluate", "--model", model_path, "--data", str(tiny_data / "validation.h5"),
                           "--baseline", "paganin", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "phase dssim" in proc.stdout and "paganin" in proc.stdout
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["paired", "paganin"]
    assert rows[1]["phase_l2"]["mean"] > 0


def test_bench_frc_runs_and_reports_a_ratio(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([EXE, "bench", "frc", "--size", "32", "--batch", "2", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["speedup"] > 0 and result["vectorised_ms"] > 0 and result["per_ring_loop_ms"] > 0


def test_model_refuses_data_of_another_geometry(model_path, tiny_data, tmp_path):
    import h5py

    shutil.copy(tiny_data / "validation.h5", tmp_path / "v.h5")
    with h5py.File(tmp_path / "v.h5", "a") as f:
        f.attrs["distance_m"] = 0.5
    with pytest.raises(DataError, match="distance_m = 0.5, but the model was trained for 0.1"):
        evaluate(model_path, tmp_path / "v.h5")
