"""`bluesky-ptychonn view`: the live view in a browser, for a RunEngine in another process.

Subscribes to a bluesky 0MQ proxy's output (``RemoteDispatcher``; documents as pickle-free
JSON, `storage.spool.document_from_json`), stitches the endpoint's results with its own
`LiveStitcher` (settings from the session's TOML file) and serves the page (`view.LiveView`)
on loopback, a free port unless ``--port``; the address is printed. Off loopback a read-only
token is required (``--token-env``, default ``$BLUESKY_PTYCHONN_VIEW_TOKEN``). A session
serves the same page itself with ``[view] enabled = true``.

    bluesky-ptychonn view --zmq 127.0.0.1:5578 --results tcp://127.0.0.1:5561 \\
        --control tcp://127.0.0.1:5562 [--port 8765] [--host 0.0.0.0 --token-env VAR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal


def run(args: argparse.Namespace) -> int:
    from bluesky.callbacks.zmq import RemoteDispatcher

    from ..callbacks.live_stitch import LiveStitcher
    from ..session.config import load_session_config
    from ..storage.spool import document_from_json
    from ..view.live import LiveView

    config = load_session_config(args.config)
    token = os.environ.get(args.token_env) or None
    stitch = config.stitcher
    stitcher = LiveStitcher(
        args.results,
        settle_timeout_s=stitch.settle_timeout_s,
        synchronise=stitch.synchronise,
        resync_every=stitch.resync_every,
        subpixel=stitch.subpixel,
        align_phase=stitch.align_phase,
    )
    try:
        view = LiveView(
            stitcher,
            results_addresses=args.results,
            control_address=args.control,
            host=args.host,
            port=args.port,
            token=token,
            max_rate_hz=args.max_rate_hz,
        )
    except BaseException:
        stitcher.close()
        raise
    dispatcher = RemoteDispatcher(args.zmq, deserializer=document_from_json)
    dispatcher.subscribe(stitcher)
    dispatcher.subscribe(view)

    def stop(*_: object) -> None:
        task = dispatcher._task  # the polling task; cancelling it ends start()
        if task is not None:
            dispatcher.loop.call_soon_threadsafe(task.cancel)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"zmq": args.zmq, "results": args.results, "control": args.control,
                      "url": view.url}), flush=True)  # fmt: skip
    dispatcher.loop.call_soon(lambda: print("bluesky-ptychonn view: ready", flush=True))
    try:
        dispatcher.start()
    except asyncio.CancelledError:
        pass
    finally:
        view.close()
        stitcher.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="the live view in a browser (panels, rate, latency, model) behind 0MQ",
        description="Serve the live view of a RunEngine in another process: documents from a "
        "bluesky 0MQ proxy, patches from the inference endpoint's results. Loopback by "
        "default; other addresses need a read-only token.",
    )
    parser.add_argument("--zmq", default="127.0.0.1:5578",
                        help="the proxy's output address, host:port (default 127.0.0.1:5578)")
    parser.add_argument("--results", required=True,
                        help="the inference endpoint's result address (tcp://...)")
    parser.add_argument("--control", help="the endpoint's control address (its status)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--token-env", default="BLUESKY_PTYCHONN_VIEW_TOKEN",
                        help="environment variable holding the read-only token (required "
                        "off loopback)")
    parser.add_argument("--max-rate-hz", type=float, default=5.0,
                        help="most page updates a second (the newest wins)")
    parser.add_argument("--config", help="session TOML file (stitcher settings)")
    parser.set_defaults(func=run)  # fmt: skip
