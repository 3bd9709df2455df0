"""`phasegan-hpc bench` at smoke size: each benchmark runs through the console script and its record is
checked for correctness (agreement with references, complete tables), never for speed."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tools import EXE

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


def test_bench_read_compares_the_python_decoder_with_h5py(tmp_path):
    r = bench(tmp_path, "read", "--size", 32, "--frames", 16, "--batch", 8, "--repeats", 1,
              "--codecs", "bitshuffle-lz4,gzip")
    assert set(r["codecs"]) == {"bitshuffle-lz4", "gzip"}
    assert all(c["chunks_vs_h5py"] > 0 and c["digest_mb_s"] > 0 for c in r["codecs"].values())
    proc = subprocess.run([EXE, "bench", "read", "--codecs", "lzma"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "unknown codec lzma" in proc.stderr


def test_bench_pipeline_times_correct_against_a_bare_loop_and_the_earlier_pipeline(tmp_path):
    r = bench(tmp_path, "pipeline", "--size", 32, "--frames", 64, "--batch", 16, "--repeats", 1)
    assert set(r["frames_per_s"]) == {"bare", "pipeline", "h5py_reader", "earlier", "torch_prepare", "float16"}
    assert r["identical_to_earlier"] is True and r["torch_prepare_identical"] is True
    assert all(v > 0 for v in r["ratios"].values())


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
    assert set(r["checks"]) == {"propagator", "paganin", "retriever.phase", "retriever.attenuation", "retriever.score",
                                "retriever.fresnel_residual", "prepare.frames", "prepare.counts",
                                "reconstruct.phase", "reconstruct.attenuation", "reconstruct.consistency",
                                "train.losses"}
    assert r["checks"]["propagator"]["relative_error"] < 1e-5  # complex64 vs float64 numpy
    counts = r["checks"].pop("prepare.counts")
    assert counts["relative_error"] == counts["tolerance"] == 0  # every count equal
    assert r["checks"]["prepare.frames"]["relative_error"] == 0  # the same float32 operations on a CPU
    assert all(c["relative_error"] <= c["tolerance"] == 1e-4 for c in r["checks"].values())


def test_bench_table1_seeds_resume_and_table(tmp_path):
    import h5py
    import hdf5plugin  # noqa: F401 - the simulator's compression filters

    from phasegan_hpc.config import config_to_toml, load_config, with_overrides

    tiny = load_config(Path(__file__).parents[1] / "configs" / "tiny.toml")
    base = with_overrides(tiny, {"flatfield.enabled": False})
    (tmp_path / "no-flatfield.toml").write_text(config_to_toml(base))
    common = ("table1", "--size", 32, "--train", 16, "--epochs", 2, "--val", 8, "--output", tmp_path / "t1",
              "--config", tmp_path / "no-flatfield.toml", "--methods", "paired,phasegan",
              "--set", "phasegan:loss.object_cycle_weight=1.5")
    r1 = bench(tmp_path, *common, "--seeds", 1)
    assert r1["flatfield"] is False
    with h5py.File(Path(r1["data_dir"]) / "validation.h5", "r") as f:
        assert (f["flatfield"][()] == 1.0).all()  # the base config was used; --size etc. still override it
        assert f["intensity"].shape == (8, 32, 32)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t1" / "cells").glob("*.json")}
    assert len(first) == 2
    r = bench(tmp_path, *common, "--seeds", 2)  # resumes: only the two new cells are trained
    cells = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "t1" / "cells").glob("*.json")}
    assert len(cells) == 4 and all(cells[k] == v for k, v in first.items())
    assert set(r["table"]) == {"paired", "phasegan", "paganin"}
    # between-seed spread recomputed from the cells' own records
    means = [c["stats"]["phase_l2"]["mean"] for c in r["cells"]["phasegan"]]
    assert [c["seed"] for c in r["cells"]["phasegan"]] == [0, 1] and means[0] != means[1]
    assert r["table"]["phasegan"]["phase_l2"]["std_seeds"] == pytest.approx(float(np.std(means, ddof=1)))
    assert r["table"]["phasegan"]["phase_l2"]["mean"] == pytest.approx(float(np.mean(means)))
    assert "object ×1.5" in r["loss_weights"]["phasegan"] and r["loss_weights"]["paired"] == "L2"
    assert set(r["targets"]) == {"phasegan_frcm_within_1.5x_paired", "paganin_last_phase_l2"}
    table = (tmp_path / "t1" / "table1.md").read_text().splitlines()
    assert table[0].startswith("| method | seeds | loss weights | phase l2") and len(table) >= 5
    for name in ("table1_patch.png", "table1_ranked.png", "table1_convergence.png"):
        assert (tmp_path / "t1" / name).stat().st_size > 0
    proc = subprocess.run([EXE, "bench", "table1", "--set", "nonsense", "--output", str(tmp_path / "t2")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "expected [METHOD:]section.key=value" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "t2").exists()
    for bad in ("foo.bar=1", "phasegan:loss.nope=1"):  # unknown sections and keys: one line, nothing written
        proc = subprocess.run([EXE, "bench", "table1", "--set", bad, "--output", str(tmp_path / "t3")],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.startswith("error: --set") and "Traceback" not in proc.stderr
        assert not (tmp_path / "t3").exists()


def test_bench_rejects_options_it_does_not_take(tmp_path):
    proc = subprocess.run([EXE, "bench", "propagator", "--frames", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "bench propagator takes no --frames" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_table1_runs_sharing_one_out_dir_make_each_cell_once(tmp_path):
    """Two concurrent `bench table1` processes on one --out: the data set and each cell are made once."""
    args = [EXE, "bench", "table1", "--size", "32", "--train", "16", "--epochs", "1", "--val", "8", "--filters", "2",
            "--methods", "paired", "--seeds", "2", "--output", str(tmp_path / "t")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    logs = "".join(e for _, e in outs)
    assert logs.count("simulating the data set") == 1
    assert logs.count(": training paired") == 2 and logs.count("scored before, reused") == 2
    assert len(list((tmp_path / "t" / "cells").glob("*.json"))) == 2


def run_cli(*args, timeout=600):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_bench_reconstruct_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 1, "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert set(r["end_to_end_over_model"]) == {"local", "ray", "mpi"}
    assert all(v > 0 for v in r["end_to_end_over_model"].values())
    assert r["frames_per_s"]["model_only"]["median"] > 0 and r["threads"] == 1
    assert r["raw_mb"]["large"] == pytest.approx(4 * r["raw_mb"]["small"])
    assert r["peak_rss_mb"]["small"] > 50 and r["peak_rss_mb"]["large_over_small"] > 0

    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 1, "--backends", "local", "--no-rss", "--no-detector", "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert set(r["end_to_end_over_model"]) == {"local"} and r["peak_rss_mb"] is None and r["detector"] is False
    proc = run_cli("bench", "reconstruct", "--size", 32, "--frames", 48, "--batch", 16, "--repeats", 1,
                   "--threads", 2, "--backends", "mpi", "--workers", 2, "--no-rss", "--json", out)
    assert proc.returncode == 0, proc.stderr  # two real ranks under mpiexec, their --report read back
    r = json.loads(out.read_text())
    assert r["workers"] == 2 and r["after_startup_frames_per_s"]["mpi"]["median"] >= r["frames_per_s"]["mpi"]["median"]
    proc = run_cli("bench", "reconstruct", "--backends", "local,slurm")
    assert proc.returncode == 1 and "unknown backend(s) slurm" in proc.stderr


def test_bench_step_times_the_training_variants_against_the_paper(tmp_path):
    r = bench(tmp_path, "step", "--size", 32, "--batch", 2, "--filters", 2, "--repeats", 1, "--foam",
              "--variants", "fp32,bf16_cl")
    assert r["object_size"] == 64 and r["phasegan_s"] > 0 and "paired_s" not in r  # paired: equal sizes only
    assert r["paper_samples_per_s"] == pytest.approx(10_000 * 100 / 36_000)
    for variant in ("fp32", "bf16_cl"):
        rate = r[f"phasegan_{variant}_samples_per_s"]
        assert rate > 0 and r[f"phasegan_{variant}_vs_paper"] == pytest.approx(rate / r["paper_samples_per_s"])
    for args, why in ((["--variants", "fp8"], "unknown variant(s) fp8"), (["--size", "48"], "multiple of 32")):
        proc = subprocess.run([EXE, "bench", "step", *args], capture_output=True, text=True)
        assert proc.returncode == 1 and why in proc.stderr and "Traceback" not in proc.stderr


def test_bench_plan_grows_with_shards_only(tmp_path):
    """Two declared sizes 100x apart at 32 px: shards as computed here (256 MiB of float32 input per shard: 65,536
    frames), the whole archive's plan.json grows with its shards, the slice's run does not grow at all."""
    r = bench(tmp_path, "plan", "--size", 32, "--chunk-frames", 8, "--slice-frames", 8, "--repeats", 1,
              "--sizes", "0.01,1")
    small, large = r["sizes"]["0.01 GB"], r["sizes"]["1 GB"]
    for row, gb in ((small, 0.01), (large, 1)):
        assert row["frames"] == int(gb * 1e9) // (2 * 32 * 32) and row["shards"] == -(-row["frames"] // 65536)
        assert row["file_bytes"] < 1 << 20 and row["plan_s"] > 0 and row["dry_run_rss_mib"] > 50
    assert (small["shards"], large["shards"]) == (1, 8)
    assert large["plan_json_bytes"] > small["plan_json_bytes"] + 7 * 50  # one entry per shard
    # the same slice's plan, but for the digits of where it starts and the archive's name
    assert abs(large["partial_plan_json_bytes"] - small["partial_plan_json_bytes"]) < 16
    assert set(r["per_shard"]) >= {"plan_s", "dry_run_rss_mib", "partial_rss_mib"} and r["superlinear"] == []
    proc = subprocess.run([EXE, "bench", "plan", "--sizes", "10,1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--sizes must be increasing" in proc.stderr and "Traceback" not in proc.stderr
