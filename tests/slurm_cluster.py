"""Moved: phasegan_hpc.testbed.slurm (kept importable for the tests that still import it here)."""

from phasegan_hpc.testbed.slurm import *  # noqa: F403
from phasegan_hpc.testbed.slurm import start, stop_under  # noqa: F401
