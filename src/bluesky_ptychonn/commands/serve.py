"""`bluesky-ptychonn serve --model MODEL`: run the edge inference endpoint in this process."""

from __future__ import annotations

import argparse
import json
import signal


def run(args: argparse.Namespace) -> int:
    from ..inference.server import EndpointConfig, EndpointServer

    config = EndpointConfig(
        model=args.model,
        backend=args.backend,
        precision=args.precision,
        host=args.host,
        frames_port=args.frames_port,
        results_port=args.results_port,
        control_port=args.control_port,
        batch_size=args.batch_size,
        batch_timeout_s=args.batch_timeout_ms / 1e3,
        buffer_frames=args.buffer_frames,
        threads=args.threads,
        spin=args.spin,
        workers=args.workers,
        micro_batch=args.micro_batch,
        lanes=args.lanes,
        name=args.name,
        physics=not args.no_physics,
        keys=args.keys,
        require_sha256=args.require_sha256,
        model_sha256=args.model_sha256,
    )
    server = EndpointServer(config).start()
    print(json.dumps({"ready": True, **server.status()}, default=str), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server._stop.set())
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the edge inference endpoint (ZMQ frames in, phase/amplitude out)",
        description="Serve a PtychoNN model: frames arrive on a PULL socket, results leave on a "
        "PUB socket, a REP socket answers status / load_model / run_start / run_stop requests.",
    )
    parser.add_argument("--model", required=True, help="model directory, sidecar, weights or ONNX")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default=None)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default loopback; any other needs --keys)",
    )
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE key folder (`bluesky-ptychonn keys init DIR`): encrypt and authenticate "
        "every socket, admit the clients in DIR/authorized and, for control requests, "
        "DIR/control",
    )
    parser.add_argument(
        "--model-sha256",
        default=None,
        help="refuse to start unless the model's sidecar has this sha256",
    )
    parser.add_argument(
        "--require-sha256",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load_model requests must carry the model sidecar's sha256 (default: with --keys)",
    )
    parser.add_argument("--frames-port", type=int, default=5560)
    parser.add_argument("--results-port", type=int, default=5561)
    parser.add_argument("--control-port", type=int, default=5562)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=0.0,
        help="longest wait for a batch to fill (default 0: infer what has arrived at once)",
    )
    parser.add_argument("--threads", type=int, default=None, help="engine CPU threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="ONNX Runtime sessions that split each batch (CPU; threads are divided among them)",
    )
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="ONNX Runtime sessions run their share in pieces of this many frames",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=1,
        help="independent infer threads, each with its own engine and threads // lanes CPU "
        "threads, each taking the next batch when free (CPU: --lanes 2 on 2 cores)",
    )
    parser.add_argument(
        "--no-physics",
        action="store_true",
        help="do not compute the per-frame physics residual (computed by default when the "
        "model's files carry its probe)",
    )
    parser.add_argument(
        "--spin",
        action="store_true",
        help="let ONNX Runtime threads spin between calls (lower latency on an idle machine)",
    )
    parser.add_argument("--buffer-frames", type=int, default=10_000)
    parser.add_argument("--name", default="ptychonn-endpoint")
    parser.set_defaults(func=run)
