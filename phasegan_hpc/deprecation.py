"""Old names that keep working, with a warning, until they are removed (README "Command line").

One home for what was renamed when the command line got one language (issue 17): option names
(``--report`` became ``--json``, ``--out`` became ``--output``), positional outputs (``tie ARCHIVE OUTPUT``
became ``--output``). Each use of an old name prints one line on stderr saying what to use instead, and is
otherwise the same as the new name. The Slurm scripts' environment variables got one prefix, ``PHASEGAN_HPC_``,
the same way (``slurm/phasegan-env.sh``: the shell's side of this module).
"""

from __future__ import annotations

import sys

#: The version in which the old names stop working.
REMOVED_IN = "0.3.0"


def warn(old: str, new: str) -> None:
    """One line on stderr: ``old`` is deprecated, use ``new``."""
    print(f"warning: {old} is deprecated and will be removed in {REMOVED_IN}: use {new}", file=sys.stderr)


def renamed_args(args: list[str], renamed: dict[str, str]) -> list[str]:
    """``args`` with each old option name of ``renamed`` ({old: new}) replaced by its new one (also in the
    ``--old=value`` form), warning once per name used; what follows ``--`` is left alone."""
    out: list[str] = []
    warned: set[str] = set()
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if name in renamed:
            if name not in warned:
                warn(name, renamed[name])
                warned.add(name)
            arg = renamed[name] + eq + value
        out.append(arg)
    return out
