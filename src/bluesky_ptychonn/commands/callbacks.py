"""`bluesky-ptychonn callbacks`: a session's callbacks in their own process, fed over 0MQ.

The RunEngine's process publishes its documents with bluesky's ``Publisher`` (serialised
without pickle: `storage.spool.document_to_json`) to a ``bluesky-0MQ-proxy``; this command
subscribes to the proxy's output with a ``RemoteDispatcher`` and runs the session's stitcher
(on the endpoint's result stream), live view and Tiled writers (`session.build_callbacks`,
settings from the session's TOML file). Loopback addresses by default. SIGTERM or Ctrl-C hand
the last runs on and stop it.

    bluesky-0MQ-proxy --in-address tcp://127.0.0.1:5577 --out-address tcp://127.0.0.1:5578
    bluesky-ptychonn callbacks --zmq 127.0.0.1:5578 --results tcp://127.0.0.1:5561 \\
        --tiled http://127.0.0.1:8000             # the key from $TILED_API_KEY

and in the RunEngine's process::

    from bluesky.callbacks.zmq import Publisher
    from bluesky_ptychonn.storage.spool import document_to_json
    RE.subscribe(Publisher("127.0.0.1:5577", serializer=document_to_json))
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys


def run(args: argparse.Namespace) -> int:
    from bluesky.callbacks.zmq import RemoteDispatcher

    from ..session.callbacks import build_callbacks
    from ..session.config import load_session_config
    from ..storage.spool import document_from_json

    config = load_session_config(args.config)
    if args.keys:  # the stitcher's result subscriber takes its keys from here
        from ..stream.security import KEYS_ENV

        os.environ[KEYS_ENV] = args.keys
    if args.data_dir:
        from pathlib import Path

        config.data_dir = Path(args.data_dir)
    api_key = os.environ.get(config.tiled.api_key_env) if args.tiled else None
    graph = build_callbacks(
        config,
        results_address=args.results,
        tiled_uri=args.tiled,
        api_key=api_key,
        control_address=args.control,
    )
    if not graph.callbacks:
        raise ValueError("nothing to run: give --results (stitching) and/or --tiled")
    dispatcher = RemoteDispatcher(args.zmq, deserializer=document_from_json)
    for callback in graph.callbacks:
        dispatcher.subscribe(callback)

    def stop(*_: object) -> None:
        task = dispatcher._task  # the polling task; cancelling it ends start()
        if task is not None:
            dispatcher.loop.call_soon_threadsafe(task.cancel)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        json.dumps(
            {
                "zmq": args.zmq,
                "results": args.results,
                "tiled": args.tiled,
                "callbacks": [type(c).__name__ for c in graph.callbacks],
                "view": None if graph.view is None else graph.view.url,
            }
        )
    )
    # printed by the loop once start() has connected the dispatcher's socket
    dispatcher.loop.call_soon(lambda: print("bluesky-ptychonn callbacks: ready", flush=True))
    try:
        dispatcher.start()
    except asyncio.CancelledError:
        pass
    finally:
        graph.wait(args.drain_timeout_s)
        failures = graph.close(args.drain_timeout_s)
        for name, error in failures:
            print(f"closing {name} failed: {error}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "callbacks",
        help="run a session's callbacks (stitcher, live view, Tiled writers) behind 0MQ",
        description="Subscribe to a bluesky 0MQ proxy's output (RemoteDispatcher; documents "
        "as pickle-free JSON) and run the session's live stitcher, live view and Tiled writers "
        "on them, settings from the session's TOML file.",
    )
    parser.add_argument(
        "--zmq",
        default="127.0.0.1:5578",
        help="the proxy's output address, host:port (default 127.0.0.1:5578)",
    )
    parser.add_argument("--results", help="the inference endpoint's result address (tcp://...)")
    parser.add_argument(
        "--control",
        help="the endpoint's control address (tcp://...): the browser view ([view] enabled) "
        "shows its status",
    )
    parser.add_argument(
        "--keys",
        metavar="DIR",
        default=None,
        help="CURVE key folder (client.key_secret, server.key) of an endpoint that uses keys "
        "(default $BLUESKY_PTYCHONN_KEYS)",
    )
    parser.add_argument(
        "--tiled", help="Tiled server URI to write runs and mosaics to (key from $TILED_API_KEY)"
    )
    parser.add_argument(
        "--config", help="session TOML file (default $BLUESKY_PTYCHONN_BEAMLINE, else defaults)"
    )
    parser.add_argument("--data-dir", help="the session folder (spool, live picture)")
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=60.0,
        help="at exit, longest wait for the last runs' mosaics and Tiled deliveries (s)",
    )
    parser.set_defaults(func=run)
