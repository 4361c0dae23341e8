"""`InferenceEndpoint`: the edge inference endpoint as an Ophyd device.

The endpoint is a process (``bluesky-ptychonn serve``), maybe on another host; this device is
its face in a RunEngine session:

* building the device needs nothing to be running (a session, the queue server's startup, a
  list of devices can make it while the endpoint is down); ``stage`` asks the endpoint for its
  status first and raises `EndpointUnavailableError`, naming the address, when nothing
  answers within ``connect_timeout_s``;
* configuration signals: the model version it serves, its backend and batch size, the wire
  addresses and ``stream_id`` (the label the frames of this staging carry on the wire, so
  that callbacks can pick this run's results out of the endpoint's result stream);
* ``stage`` opens a run on the endpoint and, when a frame ``source`` is given (a detector's
  frame stream, e.g. ``sim_eiger.hutch.detectors["eiger"]``), attaches a `FrameStreamer`
  that sends every frame to the endpoint and keeps it until it is answered; ``unstage`` waits
  for every frame to be answered and closes the run;
* readings a plan can use: frames inferred and rejected, rate, queue depth, and summary
  statistics of the latest phase patch (``trigger`` refreshes them from the endpoint);
  ``latest_results`` holds the newest patches for adaptive plans;
* how far the live image can be trusted: ``phase_uncertainty_mean`` (rad, the mean stated
  phase uncertainty) and ``physics_residual_mean`` (the Poisson residual of the predicted
  patches against their patterns, about 1 at the photon-noise floor) over the latest
  ``QUALITY_FRAMES`` frames of this staging; NaN when the model states no uncertainty or the
  endpoint does not know the probe.
* a reading that includes the point's own frame: with ``frame_number`` (the detector's
  frame-id signal, e.g. ``eiger.frame_number``; `follow` sets it) ``trigger`` waits until
  the detector has a frame newer than the one the last reading used and the endpoint's result
  for it has arrived (bounded by ``result_timeout_s``; `FrameResultTimeoutError` names the
  frame and the address), and the phase readings and ``frame_id`` are that frame's;
  `result_for` gives its patch;
* frames that reach the endpoint by another path (``source=None``: ``bluesky-ptychonn
  pva-ingest``, whose run id is its own) are followed all the same: while staged the device
  listens to every result on the results address and keys them by frame id (areaDetector's
  uniqueId, the detector's frame number);
* ``configure({"model_version": V})`` hot-swaps the endpoint's model (``model_resolver(V)``
  gives the model's path; without one V is the path) and records the served version and its
  source in the configuration, so a swap inside a run shows in the next descriptor.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from ..inference.quality import frame_summaries
from ..inference.server import EndpointClient
from ..stream.sockets import ResultSubscriber
from ..stream.streamer import FrameStreamer
from ..stream.wire import Message

LATEST_RESULTS = 256  # result batches kept for adaptive plans
QUALITY_FRAMES = 64  # latest frames averaged by the uncertainty and residual readings
RESULTS_BY_FRAME = 4096  # per-frame results kept for readings at a point
UNCERTAINTY_ARRAYS = ("phase_uncertainty", "uncertainty")  # optional result arrays, rad


class FrameResultTimeoutError(TimeoutError):
    """The endpoint's result for a point's frame did not arrive in time."""


class EndpointUnavailableError(ConnectionError):
    """The inference endpoint does not answer on its control address."""


class InferenceEndpoint(Device):
    """An inference endpoint reached over ZMQ (see the module docstring).

    Args:
        frames_address, results_address, control_address: the endpoint's sockets.
        source: an object with ``add_frame_listener`` / ``remove_frame_listener`` whose frames
            go to the endpoint while staged (None: the detector streams by itself).
        flush_timeout_s: how long ``unstage`` waits for unanswered frames.
        connect_timeout_s: how long ``stage`` waits for the endpoint's first answer.
    """

    model_version = Cpt(Signal, value="", kind="config")
    backend = Cpt(Signal, value="", kind="config")
    stream_id = Cpt(Signal, value="", kind="config")
    results_address = Cpt(Signal, value="", kind="config")
    frames_inferred = Cpt(Signal, value=0, kind="hinted")
    frames_rejected = Cpt(Signal, value=0, kind="normal")
    frames_pending = Cpt(Signal, value=0, kind="normal")
    rate_fps = Cpt(Signal, value=0.0, kind="normal")
    queue_depth = Cpt(Signal, value=0, kind="normal")
    latency_p99_ms = Cpt(Signal, value=0.0, kind="normal")
    phase_mean = Cpt(Signal, value=0.0, kind="normal")
    phase_std = Cpt(Signal, value=0.0, kind="normal")
    phase_min = Cpt(Signal, value=0.0, kind="normal")
    phase_max = Cpt(Signal, value=0.0, kind="normal")
    # the model that produced the latest result: read with every event, so a model swapped
    # in during a run (continual learning) shows in the run's documents where it happened
    result_model_version = Cpt(Signal, value="", kind="normal")
    phase_uncertainty_mean = Cpt(Signal, value=float("nan"), kind="normal")
    physics_residual_mean = Cpt(Signal, value=float("nan"), kind="normal")
    frame_id = Cpt(Signal, value=-1, kind="normal")  # the frame the phase readings belong to
    model_source = Cpt(Signal, value="", kind="config")  # what the last configure() loaded

    def __init__(
        self,
        frames_address: str,
        results_address: str,
        control_address: str,
        *,
        source: Any = None,
        flush_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        frame_number: Any = None,
        result_timeout_s: float = 10.0,
        model_resolver: Callable[[str], str] | None = None,
        name: str = "endpoint",
        **kwargs: Any,
    ):
        super().__init__(name=name, **kwargs)
        self.frames_address = frames_address
        self.control_address = control_address
        self.client = EndpointClient(control_address)
        self.source = source
        self.flush_timeout_s = flush_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.streamer: FrameStreamer | None = None
        self.latest_results: deque[Message] = deque(maxlen=LATEST_RESULTS)
        self._quality: dict[str, deque[float]] = {
            "uncertainty_mean_rad": deque(maxlen=QUALITY_FRAMES),
            "physics_residual": deque(maxlen=QUALITY_FRAMES),
        }
        self._lock = threading.Lock()
        self.results_address.put(results_address)
        self.frame_number = frame_number
        self.result_timeout_s = float(result_timeout_s)
        self.model_resolver = model_resolver
        self._by_frame: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._arrived = threading.Condition()
        self._awaited_frame: int | None = None
        self._external_inferred = 0
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()

    def follow(self, detector: Any) -> None:
        """Readings wait for ``detector``'s frames (its ``frame_number`` signal)."""
        self.frame_number = detector.frame_number

    def check(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The endpoint's status, read into the signals; raises `EndpointUnavailableError`
        naming the address when it does not answer within ``timeout_s`` (default
        ``connect_timeout_s``)."""
        timeout_s = self.connect_timeout_s if timeout_s is None else timeout_s
        try:
            status = self.client.request("status", reply_timeout_s=timeout_s)
        except TimeoutError:
            raise EndpointUnavailableError(
                f"{self.name}: no inference endpoint answers at {self.control_address} "
                f"(waited {timeout_s:g} s); start one with `bluesky-ptychonn serve --model ...` "
                "or check the [endpoint] table of the session's configuration"
            ) from None
        return self._read_status(status)

    def refresh(self) -> dict[str, Any]:
        """Read the endpoint's status into the signals; raises TimeoutError if it is down."""
        return self._read_status(self.client.status())

    def _read_status(self, status: dict[str, Any]) -> dict[str, Any]:
        self.model_version.put(status["model_version"])
        self.backend.put(f"{status['backend']}-{status['precision']}-{status['device']}")
        run = status.get("run", {})
        if self._listening.is_set():  # frames of another sender (pva-ingest): counted here
            self.frames_inferred.put(self._external_inferred)
        elif run.get("run_uid") and run["run_uid"] == self.stream_id.get():
            self.frames_inferred.put(int(run["inferred"]))
            self.frames_rejected.put(int(run["rejected"]) + int(run["dropped"]))
        self.rate_fps.put(float(status["rate_fps"]))
        self.queue_depth.put(int(status["queue_depth"]))
        self.latency_p99_ms.put(float(status["latency_p99_ms"]))
        if self.streamer is not None:
            self.frames_pending.put(self.streamer.pending)
        return status

    def _on_result(self, message: Message) -> None:
        if message.kind == "rejected":  # answered without a phase: readings say so, no wait
            reason = str((message.extra or {}).get("reason", "rejected"))
            with self._arrived:
                for frame in message.frame_ids:
                    self._by_frame[int(frame)] = {"phase": None, "uncertainty": None,
                                                  "model_version": "", "position_m": None,
                                                  "rejected": reason}  # fmt: skip
                self._arrived.notify_all()
            return
        if message.kind != "results":
            return
        self.latest_results.append(message)
        phases = message.arrays["phase"]
        uncertainty = next((message.arrays[k] for k in UNCERTAINTY_ARRAYS
                            if k in message.arrays), None)  # fmt: skip
        with self._arrived:
            for i, frame in enumerate(message.frame_ids):
                self._by_frame[int(frame)] = {
                    "phase": phases[i],
                    "uncertainty": None if uncertainty is None else uncertainty[i],
                    "model_version": message.model_version,
                    "position_m": None if message.positions_m is None else message.positions_m[i],
                }
                self._by_frame.move_to_end(int(frame))
            while len(self._by_frame) > RESULTS_BY_FRAME:
                self._by_frame.popitem(last=False)
            self._arrived.notify_all()
        self._note_quality(message)
        if self.frame_number is None:  # no frame to wait for: the newest patch
            self._show(int(message.frame_ids[-1]), phases[-1], message.model_version)

    def _show(self, frame: int, phase: np.ndarray, model_version: str) -> None:
        if model_version:
            self.result_model_version.put(model_version)
        self.frame_id.put(int(frame))
        self.phase_mean.put(float(phase.mean()))
        self.phase_std.put(float(phase.std()))
        self.phase_min.put(float(phase.min()))
        self.phase_max.put(float(phase.max()))

    def _note_quality(self, message: Message) -> None:
        for name, values in frame_summaries(message.arrays, message.extra).items():
            self._quality[name].extend(values)
        for name, signal in (
            ("uncertainty_mean_rad", self.phase_uncertainty_mean),
            ("physics_residual", self.physics_residual_mean),
        ):
            window = self._quality[name]
            signal.put(float(np.mean(window)) if window else float("nan"))

    def _listen_external(self, subscriber: ResultSubscriber) -> None:
        """Every result on the results address, whatever its run id (pva-ingest's frames)."""
        try:
            while self._listening.is_set():
                message = subscriber.receive(timeout_s=0.05)
                if message is not None and message.kind == "results":
                    self._external_inferred += len(message.frame_ids)
                    self._on_result(message)
        finally:
            subscriber.close()

    def result_for(self, frame_id: int, timeout_s: float | None = None) -> dict[str, Any]:
        """The endpoint's result for one frame: ``phase`` (H, W) rad (None, with ``rejected``
        giving the reason, for a frame the endpoint rejected), ``uncertainty`` (H, W) rad or
        None, ``model_version``, ``position_m``; waits up to ``timeout_s`` (default
        ``result_timeout_s``) and raises `FrameResultTimeoutError` naming the frame."""
        timeout_s = self.result_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while int(frame_id) not in self._by_frame:
                left = deadline - time.monotonic()
                if left <= 0:
                    newest = next(reversed(self._by_frame), None) if self._by_frame else None
                    raise FrameResultTimeoutError(
                        f"{self.name}: no result for frame {int(frame_id)} from the inference "
                        f"endpoint (results at {self.results_address.get()}, control at "
                        f"{self.control_address}) within {timeout_s:g} s; newest frame "
                        f"answered: {newest}. Is the endpoint running and fed?"
                    )
                self._arrived.wait(min(left, 0.1))
            return dict(self._by_frame[int(frame_id)])

    def _await_point_frame(self) -> int:
        """The frame of this point: the detector's newest, once it is newer than the last one
        a reading used (bounded by ``result_timeout_s``)."""
        deadline = time.monotonic() + self.result_timeout_s
        while True:
            frame = int(self.frame_number.get())
            if self._awaited_frame is None or frame > self._awaited_frame:
                return frame
            if time.monotonic() > deadline:
                raise FrameResultTimeoutError(
                    f"{self.name}: the detector made no new frame within "
                    f"{self.result_timeout_s:g} s (still frame {frame})"
                )
            time.sleep(0.002)

    def stage(self) -> list[Any]:
        self.check()
        stream_id = uuid.uuid4().hex
        self.stream_id.put(stream_id)
        reply = self.client.run_start(stream_id)
        if not reply.get("ok"):
            raise RuntimeError(f"the inference endpoint refused run_start: {reply}")
        self.latest_results.clear()
        for window in self._quality.values():
            window.clear()
        self.phase_uncertainty_mean.put(float("nan"))
        self.physics_residual_mean.put(float("nan"))
        with self._arrived:
            self._by_frame.clear()
        self._awaited_frame = None if self.frame_number is None else int(self.frame_number.get())
        self._external_inferred = 0
        if self.source is None:
            subscriber = ResultSubscriber(self.results_address.get())
            self._listening.set()
            self._listener = threading.Thread(target=self._listen_external, args=(subscriber,),
                                              name=f"{self.name}-results", daemon=True)  # fmt: skip
            self._listener.start()
        self.streamer = FrameStreamer(
            self.frames_address,
            self.results_address.get(),
            run_uid=stream_id,
            on_result=self._on_result,
        )
        if self.source is not None:
            self.source.add_frame_listener(self.streamer)
        self.refresh()
        return super().stage()

    def unstage(self) -> list[Any]:
        streamer, self.streamer = self.streamer, None
        try:
            if streamer is not None:
                if self.source is not None:
                    self.source.remove_frame_listener(streamer)
                if not streamer.flush(self.flush_timeout_s):
                    raise TimeoutError(
                        f"{streamer.pending} frames were not answered by the inference endpoint "
                        f"within {self.flush_timeout_s} s (they are kept by the sender)"
                    )
                self.frames_pending.put(0)
            self.client.run_stop()
            self.refresh()
        finally:
            if streamer is not None:
                streamer.close()
            self._listening.clear()
            if self._listener is not None:
                self._listener.join(timeout=2)
                self._listener = None
        return super().unstage()

    def trigger(self) -> Status:
        """Refresh the readings from the endpoint. With ``frame_number`` the status finishes
        once the result of this point's frame has arrived (its phase becomes the reading) and
        fails with `FrameResultTimeoutError` after ``result_timeout_s``; without, at once."""
        status = Status(obj=self)
        if self.frame_number is None:
            self.refresh()
            status.set_finished()
            return status

        def wait() -> None:
            try:
                frame = self._await_point_frame()
                result = self.result_for(frame)
                self._awaited_frame = frame
                if result["phase"] is None:  # the endpoint rejected this frame (counted)
                    self.frame_id.put(frame)
                    for signal in (self.phase_mean, self.phase_std, self.phase_min,
                                   self.phase_max):  # fmt: skip
                        signal.put(float("nan"))
                else:
                    self._show(frame, result["phase"], result["model_version"])
                self.refresh()
            except Exception as error:  # noqa: BLE001 - the status carries it to the plan
                status.set_exception(error)
            else:
                status.set_finished()

        threading.Thread(target=wait, name=f"{self.name}-trigger", daemon=True).start()
        return status

    def configure(self, d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Configuration; ``model_version`` hot-swaps the endpoint's model (module docstring):
        the old model keeps serving, and RuntimeError says why, when the swap is refused."""
        d = dict(d)
        if "model_version" not in d:
            return super().configure(d)
        old = self.read_configuration()
        wanted = str(d.pop("model_version"))
        path = self.model_resolver(wanted) if self.model_resolver is not None else wanted
        reply = self.client.load_model(str(path))
        if not reply.get("ok"):
            raise RuntimeError(
                f"{self.name}: the endpoint refused model {wanted!r} ({path}): "
                f"{reply.get('error')}; it still serves {reply.get('model_version')!r}"
            )
        self.model_source.put(str(path))
        self.refresh()
        if d:
            super().configure(d)
        return old, self.read_configuration()

    def latest_phase(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(frame ids, phase patches) of the newest result batch, or None before any."""
        if not self.latest_results:
            return None
        message = self.latest_results[-1]
        return np.asarray(message.frame_ids), message.arrays["phase"]
