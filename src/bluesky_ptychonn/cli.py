"""`bluesky-ptychonn` command line: one sub-command per module in `bluesky_ptychonn.commands`.

Each command module defines ``register(subparsers)`` that adds its parser and sets
``func(args) -> int`` as the parser default. Commands import their heavy dependencies
inside ``func`` so that ``bluesky-ptychonn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__

COMMAND_MODULES = (
    "simulate",
    "demo",
    "reconstruct",
    "infer",
    "study",
    "train",
    "export",
    "serve",
    "keys",
    "pva_ingest",
    "ioc",
    "tiled",
    "callbacks",
    "view",
    "bench",
    "continual",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bluesky-ptychonn",
        description="Real-time AI ptychographic imaging for Bluesky beamlines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"{__package__}.commands.{name}":
                continue  # a command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # only `bench` passes options on to its benchmark (`bench adaptive --sample ...`)
        if args.command != "bench":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.extra = " ".join([args.extra, *unknown]).strip()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        # bad input: one clear line, no traceback; everything else propagates
        print(f"bluesky-ptychonn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
