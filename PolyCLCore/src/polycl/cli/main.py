"""Entry point of the ``polycl`` command.

Each subcommand is a module of this package exposing ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Modules import torch & co. inside ``func`` only, so
``polycl --help`` stays fast. A :class:`~polycl.errors.PolyCLError` prints as one line on stderr
and exits with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from polycl import __version__
from polycl.errors import PolyCLError

#: Subcommand modules, in the order ``polycl --help`` lists them.
COMMANDS = ["demo", "info", "segment", "refine", "evaluate", "models", "finetune", "pretrain", "propagate",
            "evaluate-interactive", "atlas"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polycl", description="PolyCL CT organ segmentation")
    parser.add_argument("--version", action="version", version=f"polycl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"polycl.cli.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolyCLError as exc:
        print(f"polycl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"polycl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
