"""phasegan-hpc: PhaseGAN phase retrieval as a distributed HPC batch system.

Importing the package has no side effects: no Ray, no logging set-up, no files touched.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("phasegan-hpc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
