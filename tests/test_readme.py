"""The README is executable: its quick-start block runs as written, in a copy of the clone with nothing
generated in it (no data, no runs), and leaves what it says it leaves."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - the outputs are Blosc-compressed
import numpy as np
import pytest
from tools import REPO

pytestmark = pytest.mark.slow

#: A README code block that a test runs: the marker line, then a bash fence.
BLOCK = re.compile(r"<!-- readme-test: (?P<name>[^>]*?) -->\n```bash\n(?P<code>.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    return {m["name"]: m["code"] for m in BLOCK.finditer((REPO / "README.md").read_text())}


def fresh_copy(dest: Path) -> Path:
    """The clone's files (tracked, and untracked ones git does not ignore) without anything generated, and its
    installed ``.venv`` (a link: the one running these tests)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(Path(sys.executable).resolve().parents[1] if not (REPO / ".venv").is_dir()
                                else REPO / ".venv")
    return dest


def test_quick_start_runs_as_written(tmp_path):
    blocks = readme_blocks()
    assert "quick start" in blocks, "README.md lost its <!-- readme-test: quick start --> block"
    clone = fresh_copy(tmp_path / "clone")
    assert not (clone / "data").exists() and not (clone / "runs").exists()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, as on a laptop
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks["quick start"]], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning:" not in proc.stderr, "the README uses a deprecated name"

    assert (clone / "runs" / "latest" / "model.pt").is_file()
    summary = json.loads((clone / "data" / "tiny" / "movie.json").read_text())
    assert summary["frames"] == 32 and summary["computed_frames"] == 32
    out = clone / "data" / "tiny" / "movie_phasegan.h5"
    assert not (clone / "data" / "tiny" / "movie_phasegan.shards").exists()  # consolidated: it moves alone
    with h5py.File(out, "r") as f:
        assert not f["phase"].is_virtual and f["phase"].shape == (32, 64, 64)
        assert np.isfinite(f["phase"][()]).all() and f.attrs["default"] == "entry"
