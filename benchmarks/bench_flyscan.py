"""Fly scans through the document stream: frames per second that reach a callback.

A `fly_scan` of N frames from the simulated Eiger at its 2 kHz frame rate, with a callback
that counts the frames referenced by StreamDatum documents and the rows of event pages as
they arrive. Reported, in the same run:

* ``arm_s``: prepare + arming (the simulated detector simulates every frame before it reports
  itself armed; a real Eiger arms in well under a second);
* ``acquisition_rate_hz``: frames / (last - first frame timestamp in the HDF5 file): the
  detector's frame clock, 2000 Hz if the simulated hardware keeps up;
* ``document_rate_hz``: frames / (arrival of the last frame's documents - first frame time):
  the rate at which frames reach a callback through the document stream;
* ``frames_accounted``: every frame number present once, contiguous, in the documents and in
  the file;
* for comparison, a step scan (`spiral_scan`, one event per frame) with the same detector:
  ``step_scan_events_per_s``, and the ratio of the fly scan's document rate to it.

With ``--ioc`` (default unless ``--quick``) the same fly scan also runs through Channel Access
against the simulated IOC in a subprocess (``ioc_*`` records).

    bluesky-ptychonn bench flyscan --json benchmarks/results/flyscan.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from bluesky_ptychonn.commands.bench import write_records


class FrameCounter:
    """A document callback: when did each frame's documents arrive?"""

    def __init__(self) -> None:
        self.datum_frames = 0
        self.rows = 0
        self.frame_numbers: list[int] = []
        self.last_arrival = None
        self.events = 0
        self.first_event = self.last_event = None
        self.file = None

    def __call__(self, name, doc) -> None:
        now = time.time()
        if name == "stream_resource":
            self.file = doc["uri"].removeprefix("file://localhost")
        elif name == "stream_datum":
            self.datum_frames += doc["indices"]["stop"] - doc["indices"]["start"]
            self.last_arrival = now
        elif name == "event_page":
            key = next(k for k in doc["data"] if k.endswith("_frame_number"))
            self.frame_numbers.extend(doc["data"][key])
            self.rows += len(doc["seq_num"])
            self.last_arrival = now
        elif name == "event":
            self.events += 1
            self.first_event = self.first_event or now
            self.last_event = now


def fly_once(RE, eiger, stage, n_frames: int) -> dict:
    from bluesky_ptychonn.ioc.hdf5 import TIMESTAMP_PATH, UNIQUE_ID_PATH
    from bluesky_ptychonn.plans import fly_scan

    counter = FrameCounter()
    token = RE.subscribe(counter)
    phases = {}

    def hook(msg):
        phases.setdefault(msg.command, time.time())

    RE.msg_hook = hook
    extent = 2 * 1.3e-6
    start = time.time()
    try:
        RE(fly_scan(eiger, stage, "spiral", (extent, extent), n_points=n_frames))
    finally:
        RE.unsubscribe(token)
        RE.msg_hook = None
    total = time.time() - start
    with h5py.File(counter.file, "r") as f:
        times = f[TIMESTAMP_PATH][:]
        file_numbers = f[UNIQUE_ID_PATH][:]
    numbers = np.asarray(counter.frame_numbers)
    accounted = bool(
        len(numbers) == n_frames == counter.datum_frames == len(file_numbers)
        and np.all(np.diff(numbers) == 1)
        and np.array_equal(numbers, file_numbers)
    )
    first_frame = float(times[0]) - float(eiger.cam.acquire_time.get())  # exposure start
    Path(counter.file).unlink(missing_ok=True)
    return {
        "frames": n_frames,
        "arm_s": phases.get("collect", start) - phases.get("prepare", start),
        "acquisition_rate_hz": (n_frames - 1) / float(times[-1] - times[0]),
        "document_rate_hz": n_frames / (counter.last_arrival - first_frame),
        "last_document_latency_s": counter.last_arrival - float(times[-1]),
        "plan_total_s": total,
        "frames_accounted": accounted,
    }


def step_rate(RE, eiger, stage, n_points: int) -> float:
    from bluesky_ptychonn.plans import spiral_scan

    counter = FrameCounter()
    token = RE.subscribe(counter)
    try:
        RE(spiral_scan([eiger], stage, 1.2e-6, n_points=n_points))
    finally:
        RE.unsubscribe(token)
    return (counter.events - 1) / (counter.last_event - counter.first_event)


def start_ioc(prefix: str):
    """The simulated IOC in a subprocess on loopback and free ports; returns (process, info)."""
    from bluesky_ptychonn.ioc.server import READY_LINE, loopback_ca_environment

    env = loopback_ca_environment()
    os.environ.update(env)  # before this process creates its Channel Access context
    process = subprocess.Popen(
        [sys.executable, "-m", "bluesky_ptychonn.ioc", "--prefix", prefix, "--detectors",
         "eiger", "--field-of-view", "3e-6"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    output: list[str] = []

    def pump():
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if READY_LINE in lines.get(timeout=0.5):
                text = "".join(output)
                return process, json.loads(text[text.index("{") : text.rindex("}") + 1])
        except queue.Empty:
            pass
    process.kill()
    raise RuntimeError("the simulated IOC did not start:\n" + "".join(output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frames", type=int, default=None, help="fly-scan frames")
    parser.add_argument("--ioc", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("caproto").setLevel(logging.WARNING)  # connection chatter
    n_frames = args.frames or (2_000 if args.quick else 10_000)
    with_ioc = (not args.quick) if args.ioc is None else args.ioc

    from bluesky import RunEngine

    from bluesky_ptychonn.devices import (
        EigerDetector,
        SampleStage,
        SimEiger,
        SimStage,
        connect,
    )
    from bluesky_ptychonn.ioc import SimHutch
    from bluesky_ptychonn.sim import SimBeamlineConfig

    common = {
        "quick": args.quick,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "detector": "eiger",
        "detector_rate_hz": 2000.0,
    }
    records = []
    files = tempfile.mkdtemp(prefix="bench-flyscan-")
    RE = RunEngine({})
    with SimHutch(SimBeamlineConfig(field_of_view_m=(3e-6, 3e-6)), detectors=("eiger",)) as hutch:
        stage, eiger = SimStage(hutch), SimEiger(hutch, file_directory=files)
        fly = fly_once(RE, eiger, stage, n_frames)
        steps = step_rate(RE, eiger, stage, 100 if args.quick else 300)
    records.append(
        {
            "benchmark": "flyscan_in_process",
            **common,
            **fly,
            "step_scan_events_per_s": steps,
            "fly_vs_step_ratio": fly["document_rate_hz"] / steps,
        }
    )
    print(json.dumps(records[-1], indent=2))
    if with_ioc:
        process, info = start_ioc("BENCHFLY:")
        try:
            stage = SampleStage(
                info["stage"]["prefix"],
                name="stage",
                beam_size_m=info["detectors"]["eiger"]["beamline"]["beam_size_on_sample_m"],
                sample_name="benchmark",
            )
            eiger = EigerDetector(
                info["detectors"]["eiger"]["prefix"], name="eiger", file_directory=files
            )
            connect(stage, eiger, timeout=30)
            n_ioc = 500 if args.quick else 2_000
            fly = fly_once(RE, eiger, stage, n_ioc)
            steps = step_rate(RE, eiger, stage, 50 if args.quick else 100)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        records.append(
            {
                "benchmark": "flyscan_channel_access",
                **common,
                **fly,
                "step_scan_events_per_s": steps,
                "fly_vs_step_ratio": fly["document_rate_hz"] / steps,
            }
        )
        print(json.dumps(records[-1], indent=2))
    shutil.rmtree(files, ignore_errors=True)
    write_records(args.json, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
