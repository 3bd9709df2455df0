"""What many test files share: the checkout, the console script and ``mpiexec`` of the environment under test.

Imported as ``from tools import EXE, REPO`` (pytest puts ``tests/`` on the import path, as for ``faults``).
"""

import shutil
import sys
from pathlib import Path

#: The repository root (configs/, slurm/, README.md).
REPO = Path(__file__).resolve().parents[1]
#: The venv's bin directory: the console script and the mpich wheel's ``mpiexec`` live there.
BIN = Path(sys.executable).parent
#: The real ``phasegan-hpc`` console script the CLI tests run.
EXE = shutil.which("phasegan-hpc", path=str(BIN))
#: ``mpiexec`` of the venv (PyPI's mpich), else the system's.
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
