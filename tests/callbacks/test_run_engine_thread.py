"""The RunEngine's thread stays free: a slow endpoint does not hold the stop document, the
mosaic writer and the live view take the stitcher's final snapshot from its consumers, and an
endpoint device is built while nothing serves it (the error comes at stage)."""

from __future__ import annotations

import threading
import time

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd import Component as Cpt
from ophyd import Device, Signal

from bluesky_ptychonn.callbacks.live_stitch import LiveStitcher
from bluesky_ptychonn.callbacks.live_view import LiveMosaicView
from bluesky_ptychonn.callbacks.tiled_mosaic import LiveMosaicWriter
from bluesky_ptychonn.stream.sockets import ResultPublisher, free_tcp_port, tcp_address
from bluesky_ptychonn.stream.wire import Message

PATCH, PIXEL_M, N_FRAMES, BATCH = 16, 10e-9, 40, 8


class FakeEndpoint(Device):
    """What the stitcher reads of an `InferenceEndpoint`: its stream id, in the configuration."""

    stream_id = Cpt(Signal, value="", kind="config")
    frames_inferred = Cpt(Signal, value=0, kind="hinted")


def scan(endpoint: FakeEndpoint, stream_id: str, on_descriptor):
    """A run like a ptychography scan's (geometry in the start document), results out of band."""
    positions = np.stack(np.meshgrid(np.arange(8), np.arange(5), indexing="ij"), -1)
    md = {
        "object_pixel_size_m": PIXEL_M,
        "scan_extent_m": [7 * 4 * PIXEL_M, 4 * 4 * PIXEL_M],
        "scan_centre_m": [3.5 * 4 * PIXEL_M, 2 * 4 * PIXEL_M],
        "beam_size_m": PATCH / 2 * PIXEL_M,
        "num_points": N_FRAMES,
    }
    positions_m = positions.reshape(-1, 2) * 4 * PIXEL_M

    @bpp.run_decorator(md=md)
    def inner():
        yield from bps.mv(endpoint.stream_id, stream_id)
        yield from bps.trigger_and_read([endpoint])
        on_descriptor(stream_id, positions_m)

    return (yield from inner())


def publish(publisher: ResultPublisher, stream_id: str, positions_m, delay_s: float) -> None:
    rng = np.random.default_rng(0)
    for first in range(0, N_FRAMES, BATCH):
        time.sleep(delay_s)
        ids = list(range(first, first + BATCH))
        publisher.publish(
            Message(
                kind="results",
                arrays={
                    "phase": rng.uniform(-1, 1, (BATCH, PATCH, PATCH)).astype(np.float32),
                    "amplitude": np.ones((BATCH, PATCH, PATCH), np.float32),
                },
                run_uid=stream_id,
                frame_ids=ids,
                positions_m=positions_m[ids],
                model_version="slow-1",
            )
        )


def test_a_slow_endpoint_does_not_delay_the_next_plan_and_no_frame_is_lost():
    address = tcp_address(free_tcp_port())
    publisher = ResultPublisher(address)
    stitcher = LiveStitcher(address, settle_timeout_s=30)
    finals = []
    stitcher.add_consumer(finals.append)
    time.sleep(0.3)  # the subscription is up before anything is published
    publishers: list[threading.Thread] = []
    lock = threading.Lock()

    def on_descriptor(stream_id, positions_m):
        # the first run's results trickle in over ~1.5 s after its stop; the second's at once
        delay = 0.3 if stream_id == "slow" else 0.0

        def send():
            with lock:  # one thread at a time on the PUB socket
                publish(publisher, stream_id, positions_m, delay)

        thread = threading.Thread(target=send)
        thread.start()
        publishers.append(thread)

    messages: list[tuple[float, str]] = []
    RE = RunEngine({})
    RE.msg_hook = lambda msg: messages.append((time.perf_counter(), msg.command))
    RE.subscribe(stitcher)
    endpoint = FakeEndpoint(name="endpoint")
    try:
        uids = RE(
            bpp.pchain(scan(endpoint, "slow", on_descriptor), scan(endpoint, "fast", on_descriptor))
        )
        commands = [command for _, command in messages]
        first_close = commands.index("close_run")
        gap_s = messages[first_close + 1][0] - messages[first_close][0]
        assert commands[first_close + 1] == "open_run"  # the next plan's first message
        assert stitcher.wait(timeout_s=30)
    finally:
        for thread in publishers:
            thread.join()
        stitcher.close()
        publisher.close()
    print(f"close_run of the slow run -> next plan's first message: {gap_s * 1e3:.1f} ms")
    assert gap_s < 0.1
    # both runs' final mosaics hold every frame, each under its own run
    assert [snapshot.run_uid for snapshot in finals] == list(uids)
    assert [snapshot.frames_used + snapshot.frames_outside for snapshot in finals] == [
        N_FRAMES,
        N_FRAMES,
    ]
    assert all(snapshot.model_version == "slow-1" for snapshot in finals)
    assert stitcher.last_snapshot.run_uid == uids[1]


class FinalsSource:
    """A source whose final snapshot comes late, from its own thread (like a slow stitcher)."""

    def __init__(self, delay_s: float):
        from bluesky_ptychonn.geometry import PixelGrid
        from bluesky_ptychonn.stitch import Mosaic, gaussian_weight

        self.delay_s = delay_s
        self.consumers = []
        self.mosaic = Mosaic(PixelGrid.centred((64, 64), 10e-9), gaussian_weight((16, 16), 6))
        self.mosaic.add(np.full((1, 16, 16), 0.3), None, np.zeros((1, 2)))

    def snapshot(self):
        return self.mosaic.snapshot(model_version="m1")

    def add_consumer(self, consumer):
        self.consumers.append(consumer)

    def __call__(self, name, doc):
        if name == "stop":

            def later():
                time.sleep(self.delay_s)
                self.mosaic.add(np.full((1, 16, 16), 0.3), None, np.ones((1, 2)) * 1e-8)
                final = self.mosaic.snapshot(model_version="m1")
                final.run_uid = doc["run_start"]
                for consumer in self.consumers:
                    consumer(final)

            threading.Thread(target=later).start()


@pytest.mark.parametrize("writer_first", [True, False])
def test_the_mosaic_writer_takes_the_final_snapshot_from_the_stitcher(tmp_path, writer_first):
    class Sink:
        def __init__(self):
            self.writes = []

        def put(self, write):
            self.writes.append(write)

    source, sink = FinalsSource(delay_s=0.5), Sink()
    writer = LiveMosaicWriter(source, sink, period_s=0)
    view = LiveMosaicView(source, period_s=10, png_path=tmp_path / "live.png")
    assert writer.finals_from_source and view.finals_from_source
    RE = RunEngine({})
    for callback in (writer, source, view) if writer_first else (source, writer, view):
        RE.subscribe(callback)
    started = time.perf_counter()
    (uid,) = RE(_empty_run())
    assert time.perf_counter() - started < 0.4  # nobody waited for the late final snapshot
    deadline = time.monotonic() + 10
    while not sink.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    (final,) = sink.writes
    assert final.metadata["final"] is True and final.metadata["frames_used"] == 2
    assert final.metadata["exit_status"] == "success"
    deadline = time.monotonic() + 10
    while view.updates < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"


def _empty_run():
    @bpp.run_decorator(md={})
    def inner():
        yield from bps.null()

    return (yield from inner())


def test_an_endpoint_device_is_built_while_nothing_serves_it_and_stage_says_so():
    from bluesky_ptychonn.devices.endpoint import EndpointUnavailableError, InferenceEndpoint

    ports = [free_tcp_port() for _ in range(3)]
    started = time.perf_counter()
    endpoint = InferenceEndpoint(*(tcp_address(p) for p in ports), connect_timeout_s=0.5)
    assert time.perf_counter() - started < 0.5
    assert endpoint.read_configuration()["endpoint_model_version"]["value"] == ""
    with pytest.raises(EndpointUnavailableError, match=f"tcp://127.0.0.1:{ports[2]}"):
        endpoint.stage()
    RE = RunEngine({})
    with pytest.raises(EndpointUnavailableError, match="bluesky-ptychonn serve"):
        RE(bps.stage(endpoint))
