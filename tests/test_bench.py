"""`phasegan-hpc bench` at smoke size: each benchmark runs through the console script and its record is
checked for correctness (agreement with references, complete tables), never for speed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("phasegan-hpc", path=str(Path(sys.executable).parent))
pytestmark = pytest.mark.slow


def bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    proc = subprocess.run([EXE, "bench", *map(str, args), "--json", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "bench " in proc.stdout  # the rich table
    return json.loads(out.read_text())


def test_bench_propagator_agrees_with_float64_numpy(tmp_path):
    r = bench(tmp_path, "propagator", "--size", 32, "--batch", 2, "--repeats", 2)
    assert r["max_abs_difference"] < 1e-5 and r["speedup"] > 0 and r["torch_ms"]["median"] > 0
    assert {"machine", "device", "torch", "threads", "date"} <= set(r)


def test_bench_inference_covers_both_outputs_and_every_cpu_variant(tmp_path):
    r = bench(tmp_path, "inference", "--size", 32, "--filters", 2, "--batch", 2, "--repeats", 1)
    assert set(r["results"]) == {"32->32", "32->64"}
    for rows in r["results"].values():
        row = rows["batch_2"]
        assert set(row) == {"fp32", "channels_last", "bf16", "bf16_cl", "compile"}  # no CUDA graphs on a CPU
        assert row["fp32"]["speedup_vs_fp32"] == 1.0 and all(v["frames_per_s"] > 0 for v in row.values())
    assert r["best"]["frames_per_s"] == max(v["frames_per_s"] for rows in r["results"].values()
                                            for row in rows.values() for v in row.values())


def test_bench_inference_variants_subset_and_unknown_variant(tmp_path):
    r = bench(tmp_path, "inference", "--size", 32, "--filters", 2, "--batch", 1, "--repeats", 1,
              "--variants", "fp32,bf16")
    assert all(set(rows["batch_1"]) == {"fp32", "bf16"} for rows in r["results"].values())
    proc = subprocess.run([EXE, "bench", "inference", "--variants", "fp32,fp8"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "unknown variant(s) fp8" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_check_compares_the_device_path_with_references(tmp_path):
    r = bench(tmp_path, "check", "--size", 32, "--frames", 32, "--batch", 8, "--filters", 4)
    assert r["ok"] is True and r["device"] == "cpu"
    assert set(r["checks"]) == {"propagator", "retriever.phase", "retriever.attenuation", "retriever.score",
                                "reconstruct.phase", "reconstruct.attenuation", "reconstruct.consistency",
                                "train.losses"}
    assert r["checks"]["propagator"]["relative_error"] < 1e-5  # complex64 vs float64 numpy
    assert all(c["relative_error"] <= c["tolerance"] == 1e-4 for c in r["checks"].values())


def test_bench_table1_writes_the_table_figures_and_ranking(tmp_path):
    import h5py
    import hdf5plugin  # noqa: F401 - the simulator's compression filters

    from phasegan_hpc.config import config_to_toml, load_config, with_overrides

    tiny = load_config(Path(__file__).parents[1] / "configs" / "tiny.toml")
    base = with_overrides(tiny, {"flatfield.enabled": False})
    (tmp_path / "no-flatfield.toml").write_text(config_to_toml(base))
    r = bench(tmp_path, "table1", "--size", 32, "--train", 16, "--epochs", 1, "--out", tmp_path / "t1",
              "--config", tmp_path / "no-flatfield.toml")
    assert r["flatfield"] is False
    with h5py.File(tmp_path / "t1" / "data" / "validation.h5", "r") as f:
        assert (f["flatfield"][()] == 1.0).all()  # the base config was used; --size etc. still override it
        assert f["intensity"].shape[1:] == (32, 32)
    methods = {"paired", "pix2pix", "cyclegan", "phasegan", "paganin"}
    assert set(r["table"]) == methods and all(row["n"] == 200 for row in r["table"].values())
    assert all(set(order) == methods for order in r["ranking_best_first"].values())
    table = (tmp_path / "t1" / "table1.md").read_text().splitlines()
    assert len(table) == 2 + len(methods) and table[0].startswith("| method | n | phase l2")
    assert (tmp_path / "t1" / "table1_patch.png").stat().st_size > 0
    assert (tmp_path / "t1" / "table1_ranked.png").stat().st_size > 0


def test_bench_rejects_options_it_does_not_take(tmp_path):
    proc = subprocess.run([EXE, "bench", "propagator", "--frames", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "bench propagator takes no --frames" in proc.stderr
    assert "Traceback" not in proc.stderr
