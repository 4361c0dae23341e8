"""Options of the simulated IOC, shared by `bluesky-ptychonn ioc` and ``python -m
bluesky_ptychonn.ioc``: the simulated beamline, the stage's units and sign, the PV prefix."""

from __future__ import annotations

import argparse

DEFAULT_PREFIX = "PTY:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..sim.samples import SAMPLE_KINDS
    from .hardware import DETECTOR_PREFIXES, METRES_PER_UNIT

    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="PV prefix (default %(default)s): detectors at PREFIX{EIG,MPX}:, the stage at "
        "PREFIXSTAGE:{Y,X} and its trajectory at PREFIXSTAGE:Traj:",
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        default=sorted(DETECTOR_PREFIXES),
        choices=sorted(DETECTOR_PREFIXES),
        help="detectors to serve (default: all)",
    )
    parser.add_argument(
        "--interfaces",
        nargs="+",
        default=None,
        help="addresses to listen on (default: EPICS_CAS_INTF_ADDR_LIST, else 127.0.0.1 only)",
    )
    beamline = parser.add_argument_group("simulated beamline")
    beamline.add_argument("--sample", default="etched", choices=sorted(SAMPLE_KINDS))
    beamline.add_argument("--material", default="gold")
    beamline.add_argument("--energy", type=float, default=10_000.0, help="photon energy, eV")
    beamline.add_argument("--photons", type=float, default=1e6, help="photons per frame")
    beamline.add_argument(
        "--field-of-view", type=float, default=4e-6, help="side of the sample area, m"
    )
    beamline.add_argument("--seed", type=int, default=0, help="seed of sample and noise")
    stage = parser.add_argument_group("stage")
    stage.add_argument(
        "--motor-egu", default="um", choices=sorted(METRES_PER_UNIT), help="motor units"
    )
    stage.add_argument(
        "--motor-sign",
        type=int,
        default=1,
        choices=(1, -1),
        help="+1: motors report the beam position on the sample; -1: the sample's displacement",
    )
    stage.add_argument(
        "--velocity", type=float, default=200e-6, help="motor velocity, m/s (default 200 um/s)"
    )
    stage.add_argument(
        "--acceleration-time", type=float, default=2e-3, help="time added to each move, s"
    )


def hutch_factory(args: argparse.Namespace):
    """``f(database) -> SimHutch`` from parsed options (validated here, before serving)."""
    from ..sim import SimBeamlineConfig
    from .hardware import SimHutch

    if not args.field_of_view > 0:
        raise ValueError(
            f"--field-of-view must be a positive length in m, got {args.field_of_view}"
        )
    config = SimBeamlineConfig(
        detector=args.detectors[0],
        energy_ev=args.energy,
        photons=args.photons,
        sample=args.sample,
        material=args.material,
        field_of_view_m=(args.field_of_view, args.field_of_view),
        seed=args.seed,
    )
    config.validate()

    def make(database):
        return SimHutch(
            config,
            prefix=args.prefix,
            detectors=args.detectors,
            database=database,
            motor_egu=args.motor_egu,
            motor_sign=args.motor_sign,
            velocity_m_s=args.velocity,
            acceleration_s=args.acceleration_time,
        )

    return make


def run(args: argparse.Namespace) -> int:
    """Serve the simulated hutch over Channel Access until interrupted."""
    import signal

    from .server import serve

    factory = hutch_factory(args)

    def interrupt(signum, frame):  # SIGTERM ends the IOC as Ctrl-C does: files get closed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    serve(factory, interfaces=args.interfaces)
    return 0
