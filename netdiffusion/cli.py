"""The ``netdiffusion`` command line: one subcommand per stage.

Each subcommand lives in ``netdiffusion/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy libraries
(torch, mlflow, kfp) inside ``run`` so that ``netdiffusion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# subcommand -> module under netdiffusion.commands, in the order --help lists them
SUBCOMMANDS: dict[str, str] = {
    "encode": "encode",
    "decode": "decode",
    "export-nprint": "export_nprint",
    "import-nprint": "import_nprint",
    "train": "train",
    "generate": "generate",
    "repair": "repair",
    "validate": "validate",
    "evaluate": "evaluate",
    "promote": "promote",
    "run": "run",
    "submit": "submit",
    "schedule": "schedule",
    "serve": "serve",
}


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in ``--help``, except where the help already says what the default is, or where
    it is ``None`` ("(default: None)" says nothing: the help text explains what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and ("(default:" in action.help or action.default is None):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdiffusion",
        description="Synthetic, labelled, protocol-valid network traffic from real captures.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"netdiffusion.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"netdiffusion.commands.{module_name}":
                raise
            continue  # stage not built yet
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__ or module.HELP,
                           formatter_class=DefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


# argument destinations that name a folder the command writes, and a file it writes; the commands
# that write them here (submit, schedule and promote only read --out, often in a read-only pod)
OUTPUT_FOLDERS = ("output", "out")
OUTPUT_FILES = ("report",)
WRITES_OUTPUT = ("encode", "decode", "export-nprint", "import-nprint", "train", "generate", "repair",
                 "validate", "evaluate", "run")


def output_path_problem(args: argparse.Namespace) -> str | None:
    """Why an output argument cannot be used, before any work is done: a folder argument that is an
    existing file (or below one), a file argument that is an existing folder. Remote URIs are left
    to the command; permissions and full disks to the OSError line of :func:`main`."""
    if getattr(args, "command", None) not in WRITES_OUTPUT:
        return None
    for dests, want_folder in ((OUTPUT_FOLDERS, True), (OUTPUT_FILES, False)):
        for dest in dests:
            value = getattr(args, dest, None)
            if not isinstance(value, str) or not value or "://" in value:
                continue
            path = os.path.abspath(value)
            flag = "--" + dest
            if os.path.exists(path):
                if want_folder and not os.path.isdir(path):
                    return f"{flag} {value}: is a file, not a folder"
                if not want_folder and os.path.isdir(path):
                    return f"{flag} {value}: is a folder, not a file"
            existing = path if want_folder and os.path.isdir(path) else os.path.dirname(path)
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            if not os.path.isdir(existing):
                return f"{flag} {value}: {existing} is a file, not a folder"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from netdiffusion.commands import debugging, error

    problem = output_path_problem(args)
    if problem:
        return error(args.command, problem)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # the file system refused (no space left, a permission, a path that changed meanwhile): one
        # line naming the path and the reason, not a traceback (-v logs it, NETDIFFUSION_DEBUG=1 raises)
        if debugging():
            raise
        logging.getLogger("netdiffusion").debug("%s failed", args.command, exc_info=True)
        paths = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        print(f"netdiffusion {args.command}: error: {paths + ': ' if paths else ''}{reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
