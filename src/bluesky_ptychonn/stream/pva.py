"""pvAccess ingest: an areaDetector PVA plugin's NTNDArray frames into a frame listener.

At a beamline, areaDetector's PVA plugin (``NDPluginPva``) serves every detector frame as an
``epics:nt/NTNDArray:1.0`` over pvAccess. `PvaFrameSource` subscribes to that PV (p4p) and
hands the frames to a frame listener with the signature of `FrameStreamer.__call__`
(``listener(frames, frame_ids, times, positions_m)``), so ::

    PvaFrameSource("13SIM1:Pva1:Image", FrameStreamer(frames_address, results_address))

feeds an inference endpoint. `ntndarray_to_frame` decodes one NTNDArray and rejects what is
not a plain 2-D frame with a reason.

Threads: p4p delivers monitor updates in its own worker thread (one per subscription, in
order); the callback only checks the frame number and appends the update to a bounded buffer.
A forwarder thread drains the buffer, decodes, and calls the listener once per run of frames
that arrived close together (up to ``max_batch``), so a kHz detector does not cost one wire
message per frame.

Frame numbers are the NTNDArray ``uniqueId`` (areaDetector's ``ArrayCounter``). A jump in it
means frames that never reached this client: dropped upstream (the plugin's queue was full) or
squashed by the pvAccess monitor queue when this client fell behind (the request sets its
depth, ``record[queueSize=N]``; p4p 4.3 does not expose the squash counters of pvxs, so a squash
shows up only as such a gap). Both are counted as ``frames_missing`` with the missing ranges.
Frames that arrive but cannot be buffered because the forwarder fell behind are counted as
``overruns``; frames that cannot be decoded as ``frames_rejected`` with the reason.

Beam positions come from NDAttributes (areaDetector attaches motor readbacks to each frame,
e.g. ``SampleY``/``SampleX``), multiplied by ``position_units_m`` (metres per attribute unit);
without them a ``position_lookup(unique_id) -> (y, x)`` in metres may supply them, otherwise
the frames travel without positions.

p4p is imported only when a `PvaFrameSource` is built (the ``pva`` extra:
``pip install bluesky-ptychonn[pva]``); `ntndarray_to_frame` works on any object with the
NTNDArray fields.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .wire import ALLOWED_DTYPES

log = logging.getLogger(__name__)

FrameListener = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], None]
PositionLookup = Callable[[int], "tuple[float, float] | None"]

DEFAULT_POSITION_ATTRIBUTES = ("SampleY", "SampleX")
MAX_GAPS_KEPT = 100  # missing-id ranges kept for the report (the count is always exact)
WARN_EVERY_S = 1.0  # one warning per kind and second at most: the counters hold the totals


def _stamp_s(stamp: Any) -> float:
    """Unix seconds of a pvAccess ``time_t`` (seconds past the POSIX epoch + nanoseconds)."""
    if stamp is None:
        return 0.0
    return float(_field(stamp, "secondsPastEpoch", 0)) + 1e-9 * float(
        _field(stamp, "nanoseconds", 0)
    )


def _field(value: Any, name: str, default: Any = None) -> Any:
    try:
        return value[name]
    except (KeyError, TypeError, IndexError, AttributeError):
        return getattr(value, name, default)


def ntndarray_to_frame(value: Any) -> tuple[np.ndarray, int, float, dict[str, Any]]:
    """Decode one NTNDArray into ``(frame, unique_id, timestamp, attributes)``.

    Args:
        value: a p4p ``Value`` of type ``epics:nt/NTNDArray:1.0`` (or an object with the same
            fields).

    Returns:
        frame: (h, w) array (``dimension[0]`` is the fastest axis, x, the columns), a read-only
            view on the received data in its own dtype.
        unique_id: the ``uniqueId`` (areaDetector's frame counter).
        timestamp: unix seconds of ``timeStamp`` (else ``dataTimeStamp``); 0.0 if neither is set.
        attributes: NDAttribute name -> value.

    Raises:
        ValueError: naming what is wrong: a codec-compressed array, no data, an array that is
            not 2-D, or an element count that does not match the dimensions.
    """
    codec = _field(value, "codec")
    codec_name = _field(codec, "name", "") if codec is not None else ""
    if codec_name:
        raise ValueError(
            f"the array is compressed with codec {codec_name!r}, which this reader does not "
            "decompress; set the PVA plugin's input (e.g. NDPluginCodec) to send uncompressed "
            "arrays"
        )
    sizes = [int(_field(d, "size")) for d in (_field(value, "dimension") or [])]
    if len(sizes) != 2:
        raise ValueError(
            f"a detector frame is a 2-D array, this one has {len(sizes)} dimensions {sizes} "
            "(colour or stacked arrays are not frames)"
        )
    width, height = sizes  # dimension[0] is the fastest axis: x, the columns
    if width <= 0 or height <= 0:
        raise ValueError(f"empty array (dimensions {sizes})")
    data = _field(value, "value")
    if data is None:
        raise ValueError("the NTNDArray carries no data (its value union is empty)")
    data = np.asarray(data)
    if data.ndim != 1:
        data = data.reshape(-1)
    if data.size != width * height:
        raise ValueError(
            f"{data.size} elements for dimensions {width} x {height} (x, y): expected "
            f"{width * height}"
        )
    unique_id = int(_field(value, "uniqueId", 0))
    timestamp = _stamp_s(_field(value, "timeStamp"))
    if timestamp == 0.0:
        timestamp = _stamp_s(_field(value, "dataTimeStamp"))
    attributes = {
        str(_field(attr, "name")): _field(attr, "value")
        for attr in (_field(value, "attribute") or [])
    }
    return data.reshape(height, width), unique_id, timestamp, attributes


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class PvaStats:
    """What a `PvaFrameSource` has seen (a snapshot; see `PvaFrameSource.stats`).

    Attributes:
        pv: the PV name.
        connected: whether the subscription is connected now.
        connections, disconnects: times it connected / lost the server.
        frames_received: frame updates the monitor delivered (after the initial value).
        frames_forwarded: frames handed to the listener.
        frames_rejected: updates that were not decodable frames; ``reject_reasons`` counts them.
        frames_missing: uniqueIds skipped over (dropped upstream or squashed by the monitor
            queue); ``gaps`` lists the newest ``MAX_GAPS_KEPT`` ranges (first, last) missing.
        overruns: frames received but dropped because the forwarder's buffer was full.
        discarded_at_stop: frames still buffered when `PvaFrameSource.stop` gave up waiting.
        duplicates: updates repeating the last uniqueId (e.g. the current value after a
            reconnection), not forwarded.
        restarts: times the uniqueId went backwards (the detector's counter was reset).
        listener_errors: frames whose listener call raised (logged; the source goes on).
        batches: listener calls.
        initial_skipped: the PV's value at connection time, skipped as not a new frame.
        last_unique_id: the newest uniqueId received, or None.
    """

    pv: str = ""
    connected: bool = False
    connections: int = 0
    disconnects: int = 0
    frames_received: int = 0
    frames_forwarded: int = 0
    frames_rejected: int = 0
    frames_missing: int = 0
    overruns: int = 0
    discarded_at_stop: int = 0
    duplicates: int = 0
    restarts: int = 0
    listener_errors: int = 0
    batches: int = 0
    initial_skipped: int = 0
    last_unique_id: int | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Update:
    value: Any
    arrival: float


class PvaFrameSource:
    """Subscribe to an NTNDArray PV and forward its frames to a frame listener, in batches.

    Args:
        pv: the NTNDArray PV, e.g. ``"13SIM1:Pva1:Image"``.
        listener: called as ``listener(frames (n, h, w), frame_ids (n,) int64, times (n,)
            unix s, positions_m (n, 2) (y, x) metres or None)`` from the forwarder thread, e.g.
            a `FrameStreamer`.
        position_attributes: (y, x) NDAttribute names holding the beam position.
        position_units_m: metres per unit of those attributes, with the sign that turns a
            reading into the beam's position on the object (1e-3 for motors in mm; -1e-6 for
            motors in um that report the sample's own displacement).
        position_lookup: ``callable(unique_id) -> (y, x)`` in metres (or None), used for frames
            that lack the position attributes.
        queue_size: depth of the pvAccess monitor queue (``record[queueSize=N]``); when it is
            full further updates are squashed and show up as missing uniqueIds.
        buffer_frames: frames the forwarder's buffer holds before new ones count as overruns.
        max_batch: most frames per listener call.
        batch_wait_s: after the first frame of a batch, wait up to this long for more (0:
            forward what has arrived at once; under load batches grow by themselves).
        skip_initial: skip the PV's value at the first connection (the last frame the plugin
            served, possibly long ago); its uniqueId still seeds the gap detection.
        conf: pvAccess client settings (``EPICS_PVA_ADDR_LIST``, ``EPICS_PVA_AUTO_ADDR_LIST``,
            ``EPICS_PVA_SERVER_PORT``, ``EPICS_PVA_BROADCAST_PORT``); they override the
            environment.
        useenv: let the client read those settings from the environment as well.
        context: an existing ``p4p.client.thread.Context`` to use (not closed by `stop`).
        start: subscribe at once (else call `start`).
    """

    def __init__(
        self,
        pv: str,
        listener: FrameListener,
        *,
        position_attributes: Sequence[str] = DEFAULT_POSITION_ATTRIBUTES,
        position_units_m: float = 1.0,
        position_lookup: PositionLookup | None = None,
        queue_size: int = 64,
        buffer_frames: int = 4096,
        max_batch: int = 64,
        batch_wait_s: float = 0.0,
        skip_initial: bool = True,
        conf: Mapping[str, str] | None = None,
        useenv: bool = True,
        context: Any = None,
        start: bool = True,
    ):
        if len(position_attributes) != 2:
            raise ValueError("position_attributes must name the (y, x) attributes")
        if not (math.isfinite(position_units_m) and position_units_m != 0):
            raise ValueError(
                f"position_units_m must be a finite non-zero number, got {position_units_m!r}"
            )
        if queue_size < 1 or buffer_frames < 1 or max_batch < 1:
            raise ValueError("queue_size, buffer_frames and max_batch must be at least 1")
        if not batch_wait_s >= 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s!r}")
        self.pv = pv
        self.listener = listener
        self.position_attributes = tuple(str(n) for n in position_attributes)
        self.position_units_m = float(position_units_m)
        self.position_lookup = position_lookup
        self.queue_size = int(queue_size)
        self.buffer_frames = int(buffer_frames)
        self.max_batch = int(max_batch)
        self.batch_wait_s = float(batch_wait_s)
        self.skip_initial = skip_initial
        self.conf = dict(conf or {})
        self.useenv = useenv
        self._context = context
        self._own_context = context is None
        self._subscription = None
        self._buffer: deque[_Update] = deque()
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._busy = False  # the forwarder holds frames taken from the buffer
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._first_update = threading.Event()
        self._initial_pending = True  # the next update is the PV's value at (re)connection
        self._lookup_failed = False
        self._warned: dict[str, float] = {}
        self._stats = PvaStats(pv=pv)
        self._reasons: Counter[str] = Counter()
        self._gaps: deque[tuple[int, int]] = deque(maxlen=MAX_GAPS_KEPT)
        if start:
            self.start()

    @property
    def request(self) -> str:
        """The pvRequest of the subscription."""
        return f"field()record[queueSize={self.queue_size}]"

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> PvaFrameSource:
        """Start the forwarder and subscribe to the PV."""
        if self._thread is not None:
            return self
        from p4p.client.thread import Context

        if self._context is None:
            self._context = Context("pva", conf=self.conf or None, useenv=self.useenv, nt=False)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._forward_loop, name=f"pva-{self.pv}", daemon=True
        )
        self._thread.start()
        self._subscription = self._context.monitor(
            self.pv, self._on_update, request=self.request, notify_disconnect=True
        )
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Wait until the PV's current value has arrived (the subscription is live)."""
        return self._first_update.wait(timeout_s)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every frame received so far has been forwarded; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while self._buffer or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._ready.wait(min(remaining, 0.05))
        return True

    def stop(self, drain_timeout_s: float = 5.0) -> PvaStats:
        """Unsubscribe, forward what is buffered (up to ``drain_timeout_s``), stop the thread."""
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._thread is not None:
            self.drain(drain_timeout_s)
            self._stop.set()
            with self._ready:
                self._ready.notify_all()
            self._thread.join(timeout=5)
            self._thread = None
            with self._ready:
                self._stats.discarded_at_stop += len(self._buffer)
                self._buffer.clear()
        if self._own_context and self._context is not None:
            self._context.close()
            self._context = None
        self._connected.clear()
        return self.stats()

    def __enter__(self) -> PvaFrameSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- counters ----------------------------------------------------------------------------
    def stats(self) -> PvaStats:
        """A snapshot of the counters."""
        with self._ready:
            snapshot = PvaStats(**{**self._stats.as_dict(), "reject_reasons": {}, "gaps": []})
            snapshot.connected = self._connected.is_set()
            snapshot.reject_reasons = dict(self._reasons)
            snapshot.gaps = list(self._gaps)
        return snapshot

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """Log a warning, at most one per ``kind`` every ``WARN_EVERY_S`` (a kHz stream of bad
        frames must not flood the log; the counters keep the totals)."""
        now = time.monotonic()
        if now - self._warned.get(kind, -math.inf) >= WARN_EVERY_S:
            self._warned[kind] = now
            log.warning("%s: " + message, self.pv, *args)

    def _reject(self, reason: str, count: int = 1) -> None:
        with self._ready:
            self._stats.frames_rejected += count
            self._reasons[reason] += count
            total = self._stats.frames_rejected
        self._warn("reject", "rejected a frame (%d so far): %s", total, reason)

    # ---- p4p callback thread -----------------------------------------------------------------
    def _on_update(self, value: Any) -> None:
        if isinstance(value, Exception):
            self._on_event(value)
            return
        arrival = time.time()
        if not self._connected.is_set():  # data without a connection event (older servers)
            self._on_connect()
        initial, self._initial_pending = self._initial_pending, False
        self._first_update.set()
        unique_id = int(_field(value, "uniqueId", 0))
        data = _field(value, "value")
        has_data = data is not None and np.size(data) > 0
        stats = self._stats
        with self._ready:
            if unique_id == stats.last_unique_id:
                stats.duplicates += 1  # e.g. the current value again after a reconnection
                return
            if initial and stats.connections <= 1 and self.skip_initial:
                stats.initial_skipped += 1
                if has_data:
                    stats.last_unique_id = unique_id
                return
            if initial and not has_data:
                return  # a plugin that has served nothing yet: no frame
            stats.frames_received += 1
            last = stats.last_unique_id
            if last is not None and unique_id < last:
                stats.restarts += 1
                self._warn(
                    "restart", "uniqueId went back from %d to %d (counter reset)", last, unique_id
                )
            elif last is not None and unique_id > last + 1:
                stats.frames_missing += unique_id - last - 1
                self._gaps.append((last + 1, unique_id - 1))
                self._warn(
                    "gap",
                    "%d frames missing (uniqueId %d..%d; %d missing so far)",
                    unique_id - last - 1,
                    last + 1,
                    unique_id - 1,
                    stats.frames_missing,
                )
            stats.last_unique_id = unique_id
            if len(self._buffer) >= self.buffer_frames:
                stats.overruns += 1
                self._warn(
                    "overrun",
                    "forwarder behind: frame %d dropped (%d overruns so far)",
                    unique_id,
                    stats.overruns,
                )
                return
            self._buffer.append(_Update(value, arrival))
            self._ready.notify()

    def _on_connect(self) -> None:
        self._connected.set()
        with self._ready:
            self._stats.connections += 1
        self._initial_pending = True

    def _on_event(self, event: Exception) -> None:
        name = type(event).__name__
        if name == "Disconnected":
            if self._connected.is_set():
                self._connected.clear()
                with self._ready:
                    self._stats.disconnects += 1
                log.warning("%s: disconnected", self.pv)
            self._initial_pending = True
        elif name in ("Cancelled", "Finished"):
            self._connected.clear()
        else:
            log.error("%s: subscription error: %s", self.pv, event)

    # ---- forwarder thread --------------------------------------------------------------------
    def _take(self) -> list[_Update]:
        with self._ready:
            while not self._buffer and not self._stop.is_set():
                self._ready.wait(0.1)
            if not self._buffer or self._stop.is_set():
                return []
            if self.batch_wait_s > 0 and len(self._buffer) < self.max_batch:
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._buffer) < self.max_batch and not self._stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            count = min(self.max_batch, len(self._buffer))
            self._busy = True
            return [self._buffer.popleft() for _ in range(count)]

    def _forward_loop(self) -> None:
        while not self._stop.is_set():
            updates = self._take()
            try:
                if updates:
                    self._forward(updates)
            finally:
                with self._ready:
                    self._busy = False
                    self._ready.notify_all()

    def _position(self, unique_id: int, attributes: dict[str, Any]) -> np.ndarray | None:
        y, x = (_number(attributes.get(name)) for name in self.position_attributes)
        if y is not None and x is not None:
            return np.array([y, x]) * self.position_units_m
        if self.position_lookup is None:
            return None
        try:
            found = self.position_lookup(unique_id)
        except Exception:  # noqa: BLE001 - a failing lookup must not stop the frames
            if not self._lookup_failed:
                log.exception("%s: position lookup failed for frame %d", self.pv, unique_id)
                self._lookup_failed = True
            return None
        if found is None:
            return None
        position = np.asarray(found, dtype=np.float64).reshape(-1)
        return position if position.shape == (2,) and np.all(np.isfinite(position)) else None

    def _forward(self, updates: list[_Update]) -> None:
        # decode; group consecutive frames that can share one call (shape, dtype, positions)
        groups: list[tuple[tuple, list]] = []
        for update in updates:
            try:
                frame, unique_id, timestamp, attributes = ntndarray_to_frame(update.value)
            except ValueError as error:
                self._reject(str(error))
                continue
            if frame.dtype.str not in ALLOWED_DTYPES:
                self._reject(f"dtype {frame.dtype} is not carried by the wire")
                continue
            position = self._position(unique_id, attributes)
            key = (frame.shape, frame.dtype.str, position is not None)
            entry = (frame, unique_id, timestamp or update.arrival, position)
            if groups and groups[-1][0] == key:
                groups[-1][1].append(entry)
            else:
                groups.append((key, [entry]))
        for (_shape, _dtype, has_position), entries in groups:
            frames = np.stack([e[0] for e in entries])
            ids = np.array([e[1] for e in entries], dtype=np.int64)
            times = np.array([e[2] for e in entries], dtype=np.float64)
            positions = np.stack([e[3] for e in entries]) if has_position else None
            try:
                self.listener(frames, ids, times, positions)
            except Exception:  # noqa: BLE001 - the source keeps going; the count says so
                log.exception("%s: the frame listener failed on %d frames", self.pv, len(ids))
                with self._ready:
                    self._stats.listener_errors += len(ids)
                continue
            with self._ready:
                self._stats.frames_forwarded += len(ids)
                self._stats.batches += 1
