"""A model promoted by the loop and pushed while a 10,000-frame fly scan streams through the
endpoint: no frame lost or doubled, every result tagged with the model that produced it."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np

from bluesky_ptychonn.inference.server import EndpointClient
from bluesky_ptychonn.retrain.options import PromoteOptions
from bluesky_ptychonn.retrain.promote import push
from bluesky_ptychonn.stream.sockets import FrameSender, ResultSubscriber
from bluesky_ptychonn.stream.wire import Message

N_FRAMES = 10_000
BATCH = 50
FRAME = (32, 32)


def test_a_model_pushed_mid_stream_loses_and_doubles_no_frame(
    tmp_path, endpoint_factory, tiny_model
):
    tiny_model(tmp_path / "old", seed=0, version="in-service")
    tiny_model(tmp_path / "new", seed=1, version="promoted")
    endpoint = endpoint_factory(tmp_path / "old", batch_size=64)
    frames_address, results_address, control = endpoint.addresses
    sender = FrameSender(frames_address, resend_after_s=10.0)
    subscriber = ResultSubscriber(results_address)
    client = EndpointClient(control)
    rng = np.random.default_rng(0)
    frames = rng.poisson(3.0, (BATCH, *FRAME)).astype(np.uint16)
    seen: Counter[int] = Counter()
    version_of: dict[int, str] = {}
    arrival: list[str] = []
    pushed: dict[str, object] = {}

    def push_new_model() -> None:
        pushed["reply"] = push(control, tmp_path / "new", PromoteOptions(push_timeout_s=60))

    def take(timeout_s: float) -> None:
        message = subscriber.receive(timeout_s=timeout_s)
        if message is None or message.kind != "results":
            return
        sender.acknowledge(message.frame_ids)
        for frame_id in message.frame_ids:
            seen[frame_id] += 1
            version_of[frame_id] = message.model_version
        arrival.append(message.model_version)

    pusher = threading.Thread(target=push_new_model)
    try:
        time.sleep(0.3)
        client.run_start("fly-10k")
        for start in range(0, N_FRAMES, BATCH):
            ids = list(range(start, start + BATCH))
            positions = np.stack([np.array(ids) * 1e-8, np.zeros(BATCH)], axis=1)
            sender.send(
                Message(
                    "frames",
                    {"frames": frames},
                    run_uid="fly-10k",
                    frame_ids=ids,
                    positions_m=positions,
                )  # fmt: skip
            )
            if start == 3000:
                pusher.start()
            while sender.pending > 2000:  # a detector's buffer: the sender never drops
                take(0.05)
            take(0.0)
        deadline = time.monotonic() + 120
        while len(seen) < N_FRAMES and time.monotonic() < deadline:
            take(0.1)
            sender.resend_overdue()
        pusher.join(timeout=60)
        assert pushed["reply"]["ok"], pushed
        assert len(seen) == N_FRAMES, f"{N_FRAMES - len(seen)} frames lost"
        doubled = [frame_id for frame_id, count in seen.items() if count > 1]
        assert not doubled, f"{len(doubled)} frames answered twice"
        versions = Counter(version_of.values())
        assert set(versions) == {"in-service", "promoted"}, versions
        # one switch: every result after the first from the new model comes from it too
        first_new = arrival.index("promoted")
        assert set(arrival[first_new:]) == {"promoted"}
        status = client.run_stop()
        assert status["run"]["received"] == N_FRAMES and status["run"]["inferred"] == N_FRAMES
        assert client.status()["model_version"] == "promoted"
    finally:
        if pusher.is_alive():
            pusher.join(timeout=60)
        client.close(), sender.close(), subscriber.close()
