"""The inference endpoint as a real process on loopback: every frame answered exactly once,
bad frames rejected with a reason, a killed endpoint loses nothing, a bad model swap is refused."""

import time

import numpy as np
import pytest

from bluesky_ptychonn.inference.server import EndpointClient
from bluesky_ptychonn.stream.sockets import (
    FrameSender,
    ResultCollector,
    ResultSubscriber,
    free_tcp_port,
    tcp_address,
)
from bluesky_ptychonn.stream.wire import Message

FRAME = (32, 32)


@pytest.fixture
def model_dir(tmp_path, tiny_model):
    tiny_model(tmp_path / "model-a", seed=0, version="tiny-a")
    tiny_model(tmp_path / "model-b", seed=1, version="tiny-b")
    return tmp_path


def frames_message(ids, frames=None, run_uid="run"):
    if frames is None:
        frames = np.random.default_rng(ids[0]).poisson(3.0, (len(ids), *FRAME)).astype(np.uint16)
    positions = np.stack([np.array(ids) * 1e-8, np.zeros(len(ids))], axis=1)
    return Message("frames", {"frames": frames}, run_uid=run_uid, frame_ids=list(ids),
                   positions_m=positions)  # fmt: skip


def drain(sender, subscriber, collector, want, timeout_s=60.0):
    """Collect results/rejections until ``want`` frame ids are answered."""
    answered, rejected = {}, {}
    deadline = time.monotonic() + timeout_s
    while len(answered) + len(rejected) < want and time.monotonic() < deadline:
        message = subscriber.receive(timeout_s=0.1)
        if message is None:
            sender.resend_overdue()
            continue
        sender.acknowledge(message.frame_ids)
        if message.kind == "rejected":
            for frame_id in message.frame_ids:
                rejected[frame_id] = message.extra["reason"]
            continue
        for index in collector.new_indices(message):
            answered[message.frame_ids[index]] = message.arrays["phase"][index]
    return answered, rejected


@pytest.mark.parametrize("lanes", [1, 2])
def test_every_frame_comes_back_once_with_positions_and_model_version(
    model_dir, endpoint_factory, lanes
):
    endpoint = endpoint_factory(model_dir / "model-a", lanes=lanes)
    sender = FrameSender(endpoint.addresses[0], resend_after_s=5.0)
    subscriber = ResultSubscriber(endpoint.addresses[1])
    client = EndpointClient(endpoint.addresses[2])
    try:
        time.sleep(0.3)
        client.run_start("run")
        for start in range(0, 300, 7):  # odd batch size: the tail is a partial batch
            sender.send(frames_message(list(range(start, min(300, start + 7)))))
        answered, rejected = drain(sender, subscriber, ResultCollector(), 300)
        assert sorted(answered) == list(range(300)) and not rejected
        assert all(phase.shape == FRAME for phase in answered.values())
        status = client.run_stop()
        assert status["run"]["received"] == 300 and status["run"]["inferred"] == 300
        assert client.status()["model_version"] == "tiny-a"
        status = client.status()
        assert status["lanes"] == lanes
        segments = status["latency_segments_ms"]  # where the frames' time went, ms
        assert set(segments) == {"transport", "queue_wait", "engine"}
        assert segments["engine"]["p50"] > 0
        assert all(0 <= s["p50"] <= s["p99"] for s in segments.values())
    finally:
        client.close(), sender.close(), subscriber.close()


def test_nan_wrong_shape_and_wrong_dtype_frames_are_rejected_and_the_rest_served(
    model_dir, endpoint_factory
):
    endpoint = endpoint_factory(model_dir / "model-a")
    sender = FrameSender(endpoint.addresses[0], resend_after_s=5.0)
    subscriber = ResultSubscriber(endpoint.addresses[1])
    client = EndpointClient(endpoint.addresses[2])
    try:
        time.sleep(0.3)
        nan_frames = np.ones((2, *FRAME), np.float32)
        nan_frames[1, 3, 3] = np.nan
        sender.send(frames_message([0, 1], nan_frames))
        sender.send(frames_message([2, 3], np.ones((2, 16, 16), np.uint16)))
        sender.send(frames_message([4, 5], np.ones((2, *FRAME), np.complex64)))
        sender.send(frames_message([6, 7]))
        answered, rejected = drain(sender, subscriber, ResultCollector(), 8)
        assert sorted(answered) == [0, 6, 7]
        assert "NaN" in rejected[1]
        assert "do not fit this model" in rejected[2] and rejected[3] == rejected[2]
        assert "real numbers" in rejected[4]
        status = client.status()
        assert status["frames_rejected"] == 5 and status["frames_inferred"] == 3
    finally:
        client.close(), sender.close(), subscriber.close()


def test_endpoint_killed_mid_scan_and_restarted_loses_no_frame(model_dir, endpoint_factory):
    endpoint = endpoint_factory(model_dir / "model-a")
    sender = FrameSender(endpoint.addresses[0], resend_after_s=1.0)
    subscriber = ResultSubscriber(endpoint.addresses[1])
    collector = ResultCollector()
    try:
        time.sleep(0.3)
        for start in range(0, 200, 8):
            sender.send(frames_message(list(range(start, start + 8))))
        first, _ = drain(sender, subscriber, collector, 60, timeout_s=30)
        endpoint.kill()  # SIGKILL: whatever it held is gone
        for start in range(200, 400, 8):  # the scan goes on while the endpoint is down
            sender.send(frames_message(list(range(start, start + 8))))
        endpoint = endpoint_factory(model_dir / "model-a", ports=endpoint.ports)
        rest, _ = drain(sender, subscriber, collector, 400 - len(first), timeout_s=90)
        assert sorted({**first, **rest}) == list(range(400))
        assert sender.pending == 0
    finally:
        sender.close(), subscriber.close()


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_corrupt_model_swap_leaves_the_old_model_serving(
    model_dir, tmp_path, endpoint_factory, lanes
):
    endpoint = endpoint_factory(model_dir / "model-a", lanes=lanes)
    client = EndpointClient(endpoint.addresses[2])
    try:
        weights = model_dir / "model-b" / "model.safetensors"
        corrupt = tmp_path / "corrupt"
        corrupt.mkdir()
        for item in (model_dir / "model-b").iterdir():
            (corrupt / item.name).write_bytes(item.read_bytes())
        data = bytearray((corrupt / weights.name).read_bytes())
        data[-100:] = b"\0" * 100
        (corrupt / weights.name).write_bytes(bytes(data))
        reply = client.load_model(str(corrupt))
        assert not reply["ok"] and "sha256" in reply["error"]
        assert client.status()["model_version"] == "tiny-a"
        reply = client.load_model(str(model_dir / "model-b"))
        assert reply["ok"] and client.status()["model_version"] == "tiny-b"
        # every lane now serves the new model
        sender = FrameSender(endpoint.addresses[0], resend_after_s=5.0)
        subscriber = ResultSubscriber(endpoint.addresses[1])
        try:
            time.sleep(0.3)
            versions = set()
            for start in range(0, 64, 4):
                sender.send(frames_message(list(range(start, start + 4))))
            deadline = time.monotonic() + 30
            answered = 0
            while answered < 64 and time.monotonic() < deadline:
                message = subscriber.receive(timeout_s=0.1)
                if message is not None and message.kind == "results":
                    versions.add(message.model_version)
                    answered += len(message.frame_ids)
            assert answered == 64 and versions == {"tiny-b"}
        finally:
            sender.close(), subscriber.close()
    finally:
        client.close()


def test_a_dead_endpoint_gives_a_timeout_naming_it():
    client = EndpointClient(tcp_address(free_tcp_port()), timeout_s=0.5)
    with pytest.raises(TimeoutError, match="did not answer 'status'"):
        client.status()
    client.close()


def offer(streamer, first_id, n_frames, rate_fps, chunk=16):
    """Send ``n_frames`` 32x32 frames at ``rate_fps``; return the next free frame id."""
    frames = np.random.default_rng(first_id).poisson(3.0, (chunk, *FRAME)).astype(np.uint16)
    start = time.perf_counter()
    for index, s in enumerate(range(first_id, first_id + n_frames, chunk)):
        target = start + index * chunk / rate_fps
        while time.perf_counter() < target:
            time.sleep(0.0005)
        ids = np.arange(s, min(s + chunk, first_id + n_frames))
        streamer(frames[: len(ids)], ids, None, np.zeros((len(ids), 2)))
    return first_id + n_frames


def wait_answered(streamer, expected, timeout_s):
    deadline = time.monotonic() + timeout_s
    while streamer.frames_answered + streamer.frames_rejected < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return streamer.frames_answered


@pytest.mark.parametrize(
    "burst_s", [pytest.param(3.0, id="3s"), pytest.param(10.0, id="10s", marks=pytest.mark.slow)]
)
def test_a_burst_at_twice_the_endpoint_rate_is_absorbed_and_caught_up(
    model_dir, endpoint_factory, burst_s
):
    from bluesky_ptychonn.stream.streamer import FrameStreamer

    endpoint = endpoint_factory(model_dir / "model-a", buffer_frames=1_000_000, batch_size=32)
    streamer = FrameStreamer(endpoint.addresses[0], endpoint.addresses[1], run_uid="burst",
                             resend_after_s=600.0)  # fmt: skip
    client = EndpointClient(endpoint.addresses[2])
    try:
        time.sleep(0.3)
        # the endpoint's own rate: everything it can take for 2 s
        start = time.perf_counter()
        sent = offer(streamer, 0, 4000, rate_fps=1e9)
        wait_answered(streamer, sent, timeout_s=120)
        capacity = sent / (time.perf_counter() - start)
        # a burst at twice that rate: the buffer absorbs it, the endpoint catches up
        burst = int(2 * capacity * burst_s)
        start = time.perf_counter()
        total = offer(streamer, sent, burst, rate_fps=2 * capacity)
        offered = burst / (time.perf_counter() - start)
        assert offered > 1.5 * capacity, "the sender could not offer a real burst"
        answered = wait_answered(streamer, total, timeout_s=30 + 4 * burst_s)
        status = client.status()
        assert answered == total, f"{total - answered} of {total} frames never answered"
        assert status["frames_dropped"] == 0 and streamer.frames_rejected == 0
        assert status["frames_inferred"] == total
    finally:
        client.close()
        streamer.close()
