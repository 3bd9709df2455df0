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


#: errno values that mean "the storage cannot take this write": no space, over quota, read-only.
STORAGE_ERRNOS = {28: "no space left on the device", 122: "disk quota exceeded", 30: "read-only file system"}


def storage_error(exc: BaseException, where: object = "") -> DataError | None:
    """A one-line :class:`DataError` for an ``OSError`` that means the storage is full or read-only (its
    ``errno``, or the errno HDF5 writes into its message), else None.

    Resuming is the caller's business; the message says to free space and rerun the same command.
    """
    if not isinstance(exc, OSError):
        return None
    text = str(exc)
    code = exc.errno if exc.errno in STORAGE_ERRNOS else next(
        (c for c in STORAGE_ERRNOS if f"errno = {c}," in text or f"[Errno {c}]" in text), None)
    if code is None:
        return None
    place = f" writing {where}" if where else ""
    return DataError(f"{STORAGE_ERRNOS[code]}{place}; free space (or choose another output) and rerun the same "
                     "command: finished work is kept")
