"""The ``phasegan-hpc`` command line: a click group that parses options and calls one library function.

Errors a user can cause (:class:`phasegan_hpc.errors.PhaseganError`) are printed as one line on stderr
with exit status 1; no traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import click

from phasegan_hpc import __version__
from phasegan_hpc.bench import bench_command
from phasegan_hpc.cluster import interrupt_on_sigterm
from phasegan_hpc.deprecation import renamed_args
from phasegan_hpc.deprecation import warn as deprecated
from phasegan_hpc.errors import PhaseganError, storage_error
from phasegan_hpc.files import atomic_write_text, check_writable
from phasegan_hpc.supervise import run_supervised
from phasegan_hpc.ui import (
    console,
    dry_run_table,
    error_line,
    metrics_table,
    progress_bar,
    reconstruction_table,
    search_table,
    training_progress,
)

_err = console(stderr=True)


class _FiniteRange(click.FloatRange):
    """A float range that also refuses nan and inf (which compare false to every bound)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


#: Argument ranges, checked by click before anything runs (one line, exit 1: see :func:`main`).
COUNT = click.IntRange(min=1)  # sizes, frames, workers, epochs, steps
NATURAL = click.IntRange(min=0)  # seeds, optional counts where 0 means none
POSITIVE = _FiniteRange(min=0, min_open=True)  # lengths [m], energies, delta/beta, photons, CPUs
NONNEGATIVE = _FiniteRange(min=0)  # weights, GPUs


class _Command(click.Command):
    """A command whose old option names (``renamed``: {old: new}) keep working until
    :data:`phasegan_hpc.deprecation.REMOVED_IN`, each use with one warning line."""

    def __init__(self, *args, renamed: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.renamed = renamed or {}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, renamed_args(args, self.renamed))


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phasegan-hpc")
def cli() -> None:
    """PhaseGAN phase retrieval as an HPC batch system (Zhang et al., Opt. Express 2021)."""


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML config (default: built-in paper §3 values, as in configs/synthetic.toml).")
@click.option("--train", "n_train", type=COUNT, default=None, help="Objects and detector frames (each).")
@click.option("--val", "n_val", type=NATURAL, default=None, help="Paired validation frames.")
@click.option("--paired", "n_paired", type=COUNT, default=None,
              help="Paired training frames (paired.h5) for the paired / pix2pix baselines.")
@click.option("--size", type=COUNT, default=None, help="Frame side in pixels (>= 16).")
@click.option("--seed", type=NATURAL, default=None, help="Random seed.")
@click.option("--workers", type=COUNT, default=None, help="Processes (default: one per CPU core).")
@click.option("--movie", "n_movie", type=NATURAL, default=0, show_default=True,
              help="Also write movie.h5: an N-frame raw-detector archive (DXchange, uint16) for reconstruct.")
@click.option("--pulse-flats", type=NATURAL, default=0, show_default=True,
              help="The movie's flats: F flats, each with an illumination of its own (pulse to pulse, as at "
                   "European XFEL; for --flats-reduction pca), and /truth/flatfield; 0: 8 flats of the mean beam.")
@click.option("--overwrite", is_flag=True, help="Replace the data set in a non-empty OUT_DIR.")
def simulate(out_dir: Path, config_path: Path | None, n_train: int | None, n_val: int | None,
             n_paired: int | None, size: int | None, seed: int | None, workers: int | None, n_movie: int,
             pulse_flats: int, overwrite: bool) -> None:
    """Simulate the synthetic data set of paper §3 into OUT_DIR.

    Writes objects.h5 and intensities.h5 (unpaired: independent draws), validation.h5 (paired),
    with --paired N paired.h5 (a paired training set for the baselines), and with --movie N movie.h5.
    """
    from phasegan_hpc.config import load_config, with_overrides
    from phasegan_hpc.simulate import simulate_dataset

    cfg = with_overrides(load_config(config_path), {
        "simulate.n_train": n_train, "simulate.n_val": n_val, "simulate.n_paired": n_paired, "simulate.size": size,
        "simulate.seed": seed, "simulate.workers": workers,
    })
    with progress_bar("simulating frames") as progress:
        paths = simulate_dataset(out_dir, cfg, overwrite=overwrite, progress=progress)
    if n_movie > 0:
        from phasegan_hpc.simulate.movie import simulate_movie

        with progress_bar("simulating a movie") as progress:
            flats = dict(n_flats=pulse_flats, pulse_flats=True) if pulse_flats else {}
            paths["movie.h5"] = simulate_movie(out_dir / "movie.h5", cfg, n_movie, overwrite=True, progress=progress,
                                               **flats)
    _err.print(f"wrote {', '.join(str(p) for p in paths.values())}")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), required=True, help="The growing archive to write.")
@click.option("--rate", type=POSITIVE, required=True, help="Frames per second.")
@click.option("--delay", type=NONNEGATIVE, default=0.0, show_default=True,
              help="Seconds between the file being ready and the first frame (the trigger).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def acquire(source: Path, output: Path, rate: float, delay: float, overwrite: bool) -> None:
    """Replay the frames of the archive SOURCE into a new DXchange file at --rate frames/s in HDF5's SWMR mode,
    as a detector writes (for `reconstruct --follow`); the end marker is filled when all are written."""
    from phasegan_hpc.simulate.acquire import acquire as run

    with progress_bar("acquiring", unit="frames") as progress:
        path = run(source, output, rate, overwrite=overwrite, delay=delay, progress=progress)
    _err.print(f"wrote {path}")


@cli.command("simulate-foam")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=Path("configs/foam.toml"),
              show_default=True, help="TOML config; its [foam], [physics] and [phantom] sections set the experiment.")
@click.option("--photron-frames", type=COUNT, default=None, help="Photron (TIE camera) frames.")
@click.option("--shimadzu-frames", type=COUNT, default=None, help="Shimadzu (MHz camera) training frames.")
@click.option("--validation-frames", type=COUNT, default=None, help="Frames of the held-out movies.")
@click.option("--seed", type=NATURAL, default=None, help="Random seed.")
@click.option("--overwrite", is_flag=True, help="Replace the files in a non-empty OUT_DIR.")
def simulate_foam(out_dir: Path, config_path: Path, photron_frames: int | None, shimadzu_frames: int | None,
                  validation_frames: int | None, seed: int | None, overwrite: bool) -> None:
    """Simulate the metallic-foam experiment of paper §4 into OUT_DIR.

    Two raw-detector DXchange archives of rupturing foam cells (photron.h5: 2 um, 31 pulses; shimadzu.h5:
    3.2 um, one pulse), a held-out Shimadzu movie (shimadzu_movie.h5) and the truth of the held-out frames
    (shimadzu_validation.h5, photron_validation.h5) for `evaluate`.
    """
    from phasegan_hpc.config import load_config, with_overrides
    from phasegan_hpc.simulate.foam import simulate_foam as run

    cfg = with_overrides(load_config(config_path), {
        "foam.photron_frames": photron_frames, "foam.shimadzu_frames": shimadzu_frames,
        "foam.validation_frames": validation_frames, "foam.seed": seed})
    with progress_bar("simulating foam frames") as progress:
        paths = run(out_dir, cfg, overwrite=overwrite, progress=progress)
    _err.print(f"wrote {', '.join(str(p) for p in paths.values())}")


#: The one default backend of the pipeline commands (reconstruct, tie, correct): Ray, joining RAY_ADDRESS's
#: cluster or starting a local one.
BACKEND = click.option("--backend", type=click.Choice(["ray", "mpi", "local"]), default="ray", show_default=True,
                       help="ray: RAY_ADDRESS's cluster, else a local Ray; mpi: under mpirun; local: this process.")
#: Where every command that writes a machine-readable summary writes it.
JSON = click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
                    help="Also write the summary as JSON here.")


def _output_of(argument: Path | None, option: Path | None) -> Path | None:
    """tie's and correct's OUTPUT: ``--output``, or the deprecated positional OUTPUT (with a warning)."""
    if argument is not None:
        if option is not None and option != argument:
            raise PhaseganError(f"two outputs: {argument} and --output {option}; give only --output")
        deprecated("OUTPUT as an argument", "--output OUTPUT")
    return option or argument


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.argument("output_argument", metavar="[OUTPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Output HDF5 (default: ARCHIVE's stem + _tie.h5 next to it).")
@click.option("--dataset", default=None, help="Frames dataset (default: DXchange, NXtomo or the only >= 3-D one).")
@click.option("--energy-kev", type=POSITIVE, default=None, help="Photon energy [keV] (default: archive attribute).")
@click.option("--distance-m", type=POSITIVE, default=None, help="Propagation distance [m] (default: attribute).")
@click.option("--pixel-size-m", type=POSITIVE, default=None, help="Detector pixel size [m] (default: attribute).")
@click.option("--delta-beta", type=POSITIVE, default=None, help="delta/beta of the material (default: attributes).")
@click.option("--resample-pixel-size-m", type=POSITIVE, default=None,
              help="Interpolate to this pixel size first (paper §4: 1.6e-6 from 2e-6 Photron pixels).")
@click.option("--tv-weight", type=NONNEGATIVE, default=0.01, show_default=True,
              help="scikit-image denoise_tv_chambolle weight on transmission images (0: no denoising).")
@click.option("--tv-iterations", type=COUNT, default=100, show_default=True, help="TV iterations (paper: 100).")
@BACKEND
@click.option("--workers", type=COUNT, default=None, help="Ray actors (default: one per CPU).")
@click.option("--batch-size", type=COUNT, default=16, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a finished output.")
@JSON
def tie(archive: Path, output_argument: Path | None, output: Path | None, dataset: str | None,
        energy_kev: float | None, distance_m: float | None, pixel_size_m: float | None, delta_beta: float | None,
        resample_pixel_size_m: float | None, tv_weight: float, tv_iterations: int, backend: str,
        workers: int | None, batch_size: int, overwrite: bool, json_path: Path | None) -> None:
    """The object domain of paper §4 from a clean camera: TIE (Paganin) phase and attenuation of ARCHIVE.

    Flat/dark correction, resampling, total-variation denoising, Paganin; the output (e.g. --output
    data/foam/objects.h5) holds /phase and /attenuation with the physics in its attributes, ready for `train`.
    """
    from phasegan_hpc.reconstruct import Tie

    _pipeline(archive, json_path, output=_output_of(output_argument, output), dataset=dataset, backend=backend,
              workers=workers, batch_size=batch_size,
              method=Tie(resample_pixel_size_m, tv_weight, tv_iterations), overwrite=overwrite,
              physics={"energy_kev": energy_kev, "distance_m": distance_m, "pixel_size_m": pixel_size_m,
                       "delta_beta": delta_beta})


@cli.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.argument("output_argument", metavar="[OUTPUT]", required=False, type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Output HDF5 (default: ARCHIVE's stem + _flatfield.h5 next to it).")
@click.option("--dataset", default=None, help="Frames dataset (default: DXchange, NXtomo or the only >= 3-D one).")
@click.option("--pixel-size-m", type=POSITIVE, default=None, help="Pixel size [m] (default: archive attribute).")
@BACKEND
@click.option("--overwrite", is_flag=True, help="Replace a finished output.")
@JSON
def correct(archive: Path, output_argument: Path | None, output: Path | None, dataset: str | None,
            pixel_size_m: float | None, backend: str, overwrite: bool, json_path: Path | None) -> None:
    """Flat/dark-corrected frames of ARCHIVE as /intensity in the output (e.g. --output
    data/foam/intensities.h5)."""
    _pipeline(archive, json_path, output=_output_of(output_argument, output), dataset=dataset, backend=backend,
              method="flatfield", overwrite=overwrite, physics={"pixel_size_m": pixel_size_m})


def _pipeline(archive: Path, json_path: Path | None = None, dry_run: bool = False, **options) -> None:
    """Run a reconstruction-pipeline command (a ``ReconstructRequest`` of ``options``) with a progress bar and
    print its summary (and, with ``json_path``, write it as JSON); ``dry_run``: print the plan only."""
    _pipelines([(archive, ())], json_path, dry_run, **options)


def _pipelines(runs: list, json_path: Path | None = None, dry_run: bool = False, **options) -> None:
    """:func:`_pipeline` for several archives at once (``reconstruct A.h5 B.h5``: one pool of workers): a plan
    or summary table each; ``json_path`` holds one record, or a list of them for several archives."""
    from phasegan_hpc.reconstruct import reconstruct_all
    from phasegan_hpc.reconstruct.request import requests_for

    if json_path is not None:
        check_writable(json_path, "--json")
    requests = requests_for(runs, **{"preview": False, **options})
    records = []
    if dry_run:
        from phasegan_hpc.reconstruct.run import dry_run as plan_of

        for request in requests:
            plan = plan_of(request)
            console().print(dry_run_table(plan))
            records.append(plan.as_dict())
    else:
        with progress_bar(requests[0].method.name, unit="frames") as progress:
            summaries = reconstruct_all(requests, progress=progress)
        for summary in summaries:
            if summary is not None:  # None on MPI ranks other than 0
                console().print(reconstruction_table(summary))
                records.append(summary.as_dict())
    if json_path is not None and records:
        atomic_write_text(json_path, json.dumps(records[0] if len(records) == 1 else records, indent=2) + "\n")


@cli.command()
@click.argument("reconstruction", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Write the self-contained file here and leave RECONSTRUCTION as it is (default: in place, "
              "then its .shards directory is removed).")
def consolidate(reconstruction: Path, output: Path | None) -> None:
    """Rewrite the reconstruction RECONSTRUCTION (virtual datasets over its .shards directory) as one
    self-contained HDF5 file that moves, and opens in any reader, on its own."""
    from phasegan_hpc.reconstruct.consolidate import consolidate as run

    done = run(reconstruction, output)
    _err.print(f"wrote {done.output}: {done.datasets} datasets, {done.bytes / 2**20:.1f} MiB, self-contained"
               + (f"; removed {len(done.removed)} shard run directories" if done.removed else ""))


@cli.command("movie-figure", renamed={"--out": "--output"})
@click.argument("archive", type=click.Path(path_type=Path))
@click.argument("reconstruction", type=click.Path(path_type=Path))
@click.option("--truth", type=click.Path(path_type=Path), default=None, help="File with the true /phase.")
@click.option("--output", "out_gif", type=click.Path(path_type=Path), default=None,
              help="GIF to write (default: RECONSTRUCTION with .gif); a PNG strip goes next to it.")
@click.option("--dataset", default=None, help="Frames dataset of ARCHIVE.")
def movie_figure(archive: Path, reconstruction: Path, truth: Path | None, out_gif: Path | None,
                 dataset: str | None) -> None:
    """Side-by-side movie (paper Fig. 3, Visualization 1-3): frame, phase, attenuation, truth; GIF + PNG."""
    from phasegan_hpc.reconstruct.figures import movie_figure as make

    paths = make(archive, reconstruction, out_gif or reconstruction.with_suffix(".gif"), truth, dataset)
    _err.print(f"wrote {', '.join(str(p) for p in paths)}")


@cli.command(renamed={"--out": "--output"})
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--output", "out_png", type=click.Path(path_type=Path), default=None,
              help="PNG to write (default: DATA_DIR/preview.png).")
@click.option("-n", "n", type=COUNT, default=4, show_default=True, help="Frames to show.")
def preview(data_dir: Path, out_png: Path | None, n: int) -> None:
    """Write a figure of a few objects and their holograms from a simulated data set."""
    from phasegan_hpc.simulate.preview import preview_dataset

    path = preview_dataset(data_dir, out_png or data_dir / "preview.png", n=n)
    _err.print(f"wrote {path}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML config (default: built-in paper §3 values, as in configs/synthetic.toml).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Data directory from `phasegan-hpc simulate` (default: [train] data_dir).")
@click.option("--method", type=click.Choice(["phasegan", "cyclegan", "pix2pix", "paired"]), default=None,
              help="Training method (default: [train] method, phasegan).")
@click.option("--epochs", type=COUNT, default=None, help="Epochs (default: [train] epochs).")
@click.option("--name", default=None, help="Run name: results in STORAGE/NAME; the same name resumes.")
@click.option("--storage", "runs_dir", type=click.Path(path_type=Path), default=None,
              help="Storage path of runs (default: [train] runs_dir, ./runs); shared by all nodes.")
@click.option("--workers", type=COUNT, default=1, show_default=True, help="Data-parallel Ray Train workers.")
@click.option("--cpus-per-worker", type=POSITIVE, default=1.0, show_default=True)
@click.option("--gpus-per-worker", type=NONNEGATIVE, default=0.0, show_default=True, help="> 0: CUDA and NCCL.")
@click.option("--max-failures", type=NATURAL, default=3, show_default=True,
              help="Worker failures to recover from (restarting from the latest checkpoint).")
@click.option("--max-steps", type=COUNT, default=None, help="Stop after this many steps (resume later).")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="Fine-tune: start G_O and G_D (same architecture) from this model.pt, fresh optimisers.")
def train(config_path: Path | None, data_dir: Path | None, method: str | None, epochs: int | None,
          name: str | None, runs_dir: Path | None, workers: int, cpus_per_worker: float, gpus_per_worker: float,
          max_failures: int, max_steps: int | None, init_from: Path | None) -> None:
    """Train PhaseGAN (or a baseline) with Ray Train; rerunning the same --name resumes.

    Connects to RAY_ADDRESS when it is set, otherwise starts a local Ray for the run.
    """
    from phasegan_hpc.config import load_config, with_overrides
    from phasegan_hpc.train.fit import fit

    cfg = with_overrides(load_config(config_path), {
        "train.data_dir": None if data_dir is None else str(data_dir), "train.method": method,
        "train.epochs": epochs, "train.name": name, "train.max_steps": max_steps,
        "train.runs_dir": None if runs_dir is None else str(runs_dir),
        "train.init_from": None if init_from is None else str(init_from.expanduser().absolute()),
    })
    with training_progress(f"{cfg.train.method} {cfg.train.name}") as update:
        result = fit(cfg, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                     max_failures=max_failures, progress=update)
    done = result.get("model_path")
    _err.print(f"wrote {done}" if done else f"stopped at step {result.get('step')}; rerun to resume")


@cli.command()
@click.option("--trials", type=COUNT, default=64, show_default=True, help="Trials (training runs).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML config; its [tune] section sets the search (default: built-in values).")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Data directory (default: [train] data_dir); needs validation.h5 (held-out frames).")
@click.option("--name", default="search", show_default=True, help="Results in STORAGE/tune-NAME.")
@click.option("--storage", "runs_dir", type=click.Path(path_type=Path), default=None,
              help="Default: [train] runs_dir (./runs).")
@click.option("--gpus-per-trial", type=NONNEGATIVE, default=0.0, show_default=True)
@click.option("--cpus-per-trial", type=POSITIVE, default=1.0, show_default=True)
@click.option("--workers-per-trial", type=COUNT, default=1, show_default=True,
              help="> 1: each trial runs a Ray Train TorchTrainer with this many workers.")
@click.option("--max-epochs", type=COUNT, default=None, help="Epochs per trial (default: [tune] max_epochs).")
@click.option("--max-failures", type=NATURAL, default=2, show_default=True,
              help="Failures each trial recovers from (a lost trial restarts from its latest checkpoint).")
@click.option("--resume", is_flag=True, help="Continue an interrupted search without redoing finished trials.")
def tune(trials: int, config_path: Path | None, data_dir: Path | None, name: str, runs_dir: Path | None,
         gpus_per_trial: float, cpus_per_trial: float, workers_per_trial: int, max_epochs: int | None,
         max_failures: int, resume: bool) -> None:
    """Search the loss weights alpha_cyc / alpha_frc with Ray Tune (Optuna TPE + ASHA)."""
    from phasegan_hpc.config import load_config, with_overrides
    from phasegan_hpc.tune.search import run_search

    cfg = with_overrides(load_config(config_path), {
        "train.data_dir": None if data_dir is None else str(data_dir),
        "train.runs_dir": None if runs_dir is None else str(runs_dir)})
    result = run_search(cfg, trials=trials, name=name, workers_per_trial=workers_per_trial,
                        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, max_epochs=max_epochs,
                        max_failures=max_failures, resume=resume)
    console().print(search_table(result.rows, cfg.tune.metric, f"{result.directory}"))
    _err.print(f"wrote {', '.join(str(p) for p in result.files.values())}")


@cli.command()
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="model.pt to evaluate (omit to score baselines only).")
@click.option("--data", "validation", type=click.Path(path_type=Path), required=True,
              help="Paired validation file (validation.h5).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["paganin"]),
              help="Classical baseline to score too (repeatable).")
@click.option("--frames", type=NATURAL, default=0, help="Score only the first N frames (default: all).")
@JSON
def evaluate(model_path: Path | None, validation: Path, baselines: tuple[str, ...], frames: int,
             json_path: Path | None) -> None:
    """Table of L2, DSSIM and FRCM (mean ± std) for phase and attenuation (paper Table 1)."""
    from phasegan_hpc.evaluate import evaluate as run_evaluation

    if json_path is not None:
        check_writable(json_path, "--json")
    rows = run_evaluation(model_path, validation, tuple(baselines), max_frames=frames)
    console().print(metrics_table(rows, f"{validation}"))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps([r.as_dict() for r in rows], indent=2) + "\n")


@cli.command(renamed={"--report": "--json"})
@click.argument("archives", nargs=-1, required=True)
@click.option("--sequence", is_flag=True, default=False,
              help="ARCHIVES (files or a quoted pattern like 'RUN-S*.h5', in name order) are one movie: one output.")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="model.pt (default: $PHASEGAN_HPC_MODEL, else ./runs/latest/model.pt).")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Output HDF5 (default: ARCHIVE's stem + _phasegan.h5 next to it).")
@click.option("--dataset", default=None, help="Frames dataset (default: DXchange, NXtomo or the only >= 3-D one).")
@BACKEND
@click.option("--workers", type=COUNT, default=None, help="Ray actors (default: one per GPU, else per CPU slot).")
@click.option("--cpus-per-worker", type=POSITIVE, default=1.0, show_default=True, help="CPUs (torch threads) each.")
@click.option("--gpus-per-worker", type=NONNEGATIVE, default=None,
              help="GPUs per Ray actor (default: 0.5, two actors per GPU, where the cluster has GPUs; else 0).")
@click.option("--batch-size", type=COUNT, default=32, show_default=True, help="Frames per forward pass.")
@click.option("--method", type=click.Choice(["phasegan", "paganin"]), default="phasegan", show_default=True,
              help="paganin: the classical single-material baseline through the same pipeline.")
@click.option("--shard-frames", type=COUNT, default=None, help="Frames per shard (default: ~256 MiB of input).")
@click.option("--device", default=None, help="torch device of local/mpi workers (default: cuda if present).")
@click.option("--delta-beta", type=POSITIVE, default=None, help="Paganin: delta/beta (default: archive attributes).")
@click.option("--pixel-size-m", type=POSITIVE, default=None, help="Paganin: pixel size [m].")
@click.option("--distance-m", type=POSITIVE, default=None, help="Paganin: propagation distance [m].")
@click.option("--energy-kev", type=POSITIVE, default=None, help="Paganin: photon energy [keV].")
@click.option("--compile/--no-compile", "compile_model", default=None,
              help="torch.compile G_O and G_D (default: on with CUDA, off on CPUs).")
@click.option("--no-preview", is_flag=True, help="Do not write the PNG preview.")
@click.option("--overwrite", is_flag=True, help="Replace a finished output.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the run's summary (frames, seconds, frames/s, flagged frames) as JSON here "
              "(formerly --report).")
@click.option("--flag-by", type=click.Choice(["fresnel_residual", "consistency"]), default="fresnel_residual",
              show_default=True, help="The per-frame score that flags frames (both are written): the Fresnel "
              "residual (H alone, no network) or the intensity cycle through G_D.")
@click.option("--reader", type=click.Choice(["chunks", "h5py"]), default="chunks", show_default=True,
              help="chunks: decoded in Python, --cpus-per-worker threads (a corrupt chunk gives NaN frames); "
              "h5py: HDF5's own filters, one call at a time.")
@click.option("--score", default="all", show_default=True,
              help="Which frames get the per-frame scores: all, every:N or none (unscored frames are marked).")
@click.option("--correct-on", type=click.Choice(["auto", "host", "device"]), default="auto", show_default=True,
              help="Where the flat/dark correction runs: device (raw integer frames copied to the GPU), host, "
              "auto (device on CUDA).")
@click.option("--output-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Phase and attenuation as float32, or float16 (half the bytes; relative precision 2**-11).")
@click.option("--flats", "flats_file", default=None, help="Flats from another file: FILE[:DATASET].")
@click.option("--darks", "darks_file", default=None, help="Darks from another file: FILE[:DATASET].")
@click.option("--flats-reduction", type=click.Choice(["mean", "median", "pca"]), default="mean", show_default=True,
              help="How the flats and darks become one frame each (median: robust to zingers and bad flats), or "
              "pca: a flat per frame from eigen-flats (illumination that changes from pulse to pulse).")
@click.option("--eigenflats", type=COUNT, default=None,
              help="--flats-reduction pca: eigen-flats fitted to each frame (default: min(15, flats - 1)).")
@click.option("--zinger-threshold", type=POSITIVE, default=None,
              help="Replace pixels more than this above their 3 x 3 median (transmission units; counted per frame).")
@click.option("--mask", "mask_file", default=None,
              help="Bad pixels / module gaps (non-zero) to inpaint before retrieval: FILE[:DATASET].")
@click.option("--dry-run", is_flag=True, help="Print the plan (frames, shards, workers, output size, geometry and "
              "its sources) and write nothing (but --json).")
@click.option("--force-geometry", is_flag=True,
              help="PhaseGAN: reconstruct with the model's geometry even where the archive or a flag differs.")
@click.option("--roi", default=None, help="Reconstruct only pixel rows Y0..Y1-1 and columns X0..X1-1: Y0:Y1,X0:X1.")
@click.option("--frames", "frames", default=None,
              help="Reconstruct only rows START..STOP-1 (every STEP-th) of the first axis: START:STOP[:STEP].")
@click.option("--follow", is_flag=True, help="ARCHIVE is still being written (HDF5 SWMR): reconstruct its frames as "
              "they arrive, republish the output after each shard, finish when the acquisition ends.")
@click.option("--idle-timeout", type=POSITIVE, default=60.0, show_default=True,
              help="--follow: end after this many seconds without new frames (a writer that died).")
@click.option("--recorrect", is_flag=True, help="--follow: if flats or darks are written after the projections, "
              "reconstruct the finished archive again with them (otherwise they are not used).")
def reconstruct(archives: tuple[str, ...], sequence: bool, model_path: Path | None, output: Path | None,
                dataset: str | None, backend: str,
                workers: int | None, cpus_per_worker: float, gpus_per_worker: float | None, batch_size: int,
                method: str, shard_frames: int | None, device: str | None, delta_beta: float | None,
                pixel_size_m: float | None, distance_m: float | None, energy_kev: float | None,
                compile_model: bool | None, no_preview: bool, overwrite: bool, json_path: Path | None, flag_by: str,
                reader: str, score: str, correct_on: str, output_dtype: str, flats_file: str | None,
                darks_file: str | None, flats_reduction: str, eigenflats: int | None,
                zinger_threshold: float | None, mask_file: str | None, dry_run: bool,
                force_geometry: bool,
                roi: str | None, frames: str | None, follow: bool, idle_timeout: float, recorrect: bool) -> None:
    """Phase and attenuation of every frame of the HDF5 movie ARCHIVES (read-only), sharded over one pool of
    workers: one output per archive, or with --sequence one for all of them read as one movie (files, or a
    quoted glob pattern in name order).

    A rerun after a crash continues: finished shards are kept. Writes OUTPUT (virtual datasets over
    OUTPUT's .shards directory: move them together) and a PNG preview next to it.
    """
    from phasegan_hpc.reconstruct.request import archives_of

    _pipelines(archives_of(archives, sequence), json_path, dry_run, model=model_path, output=output, dataset=dataset,
               backend=backend, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
               batch_size=batch_size, method=method, overwrite=overwrite, shard_frames=shard_frames, device=device,
               preview=not no_preview, compile=compile_model, flag_by=flag_by, reader=reader, score=score,
               correct_on=correct_on, output_dtype=output_dtype, roi=roi, frames=frames,
               force_geometry=force_geometry, flats=flats_file, darks=darks_file, flats_reduction=flats_reduction,
               eigenflats=eigenflats, zinger_threshold=zinger_threshold, mask=mask_file, follow=follow,
               idle_timeout=idle_timeout, recorrect=recorrect,
               physics={"delta_beta": delta_beta, "pixel_size_m": pixel_size_m, "distance_m": distance_m,
                        "energy_kev": energy_kev})

class _Benchmark(_Command):
    """A ``bench`` subcommand. An option that only other benchmarks take is a user error (one line, exit 1:
    "bench propagator takes no --frames"); an option no benchmark takes stays click's usage error (exit 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            group = ctx.parent.command if ctx.parent is not None else None
            others = {opt for cmd in getattr(group, "commands", {}).values() for p in cmd.params
                      for opt in (*p.opts, *p.secondary_opts)}
            if exc.option_name in others:
                raise PhaseganError(f"bench {self.name} takes no {exc.option_name}") from None
            raise


class _Benchmarks(click.Group):
    """``bench``: its subcommands listed in the order they are declared (cheap to costly)."""

    command_class = _Benchmark

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _comma_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value.split(","))


def _int_option(name: str, default: int | None, help: str) -> Callable:
    """``--NAME N``, shown with this benchmark's default (None: the benchmark chooses, as ``help`` says)."""
    return click.option(name, type=COUNT, default=default, show_default=default is not None,
                        help=help)


def _size(default: int) -> Callable:
    return _int_option("--size", default, "Image side [px].")


def _batch(default: int | None, help: str = "Batch size.") -> Callable:
    return _int_option("--batch", default, help)


def _repeats(default: int) -> Callable:
    return _int_option("--repeats", default, "Timed repeats (the median is reported).")


def _filters(default: int) -> Callable:
    return _int_option("--filters", default, "Base filters of G_O.")


def _frames(default: int, help: str) -> Callable:
    return _int_option("--frames", default, help)


def _list_option(name: str, choices: str, default: str) -> Callable:
    """``--NAME a,b``: a comma-separated subset of ``choices`` (not given: ``default``)."""
    return click.option(name, default=None, callback=_comma_list,
                        help=f"Comma-separated subset of {choices} (default: {default}).")


def _options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, listed in ``--help`` in the order given."""
    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn
    return apply


def _timed(size: int, batch: int | None, repeats: int, batch_help: str = "Batch size.") -> Callable:
    """--size, --batch and --repeats of a timing benchmark, with its defaults."""
    return _options(_size(size), _batch(batch, batch_help), _repeats(repeats))


_bench_options = _options(  # what every benchmark takes
    click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda."),
    click.option("--json", "json_path", type=click.Path(), default=None,
                 help="Also write the whole record (machine, versions, sizes, medians, spreads) here."))


@cli.group(cls=_Benchmarks)
def bench() -> None:
    """Benchmarks: each prints a table and (with --json) writes the whole record.

    Ratios are against a baseline timed in the same run; figures and commands: docs/benchmarks.md.
    `phasegan-hpc bench NAME --help` lists NAME's options.
    """


@bench.command("frc")
@_timed(256, 16, 15)
@_bench_options
def bench_frc(**options) -> None:
    """The vectorised FRC loss (forward + backward) vs a per-ring loop."""
    bench_command("frc", **options)


@bench.command("propagator")
@_timed(256, 16, 10)
@_bench_options
def bench_propagator(**options) -> None:
    """|H psi|^2 in torch vs float64 numpy (speed and agreement)."""
    bench_command("propagator", **options)


@bench.command("read")
@_timed(256, 32, 5, "Frames per read.")
@_frames(256, "Frames in the archive.")
@_int_option("--chunk-frames", 8, "Frames per HDF5 chunk.")
@_list_option("--codecs", "bitshuffle-lz4, blosc-lz4, zstd, gzip, none", "all")
@_bench_options
def bench_read(**options) -> None:
    """Archive reading: chunks decoded in Python vs h5py, per filter, and the shard digest's cost."""
    bench_command("read", **options)


@bench.command("pipeline")
@_timed(128, 64, 3)
@_frames(2048, "Frames in the archive.")
@_int_option("--threads", None, "Decoding threads (default: torch's threads).")
@_bench_options
def bench_pipeline(**options) -> None:
    """The I/O pipeline alone (`correct`) vs a bare h5py read loop and vs the earlier reader and writer."""
    bench_command("pipeline", **options)


@bench.command("flatfield")
@_size(64)
@_frames(64, "Frames of each simulated archive.")
@_int_option("--flats", 32, "Flats of each archive (each its own pulse).")
@_repeats(5)
@click.option("--strength", type=POSITIVE, default=1.0, show_default=True,
              help="[flatfield] strength of the pulse-to-pulse variation (1: the paper's).")
@_bench_options
def bench_flatfield(**options) -> None:
    """Residual flat-field error of --flats-reduction pca (eigen-flats x fit binning) vs mean and median flats
    on archives with pulse-to-pulse illumination, and the correction's speed."""
    bench_command("flatfield", **options)


@bench.command("step")
@_timed(256, 16, 3)
@_filters(32)
@_list_option("--methods", "paired, pix2pix, cyclegan, phasegan", "paired,phasegan")
@_list_option("--variants", "fp32, bf16_cl, compile", "fp32")
@click.option("--foam", is_flag=True, default=False, help="Paper §4's cross-resolution networks: objects twice --size.")
@_bench_options
def bench_step(**options) -> None:
    """One training step per method (full-size networks), each method's ratio to the first, and the PhaseGAN
    step's samples/s per variant (fp32, bf16 + channels_last, torch.compile) against the paper's ~28 on a
    V100."""
    bench_command("step", **options)


@bench.command("train")
@_timed(256, 4, 10, "Batch size per worker.")
@_bench_options
def bench_train(**options) -> None:
    """Samples/s in-process vs Ray Train with 1 and 2 workers (tiny networks, at 64 px and --size px; CPU)."""
    bench_command("train", **options)


@bench.command("reconstruct")
@_timed(128, 64, 3)
@_frames(4096, "Frames of the smaller archive (the larger has 4x as many).")
@_filters(4)
@_int_option("--threads", None, "torch threads, split over the workers (default: all cores).")
@_int_option("--workers", 1, "Ray actors / MPI ranks sharing the device.")
@click.option("--score", default="all", show_default=True, help="reconstruct --score of the end-to-end runs.")
@_list_option("--backends", "local, ray, mpi", "all")
@click.option("--rss/--no-rss", default=True, show_default=True, help="Measure peak RSS at 1x and 4x frames.")
@click.option("--compile/--no-compile", "compile", default=None,
              help="torch.compile G_O and G_D (default: as `reconstruct`, on for CUDA).")
@click.option("--detector/--no-detector", default=True, show_default=True,
              help="The model carries G_D, scored by G_D|H G_O(I)|^2 vs I.")
@_bench_options
def bench_reconstruct(**options) -> None:
    """End-to-end frames/s of each backend vs the model alone, and peak RSS for two archive sizes 4x apart."""
    bench_command("reconstruct", **options)


@bench.command("live")
@_size(64)
@_frames(2048, "Frames the writer writes.")
@_batch(16)
@_int_option("--shard-frames", 64, "Frames per shard (the live default).")
@_filters(4)
@_repeats(1)
@_bench_options
def bench_live(**options) -> None:
    """reconstruct --follow beside a writer at 0.5-1.25x the batch rate: latency p50/p99 and the highest rate
    it keeps up with (p99 <= 2 shard durations), against the batch reconstruct rate of the same archive."""
    bench_command("live", **options)


@bench.command("inference")
@_timed(128, None, 5, "Batch size (default: each of 1, 4, 16, 64, 256).")
@_filters(32)
@_list_option("--variants", "fp32, channels_last, bf16, bf16_cl, compile, cuda_graph", "all")
@_bench_options
def bench_inference(**options) -> None:
    """G_O frames/s at 128 -> 128 and 128 -> 256 (--size) by batch size and variant (fp32, channels_last,
    bf16, torch.compile, CUDA graphs on GPUs)."""
    bench_command("inference", **options)


@bench.command("table1", renamed={"--out": "--output"})
@_size(64)
@_int_option("--train", 2000, "Training frames per set (unpaired objects and frames, and paired frames).")
@_int_option("--epochs", 10, "Epochs per training run.")
@_int_option("--val", 200, "Validation frames.")
@_batch(8)
@_filters(4)
@click.option("--output", "out_dir", type=click.Path(), default="table1", show_default=True, help="Output directory.")
@_int_option("--seed", 1, "Seed of the data set.")
@_int_option("--seeds", 1, "Training runs per method (seeds 0..N-1).")
@click.option("--config", type=click.Path(), default=None,
              help="Base config (default: configs/tiny.toml), e.g. with [flatfield] enabled = false.")
@_list_option("--methods", "paired, pix2pix, cyclegan, phasegan", "all")
@click.option("--weights", default="paper", show_default=True,
              help="CycleGAN's loss weights: 'paper' (20, 4, x2.5) or 'equal' (PhaseGAN's).")
@click.option("--photons", type=POSITIVE, default=None, help="Photons per detector pixel (default: the paper's ~1007).")
@click.option("--set", "settings", multiple=True, help="[METHOD:]section.key=value config override (repeatable), "
              "e.g. model.output=phase_attenuation or phasegan:loss.object_cycle_weight=1.5.")
@_bench_options
def bench_table1(**options) -> None:
    """Paper Table 1: paired, pix2pix, CycleGAN, PhaseGAN and Paganin on the same data, each method trained
    --seeds times (mean ± std between seeds). Resumable: a rerun trains only the (method, seed) cells not yet
    scored."""
    bench_command("table1", **options)


@bench.command("check")
@_size(64)
@_batch(16)
@_frames(64, "Frames of the archive.")
@_filters(8)
@_bench_options
def bench_check(**options) -> None:
    """The device fast path (propagator, retriever, reconstruct, training steps) against CPU references;
    exits 1 when an error is over its tolerance."""
    bench_command("check", **options)


@bench.command("plan")
@_size(256)
@_int_option("--chunk-frames", 16, "Frames per HDF5 chunk of the archives.")
@_int_option("--slice-frames", 64, "Frames of the slice reconstructed (--frames, Paganin).")
@_repeats(3)
@_list_option("--sizes", "declared sizes in GB", "1,10,100,1000")
@_bench_options
def bench_plan(**options) -> None:
    """Planning time, dry run (wall, peak RSS), plan.json bytes and shards of archives declaring 1 GB to 1 TB
    (only a slice written), and the partial reconstruction of that slice: all O(shards) or flat."""
    bench_command("plan", **options)


@bench.command("nodes")
@_frames(4096, "Frames of the archive.")
@_size(128)
@_batch(32)
@_int_option("--shard-frames", 256, "Frames per shard.")
@_repeats(3)
@_bench_options
def bench_nodes(**options) -> None:
    """reconstruct --backend ray on 1 node (2 CPUs) vs 2 nodes (1 + 1 CPUs) of the two-host namespace cluster
    (root): frames/s and the per-node overhead."""
    bench_command("nodes", **options)


@cli.group()
def testbed() -> None:
    """A real two-host cluster on this machine, to try multi-node runs by hand (root): network + UTS
    namespaces node1 and node2 on a veth pair, with Slurm and Ray on them (phasegan_hpc.testbed)."""


@testbed.command("up")
@click.option("--slurm/--no-slurm", default=True, show_default=True, help="munged, slurmctld and a slurmd per host.")
@click.option("--ray/--no-ray", default=True, show_default=True, help="A Ray head on node1, a worker on node2.")
def testbed_up(slurm: bool, ray: bool) -> None:
    """Bring the cluster up and print how to use it."""
    from phasegan_hpc.testbed import netns

    console().print("\n".join(netns.bring_up(slurm=slurm, ray=ray)))


@testbed.command("down")
def testbed_down() -> None:
    """Stop everything the cluster runs and remove its namespaces and files."""
    from phasegan_hpc.testbed import netns

    netns.down()
    console().print("two-host cluster removed")


def main() -> None:
    """Console-script entry point: the command under a supervisor (``phasegan_hpc.supervise``), so that even
    a crash in C code is one line and exit status 1."""
    run_supervised(_main, lambda message: _err.print(error_line(message)))


def _main() -> None:
    """Run the CLI, turning user errors into one line and exit status 1."""
    interrupt_on_sigterm()  # SIGTERM (Slurm preemption, scancel) unwinds like Ctrl-C: nothing half-written
    try:
        cli(standalone_mode=False)
    except PhaseganError as exc:
        _err.print(error_line(str(exc)))
        sys.exit(1)
    except OSError as exc:  # a full or read-only disk is the user's to fix, anywhere it happens
        err = storage_error(exc)
        if err is None:
            raise
        _err.print(error_line(str(err)))
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _err.print("interrupted; rerun the same command to resume")
        sys.exit(130)
    except click.ClickException as exc:  # a bad argument: one line too, not click's usage block
        _err.print(error_line(exc.format_message()))
        sys.exit(1)
