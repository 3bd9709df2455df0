"""The installed `phasegan-hpc` console script: success paths and one-line errors that change nothing."""

import hashlib
import subprocess
from pathlib import Path

import h5py
import pytest
from tools import EXE


def run(*args, cwd=None):
    assert EXE, "console script phasegan-hpc is not installed next to this Python"
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(d: Path):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_simulate_then_preview(tmp_path):
    out = tmp_path / "data"
    proc = run("simulate", out, "--train", 8, "--val", 4, "--size", 32, "--seed", 3, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out / "intensities.h5", "r") as f:
        assert f["intensity"].shape == (8, 32, 32)
    with h5py.File(out / "validation.h5", "r") as f:
        assert f["phase"].shape == (4, 32, 32) and f.attrs["seed"] == 3
    proc = run("preview", out, "--output", tmp_path / "p.png", "-n", 2)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "warning" not in proc.stderr
    proc = run("preview", out, "--out=" + str(tmp_path / "old.png"), "-n", 2)  # the old name, until 0.3.0
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == "warning: --out is deprecated and will be removed in 0.3.0: use --output"
    assert (tmp_path / "old.png").read_bytes() == (tmp_path / "p.png").read_bytes()

    # An existing data set is not replaced without --overwrite, and nothing in it changes.
    before = snapshot(out)
    assert_one_line_error(run("simulate", out, "--train", 8, "--size", 32), "not empty", "--overwrite")
    assert snapshot(out) == before
    proc = run("simulate", out, "--train", 4, "--val", 2, "--size", 32, "--overwrite", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out / "objects.h5", "r") as f:
        assert f["phase"].shape == (4, 32, 32)


@pytest.mark.parametrize(
    "toml, needles",
    [
        ("[physics]\npixel_size = 1e-6\n", ["unknown key 'physics.pixel_size'", "bad.toml"]),
        ("[physics]\npixel_size_m = -1e-6\n", ["pixel_size_m must be a positive number", "bad.toml"]),
        ("[physics]\nwavelength_m = 0.0\n", ["wavelength_m must be a positive number"]),
        ("[simulate]\nsize = 8\n", ["simulate.size must be >= 16"]),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, toml, needles):
    (tmp_path / "bad.toml").write_text(toml)
    assert_one_line_error(run("simulate", tmp_path / "out", "--config", tmp_path / "bad.toml"), *needles)
    assert not (tmp_path / "out").exists()


def test_bad_options_and_paths(tmp_path):
    assert_one_line_error(run("simulate", tmp_path / "out", "--size", 8), "simulate.size must be >= 16")
    assert_one_line_error(run("simulate", tmp_path / "out", "--config", tmp_path / "none.toml"), "cannot read config")
    assert not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("x")
    assert_one_line_error(run("simulate", tmp_path / "afile"), "not a directory")
    assert (tmp_path / "afile").read_text() == "x"
    assert_one_line_error(run("preview", tmp_path / "empty"), "holds no data set")


def test_old_names_keep_working_with_one_warning_each(tmp_path):
    """Renamed options (reconstruct --report, preview/movie-figure/bench table1 --out) and tie/correct's
    positional OUTPUT still work until 0.3.0, each with one warning line before what the command says."""
    for args, old, new in ((("tie", tmp_path / "none.h5", tmp_path / "o.h5"), "OUTPUT as an argument", "--output"),
                           (("correct", tmp_path / "none.h5", tmp_path / "o.h5"), "OUTPUT as an argument", "--output"),
                           (("reconstruct", tmp_path / "none.h5", "--report", tmp_path / "r.json"), "--report",
                            "--json")):
        proc = run(*args, "--backend", "local")
        lines = proc.stderr.splitlines()
        assert proc.returncode == 1 and len(lines) == 2, proc.stderr
        assert lines[0].startswith(f"warning: {old} is deprecated") and lines[0].endswith(f"use {new}" + (
            " OUTPUT" if new == "--output" else "")), lines[0]
        assert "none.h5 not found" in lines[1]
    assert_one_line_error(run("tie", tmp_path / "a.h5", tmp_path / "b.h5", "--output", tmp_path / "c.h5"),
                          "two outputs")
    assert not list(tmp_path.iterdir())


def test_help_lists_commands():
    proc = run("--help")
    assert proc.returncode == 0 and "simulate" in proc.stdout and "preview" in proc.stdout
    assert run("--version").stdout.strip().startswith("phasegan-hpc")


def test_bench_subcommands_declare_their_benchmarks_options_and_defaults():
    """`bench NAME` offers only what NAME's function takes, with that function's defaults (one home for them)."""
    import inspect

    from phasegan_hpc.bench import benchmarks
    from phasegan_hpc.cli import bench

    fns = benchmarks()
    assert list(bench.commands) == list(fns)
    for name, command in bench.commands.items():
        takes = inspect.signature(fns[name]).parameters
        for param in command.params:
            if param.name == "json_path":
                continue
            assert param.name in takes, f"bench {name} --{param.name}"
            if param.default is not None and not param.multiple:
                assert param.default == takes[param.name].default, f"bench {name} --{param.name}"
    proc = run("bench", "table1", "--help")
    assert proc.returncode == 0 and "--seeds" in proc.stdout and "--frames" not in proc.stdout
    proc = run("bench")  # no subcommand: click's usage, listing the benchmarks (as `phasegan-hpc` alone does)
    assert all(name in proc.stdout + proc.stderr for name in fns)
