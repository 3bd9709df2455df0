"""The training loop, run per worker (in-process, or by Ray Train in ``fit.py``) through a Session.

Epochs over the two unpaired sets (or the paired set), lr / 10 every ``lr_decay_epochs`` (paper §3),
normalisation statistics from the training data, checkpoints (all networks, both optimisers, step, RNG
state) every ``checkpoint_every`` steps and at each epoch end, exact resume, validation metrics each epoch,
``metrics.jsonl`` and its TensorBoard / MLflow views (``logs.py``), figures, and finally ``model.pt`` (also
reachable as ``runs/latest/model.pt``).

Determinism: the data order of an epoch depends only on (seed, epoch), the augmentation of a step only
on (seed, step, rank), so a resumed run replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phasegan_hpc import __version__
from phasegan_hpc.config import Config, config_to_toml
from phasegan_hpc.data.augment import center_crop_pad, crop_flip_rotate_pad
from phasegan_hpc.data.frames import FrameStack, TrainingData, open_training_data
from phasegan_hpc.data.normalise import Normalisation, compute_normalisation
from phasegan_hpc.errors import DataError, TrainingError
from phasegan_hpc.files import atomic_write_text
from phasegan_hpc.losses.metrics import METRICS, wasserstein_1d
from phasegan_hpc.models.artifact import PhaseModel, load_model
from phasegan_hpc.models.cycle import GeneratorPair
from phasegan_hpc.models.registry import generator_arch
from phasegan_hpc.models.unet import SIZE_MULTIPLE
from phasegan_hpc.physics import FresnelPropagator, object_wavefield
from phasegan_hpc.physics.geometry import Geometry
from phasegan_hpc.progress import ProgressFn
from phasegan_hpc.train.figures import CycleImages, cycle_figure, loss_curves
from phasegan_hpc.train.logs import FAILED, FINISHED, KILLED, RunLog, open_run_log
from phasegan_hpc.train.session import CHECKPOINT_FILE, Session
from phasegan_hpc.train.step import PAIRED_METHODS, STEPS, Batch, Trainables, build_trainables, unwrap

OBJECT_NAMES = ("phase", "attenuation")


def run_dir_of(cfg: Config) -> Path:
    """``runs_dir / name``: where a run keeps its checkpoints, metrics, figures and model."""
    return Path(cfg.train.runs_dir) / cfg.train.name


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class _Sampler:
    """Per-epoch permutations of one data stream, sharded over ranks; batches of float32 arrays."""

    def __init__(self, stack: FrameStack, stream: int, seed: int, rank: int, world: int, batch: int) -> None:
        self.stack, self.stream, self.seed = stack, stream, seed
        self.rank, self.world, self.batch = rank, world, batch

    def steps_per_epoch(self) -> int:
        return len(self.stack) // self.world // self.batch

    def batch_at(self, epoch: int, i: int) -> np.ndarray:
        g = torch.Generator().manual_seed(_seed(self.seed, epoch, self.stream))
        order = torch.randperm(len(self.stack), generator=g).numpy()[self.rank :: self.world]
        return self.stack[order[i * self.batch : (i + 1) * self.batch]]


def _identity(cfg: Config) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the method, every network's shape, the object encoding."""
    m = cfg.model
    return {"method": cfg.train.method, "generator": m.generator, "base_filters": m.base_filters,
            "discriminator": m.discriminator, "disc_filters": m.disc_filters, "disc_norm": m.disc_norm,
            "output": m.output, "object_scale": m.object_scale, "upsampling": m.upsampling,
            **({"upsample": m.upsample} if m.upsample != 1 else {})}


def _checkpoint_state(tr: Trainables, step: int, norm: Normalisation, history: dict[str, Any],
                      identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": step,
        "generators": unwrap(tr.generators).state_dict(),
        "discriminators": unwrap(tr.discriminators).state_dict() if tr.discriminators is not None else None,
        "opt_g": tr.opt_g.state_dict(),
        "opt_d": tr.opt_d.state_dict() if tr.opt_d is not None else None,
        "normalisation": norm.to_dict(),
        "torch_rng": torch.get_rng_state(),
        "scalers": [s.state_dict() if s is not None else None for s in (tr.scaler_g, tr.scaler_d)],
        "history": history,
        "identity": identity,
    }


def validate(gens: torch.nn.Module, stack: FrameStack, norm: Normalisation, geometry: Geometry, n_frames: int,
             device: torch.device, reference_objects: np.ndarray | None = None,
             batch_size: int = 16) -> dict[str, float]:
    """Validation metrics of a generator pair on up to ``n_frames`` held-out frames (G_O run as a
    :class:`PhaseModel`, exactly as evaluate and reconstruct run it).

    Paired (the truth is used only here): mean L2, DSSIM and FRCM of G_O's phase and attenuation.
    Unpaired (no truth needed; what ``phasegan-hpc tune`` optimises), for the cycle methods:
      ``val_cycle_frcm``   FRCM of the intensity cycle G_D|H G_O(I)|^2 against I (eq. 4's second term),
      ``val_realism_w1``   earth mover's distance between G_O(I) and ``reference_objects`` values per
                           channel, in normalised units (do the retrieved objects look like objects?),
      ``val_unpaired``     their sum. Neither scales with the loss weights alpha_cyc, alpha_frc.
    """
    n = min(n_frames, len(stack))
    sums: dict[str, float] = {}
    fakes = []
    was_training = gens.training
    gens.eval()
    model = PhaseModel(gens.g_o, {}, norm, geometry, "validation")
    with torch.no_grad():
        for start in range(0, n, batch_size):
            arr = torch.from_numpy(stack[np.arange(start, min(start + batch_size, n))]).to(device)
            inten = norm.norm_intensity(arr[:, :1])
            phys = torch.stack(model.retrieve(arr[:, 0]), 1)
            fake = norm.norm_object(phys)  # G_O's own channels (the encoding round-trips)
            pred = phys.double()
            ref = arr[:, 1:].double()
            for c, name in enumerate(OBJECT_NAMES):
                for metric, fn in METRICS.items():
                    key = f"val_{name}_{metric}"
                    sums[key] = sums.get(key, 0.0) + float(fn(pred[:, c], ref[:, c]).sum())
            if gens.g_d is not None:
                rec = gens.to_detector(fake).float()
                sums["val_cycle_frcm"] = sums.get("val_cycle_frcm", 0.0) + float(METRICS["frcm"](
                    rec[:, 0].double(), inten[:, 0].double()).sum())
                fakes.append(fake.cpu())
    gens.train(was_training)
    out = {k: v / n for k, v in sums.items()}
    if fakes and reference_objects is not None:
        fake = torch.cat(fakes)
        ref = norm.norm_object(torch.from_numpy(reference_objects))
        out["val_realism_w1"] = sum(wasserstein_1d(fake[:, c], ref[:, c]) for c in range(fake.shape[1])) / 2
        out["val_unpaired"] = out["val_cycle_frcm"] + out["val_realism_w1"]
    return out


def _normalisation(cfg: Config, data: TrainingData, object_shape: tuple[int, int]) -> Normalisation:
    t = cfg.train
    enc = {"output": cfg.model.output, "scale": cfg.model.object_scale,
           "ctf_gains": data.geometry.ctf_gains(object_shape)}
    if data.paired is not None:
        return compute_normalisation(data.paired, 0, data.paired, (1, 2), t.norm_frames, t.seed, **enc)
    return compute_normalisation(data.intensities, 0, data.objects, (0, 1), t.norm_frames, t.seed, **enc)


def train_loop(cfg: Config, session: Session, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train ``cfg.train.method`` on ``cfg.train.data_dir``, resuming from the session's latest checkpoint.

    Returns:
        The last reported metrics (rank 0: plus "model_path" once training is complete).

    Raises:
        DataError: unusable data (missing files, wrong datasets or shapes, sizes not multiples of 32).
        TrainingError: a checkpoint of another configuration, non-finite losses, diverging ranks.
    """
    run = TrainingRun(cfg, session)
    run.restore(session.restore())
    run.start()
    status = FAILED
    try:
        while run.step < run.total:
            if run.stopped():
                status = FINISHED
                return run.metrics  # already there (a rerun with the same --max-steps does nothing)
            if not run.epoch(progress):
                status = FINISHED
                return run.metrics  # --max-steps reached inside the epoch
        metrics = run.finish()
        status = FINISHED
        return metrics
    except KeyboardInterrupt:
        status = KILLED
        raise
    finally:
        run.log.close(status)


class TrainingRun:
    """One rank's training run, in the stages :func:`train_loop` calls: set-up (``__init__``), :meth:`restore`,
    :meth:`start`, :meth:`epoch` (steps, logging, checkpoints; then :meth:`end_of_epoch`: validation,
    figures, the learning-rate schedule), :meth:`finish` (the ranks' weights agree, ``model.pt``).

    The learning rates follow ``torch.optim.lr_scheduler.StepLR`` (x ``lr_decay_factor`` every
    ``lr_decay_epochs`` epochs, paper §3), stepped at each epoch's end and checkpointed with the optimisers;
    checkpoints from before the schedulers existed resume at the epoch they were written in.
    """

    def __init__(self, cfg: Config, session: Session) -> None:
        t = cfg.train
        self.cfg, self.session, self.t = cfg, session, t
        self.paired = t.method in PAIRED_METHODS
        self.data = open_training_data(t.data_dir, paired=self.paired, upsample=cfg.model.upsample)
        _, self.object_shape = network_shapes(cfg, self.data)
        self.run_dir = run_dir_of(cfg)
        self.rank0 = session.rank == 0
        self.device = session.device
        self.identity = _identity(cfg)
        self.init_model = None
        if t.init_from:  # loaded once here (weights only), so that a missing or foreign file fails before work
            self.init_model = load_model(t.init_from)
            self.identity["init_from_sha256"] = self.init_model.sha256
        if t.amp == "fp16" and self.device.type != "cuda":
            raise TrainingError("train.amp = 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPUs")
        self.prop = cfg.physics.padding(self.data.geometry).propagator(self.object_shape)
        self.step, self.history = 0, {}
        self.spe = steps_per_epoch(self.data, t.batch_size, session.world_size)
        self.total = self.spe * t.epochs
        self.metrics: dict[str, Any] = {"step": 0, "epoch": 0.0}
        args = (t.seed, session.rank, session.world_size, t.batch_size)
        self.samplers = ([_Sampler(self.data.paired, 0, *args)] if self.paired else
                         [_Sampler(self.data.intensities, 1, *args), _Sampler(self.data.objects, 2, *args)])

    # ---- restore -------------------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any] | None) -> None:
        """Build the networks (the same initial weights on every rank), then load ``state`` if any."""
        cfg, t = self.cfg, self.t
        if state is not None and state.get("identity") != self.identity:
            raise TrainingError(f"run {self.run_dir} holds a checkpoint of another configuration "
                                f"({state.get('identity')}); choose another --name")
        if state:
            self.norm = Normalisation.from_dict(state["normalisation"])
        elif self.init_model is not None:  # the units the seeding networks were trained in
            self.norm = self.init_model.normalisation
        else:
            self.norm = _normalisation(cfg, self.data, self.object_shape)
        torch.manual_seed(t.seed)
        self.tr = tr = build_trainables(cfg, t.method, self.prop, self.norm, self.session.wrap, self.device)
        self.schedulers = [torch.optim.lr_scheduler.StepLR(opt, t.lr_decay_epochs, t.lr_decay_factor)
                           for opt in (tr.opt_g, tr.opt_d) if opt is not None]
        if not state:
            if self.init_model is not None:
                _seed_generators(cfg, unwrap(tr.generators), self.init_model, t.init_from)
            return
        unwrap(tr.generators).load_state_dict(state["generators"])
        tr.opt_g.load_state_dict(state["opt_g"])
        if tr.discriminators is not None:
            unwrap(tr.discriminators).load_state_dict(state["discriminators"])
            tr.opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        for scaler, saved in zip((tr.scaler_g, tr.scaler_d), state.get("scalers", (None, None)), strict=True):
            if scaler is not None and saved is not None:
                scaler.load_state_dict(saved)
        self.step, self.history = int(state["step"]), dict(state["history"])
        saved = state.get("schedulers")
        for k, sched in enumerate(self.schedulers):
            if saved is not None:
                sched.load_state_dict(saved[k])
            else:  # a checkpoint from before the schedulers: the closed form they replaced (the same rates)
                epoch = self.step // self.spe
                sched.last_epoch = epoch
                for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                    group["lr"] = base * t.lr_decay_factor ** (epoch // t.lr_decay_epochs)

    # ---- start ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """The logs (``metrics.jsonl`` cut back to the resumed step; TensorBoard, MLflow), ``config.toml``, the
        figures' fixed batch."""
        t = self.t
        self.log: RunLog = open_run_log(self.cfg, self.run_dir, self.step, self.rank0)
        self.log.write({"event": "start", "step": self.step, "world_size": self.session.world_size,
                        "total_steps": self.total})
        if self.rank0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.toml", config_to_toml(self.cfg))
        self.figure_batch = _figure_batch(self.data, self.paired, t)
        objects = self.data.objects
        self.reference_objects = None if self.paired else objects[np.arange(min(max(t.val_frames, 1), len(objects)))]
        self.metrics = {"step": self.step, "epoch": self.step / self.spe}
        self.sums: dict[str, float] = {}
        self.count = 0
        self.pending: list[dict[str, torch.Tensor]] = []  # loss terms of the steps since the last read
        self.values: dict[str, float] = {}  # the last step read

    # ---- steps ---------------------------------------------------------------------------------------------

    def stopped(self) -> bool:
        """``--max-steps`` reached."""
        return self.t.max_steps > 0 and self.step >= self.t.max_steps

    @property
    def lr_scale(self) -> float:
        """The current learning rate over the configured one."""
        return self.tr.opt_g.param_groups[0]["lr"] / self.t.lr_g

    def batch(self, epoch: int, i: int) -> Batch:
        """Step ``i`` of ``epoch``: the samplers' arrays, augmented (one path: ``data.augment``), normalised,
        on the device. Each domain (the paired set is one) gets its own draws, seeded by (seed, step, rank,
        domain): crops (paper §4's two detectors), flips, rotations, padding to the network's size."""
        t, step = self.t, self.step
        arrays = [s.batch_at(epoch, i) for s in self.samplers]
        specs = _crop_specs(t) if _crops(t) else ((0, 0), (0, 0))
        if _crops(t) or t.augment:
            arrays = [crop_flip_rotate_pad(a, np.random.default_rng(_seed(t.seed, step, self.session.rank, k)), *spec,
                                           flip=t.augment, rotate=t.rotate)
                      for k, (a, spec) in enumerate(zip(arrays, specs, strict=False))]
        inten, obj = (arrays[0][:, :1], arrays[0][:, 1:]) if self.paired else arrays
        norm = self.norm
        return Batch(norm.norm_intensity(to_device(inten, self.device)), norm.norm_object(to_device(obj, self.device)))

    def epoch(self, progress: ProgressFn | None = None) -> bool:
        """The remaining steps of the current epoch; False if ``--max-steps`` stopped it first."""
        t, step_fn = self.t, STEPS[self.t.method]
        epoch, first = divmod(self.step, self.spe)
        for i in range(first, self.spe):
            self.pending.append(step_fn(self.tr, self.batch(epoch, i), self.cfg.loss, t.grad_clip))  # no sync
            self.step += 1
            epoch_end, stop = i == self.spe - 1, self.stopped()
            if self.step % t.log_every == 0 or epoch_end or stop or self.step % t.checkpoint_every == 0:
                self._read_losses()
            if progress is not None and self.rank0:
                progress(self.step, self.total, self.values)
            if self.step % t.log_every == 0:
                self.log.write({"step": self.step, "epoch": self.step / self.spe, "lr_scale": self.lr_scale,
                                "time": time.time(), **{k: v / self.count for k, v in self.sums.items()}})
                self.sums, self.count = {}, 0
            if epoch_end:
                self.end_of_epoch()
            elif self.step % t.checkpoint_every == 0 or stop:
                self.checkpoint(self.values)
            if stop and self.step < self.total:
                return False
        return True

    def _read_losses(self) -> None:
        """Copy the pending steps' losses to the host (one sync); refuse non-finite ones."""
        for k_step, read in enumerate(read_losses(self.pending), start=self.step - len(self.pending) + 1):
            bad = ", ".join(k for k, v in read.items() if not math.isfinite(v))
            if bad:
                raise TrainingError(f"non-finite {bad} at step {k_step}: lower the learning rates or check "
                                    f"the data; the last checkpoint in {self.run_dir} is kept")
            for k, v in read.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1
            self.values = read
        self.pending = []

    # ---- epoch end, checkpoints ----------------------------------------------------------------------------

    def end_of_epoch(self) -> None:
        """Validation (rank 0), figures, the schedule's step, then a checkpoint that holds all of them."""
        t, extra = self.t, {}
        if self.rank0 and self.data.validation is not None and t.val_frames > 0:
            extra = validate(unwrap(self.tr.generators), self.data.validation, self.norm, self.data.geometry,
                             t.val_frames, self.device, self.reference_objects)
            self.log.write({"step": self.step, "epoch": self.step / self.spe, **extra})
            for k, v in extra.items():
                self.history.setdefault(k, []).append(v)
        if self.rank0:
            _write_figures(self.run_dir, self.tr, self.figure_batch, self.norm, self.prop, self.device,
                           self.log.records, self.step // self.spe)
        for sched in self.schedulers:
            sched.step()
        self.checkpoint({**self.values, **extra, "complete": self.step >= self.total})

    def checkpoint(self, extra: dict[str, Any]) -> None:
        """Report ``extra`` with a checkpoint (rank 0 writes it; the others report metrics only)."""
        self.metrics = {"step": self.step, "epoch": self.step / self.spe, **extra}
        if not self.rank0:
            self.session.report(self.metrics, None)
            return
        tmp_root = self.session.staging_dir()
        tmp_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=tmp_root))
        tmp.chmod(0o755)
        state = _checkpoint_state(self.tr, self.step, self.norm, self.history, self.identity)
        state["schedulers"] = [sched.state_dict() for sched in self.schedulers]
        torch.save(state, tmp / CHECKPOINT_FILE)
        self.log.flush()  # a resumed run's views continue from this checkpoint: what it covers must be on disk
        self.session.report(self.metrics, tmp)

    # ---- finish --------------------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Check that every rank holds the same G_O, log the end, export ``model.pt`` (rank 0)."""
        digests = rank_digests(unwrap(self.tr.generators).g_o)
        if len(set(digests)) > 1:
            raise TrainingError(f"ranks ended with different G_O weights: {digests}")
        self.log.write({"event": "end", "step": self.step, "g_o_sha256_by_rank": digests})
        if self.rank0:
            model_path = _export(self.cfg, self.run_dir, self.tr, self.norm, self.data.geometry, self.step,
                                 self.metrics, self.identity.get("init_from_sha256"))
            self.metrics = {**self.metrics, "model_path": str(model_path)}
        return self.metrics


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``; on CUDA through pinned memory with a non-blocking copy, so that the copy
    overlaps the previous step's kernels (the caching host allocator keeps the buffer until it is done)."""
    x = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def read_losses(pending: list[dict[str, torch.Tensor]]) -> list[dict[str, float]]:
    """The loss terms of several steps as floats, in one device-to-host copy: the training loop's only
    synchronisation with the device between logging, validation and checkpoints."""
    if not pending:
        return []
    names = list(pending[0])
    table = torch.stack([torch.stack([p[k].detach().float().reshape(()) for k in names]) for p in pending])
    return [dict(zip(names, row, strict=True)) for row in table.cpu().tolist()]


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (CPU bytes in state_dict order)."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rank_digests(module: torch.nn.Module) -> list[str]:
    """:func:`weights_digest` of every rank (gathered when torch.distributed runs), in rank order.

    Data-parallel ranks must end with identical weights; the loop checks this before exporting."""
    mine = weights_digest(module)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    out: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, mine)
    return [str(d) for d in out]


def steps_per_epoch(data: TrainingData, batch_size: int, world_size: int) -> int:
    """Optimisation steps per epoch: the smaller set, split over ranks, in whole batches.

    Raises:
        DataError: too few frames for one batch per rank.
    """
    sizes = [len(data.paired)] if data.paired is not None else [len(data.intensities), len(data.objects)]
    spe = min(n // world_size // batch_size for n in sizes)
    if spe == 0:
        raise DataError(f"too few frames ({min(sizes)}) for batch size {batch_size} on {world_size} worker(s)")
    return spe


def _crops(t) -> bool:
    return bool(t.detector_crop or t.object_crop or t.detector_size or t.object_size or t.rotate)


def _crop_specs(t) -> tuple[tuple[int, int], tuple[int, int]]:
    """(crop, size) of the detector and the object domain, in the order of the unpaired samplers."""
    return (t.detector_crop, t.detector_size), (t.object_crop, t.object_size)


def network_shapes(cfg: Config, data: TrainingData) -> tuple[tuple[int, int], tuple[int, int]]:
    """(H, W) of the detector frames and of the objects the networks see, after crops and padding.

    Raises:
        DataError: sizes that are not multiples of 32, crops larger than the frames, or an object size that
            is not ``[model] upsample`` times the detector size.
    """
    t, up = cfg.train, cfg.model.upsample
    if up != 1 and cfg.train.method in PAIRED_METHODS:
        raise DataError(f"[model] upsample = {up} needs an unpaired method (phasegan or cyclegan)")

    def side(frame: tuple[int, int], crop: int, size: int, what: str) -> tuple[int, int]:
        if crop > min(frame):
            raise DataError(f"{t.data_dir}: train.{what}_crop = {crop} is larger than the {what} frames "
                            f"({frame[0]} x {frame[1]})")
        return (size, size) if size else (crop, crop) if crop else frame

    det = side(data.shape, t.detector_crop, t.detector_size, "detector")
    obj = side(data.object_shape, t.object_crop, t.object_size, "object")
    if det[0] % SIZE_MULTIPLE or det[1] % SIZE_MULTIPLE:
        raise DataError(f"{t.data_dir}: detector frames are {det[0]} x {det[1]} for the networks; the U-Net needs "
                        f"multiples of {SIZE_MULTIPLE} (set train.detector_size)")
    if obj != (det[0] * up, det[1] * up):
        raise DataError(f"{t.data_dir}: objects of {obj[0]} x {obj[1]} do not match detector frames of {det[0]} x "
                        f"{det[1]} at [model] upsample = {up} (set train.object_crop / object_size)")
    return det, obj


def _figure_batch(data: TrainingData, paired: bool, t) -> tuple[np.ndarray, np.ndarray]:
    """Two detector frames and two objects shown in the cycle figures (fixed across epochs)."""
    if _crops(t) and not paired:
        (dc, ds), (oc, os_) = _crop_specs(t)
        return (center_crop_pad(data.intensities[np.arange(2)], dc, ds),
                center_crop_pad(data.objects[np.arange(2)], oc, os_))
    src = data.validation if data.validation is not None and len(data.validation) >= 2 else None
    if src is not None:
        arr = src[np.arange(2)]
        return arr[:, :1], arr[:, 1:]
    if paired:
        arr = data.paired[np.arange(2)]
        return arr[:, :1], arr[:, 1:]
    return data.intensities[np.arange(2)], data.objects[np.arange(2)]


def _write_figures(run_dir: Path, tr: Trainables, batch: tuple[np.ndarray, np.ndarray], norm: Normalisation,
                   prop: FresnelPropagator, device: torch.device, records: list[dict[str, Any]], epoch: int) -> None:
    inten = torch.from_numpy(batch[0]).to(device)
    obj = torch.from_numpy(batch[1]).to(device)
    images = cycle_images(unwrap(tr.generators), inten, obj, norm, prop)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    cycle_figure(figures / f"cycles_epoch{epoch:03d}.png", images)
    loss_curves(figures / "losses.png", records)


@torch.no_grad()
def cycle_images(generators: GeneratorPair, intensity: torch.Tensor, obj: torch.Tensor, norm: Normalisation,
                 prop: FresnelPropagator) -> CycleImages:
    """Both cycles of the generator pair on a batch, as the first frame's images for :func:`cycle_figure`.

    Args:
        intensity: (B, 1, H, W) physical detector frames; obj: (B, 2, H, W) physical (phase, attenuation).
        norm: the run's normalisation; prop: the Fresnel propagator H.
    """
    out = generators(norm.norm_intensity(intensity), norm.norm_object(obj))

    def holo(o: torch.Tensor) -> torch.Tensor:  # |H psi|^2 of a physical object (B, 2, H, W)
        return prop.intensity(object_wavefield(o[:, 0].float(), o[:, 1].float()))

    def np0(t: torch.Tensor) -> np.ndarray:
        return t[0].detach().float().cpu().numpy().squeeze()

    fake_o = norm.denorm_object(out.fake_object)
    common = {"intensity": np0(intensity), "fake_phase": np0(fake_o[:, 0]), "fake_attenuation": np0(fake_o[:, 1]),
              "fake_hologram": np0(holo(fake_o)), "true_phase": np0(obj[:, 0]), "true_attenuation": np0(obj[:, 1])}
    if out.reconstructed_intensity is None:
        return CycleImages(**common)
    return CycleImages(**common, true_hologram=np0(holo(obj)),
                       reconstructed_intensity=np0(norm.denorm_intensity(out.reconstructed_intensity)),
                       fake_intensity=np0(norm.denorm_intensity(out.fake_intensity)),
                       reconstructed_phase=np0(norm.denorm_object(out.reconstructed_object)[:, 0]))


def check_init_from(cfg: Config, model: PhaseModel, path: str) -> None:
    """Refuse a ``--init-from`` model whose networks this run cannot start from.

    Raises:
        TrainingError: another G_O architecture (named with both), or a G_D this run needs that the model lacks
            or has in another architecture.
    """
    want = generator_arch(cfg.model, "g_o")
    if dict(model.arch) != want:
        raise TrainingError(f"--init-from {path}: its G_O is {_arch_line(model.arch)}; this run's is "
                            f"{_arch_line(want)}")
    if cfg.train.method in ("phasegan", "cyclegan"):
        want_d = generator_arch(cfg.model, "g_d", cfg.train.method)
        if model.detector is None or dict(model.detector_arch) != want_d:
            have = _arch_line(model.detector_arch) if model.detector is not None else "missing"
            raise TrainingError(f"--init-from {path}: its G_D is {have}; this run's is {_arch_line(want_d)}")


def _seed_generators(cfg: Config, gens: GeneratorPair, model: PhaseModel, path: str) -> None:
    """Load ``model``'s G_O (and G_D where this run has one) into ``gens`` (``--init-from``), once checked."""
    check_init_from(cfg, model, path)
    gens.g_o.load_state_dict(model.generator.state_dict())
    if gens.g_d is not None:
        gens.g_d.load_state_dict(model.detector.state_dict())


def _arch_line(arch: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(arch.items()))


def _export(cfg: Config, run_dir: Path, tr: Trainables, norm: Normalisation, geometry: Geometry,
            step: int, metrics: dict[str, Any], init_from_sha256: str | None = None) -> Path:
    info = {"step": step, "epochs": cfg.train.epochs, "config": config_to_toml(cfg), "software": __version__,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    if init_from_sha256:  # provenance of a fine-tuned model
        info["init_from"] = {"path": cfg.train.init_from, "sha256": init_from_sha256}
    path = PhaseModel.for_run(cfg, unwrap(tr.generators), norm, geometry, info).save(run_dir / "model.pt")
    link_latest(run_dir)
    return path


def link_latest(run_dir: Path) -> None:
    """Point ``runs_dir/latest`` at ``run_dir`` (relative symlink, replaced atomically)."""
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, latest)
