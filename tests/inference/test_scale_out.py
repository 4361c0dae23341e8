"""Scale-out: several endpoints share one frame stream (PUSH spreads the frames) and their
results, each tagged with its endpoint, merge into one mosaic."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from bluesky_ptychonn.inference.server import EndpointClient, EndpointConfig, EndpointServer
from bluesky_ptychonn.stitch import Mosaic, gaussian_weight
from bluesky_ptychonn.stream.sockets import ResultCollector, free_tcp_port
from bluesky_ptychonn.stream.streamer import FrameStreamer

FRAME = (32, 32)
N_FRAMES = 240
PIXEL_M = 10e-9


def start(model, name: str) -> EndpointServer:
    config = EndpointConfig(
        model=str(model), backend="pytorch", threads=1, batch_size=8, name=name,
        frames_port=free_tcp_port(), results_port=free_tcp_port(), control_port=free_tcp_port(),
    )  # fmt: skip
    return EndpointServer(config).start()


def test_two_endpoints_on_one_stream_stitch_every_frame_exactly_once(tmp_path, tiny_model):
    model = tiny_model(tmp_path / "m", version="tiny").parent
    endpoints = [start(model, "edge-a"), start(model, "edge-b")]
    rng = np.random.default_rng(3)
    frames = rng.poisson(3.0, (N_FRAMES, *FRAME)).astype(np.uint16)
    positions = rng.uniform(-1e-6, 1e-6, (N_FRAMES, 2))
    weight = gaussian_weight(FRAME, 8.0)
    mosaic = Mosaic.covering(positions, PIXEL_M, weight, align_phase=False)
    collector, stitched_by = ResultCollector(), Counter()
    stitched_ids: list[int] = []

    def stitch(message) -> None:
        if message.kind != "results":
            return
        fresh = collector.new_indices(message)
        if fresh.size:
            mosaic.add(message.arrays["phase"][fresh], None, message.positions_m[fresh])
            stitched_by[message.extra["endpoint"]] += fresh.size
            stitched_ids.extend(message.frame_ids[i] for i in fresh)

    streamer = FrameStreamer(
        [e.config.addresses["frames"] for e in endpoints],
        [e.config.addresses["results"] for e in endpoints],
        run_uid="scale-out", resend_after_s=30.0, on_result=stitch,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # both PUSH peers and both subscriptions are up before the first frame
        for s in range(0, N_FRAMES, 4):
            ids = np.arange(s, s + 4)
            streamer(frames[ids], ids, np.full(4, time.time()), positions[ids])
        streamer.flush(timeout_s=60)
        deadline = time.monotonic() + 30
        while len(stitched_ids) < N_FRAMES and time.monotonic() < deadline:
            time.sleep(0.01)
        counters = {}
        for endpoint in endpoints:
            client = EndpointClient(endpoint.config.addresses["control"])
            counters[endpoint.config.name] = client.status()["frames_inferred"]
            client.close()
    finally:
        streamer.close()
        for endpoint in endpoints:
            endpoint.stop()
    assert sorted(stitched_ids) == list(range(N_FRAMES))  # every frame, once
    assert collector.duplicates == 0 and streamer.sender.frames_resent == 0
    assert sum(counters.values()) == N_FRAMES  # the endpoints' counters add up to the frames
    assert dict(stitched_by) == counters  # each result tagged with the endpoint that made it
    assert all(count > 0 for count in counters.values()), counters  # PUSH spread the frames
    assert mosaic.frames_used + mosaic.frames_outside == N_FRAMES
    snapshot = mosaic.snapshot()
    np.testing.assert_allclose(snapshot.weights.sum(), N_FRAMES * weight.sum(), rtol=1e-4)
