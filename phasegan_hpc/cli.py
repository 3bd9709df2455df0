"""The ``phasegan-hpc`` command line: a click group that parses options and calls one library function.

Errors a user can cause (:class:`phasegan_hpc.errors.PhaseganError`) are printed as one line on stderr
with exit status 1; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from phasegan_hpc import __version__
from phasegan_hpc.errors import PhaseganError

_err = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phasegan-hpc")
def cli() -> None:
    """PhaseGAN phase retrieval as an HPC batch system (Zhang et al., Opt. Express 2021)."""


@cli.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="TOML config (default: built-in paper §3 values, as in configs/synthetic.toml).")
@click.option("--train", "n_train", type=int, default=None, help="Objects and detector frames (each).")
@click.option("--val", "n_val", type=int, default=None, help="Paired validation frames.")
@click.option("--size", type=int, default=None, help="Frame side in pixels (>= 16).")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--workers", type=int, default=None, help="Processes (default: one per CPU core).")
@click.option("--overwrite", is_flag=True, help="Replace the data set in a non-empty OUT_DIR.")
def simulate(out_dir: Path, config_path: Path | None, n_train: int | None, n_val: int | None,
             size: int | None, seed: int | None, workers: int | None, overwrite: bool) -> None:
    """Simulate the synthetic data set of paper §3 into OUT_DIR.

    Writes objects.h5 and intensities.h5 (unpaired: independent draws) and validation.h5 (paired).
    """
    from phasegan_hpc.config import load_config, with_overrides
    from phasegan_hpc.simulate import simulate_dataset
    from phasegan_hpc.ui import progress_bar

    cfg = with_overrides(load_config(config_path), {
        "simulate.n_train": n_train, "simulate.n_val": n_val, "simulate.size": size,
        "simulate.seed": seed, "simulate.workers": workers,
    })
    total = 2 * cfg.simulate.n_train + cfg.simulate.n_val
    with progress_bar(total, f"simulating {total} frames") as advance:
        paths = simulate_dataset(out_dir, cfg, overwrite=overwrite, progress=advance)
    _err.print(f"wrote {', '.join(str(p) for p in paths.values())}")


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_png", type=click.Path(path_type=Path), default=None,
              help="PNG to write (default: DATA_DIR/preview.png).")
@click.option("-n", "n", type=int, default=4, show_default=True, help="Frames to show.")
def preview(data_dir: Path, out_png: Path | None, n: int) -> None:
    """Write a figure of a few objects and their holograms from a simulated data set."""
    from phasegan_hpc.figures import preview_dataset

    path = preview_dataset(data_dir, out_png or data_dir / "preview.png", n=n)
    _err.print(f"wrote {path}")


def main() -> None:
    """Console-script entry point: run the CLI, turning user errors into one line and exit status 1."""
    try:
        cli(standalone_mode=False)
    except PhaseganError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except click.exceptions.Abort:
        _err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
