"""`FrameStreamer`: a detector's frames to inference endpoints, with nothing lost.

It is a frame listener (``streamer(frames, frame_ids, times, positions_m)``) that packs each
batch into a wire message and sends it with a `FrameSender`; a background thread listens to
the endpoints' results, acknowledges answered frames and sends again whatever is overdue, so
an endpoint that restarts mid-scan loses nothing. `flush` waits until every frame sent has
been answered (inferred, or rejected with a reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np
import zmq

from .payloads import FramesPayload
from .security import KeySource
from .sockets import FrameSender, ResultSubscriber
from .wire import Message

log = logging.getLogger(__name__)


class FrameStreamer:
    """Send frames to endpoints and track their answers.

    Args:
        frames_addresses: the endpoints' frame (PULL) addresses.
        results_addresses: the endpoints' result (PUB) addresses (acknowledgements).
        run_uid: label of the stream on the wire (results carry it back).
        resend_after_s: unanswered frames are sent again after this long.
        on_result: optional callback for every result/rejection message (in the listener
            thread), e.g. a live stitcher.
        keys: CURVE client keys or their folder (`stream.security`; default
            ``$BLUESKY_PTYCHONN_KEYS``, else plain connections).
    """

    def __init__(
        self,
        frames_addresses: str | Iterable[str],
        results_addresses: str | Iterable[str],
        *,
        run_uid: str = "",
        resend_after_s: float = 2.0,
        on_result: Callable[[Message], None] | None = None,
        context: zmq.Context | None = None,
        keys: KeySource = None,
    ):
        self.context = context or zmq.Context.instance()
        self.sender = FrameSender(
            frames_addresses, resend_after_s=resend_after_s, context=self.context, keys=keys
        )
        self.subscriber = ResultSubscriber(results_addresses, context=self.context, keys=keys)
        self.run_uid = run_uid
        self.on_result = on_result
        self._lock = threading.Lock()  # the PUSH socket is used by two threads
        self._stop = threading.Event()
        self.frames_answered = 0
        self.frames_rejected = 0
        self._thread = threading.Thread(target=self._listen, name="frame-acks", daemon=True)
        self._thread.start()

    def __call__(
        self,
        frames: np.ndarray,
        frame_ids: np.ndarray,
        times: np.ndarray | None = None,
        positions_m: np.ndarray | None = None,
    ) -> None:
        """Send one batch (the frame-listener signature); ``times`` are unix seconds."""
        created = float(np.min(times)) if times is not None and len(times) else time.time()
        payload = FramesPayload(
            run_uid=self.run_uid,
            frames=frames,
            frame_ids=[int(i) for i in frame_ids],
            positions_m=positions_m,
            timestamp=created,
        )
        with self._lock:
            self.sender.send(payload.to_message())

    @property
    def pending(self) -> int:
        return self.sender.pending

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.subscriber.receive(timeout_s=0.05)
            if message is not None and message.run_uid == self.run_uid:
                with self._lock:
                    answered = self.sender.acknowledge(message.frame_ids)
                if message.kind == "rejected":
                    self.frames_rejected += answered
                else:
                    self.frames_answered += answered
                if self.on_result is not None:
                    try:
                        self.on_result(message)
                    except Exception:  # noqa: BLE001 - a consumer must not stop the acks
                        log.exception("result consumer failed")
            with self._lock:
                self.sender.resend_overdue()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every frame sent has been answered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.sender.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sender.pending == 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sender.close()
        self.subscriber.close()
