"""`LiveBoard`: what a beamline scientist watches during a scan, gathered for the browser view.

A document callback plus three listeners, each keeping only the newest of what it hears
(latest wins; nothing is queued, so a burst at the detector's full rate costs a reference
assignment per message):

* documents: the run's start document (metadata, geometry), the endpoint's stream id from the
  descriptor, the detector frame and the endpoint's readings from events (step scans), the
  stop document;
* frames (`on_frames`, a detector's frame listener: ``(frames, frame_ids, timestamps,
  positions)``), for scans whose frames do not travel in events (fly scans);
* the endpoint's results (its ZMQ PUB stream, a subscription of its own): the newest phase
  patch and the frame id it belongs to; a ``phase_uncertainty`` array, when the model sends
  one, is stitched into an uncertainty mosaic (every patch, on the listener's thread);
* the endpoint's status (control channel, polled every ``status_period_s`` on the board's own
  thread): rate, latency, queue, frames received / inferred / rejected / dropped, model;
* the continual-learning loop (`on_continual`, a dispatcher's or loop's listener).

The live mosaic comes from a source with ``snapshot()`` (the `LiveStitcher`); its final
snapshots (``add_consumer``) go into the session's accumulated image (`stitch.Composite`).
`state()` assembles all of it (arrays by reference or small copies) for a renderer that calls
it at a bounded rate (`view.renderer`). Nothing here runs in the RunEngine's thread but a few
assignments.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase

from ..documents import read_start
from ..stitch.composite import Composite, CompositeImage, ValueMosaic
from ..stitch.mosaic import MosaicSnapshot, covering_grid
from ..stitch.weights import gaussian_weight
from ..stream.payloads import RejectedPayload, ResultsPayload
from ..stream.sockets import ResultSubscriber
from ..stream.wire import Message
from .mosaic_source import FinalMosaicSource

__all__ = ["BoardState", "LiveBoard"]

log = logging.getLogger(__name__)

FRAMES_KEPT = 256  # recent detector frames kept by id, to show the frame of the newest patch
METADATA_KEYS = (
    "uid", "scan_id", "plan_name", "sample_name", "scan_pattern", "num_points",
    "energy_ev", "detector_distance_m", "detector_pixel_size_m", "object_pixel_size_m",
    "beam_size_m", "overlap", "scan_extent_m", "scan_step_m", "detector_name", "exposure_s",
)  # fmt: skip


@dataclass
class BoardState:
    """One look at the board (see `LiveBoard.state`).

    Attributes:
        frame: the detector frame of the newest patch (or the newest frame), or None.
        frame_id: its frame id (-1 when unknown).
        phase: the newest inferred phase patch (rad), or None.
        phase_frame_id: the frame id of that patch.
        mosaic: the live mosaic of the newest run, or None.
        composite: the session's accumulated image, or None.
        uncertainty: the uncertainty mosaic (rad), or None when the results carry none.
        counters: monotonically growing counts that say what changed (``results``, ``frames``,
            ``mosaic_frames``, ``finals``, ``uncertainty_patches``).
        stats: the endpoint's numbers and the run's counts, JSON-able.
        metadata: the run's start-document keys worth showing, JSON-able.
        continual: the continual-learning loop's status, JSON-able (empty when not wired).
        run: {"uid", "state": "idle" | "running" | "finished", "exit_status", "events"}.
    """

    frame: np.ndarray | None = None
    frame_id: int = -1
    phase: np.ndarray | None = None
    phase_frame_id: int = -1
    mosaic: MosaicSnapshot | None = None
    composite: CompositeImage | None = None
    uncertainty: np.ndarray | None = None
    counters: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    continual: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


class LiveBoard(CallbackBase):
    """The newest of everything the browser view shows (see the module docstring).

    Args:
        source: the live mosaic (``snapshot()``; ``add_consumer`` for final snapshots), or None.
        results_addresses: the endpoint's result sockets to subscribe to (None: no patches).
        control_address: the endpoint's control socket to poll for its status (None: the
            endpoint's readings in the events are used).
        status_period_s: seconds between status polls.
        endpoint_name: the `InferenceEndpoint` device's name in the documents.
    """

    def __init__(
        self,
        source: Any = None,
        *,
        results_addresses: str | Iterable[str] | None = None,
        control_address: str | None = None,
        status_period_s: float = 1.0,
        endpoint_name: str = "endpoint",
    ):
        super().__init__()
        self.source = source
        self.endpoint_name = endpoint_name
        self.status_period_s = status_period_s
        self.control_address = control_address
        self._lock = threading.Lock()
        self._start: dict[str, Any] = {}
        self._stream_id: str | None = None
        self._run: dict[str, Any] = {"uid": "", "state": "idle", "exit_status": None, "events": 0}
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._frame: tuple[int, np.ndarray] | None = None
        self._result: ResultsPayload | None = None
        self._readings: dict[str, Any] = {}  # the endpoint's readings from events
        self._status: dict[str, Any] = {}
        self._continual: dict[str, Any] = {}
        self._composite = Composite()
        self._composite_image: CompositeImage | None = None
        self._final: MosaicSnapshot | None = None  # the newest run's final mosaic
        self._uncertainty: ValueMosaic | None = None
        self._mosaic_cache: tuple[Any, MosaicSnapshot | None] | None = None
        self.counters = {
            "results": 0, "frames": 0, "rejected": 0, "finals": 0, "uncertainty_patches": 0,
        }  # fmt: skip
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscriber = None
        if isinstance(source, FinalMosaicSource):
            source.add_consumer(self._on_final)
        if results_addresses is not None:
            self._subscriber = ResultSubscriber(results_addresses)
            self._spawn(self._listen, "live-board-results")
        if control_address is not None:
            self._spawn(self._poll_status, "live-board-status")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- documents (RunEngine thread: assignments only) ------------------------------------------
    def start(self, doc: dict[str, Any]) -> None:
        start = read_start(doc, warn=False)
        with self._lock:
            self._start = dict(start)
            self._stream_id = None
            self._result = None
            self._uncertainty = None
            self._final = None
            self._readings = {}
            self._run = {"uid": doc.get("uid", ""), "state": "running", "exit_status": None,
                         "events": 0}  # fmt: skip

    def descriptor(self, doc: dict[str, Any]) -> None:
        configuration = doc.get("configuration", {}).get(self.endpoint_name)
        if configuration is not None and self._stream_id is None:
            self._stream_id = configuration["data"].get(f"{self.endpoint_name}_stream_id")

    def event(self, doc: dict[str, Any]) -> None:
        data = doc.get("data", {})
        self._run["events"] = self._run.get("events", 0) + 1
        frames_key = self._start.get("frames_key")
        if frames_key and frames_key in data:
            frame = np.asarray(data[frames_key])
            if frame.ndim == 2:
                number_key = self._start.get("frame_numbers_key")
                frame_id = int(data[number_key]) if number_key in data else int(doc["seq_num"])
                self._keep_frame(frame_id, frame)
        prefix = f"{self.endpoint_name}_"
        readings = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
        if readings:
            self._readings = readings

    def event_page(self, doc: dict[str, Any]) -> None:
        """Only the page's last event matters here (latest wins)."""
        data = doc.get("data", {})
        if not data:
            return
        last = {key: values[-1] for key, values in data.items() if len(values)}
        self.event({"data": last, "seq_num": doc["seq_num"][-1]})
        self._run["events"] += len(doc["seq_num"]) - 1

    def stop(self, doc: dict[str, Any]) -> None:
        self._run = {**self._run, "state": "finished", "exit_status": doc.get("exit_status")}

    # ---- listeners ------------------------------------------------------------------------------
    def on_frames(
        self, frames: np.ndarray, frame_ids: Any, timestamps: Any = None, positions: Any = None
    ) -> None:
        """A detector's frame listener: keep the newest frames by id (no copy)."""
        frame_ids = np.atleast_1d(frame_ids)
        for frame, frame_id in zip(frames[-8:], frame_ids[-8:], strict=False):
            self._keep_frame(int(frame_id), frame)

    def _keep_frame(self, frame_id: int, frame: np.ndarray) -> None:
        with self._lock:
            self._frames[frame_id] = frame
            while len(self._frames) > FRAMES_KEPT:
                self._frames.popitem(last=False)
            self._frame = (frame_id, frame)
            self.counters["frames"] += 1

    def on_continual(self, status: Mapping[str, Any]) -> None:
        """A continual-learning dispatcher's or loop's listener (a status dict)."""
        self._continual = {**self._continual, **_jsonable(dict(status))}

    def add(self, message: Message) -> None:
        """Take one result message from the endpoint (the listener calls this)."""
        stream = self._stream_id
        if stream is not None and message.run_uid != stream:
            return
        if message.kind == "rejected":
            self.counters["rejected"] += len(RejectedPayload.from_message(message).frame_ids)
            return
        if message.kind != "results":
            return
        results = ResultsPayload.from_message(message)  # PayloadError names what is wrong
        self._result = results
        self.counters["results"] += 1
        if results.phase_uncertainty is not None and results.positions_m is not None:
            self._add_uncertainty(results, results.phase_uncertainty)

    def _add_uncertainty(self, results: ResultsPayload, uncertainty: np.ndarray) -> None:
        mosaic = self._uncertainty
        if mosaic is None:
            start = self._start
            try:
                pixel = float(start["object_pixel_size_m"]) * results.pixel_scale
                extent = np.resize(np.asarray(start.get("scan_extent_m", 0.0), float), 2)
                centre = np.asarray(start.get("scan_centre_m", (0.0, 0.0)), float)
                beam_px = float(start.get("beam_size_m", 0.0)) / pixel
            except (KeyError, TypeError, ValueError):
                return  # no geometry: no uncertainty mosaic
            shape = uncertainty.shape[1:]
            grid = covering_grid(
                np.array([centre - extent / 2, centre + extent / 2]), pixel, shape
            )
            weight = gaussian_weight(shape, fwhm_px=beam_px if beam_px > 0 else shape[0] / 2)
            mosaic = self._uncertainty = ValueMosaic(grid, weight)
        mosaic.add(uncertainty, results.positions_m)
        self.counters["uncertainty_patches"] = mosaic.patches

    def _listen(self) -> None:
        while not self._closing.is_set():
            message = self._subscriber.receive(timeout_s=0.1)
            if message is None:
                continue
            try:
                self.add(message)
            except ValueError as error:  # a malformed message (PayloadError): skipped
                log.warning("the live board skipped a result message: %s", error)

    def _poll_status(self) -> None:
        from ..inference.server import EndpointClient

        client = EndpointClient(self.control_address, timeout_s=2.0)
        try:
            while not self._closing.wait(self.status_period_s):
                try:
                    status = client.status()
                except TimeoutError:
                    self._status = {**self._status, "reachable": False}
                    continue
                self._status = {**_jsonable(status), "reachable": True}
        finally:
            client.close()

    def _on_final(self, snapshot: MosaicSnapshot) -> None:
        """A run's final mosaic (the stitcher's finishing thread): into the composite."""
        with self._lock:
            self._composite.add(
                snapshot.phase, snapshot.amplitude, snapshot.weights, snapshot.pixel_size_m,
                snapshot.origin_m, run_uid=snapshot.run_uid,
            )  # fmt: skip
            self._composite_image = self._composite.image()
            if snapshot.run_uid == self._run.get("uid"):
                self._final = snapshot
            self.counters["finals"] += 1

    # ---- the state, for a renderer ----------------------------------------------------------
    def state(self) -> BoardState:
        """Everything the view shows now (see `BoardState`)."""
        result = self._result
        phase = phase_id = None
        if result is not None:
            phase = np.asarray(result.phase[-1])
            phase_id = int(result.frame_ids[-1]) if result.frame_ids else -1
        with self._lock:
            frame_pair = self._frame
            if phase_id is not None and phase_id in self._frames:
                frame_pair = (phase_id, self._frames[phase_id])
            composite = self._composite_image
            final = self._final
            uncertainty = None if self._uncertainty is None else self._uncertainty.mean()
            counters = dict(self.counters)
            run = dict(self._run)
            metadata = {k: _jsonable(self._start[k]) for k in METADATA_KEYS if k in self._start}
        mosaic = final
        if mosaic is None and self.source is not None:
            mosaic = self._live_mosaic()
        counters["mosaic_frames"] = 0 if mosaic is None else mosaic.frames_used
        return BoardState(
            frame=None if frame_pair is None else frame_pair[1],
            frame_id=-1 if frame_pair is None else frame_pair[0],
            phase=phase,
            phase_frame_id=-1 if phase_id is None else phase_id,
            mosaic=mosaic,
            composite=composite,
            uncertainty=uncertainty,
            counters=counters,
            stats=self._stats(result, mosaic),
            metadata=metadata,
            continual=dict(self._continual),
            run=run,
        )

    def _live_mosaic(self) -> MosaicSnapshot | None:
        """The source's snapshot, taken again only when patches arrived since the last one (a
        snapshot copies the canvas under the stitcher's lock)."""
        count = getattr(self.source, "frames_stitched", None)
        cached = self._mosaic_cache
        if count is not None and cached is not None and cached[0] == (count, self._run["uid"]):
            return cached[1]
        snapshot = self.source.snapshot()
        self._mosaic_cache = None if count is None else ((count, self._run["uid"]), snapshot)
        return snapshot

    def _stats(
        self, result: ResultsPayload | None, mosaic: MosaicSnapshot | None
    ) -> dict[str, Any]:
        status, readings = self._status, self._readings
        run = status.get("run") or {}
        this_run = bool(run.get("run_uid")) and run.get("run_uid") == self._stream_id
        stats: dict[str, Any] = {
            "source": "endpoint status" if status.get("reachable") else "events",
            "rate_fps": status.get("rate_fps", readings.get("rate_fps")),
            "latency_p50_ms": status.get("latency_p50_ms"),
            "latency_p99_ms": status.get("latency_p99_ms", readings.get("latency_p99_ms")),
            "queue_depth": status.get("queue_depth", readings.get("queue_depth")),
            "frames_received": run.get("received") if this_run else None,
            "frames_inferred": run.get("inferred") if this_run
            else readings.get("frames_inferred"),
            "frames_rejected": run.get("rejected") if this_run
            else readings.get("frames_rejected"),
            "frames_dropped": run.get("dropped") if this_run else None,
            "frames_rejected_seen": self.counters["rejected"],
            "frames_stitched": None if mosaic is None else mosaic.frames_used,
            "model_version": (result.model_version if result is not None else None)
            or status.get("model_version") or readings.get("result_model_version"),
            "endpoint_reachable": status.get("reachable"),
        }  # fmt: skip
        return {k: _jsonable(v) for k, v in stats.items()}

    def close(self) -> None:
        """Stop the listeners (idempotent)."""
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None


def _jsonable(value: Any) -> Any:
    """Plain JSON values (numpy scalars and arrays converted; non-finite floats -> None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 16 else f"array{value.shape}"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

