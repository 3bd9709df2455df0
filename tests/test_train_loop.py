"""The training loop in-process: outputs, exact resume, the model file, and bad input."""

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tools import EXE

from phasegan_hpc.config import with_overrides
from phasegan_hpc.errors import DataError
from phasegan_hpc.models.artifact import load_model
from phasegan_hpc.train.local import train_local
from phasegan_hpc.train.loop import run_dir_of
from phasegan_hpc.train.session import run_checkpoints


def step_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss_g" in r]


@pytest.mark.slow
def test_run_writes_outputs_and_model_loads_safely(tiny_train_config):
    cfg = tiny_train_config
    result = train_local(cfg)
    run = run_dir_of(cfg)
    assert Path(result["model_path"]) == run / "model.pt"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss_g" in r] == list(range(1, 9))  # 2 epochs x 4 steps
    val = [r for r in recs if "val_phase_l2" in r]
    assert len(val) == 2 and all(np.isfinite(r["val_attenuation_frcm"]) for r in val)
    assert (run / "figures" / "cycles_epoch001.png").is_file() and (run / "figures" / "cycles_epoch002.png").is_file()
    assert (run / "figures" / "losses.png").is_file()
    assert [p.name for p in run_checkpoints(run)] == ["checkpoint_step_00000006", "checkpoint_step_00000008"]
    assert not (run / "checkpoints").exists() and not list(run.glob(".tmp-*"))  # the older name is not written
    latest = run.parent / "latest"
    assert latest.is_symlink() and (latest / "model.pt").resolve() == (run / "model.pt").resolve()

    payload = torch.load(run / "model.pt", weights_only=True)  # plain data: no code can run
    assert payload["format"] == "phasegan-hpc/model" and payload["method"] == "phasegan"
    assert set(payload["physics"]) == {"pixel_size_m", "wavelength_m", "distance_m", "detector_pixel_size_m"}
    assert payload["physics"]["detector_pixel_size_m"] == payload["physics"]["pixel_size_m"]  # one detector
    model = load_model(run / "model.pt")
    x = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        assert model.generator(x).shape == (1, 2, 64, 64)
        assert model.detector(x).shape == (1, 1, 64, 64)  # G_D travels with PhaseGAN models (reconstruct)
    assert model.normalisation.intensity_std > 0 and len(model.sha256) == 64


@pytest.mark.slow
def test_resumed_run_reproduces_uninterrupted_losses(tiny_train_config):
    full = with_overrides(tiny_train_config, {"train.name": "full"})
    train_local(full)
    part = with_overrides(tiny_train_config, {"train.name": "part", "train.max_steps": 5})
    stopped = train_local(part)
    assert stopped["step"] == 5 and "model_path" not in stopped
    assert not (run_dir_of(part) / "model.pt").exists()
    # A crash after the checkpoint at step 5 would leave log lines the resumed run must not duplicate.
    with (run_dir_of(part) / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 6, "loss_g": -1.0}) + "\n")
    resumed = train_local(with_overrides(part, {"train.max_steps": 0}))
    assert "model_path" in resumed
    a, b = step_records(run_dir_of(full)), step_records(run_dir_of(part))
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss_g", "loss_d", "cyc_o", "cyc_i", "frc_o", "frc_i"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), (ra["step"], key)
    ma = torch.load(run_dir_of(full) / "model.pt", weights_only=True)["state_dict"]
    mb = torch.load(run_dir_of(part) / "model.pt", weights_only=True)["state_dict"]
    for k in ma:
        torch.testing.assert_close(mb[k], ma[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learning_rate_schedule_and_checkpoints_from_before_the_schedulers(tiny_train_config):
    """StepLR (x 0.5 every epoch here) gives the closed-form rates; a checkpoint written before the
    schedulers existed (no scheduler state, the optimisers at the finished epoch's rate) resumes to the
    same losses and weights as an uninterrupted run."""
    base = with_overrides(tiny_train_config, {"train.lr_decay_epochs": 1,
                                              "train.lr_decay_factor": 0.5})
    full = with_overrides(base, {"train.name": "full"})
    train_local(full)
    scales = {r["step"]: r["lr_scale"] for r in step_records(run_dir_of(full))}
    assert [scales[s] for s in (1, 4, 5, 8)] == [1.0, 1.0, 0.5, 0.5]
    part = with_overrides(base, {"train.name": "part", "train.max_steps": 4})
    train_local(part)
    ckpt = run_dir_of(part) / "checkpoint_step_00000004" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["schedulers"]  # as written before: the optimisers hold epoch 0's rates, no initial_lr
    for key, lr in (("opt_g", base.train.lr_g), ("opt_d", base.train.lr_d)):
        for group in state[key]["param_groups"]:
            group["lr"] = lr
            group.pop("initial_lr", None)
    torch.save(state, ckpt)
    train_local(with_overrides(part, {"train.max_steps": 0}))
    b = {r["step"]: r for r in step_records(run_dir_of(part))}
    for ra in step_records(run_dir_of(full)):
        assert b[ra["step"]]["lr_scale"] == ra["lr_scale"]
        assert b[ra["step"]]["loss_g"] == pytest.approx(ra["loss_g"], rel=1e-5, abs=1e-7), ra["step"]
    ma = torch.load(run_dir_of(full) / "model.pt", weights_only=True)["state_dict"]
    mb = torch.load(run_dir_of(part) / "model.pt", weights_only=True)["state_dict"]
    for k in ma:
        torch.testing.assert_close(mb[k], ma[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["paired", "pix2pix", "cyclegan"])
def test_baselines_train_on_their_data(tiny_train_config, method):
    cfg = with_overrides(tiny_train_config, {"train.method": method, "train.name": method, "train.epochs": 1})
    result = train_local(cfg)
    assert load_model(result["model_path"]).method == method


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "model.pt"
    with evil.open("wb") as f:
        pickle.dump({"format": "phasegan-hpc/model", "x": _Evil()}, f, protocol=2)
    with pytest.raises(DataError, match="refused"):
        load_model(evil)
    assert not (tmp_path / "pwned").exists()


def test_foreign_and_mismatched_model_files(tmp_path, tiny_train_config):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(DataError, match="not a phasegan-hpc model file"):
        load_model(other)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DataError, match="not a phasegan-hpc model file"):
        load_model(tmp_path / "text.pt")
    result = train_local(with_overrides(tiny_train_config, {"train.method": "paired", "train.epochs": 1}))
    payload = torch.load(result["model_path"], weights_only=True)
    payload["arch"]["base_filters"] = 8  # weights are for 4
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(DataError, match="architecture does not match"):
        load_model(tmp_path / "wrong.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(DataError, match="format version 99"):
        load_model(tmp_path / "future.pt")


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_training_data(tiny_train_config, tiny_data, tmp_path):
    def run(data_dir, method="phasegan"):
        cfg = with_overrides(tiny_train_config, {"train.data_dir": str(data_dir), "train.method": method})
        return train_local(cfg)

    with pytest.raises(DataError, match="not found"):
        run(tmp_path / "nowhere")
    d = _copy_data(tiny_data, tmp_path / "d1")
    (d / "objects.h5").unlink()
    with pytest.raises(DataError, match=r"lacks objects\.h5.*phasegan-hpc simulate"):
        run(d)
    d = _copy_data(tiny_data, tmp_path / "d2")
    (d / "paired.h5").unlink()
    with pytest.raises(DataError, match=r"lacks paired\.h5.*--paired N"):
        run(d, method="paired")
    d = _copy_data(tiny_data, tmp_path / "d4")
    with h5py.File(d / "intensities.h5", "a") as f:
        f.move("intensity", "frames")
    with pytest.raises(DataError, match=r"no dataset /intensity \(it has: frames\)"):
        run(d)
    d = _copy_data(tiny_data, tmp_path / "d5")
    with h5py.File(d / "intensities.h5", "w") as f:
        f["intensity"] = np.ones((32, 32, 32), np.float32)
        f.attrs.update(pixel_size_m=1e-6, wavelength_m=1e-10, distance_m=0.1)
    with pytest.raises(DataError, match="frame sizes differ"):
        run(d)
    d = _copy_data(tiny_data, tmp_path / "d6")
    with h5py.File(d / "objects.h5", "a") as f:
        del f["phase"]
        f["phase"] = np.ones((32, 64), np.float32)
    with pytest.raises(DataError, match=r"must be \(N, H, W\)"):
        run(d)


def test_cli_train_errors_are_one_line(tmp_path):
    proc = subprocess.run([EXE, "train", "--data", str(tmp_path / "none"), "--storage", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not found" in proc.stderr
    assert not (tmp_path / "runs").exists()
    (tmp_path / "m.pt").write_text("x")
    proc = subprocess.run([EXE, "evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "v.h5")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_checkpoint_of_another_configuration_is_refused(tiny_train_config):
    from phasegan_hpc.errors import TrainingError

    cfg = with_overrides(tiny_train_config, {"train.max_steps": 2, "train.checkpoint_every": 2})
    train_local(cfg)
    with pytest.raises(TrainingError, match="another configuration"):
        train_local(with_overrides(cfg, {"train.method": "cyclegan", "train.max_steps": 0}))
    with pytest.raises(TrainingError, match="another configuration"):  # the object encoding is part of it
        train_local(with_overrides(cfg, {"model.output": "phase_attenuation", "train.max_steps": 0}))


def test_divergence_is_a_clear_error(tiny_train_config):
    from phasegan_hpc.errors import TrainingError

    cfg = with_overrides(tiny_train_config, {"train.method": "paired", "train.lr_g": 1e30, "train.grad_clip": 0.0})
    with pytest.raises(TrainingError, match="non-finite"):
        train_local(cfg)


def test_losses_read_in_batches_name_the_same_first_bad_step(tiny_train_config, tmp_path):
    """The loop reads loss terms from the device only at log/checkpoint steps (no sync per step on a GPU);
    a divergence is still reported at the step where it happened, as when every step is read."""
    from phasegan_hpc.errors import TrainingError

    bad = {"train.method": "paired", "train.lr_g": 1e30, "train.grad_clip": 0.0, "train.checkpoint_every": 100}
    messages = []
    for every, name in ((1, "each"), (7, "batched")):
        cfg = with_overrides(tiny_train_config, {**bad, "train.log_every": every, "train.name": name})
        with pytest.raises(TrainingError, match="non-finite") as err:
            train_local(cfg)
        messages.append(str(err.value).split(":")[0])
    assert messages[0] == messages[1]


def test_read_losses_matches_reading_each_step():
    import torch

    from phasegan_hpc.train.loop import read_losses

    pending = [{"a": torch.tensor(float(i)), "b": torch.tensor([2.5 * i])} for i in range(4)]
    assert read_losses(pending) == [{"a": float(i), "b": 2.5 * i} for i in range(4)]
    assert read_losses([]) == []


@pytest.mark.slow
def test_init_from_seeds_the_generators_and_is_recorded(tiny_train_config):
    """`train --init-from A.pt` starts from A's G_O and G_D (with a learning rate too small to move a weight,
    the new model's generators are A's), its normalisation, fresh optimisers, and records A's sha256; another
    architecture is refused naming both."""
    from phasegan_hpc.errors import TrainingError

    cfg = with_overrides(tiny_train_config, {"train.epochs": 1, "train.name": "a"})
    first = load_model(train_local(cfg)["model_path"])
    still = {"train.lr_g": 1e-30, "train.lr_d": 1e-30}
    seeded = load_model(train_local(with_overrides(cfg, {
        **still, "train.name": "b", "train.init_from": str(run_dir_of(cfg) / "model.pt")}))["model_path"])
    fresh = load_model(train_local(with_overrides(cfg, {**still, "train.name": "c", "train.seed": 7}))["model_path"])
    for name, a in first.generator.state_dict().items():
        torch.testing.assert_close(seeded.generator.state_dict()[name], a, rtol=0, atol=1e-12, msg=name)
    for name, a in first.detector.state_dict().items():
        torch.testing.assert_close(seeded.detector.state_dict()[name], a, rtol=0, atol=1e-12, msg=name)
    weights = [k for k, v in first.generator.state_dict().items() if v.ndim == 4]  # convolution kernels
    assert not torch.allclose(fresh.generator.state_dict()[weights[0]], first.generator.state_dict()[weights[0]])
    assert seeded.normalisation.to_dict() == first.normalisation.to_dict()
    assert seeded.info["init_from"] == {"path": str(run_dir_of(cfg) / "model.pt"), "sha256": first.sha256}
    assert "init_from" not in first.info
    wider = with_overrides(cfg, {"train.name": "d", "model.base_filters": 2 * cfg.model.base_filters,
                                 "train.init_from": str(run_dir_of(cfg) / "model.pt")})
    with pytest.raises(TrainingError, match=f"its G_O is .*base_filters {cfg.model.base_filters}.*this run's is "
                                            f".*base_filters {2 * cfg.model.base_filters}"):
        train_local(wider)


def test_cli_init_from_a_missing_model_is_one_line(tiny_data, tmp_path):
    proc = subprocess.run([EXE, "train", "--data", str(tiny_data), "--storage", str(tmp_path / "runs"),
                           "--init-from", str(tmp_path / "nope.pt")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.pt not found" in proc.stderr
    assert not (tmp_path / "runs").exists()
