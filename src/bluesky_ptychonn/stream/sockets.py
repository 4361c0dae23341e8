"""ZMQ sockets for frames (PUSH/PULL) and results (PUB/SUB), carrying `wire` messages.

Topology: the inference endpoint binds a PULL socket for frames and a PUB socket for results;
frame sources connect PUSH sockets (one source may connect to several endpoints: ZMQ spreads
the load round-robin) and consumers connect SUB sockets. Addresses default to loopback
(``tcp://127.0.0.1:PORT``); binding to other interfaces is an explicit configuration.

Delivery guarantee: a `FrameSender` keeps every frame until a result for its frame id comes
back (results are the acknowledgements) and sends again what is overdue, so an endpoint that
dies mid-scan loses nothing once it (or another) is back; consumers drop duplicates by frame
id (`ResultCollector`), which makes delivery exactly-once at the consumer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np
import zmq

from ..ports import LOOPBACK, free_port
from .security import KeySource, client_keys
from .wire import Message, WireError, decode, encode

log = logging.getLogger(__name__)

DEFAULT_HWM = 100_000  # messages a socket queues before it blocks (PUSH) or drops (PUB)


def tcp_address(port: int, host: str = LOOPBACK) -> str:
    """``tcp://host:port``; the host defaults to loopback."""
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must lie in 1..65535, got {port}")
    return f"tcp://{host}:{int(port)}"


def free_tcp_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (for tests and embedded defaults)."""
    return free_port(host)


SocketSetup = Callable[[zmq.Socket], None]
"""Applied to a socket before it binds or connects (CURVE keys: `stream.security`)."""


def client_setup(keys: KeySource) -> SocketSetup | None:
    """The setup that makes a client socket use CURVE with ``keys`` (resolved by
    `security.client_keys`, so ``$BLUESKY_PTYCHONN_KEYS`` applies when none are given)."""
    resolved = client_keys(keys)
    return None if resolved is None else resolved.apply


class _Socket:
    def __init__(
        self,
        kind: int,
        address: str,
        *,
        bind: bool,
        context: zmq.Context | None,
        setup: SocketSetup | None = None,
    ):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(kind)
        self.socket.setsockopt(zmq.LINGER, 0)
        if setup is not None:
            setup(self.socket)
        self.address = address
        if bind:
            self.socket.bind(address)
        else:
            self.socket.connect(address)

    def close(self) -> None:
        self.socket.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSender(_Socket):
    """PUSH side of the frame stream that keeps frames until they are acknowledged.

    Args:
        addresses: endpoint frame addresses to connect to (load spreads across them).
        resend_after_s: a frame with no result after this long is sent again.
        max_pending: frames kept for acknowledgement; beyond it `send` raises
            `BufferError` rather than dropping data silently.
        keys: CURVE client keys (or their folder) for endpoints that use keys; default
            ``$BLUESKY_PTYCHONN_KEYS``, else a plain connection.
    """

    def __init__(
        self,
        addresses: str | Iterable[str],
        *,
        resend_after_s: float = 2.0,
        max_pending: int = 1_000_000,
        context: zmq.Context | None = None,
        keys: KeySource = None,
    ):
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        super().__init__(
            zmq.PUSH, addresses[0], bind=False, context=context, setup=client_setup(keys)
        )
        self.socket.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
        for extra in addresses[1:]:
            self.socket.connect(extra)
        self.resend_after_s = resend_after_s
        self.max_pending = max_pending
        self._pending: OrderedDict[int, tuple[Message, float]] = OrderedDict()
        self.seq = 0
        self.frames_sent = 0
        self.frames_resent = 0

    @property
    def pending(self) -> int:
        """Frames sent and not yet acknowledged."""
        return len(self._pending)

    def send(self, message: Message) -> None:
        """Send a frames message and keep it until each of its frame ids is acknowledged."""
        if len(self._pending) + len(message.frame_ids) > self.max_pending:
            raise BufferError(
                f"{len(self._pending)} frames await acknowledgement (limit {self.max_pending}):"
                " the inference endpoint is not keeping up or is down"
            )
        message.seq = self.seq
        self.seq += 1
        self._send(message)
        now = time.monotonic()
        for frame_id in message.frame_ids:
            self._pending[frame_id] = (message, now)
        self.frames_sent += len(message.frame_ids)

    def _send(self, message: Message) -> None:
        self.socket.send_multipart(encode(message), copy=False)

    def acknowledge(self, frame_ids: Iterable[int]) -> int:
        """Forget acknowledged frames; return how many were pending."""
        count = 0
        for frame_id in frame_ids:
            if self._pending.pop(int(frame_id), None) is not None:
                count += 1
        return count

    def resend_overdue(self, now: float | None = None) -> int:
        """Send again every frame unacknowledged for ``resend_after_s``; return the count."""
        now = time.monotonic() if now is None else now
        overdue: dict[int, Message] = {}
        for frame_id, (message, sent) in self._pending.items():
            if now - sent < self.resend_after_s:
                break  # ordered by send time
            overdue[frame_id] = message
        if not overdue:
            return 0
        for message in {id(m): m for m in overdue.values()}.values():
            keep = [i for i, f in enumerate(message.frame_ids) if f in overdue]
            again = Message(
                kind=message.kind,
                arrays={name: array[keep] for name, array in message.arrays.items()},
                run_uid=message.run_uid,
                seq=self.seq,
                timestamp=message.timestamp,
                frame_ids=[message.frame_ids[i] for i in keep],
                positions_m=None if message.positions_m is None else message.positions_m[keep],
                extra={**message.extra, "resent": True},
            )
            self.seq += 1
            self._send(again)
            for frame_id in again.frame_ids:
                self._pending[frame_id] = (again, now)
                self._pending.move_to_end(frame_id)
        self.frames_resent += len(overdue)
        log.info("resent %d unacknowledged frames", len(overdue))
        return len(overdue)


class FrameReceiver(_Socket):
    """PULL side of the frame stream (the endpoint binds it; ``setup`` adds its CURVE keys)."""

    def __init__(
        self,
        address: str,
        *,
        bind: bool = True,
        context: zmq.Context | None = None,
        setup: SocketSetup | None = None,
    ):
        super().__init__(zmq.PULL, address, bind=bind, context=context, setup=setup)
        self.socket.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        self.rejected: list[str] = []  # reasons of undecodable messages, newest last

    def receive(self, timeout_s: float | None = None) -> Message | None:
        """The next message, or None after ``timeout_s``; undecodable ones are counted."""
        while True:
            if timeout_s is not None and not self.socket.poll(int(timeout_s * 1000)):
                return None
            parts = self.socket.recv_multipart(copy=False)
            try:
                return decode([part.buffer for part in parts])
            except WireError as error:
                self.rejected.append(error.reason)
                del self.rejected[:-1000]
                log.warning("rejected a malformed message: %s", error.reason)
                timeout_s = 0 if timeout_s is not None else None


class ResultPublisher(_Socket):
    """PUB side of the result stream (the endpoint binds it; ``setup`` adds its CURVE keys)."""

    def __init__(
        self,
        address: str,
        *,
        bind: bool = True,
        context: zmq.Context | None = None,
        setup: SocketSetup | None = None,
    ):
        super().__init__(zmq.PUB, address, bind=bind, context=context, setup=setup)
        self.socket.setsockopt(zmq.SNDHWM, DEFAULT_HWM)

    def publish(self, message: Message) -> None:
        self.socket.send_multipart(encode(message), copy=False)


class ResultSubscriber(_Socket):
    """SUB side of the result stream; connects to one or more endpoints.

    ``keys``: CURVE client keys (or their folder); default ``$BLUESKY_PTYCHONN_KEYS``.
    """

    def __init__(
        self,
        addresses: str | Iterable[str],
        *,
        context: zmq.Context | None = None,
        keys: KeySource = None,
    ):
        addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        super().__init__(
            zmq.SUB, addresses[0], bind=False, context=context, setup=client_setup(keys)
        )
        self.socket.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        for extra in addresses[1:]:
            self.socket.connect(extra)
        self.rejected: list[str] = []

    def receive(self, timeout_s: float | None = None) -> Message | None:
        """The next result message, or None after ``timeout_s``."""
        if timeout_s is not None and not self.socket.poll(int(timeout_s * 1000)):
            return None
        parts = self.socket.recv_multipart(copy=False)
        try:
            return decode([part.buffer for part in parts])
        except WireError as error:
            self.rejected.append(error.reason)
            return None


class ResultCollector:
    """Keeps the first result of each frame id of a run; counts duplicates.

    The consumer-side half of exactly-once delivery: a frame sent twice (after a resend) and
    inferred twice is kept once.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.duplicates = 0

    def new_indices(self, message: Message) -> np.ndarray:
        """Indices into ``message``'s batch of frame ids not seen before (marks them seen)."""
        fresh = []
        for index, frame_id in enumerate(message.frame_ids):
            if frame_id in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(frame_id)
                fresh.append(index)
        return np.asarray(fresh, dtype=np.int64)
