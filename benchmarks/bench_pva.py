"""pvAccess ingest: frames/s through `PvaFrameSource`, against the plain ZMQ path.

A `SimPvaDetector` (p4p server on loopback) runs in a child process, as an IOC would, and
publishes 128x128 uint16 frames with SampleY/SampleX attributes, flat out or paced at a frame
rate; this process subscribes with a `PvaFrameSource`. Measured in one run:

* ``pva -> null``: frames forwarded per second to a listener that only counts, frames missing
  (squashed by the monitor queue or never sent) and overruns, latency from the frame's
  timestamp to the listener call;
* ``pva -> FrameStreamer -> echo``: the same frames sent on as wire messages (with
  acknowledgements) to a stand-in endpoint in a second child process that answers every frame
  at once (no inference: the transport alone);
* ``zmq push -> pull``: the plain ZMQ path for comparison: the child sends the same frames one
  message per frame with a `FrameSender` to a `FrameReceiver` here.

    bluesky-ptychonn bench pva --json benchmarks/results/pva.json [--quick]
    python benchmarks/bench_pva.py --json OUT [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np

from bluesky_ptychonn.commands.bench import write_records

SHAPE = (128, 128)
POOL = 64  # distinct frames cycled by the publisher


def frame_pool() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.poisson(20.0, (POOL, *SHAPE)).astype(np.uint16)
    positions = rng.uniform(-2e-6, 2e-6, (POOL, 2))
    return frames, positions


# ---- child processes ---------------------------------------------------------------------------
def serve() -> int:
    """Child: a SimPvaDetector driven by JSON lines on stdin, answering on stdout."""
    from bluesky_ptychonn.ioc.pva_server import SimPvaDetector
    from bluesky_ptychonn.stream.sockets import FrameSender
    from bluesky_ptychonn.stream.wire import Message

    frames, positions = frame_pool()
    with SimPvaDetector("BENCH:Pva1:Image") as detector:
        # NTNDArrays built once, as a C++ IOC's cost of serving a frame is small: the
        # publisher then takes little of the two cores the measurement shares
        values = [
            detector.ntndarray(f, 0, position_m=p) for f, p in zip(frames, positions, strict=True)
        ]
        unique_id = 0
        print(json.dumps({"pv": detector.pv, "conf": detector.client_conf()}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            n, start = command["n"], time.perf_counter()
            if command["cmd"] == "pva":
                rate = command.get("rate_hz")
                for i in range(n):
                    if rate:
                        delay = start + i / rate - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    unique_id += 1
                    value, now = values[i % POOL], time.time()
                    value["uniqueId"] = unique_id
                    value["timeStamp.secondsPastEpoch"] = int(now)
                    value["timeStamp.nanoseconds"] = int((now % 1) * 1e9)
                    detector.post(value)
            elif command["cmd"] == "zmq":
                sender = FrameSender(command["address"])
                for i in range(n):
                    sender.send(
                        Message(
                            "frames",
                            {"frames": frames[i % POOL][None]},
                            frame_ids=[i],
                            positions_m=positions[i % POOL][None],
                        )
                    )
                sender.socket.close(linger=10_000)  # deliver what is queued before closing
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    return 0


def echo(frames_address: str, results_address: str) -> int:
    """Child: a stand-in endpoint that answers every frame at once, until stdin closes."""
    from bluesky_ptychonn.stream.sockets import FrameReceiver, ResultPublisher
    from bluesky_ptychonn.stream.wire import Message

    receiver, publisher = FrameReceiver(frames_address), ResultPublisher(results_address)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    while not done.is_set():
        message = receiver.receive(timeout_s=0.05)
        if message is not None:
            publisher.publish(
                Message("results", run_uid=message.run_uid, frame_ids=message.frame_ids)
            )
    return 0


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def ask(process: subprocess.Popen, command: dict) -> dict:
    process.stdin.write(json.dumps(command) + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


# ---- measurements ------------------------------------------------------------------------------
class Counter:
    """A frame listener that counts frames and keeps latencies (timestamp -> call)."""

    def __init__(self, then=None):
        self.frames = 0
        self.first = self.last = None
        self.latencies_ms: list[float] = []
        self.then = then

    def __call__(self, frames, frame_ids, times, positions_m):
        now = time.time()
        if self.then is not None:
            self.then(frames, frame_ids, times, positions_m)
        self.first = self.first or time.perf_counter()
        self.last = time.perf_counter()
        self.frames += len(frame_ids)
        self.latencies_ms.extend((now - np.asarray(times)) * 1e3)


def measure_pva(server, n: int, rate_hz: float | None, streamer=None, queue_size: int = 64) -> dict:
    from bluesky_ptychonn.stream.pva import PvaFrameSource

    counter = Counter(then=streamer)
    source = PvaFrameSource(
        server.pv, counter, conf=server.conf, useenv=False, queue_size=queue_size
    )
    assert source.wait_connected(10), "no connection to the simulated detector"
    published = ask(server.process, {"cmd": "pva", "n": n, "rate_hz": rate_hz})
    deadline = time.monotonic() + 30
    while source.stats().last_unique_id != server.next_id + n - 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    source.drain(30)
    stats = source.stop()
    server.next_id += n
    answered = None
    if streamer is not None:
        streamer.flush(30)
        answered = streamer.frames_answered
    elapsed = (counter.last - counter.first) if counter.frames else 0.0
    latencies = np.array(counter.latencies_ms or [np.nan])
    return {
        "frames_published": n,
        "publish_fps": n / published["seconds"],
        "frames_forwarded": stats.frames_forwarded,
        "frames_missing": stats.frames_missing,
        "overruns": stats.overruns,
        "frames_answered": answered,
        "monitor_queue_size": source.queue_size,
        "frames_per_s": stats.frames_forwarded / elapsed if elapsed > 0 else None,
        "mean_batch": stats.frames_forwarded / max(stats.batches, 1),
        "latency_p50_ms": float(np.nanpercentile(latencies, 50)),
        "latency_p99_ms": float(np.nanpercentile(latencies, 99)),
    }


def measure_zmq(server, n: int) -> dict:
    from bluesky_ptychonn.stream.sockets import FrameReceiver, free_tcp_port, tcp_address

    address = tcp_address(free_tcp_port())
    receiver = FrameReceiver(address)
    process = server.process
    process.stdin.write(json.dumps({"cmd": "zmq", "n": n, "address": address}) + "\n")
    process.stdin.flush()
    got, first, last = 0, None, None
    while got < n:
        message = receiver.receive(timeout_s=30)
        if message is None:
            break
        first = first or time.perf_counter()
        last = time.perf_counter()
        got += len(message.frame_ids)
    sent = json.loads(process.stdout.readline())
    receiver.close()
    return {
        "frames_published": n,
        "publish_fps": n / sent["seconds"],
        "frames_forwarded": got,
        "frames_missing": n - got,
        "frames_per_s": got / (last - first) if last and last > first else None,
    }


class Server:
    def __init__(self):
        self.process = child("--serve")
        hello = json.loads(self.process.stdout.readline())
        self.pv, self.conf, self.next_id = hello["pv"], hello["conf"], 1

    def close(self):
        self.process.stdin.close()
        self.process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    if args.echo:
        return echo(*args.echo)
    if not args.json:
        parser.error("--json is required")
    try:
        import p4p  # noqa: F401
    except ImportError:
        print("bench pva: p4p is not installed (pip install 'bluesky-ptychonn[pva]'); skipped")
        return 0
    from bluesky_ptychonn.stream.sockets import free_tcp_port, tcp_address
    from bluesky_ptychonn.stream.streamer import FrameStreamer

    logging.getLogger("bluesky_ptychonn.stream.pva").setLevel(logging.ERROR)  # gaps: counted
    n = 1000 if args.quick else 5000
    common = {
        "frame_shape": list(SHAPE),
        "dtype": "uint16",
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    records = []
    server = Server()
    try:
        cases = [(None, 64), (2000.0, 64)]
        if not args.quick:  # the default monitor queue (64) and a deeper one (256)
            cases = [(r, 64) for r in (None, 1000.0, 2000.0, 5000.0, 10000.0)]
            cases += [(None, 256), (10000.0, 256)]
        for rate, queue_size in cases:
            result = measure_pva(server, n, rate, queue_size=queue_size)
            records.append(
                {
                    "benchmark": "pva_ingest",
                    "path": "pva -> null",
                    "offered_hz": rate,
                    **result,
                    **common,
                }
            )
        frames_address, results_address = (tcp_address(free_tcp_port()) for _ in range(2))
        endpoint = child("--echo", frames_address, results_address)
        assert endpoint.stdout.readline().strip() == "ready"
        try:
            for rate in (None, 2000.0):
                streamer = FrameStreamer(frames_address, results_address, run_uid=f"bench-{rate}")
                time.sleep(0.3)  # the result subscription connects
                result = measure_pva(server, n, rate, streamer=streamer)
                streamer.close()
                records.append(
                    {
                        "benchmark": "pva_ingest",
                        "offered_hz": rate,
                        "path": "pva -> FrameStreamer -> echo",
                        **result,
                        **common,
                    }
                )
        finally:
            endpoint.stdin.close()
            endpoint.wait(10)
        records.append(
            {
                "benchmark": "pva_ingest",
                "path": "zmq push -> pull",
                "offered_hz": None,
                **measure_zmq(server, n),
                **common,
            }
        )
    finally:
        server.close()
    for record in records:
        rate = f"{record['offered_hz']:.0f} Hz" if record["offered_hz"] else "flat out"
        fps = record["frames_per_s"]
        queue = f"q{record['monitor_queue_size']}" if "monitor_queue_size" in record else ""
        print(
            f"{record['path']:30s} {rate:>9s} {queue:>4s}: {fps or float('nan'):6.0f} frames/s "
            f"({record['frames_forwarded']}/{record['frames_published']} forwarded, "
            f"{record['frames_missing']} missing, published at {record['publish_fps']:.0f}/s"
            + (
                f", latency p50 {record['latency_p50_ms']:.2f} ms p99 "
                f"{record['latency_p99_ms']:.2f} ms)"
                if "latency_p50_ms" in record
                else ")"
            )
        )
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
