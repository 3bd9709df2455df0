"""Errors a user can cause.

Every exception here carries a message written for the person at the terminal: the CLI prints it as one
line and exits non-zero, without a traceback. Library users get ordinary exceptions: the physics errors
are also ``ValueError`` so notebook code that catches ``ValueError`` keeps working.
"""


class PhaseganError(Exception):
    """Base class: a problem with the user's input (path, dataset, config key, model file, resources)."""


class ConfigError(PhaseganError, ValueError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class PhysicsError(PhaseganError, ValueError):
    """Physical parameters that make no sense (non-positive pixel size, wavelength, too small a grid...)."""


class DataError(PhaseganError):
    """An input or output file cannot be used as asked (missing, wrong layout, would be overwritten)."""


class TrainingError(PhaseganError):
    """Training cannot go on as configured (diverged, or a checkpoint of another configuration)."""


class ResourceError(PhaseganError):
    """The cluster cannot provide what was asked for (workers, CPUs, GPUs)."""
