"""`bluesky-ptychonn tiled ...`: the embedded Tiled server (``serve``)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def serve(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from ..storage.tiled_server import TiledServerError, TiledServerProcess, default_data_dir

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per readiness probe
    data_dir = Path(args.data) if args.data else default_data_dir()
    server = TiledServerProcess(
        data_dir,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        public=args.public,
        readable=args.read or (),
    )
    print(f"starting Tiled (data: {server.data_dir}) ...", flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return _serve_until_stopped(server, args, stop)
    except TiledServerError as error:
        print(f"bluesky-ptychonn tiled serve: error: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve_until_stopped(server, args: argparse.Namespace, stop: threading.Event) -> int:
    with server:
        key_file = server.data_dir / "api_key"
        where = f"in {key_file}" if key_file.exists() and not args.api_key else "as given"
        print(
            f"Tiled is serving {server.uri}\n"
            f"  data folder   {server.data_dir}\n"
            f"  API key       {where} (needed to write"
            f"{'' if args.public else ' and to read'})\n"
            f"  server log    {server.log_path}\n"
            "Connect from Python:\n"
            "  from tiled.client import from_uri\n"
            f"  client = from_uri({server.uri!r}, api_key=open({str(key_file)!r}).read().strip())"
            "\n  client['raw'].values()[-1]   # the latest run\n"
            "or from bluesky-ptychonn:\n"
            "  from bluesky_ptychonn.storage.tiled_catalog import connect\n"
            f"  catalog = connect({server.uri!r}, api_key=...)\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        try:
            while not stop.wait(1.0):
                if not server.running:
                    print(f"the Tiled server stopped; its log:\n{server.log_tail()}")
                    return 1
        except KeyboardInterrupt:
            pass
        print("stopping Tiled ...", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiled",
        help="the embedded Tiled server (runs, reconstructions, training data, models)",
        description="Tiled holds raw runs, reconstructions, training pairs and model versions.",
    )
    sub = parser.add_subparsers(dest="tiled_command", metavar="SUBCOMMAND", required=True)
    s = sub.add_parser(
        "serve",
        help="run a Tiled server on a local data folder until Ctrl-C",
        description="Start a real Tiled server (SQLite catalog, file and DuckDB storage) on a "
        "data folder, with an API key for writes, bound to loopback by default. The key is "
        "taken from --api-key, $TILED_API_KEY or DATA/api_key, and generated (mode 0600) "
        "when none exists.",
    )
    s.add_argument("--data", help="data folder (default: ~/.local/share/bluesky-ptychonn/tiled)")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one)")
    s.add_argument("--api-key", help="the API key (letters and digits)")
    s.add_argument(
        "--public", action="store_true", help="let clients without the key read (not write)"
    )
    s.add_argument(
        "--read",
        action="append",
        metavar="DIR",
        help="a folder of external files (e.g. detector HDF5) the server may read; repeatable",
    )
    s.set_defaults(func=serve)
