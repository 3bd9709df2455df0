"""Full and read-only disks, for real: a small tmpfs mounted in a private mount namespace (``unshare -m``, as
root), so nothing stays mounted when the test ends. Each run must end with one clear line and exit 1, leave
no partial file behind, and a rerun after space is freed must resume and give the identical result."""

from __future__ import annotations

import subprocess

import pytest
from movies import assert_identical, read, write_dxchange
from tools import EXE, REPO

from phasegan_hpc.reconstruct import ReconstructRequest, reconstruct

pytestmark = pytest.mark.slow


def in_namespace(script: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``script`` (bash) in a new mount namespace, where ``$M`` is a fresh directory the script mounts on."""
    return subprocess.run(["unshare", "-m", "bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(text: str, needle: str) -> None:
    """The run's stderr ends with exactly one error line (progress lines may come before it)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith(("phasegan:", "simulating"))]
    assert errors == lines[-1:] and lines[-1].startswith("error: ") and needle in lines[-1], text
    assert "Traceback" not in text


@pytest.mark.parametrize(("options", "needle"), [("size=100k", "no space left on the device"),
                                                 ("size=1M,ro", "read-only file system")])
def test_simulate_on_a_full_or_read_only_disk_is_one_line(tmp_path, options, needle):
    m = tmp_path / "m"
    m.mkdir()
    proc = in_namespace(f"""
        mount -t tmpfs -o {options} tmpfs {m}
        set +e
        {EXE} simulate {m}/data --config {REPO}/configs/tiny.toml --train 16 --val 4 --workers 1 \\
            > {tmp_path}/out.txt 2> {tmp_path}/err.txt
        echo "rc=$?"
        find {m} -name '*.partial' -o -name '*.h5' | sed 's/^/left: /'
    """)
    assert proc.returncode == 0, proc.stderr
    assert "rc=1" in proc.stdout and "left:" not in proc.stdout, proc.stdout
    one_error_line((tmp_path / "err.txt").read_text(), needle)


def test_reconstruct_on_a_disk_that_fills_midway_resumes_to_the_identical_result(movie_model, movie, tmp_path):
    archive = write_dxchange(tmp_path / "a.h5", movie)
    ref = read(reconstruct(ReconstructRequest(archive, model=movie_model, output=tmp_path / "ref.h5",
                                              backend="local", batch_size=4, shard_frames=3, preview=False)).output)
    m, keep = tmp_path / "m", tmp_path / "kept"
    m.mkdir()
    run = (f"{EXE} reconstruct {archive} --model {movie_model} --output {m}/o.h5 --backend local "
           "--batch-size 4 --shard-frames 3 --no-preview")
    proc = in_namespace(f"""
        mount -t tmpfs -o size=4M tmpfs {m}
        set +e
        {run} > {tmp_path}/out1.txt 2> {tmp_path}/err1.txt &
        pid=$!
        for _ in $(seq 3000); do compgen -G '{m}/o.shards/*/shard-000000.h5' > /dev/null && break; sleep 0.01; done
        kill -STOP $pid                                   # hold it while the disk fills up
        dd if=/dev/zero of={m}/filler bs=64k 2> /dev/null
        kill -CONT $pid
        wait $pid
        echo "rc1=$?"
        find {m} -name '*.partial' | sed 's/^/left: /'
        rm {m}/filler                                     # space freed: the same command again
        {run} > {tmp_path}/out2.txt 2> {tmp_path}/err2.txt
        echo "rc2=$?"
        mkdir {keep} && cp -r {m}/o.h5 {m}/o.shards {keep}/
    """)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "rc1=1" in proc.stdout and "left:" not in proc.stdout, proc.stdout
    one_error_line((tmp_path / "err1.txt").read_text(), "no space left on the device")
    assert "rc2=0" in proc.stdout, (tmp_path / "err2.txt").read_text()
    assert "shards reused" in (tmp_path / "out2.txt").read_text()  # what finished before the disk filled
    assert_identical(ref, read(keep / "o.h5"))
    assert not subprocess.run(["findmnt", str(m)], capture_output=True).stdout  # nothing left mounted
