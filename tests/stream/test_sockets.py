"""Real ZMQ sockets on loopback: frames go out, results come back, nothing is lost or doubled."""

import threading
import time

import numpy as np
import pytest
import zmq

from bluesky_ptychonn.stream.sockets import (
    FrameReceiver,
    FrameSender,
    ResultCollector,
    ResultPublisher,
    ResultSubscriber,
    free_tcp_port,
    tcp_address,
)
from bluesky_ptychonn.stream.wire import Message


class EchoEndpoint(threading.Thread):
    """A stand-in endpoint: returns each frame's mean as its 'result'; can drop messages."""

    def __init__(self, frames_address, results_address, drop_first=0):
        super().__init__(daemon=True)
        self.context = zmq.Context()
        self.receiver = FrameReceiver(frames_address, context=self.context)
        self.publisher = ResultPublisher(results_address, context=self.context)
        self.drop_first = drop_first
        self.received = 0
        self.running = True

    def run(self):
        while self.running:
            message = self.receiver.receive(timeout_s=0.05)
            if message is None:
                continue
            self.received += 1
            if self.received <= self.drop_first:
                continue  # lost inside the endpoint, as when it is killed with a queue
            mean = message.arrays["frames"].reshape(len(message.frame_ids), -1).mean(1)
            self.publisher.publish(
                Message(
                    "results",
                    {"mean": mean},
                    run_uid=message.run_uid,
                    frame_ids=message.frame_ids,
                    model_version="echo",
                )
            )

    def stop(self):
        self.running = False
        self.join(timeout=5)
        self.receiver.close()
        self.publisher.close()
        self.context.term()


@pytest.fixture
def addresses():
    return tcp_address(free_tcp_port()), tcp_address(free_tcp_port())


def collect(sender, subscriber, collector, expected, timeout_s=15.0):
    got = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        message = subscriber.receive(timeout_s=0.05)
        if message is None:
            sender.resend_overdue()
            continue
        sender.acknowledge(message.frame_ids)
        for index in collector.new_indices(message):
            got[message.frame_ids[index]] = float(message.arrays["mean"][index])
    return got


def send_frames(sender, n, batch=8):
    frames = np.arange(n, dtype=np.uint16)[:, None, None] * np.ones((1, 4, 4), np.uint16)
    for start in range(0, n, batch):
        ids = list(range(start, min(n, start + batch)))
        sender.send(
            Message(
                "frames",
                {"frames": frames[ids]},
                run_uid="r",
                frame_ids=ids,
                positions_m=np.zeros((len(ids), 2)),
            )
        )


def test_every_frame_comes_back_exactly_once(addresses):
    frames_address, results_address = addresses
    endpoint = EchoEndpoint(frames_address, results_address)
    endpoint.start()
    sender = FrameSender(frames_address, resend_after_s=0.5)
    subscriber = ResultSubscriber(results_address)
    try:
        time.sleep(0.3)  # let the subscription reach the publisher
        send_frames(sender, 500)
        got = collect(sender, subscriber, ResultCollector(), 500)
        assert sorted(got) == list(range(500))
        assert all(got[i] == i for i in got)  # each result belongs to its frame
        assert sender.pending == 0
    finally:
        sender.close()
        subscriber.close()
        endpoint.stop()


def test_frames_lost_in_the_endpoint_are_resent_and_not_doubled(addresses):
    frames_address, results_address = addresses
    endpoint = EchoEndpoint(frames_address, results_address, drop_first=5)
    endpoint.start()
    sender = FrameSender(frames_address, resend_after_s=0.3)
    subscriber = ResultSubscriber(results_address)
    collector = ResultCollector()
    try:
        time.sleep(0.3)
        send_frames(sender, 200)
        got = collect(sender, subscriber, collector, 200)
        assert sorted(got) == list(range(200))
        assert sender.frames_resent >= 5 * 8  # the five dropped batches came again
        assert sender.pending == 0
    finally:
        sender.close()
        subscriber.close()
        endpoint.stop()


def test_sender_refuses_rather_than_dropping_when_nobody_acknowledges(addresses):
    sender = FrameSender(addresses[0], max_pending=16)
    try:
        send_frames(sender, 16)
        with pytest.raises(BufferError, match="await acknowledgement"):
            send_frames(sender, 8)
        assert sender.pending == 16
    finally:
        sender.close()


def test_malformed_messages_are_counted_and_the_receiver_goes_on(addresses):
    context = zmq.Context()
    receiver = FrameReceiver(addresses[0], context=context)
    push = context.socket(zmq.PUSH)
    push.connect(addresses[0])
    try:
        push.send_multipart([b"not json"])
        push.send_multipart([b'{"v": 1, "kind": "frames", "arrays": []}'])
        message = receiver.receive(timeout_s=5)
        assert message is not None and message.kind == "frames"
        assert len(receiver.rejected) == 1 and "JSON" in receiver.rejected[0]
    finally:
        push.close(linger=0)
        receiver.close()
        context.term()


def test_addresses_default_to_loopback():
    assert tcp_address(5555) == "tcp://127.0.0.1:5555"
    with pytest.raises(ValueError):
        tcp_address(0)
