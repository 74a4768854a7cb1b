"""Subcommands of the netdiffusion CLI (see netdiffusion.cli).

Input problems (a missing dataset, a bad argument or config) end a command with one line on
stderr, ``netdiffusion COMMAND: error: ...``, and exit status 2; set ``NETDIFFUSION_DEBUG=1`` to get
the traceback instead. ``netdiffusion.cli.main`` checks output arguments before a command runs (a
``--output``/``--out`` folder that is a file, a ``--report`` file that is a folder: exit status 2)
and turns a file-system refusal during the work (no permission, no space) into one line naming the
path, exit status 1. Anything else (a bug) still raises."""

from __future__ import annotations

import os
import sys

# what the library raises for bad input: ValueError covers model.config.ConfigError
INPUT_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, ValueError)


def error(command: str, message: object) -> int:
    """One line on stderr, exit status 2: a usage / input error."""
    print(f"netdiffusion {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def class_names(text: str | None) -> list[str] | None:
    """``--classes a,b`` -> ``["a", "b"]``; not given -> ``None`` (all classes). Given but naming
    no class (``--classes ,``) is an error, not "all classes"."""
    if text is None or not text.strip():
        return None
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError(f"--classes {text!r}: no class names (leave it out for all classes)")
    return names


def debugging() -> bool:
    """``NETDIFFUSION_DEBUG`` is set: errors are raised with their traceback, not turned into a line."""
    return os.environ.get("NETDIFFUSION_DEBUG", "") not in ("", "0")


def input_error(command: str, exc: BaseException) -> int:
    """:func:`error` for a caught input exception; re-raised when ``NETDIFFUSION_DEBUG`` is set."""
    if debugging():
        raise exc
    return error(command, exc)
