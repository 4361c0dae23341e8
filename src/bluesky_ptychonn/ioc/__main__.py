"""``python -m bluesky_ptychonn.ioc``: the simulated IOC (options of `bluesky-ptychonn ioc`)."""

import argparse
import logging
import sys

from .options import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bluesky_ptychonn.ioc",
        description="Serve a simulated Eiger, Medipix3 and sample stage over Channel Access.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return run(args)
    except ValueError as error:
        print(f"bluesky-ptychonn ioc: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
