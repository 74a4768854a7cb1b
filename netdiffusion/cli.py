"""The ``netdiffusion`` command line: one subcommand per stage.

Each subcommand lives in ``netdiffusion/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy libraries
(torch, mlflow, kfp) inside ``run`` so that ``netdiffusion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
