"""`bluesky-ptychonn pva-ingest --pv NAME`: feed an areaDetector PVA plugin's frames to an
inference endpoint.

Subscribes to the NTNDArray PV (`stream.pva.PvaFrameSource`) and sends its frames, in batches,
to the endpoint's frame address with acknowledgements (`stream.streamer.FrameStreamer`).
Prints one JSON status line every ``--status-every`` seconds and a final one; runs until
Ctrl-C / SIGTERM, ``--max-frames`` or ``--duration``. Needs the ``pva`` extra (p4p).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time


def _conf(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("EPICS_PVA"):
            raise ValueError(f"--conf takes EPICS_PVA_*=VALUE settings, got {pair!r}")
        conf[key] = value
    return conf


def run(args: argparse.Namespace) -> int:
    try:
        import p4p  # noqa: F401
    except ImportError:
        raise ValueError("pva-ingest needs p4p: pip install 'bluesky-ptychonn[pva]'") from None
    from ..stream.pva import PvaFrameSource
    from ..stream.streamer import FrameStreamer

    conf = _conf(args.conf)
    streamer = FrameStreamer(args.frames, args.results, run_uid=args.run_uid, keys=args.keys)
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    source = PvaFrameSource(
        args.pv,
        streamer,
        position_attributes=args.position_attributes,
        position_units_m=args.position_units_m,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        conf=conf,
    )

    def report(final: bool = False) -> dict:
        status = {
            **source.stats().as_dict(),
            "frames_answered": streamer.frames_answered,
            "frames_refused_by_endpoint": streamer.frames_rejected,
            "pending": streamer.pending,
            "final": final,
        }
        print(json.dumps(status), flush=True)
        return status

    deadline = time.monotonic() + args.duration if args.duration else None
    next_report = time.monotonic() + args.status_every
    try:
        while not stop.wait(0.05):
            now = time.monotonic()
            if args.max_frames and source.stats().frames_forwarded >= args.max_frames:
                break
            if deadline is not None and now >= deadline:
                break
            if now >= next_report:
                report()
                next_report = now + args.status_every
    except KeyboardInterrupt:
        pass
    finally:
        source.stop()
        streamer.flush(args.flush_timeout)
        status = report(final=True)
        streamer.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0 if status["pending"] == 0 else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pva-ingest",
        help="send an areaDetector PVA plugin's frames (NTNDArray over pvAccess) to an endpoint",
        description="Subscribe to an NTNDArray PV (areaDetector's PVA plugin, e.g. "
        "13SIM1:Pva1:Image) and send its frames to an inference endpoint. The pvAccess client "
        "reads EPICS_PVA_ADDR_LIST / EPICS_PVA_AUTO_ADDR_LIST from the environment; --conf "
        "overrides them. Needs the pva extra (p4p).",
    )
    parser.add_argument("--pv", required=True, help="NTNDArray PV name")
    parser.add_argument(
        "--frames", default="tcp://127.0.0.1:5560", help="endpoint frame address (PULL)"
    )
    parser.add_argument(
        "--results", default="tcp://127.0.0.1:5561", help="endpoint result address (PUB)"
    )
    parser.add_argument("--run-uid", default="", help="label of the stream on the wire")
    parser.add_argument(
        "--keys",
        metavar="DIR",
        default=None,
        help="CURVE key folder (client.key_secret, server.key) of an endpoint that uses keys "
        "(default $BLUESKY_PTYCHONN_KEYS)",
    )
    parser.add_argument(
        "--position-attributes",
        nargs=2,
        default=["SampleY", "SampleX"],
        metavar=("Y", "X"),
        help="NDAttributes holding the beam position (default SampleY SampleX)",
    )
    parser.add_argument(
        "--position-units-m",
        type=float,
        default=1.0,
        help="metres per unit of the position attributes (1e-3 for mm; negative when the "
        "motors report the sample's displacement; default 1)",
    )
    parser.add_argument("--queue-size", type=int, default=64, help="pvAccess monitor queue")
    parser.add_argument("--max-batch", type=int, default=64, help="most frames per message")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pvAccess client setting, e.g. EPICS_PVA_ADDR_LIST=10.0.0.5 (repeatable)",
    )
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after seconds")
    parser.add_argument("--status-every", type=float, default=5.0, help="seconds between lines")
    parser.add_argument(
        "--flush-timeout", type=float, default=30.0, help="wait for answers at the end, s"
    )
    parser.set_defaults(func=run)
