"""What CURVE costs on the frame stream: the wire alone, plain against encrypted.

A `FrameSender` (PUSH) sends Eiger-sized frames (128 x 128 uint16, 32 KiB) one per message to
a `FrameReceiver` (PULL) in another thread of this process, on loopback, once with plain
sockets and once with CURVE keys (`stream.security`: the endpoint's setup with a ZAP
allow-list, as `serve --keys` runs it). Recorded: frames per second decoded by the receiver
(validated wire messages) and the extra microseconds per frame CURVE adds. No engine runs:
this is the ceiling the wire puts on the endpoint.

    bluesky-ptychonn bench curve --json benchmarks/results/curve.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from bluesky_ptychonn.commands.bench import write_records
from bluesky_ptychonn.inference.security import EndpointGuard
from bluesky_ptychonn.stream.security import ClientKeys, init_key_folder
from bluesky_ptychonn.stream.sockets import FrameReceiver, FrameSender, free_tcp_port, tcp_address
from bluesky_ptychonn.stream.wire import Message

FRAME = (128, 128)


def rate(n_frames: int, keys: Path | None) -> float:
    """Frames/s from the first send to the last frame decoded."""
    context = zmq.Context()
    guard = EndpointGuard(context, "127.0.0.1", keys)
    address = tcp_address(free_tcp_port())
    receiver = FrameReceiver(address, context=context, setup=guard.setup_for("frames"))
    client_keys = ClientKeys.from_folder(keys) if keys else None
    sender = FrameSender(address, keys=client_keys, max_pending=10 * n_frames)
    frames = np.random.default_rng(0).poisson(5.0, (64, *FRAME)).astype(np.uint16)
    got = 0
    done = threading.Event()

    def receive() -> None:
        nonlocal got
        while got < n_frames:
            message = receiver.receive(timeout_s=10)
            if message is None:
                break
            got += len(message.frame_ids)
        done.set()

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.3)  # the handshake
    start = time.perf_counter()
    for i in range(n_frames):
        sender.send(Message("frames", {"frames": frames[i % 64][None]}, run_uid="r",
                            frame_ids=[i]))  # fmt: skip
    done.wait(60)
    seconds = time.perf_counter() - start
    thread.join()
    sender.close()
    receiver.close()
    guard.stop()
    context.term()
    if got != n_frames:
        raise RuntimeError(f"{got} of {n_frames} frames arrived")
    return n_frames / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/CURVE rounds")
    args = parser.parse_args(argv)
    n = 3000 if args.quick else 20000
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        init_key_folder(keys)
        rates: dict[str, list[float]] = {"plain": [], "curve": []}
        for _ in range(1 if args.quick else args.rounds):
            rates["plain"].append(rate(n, None))
            rates["curve"].append(rate(n, keys))
    plain, curve = (float(np.median(rates[k])) for k in ("plain", "curve"))
    record = {
        "benchmark": "curve",
        "frame_shape": list(FRAME),
        "frame_bytes": int(np.prod(FRAME) * 2),
        "frames_per_round": n,
        "plain_fps": plain,
        "curve_fps": curve,
        "plain_fps_rounds": rates["plain"],
        "curve_fps_rounds": rates["curve"],
        "curve_extra_us_per_frame": (1 / curve - 1 / plain) * 1e6,
        "curve_vs_plain": curve / plain,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "zmq": zmq.zmq_version(),
        "quick": args.quick,
    }
    print(
        f"plain {plain:.0f} frames/s, CURVE {curve:.0f} frames/s "
        f"({record['curve_vs_plain']:.2f}x, +{record['curve_extra_us_per_frame']:.1f} us/frame)"
    )
    write_records(args.json, [record])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
