"""`bluesky-ptychonn ioc`: serve the simulated Eiger, Medipix3 and sample stage over Channel Access.

The PVs are those of ADEiger / ADMerlin (cam, ROI, image and HDF5 plugins), two motor records
and a ``trajectoryScan`` controller (see `bluesky_ptychonn.ioc.hardware`), with frames from the
simulated beamline at the motors' positions. Listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..ioc.options import run as serve

    return serve(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..ioc.options import add_arguments

    parser = subparsers.add_parser(
        "ioc",
        help="serve a simulated Eiger, Medipix3 and sample stage over Channel Access",
        description="Serve a simulated Eiger, Medipix3 and sample stage over Channel Access, "
        "with frames from the simulated beamline at the motors' positions. Clients on this "
        "machine need EPICS_CA_ADDR_LIST=127.0.0.1 and "
        "EPICS_CA_AUTO_ADDR_LIST=NO; EPICS_CA_SERVER_PORT selects the port.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
