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
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import Status

from ..inference.quality import frame_summaries
from ..inference.server import EndpointClient
from ..stream.streamer import FrameStreamer
from ..stream.wire import Message

LATEST_RESULTS = 256  # result batches kept for adaptive plans
QUALITY_FRAMES = 64  # latest frames averaged by the uncertainty and residual readings


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

    def __init__(
        self,
        frames_address: str,
        results_address: str,
        control_address: str,
        *,
        source: Any = None,
        flush_timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
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
        if run.get("run_uid") and run["run_uid"] == self.stream_id.get():
            self.frames_inferred.put(int(run["inferred"]))
            self.frames_rejected.put(int(run["rejected"]) + int(run["dropped"]))
        self.rate_fps.put(float(status["rate_fps"]))
        self.queue_depth.put(int(status["queue_depth"]))
        self.latency_p99_ms.put(float(status["latency_p99_ms"]))
        if self.streamer is not None:
            self.frames_pending.put(self.streamer.pending)
        return status

    def _on_result(self, message: Message) -> None:
        if message.kind != "results":
            return
        self.latest_results.append(message)
        if message.model_version:
            self.result_model_version.put(message.model_version)
        phase = message.arrays["phase"][-1]
        self.phase_mean.put(float(phase.mean()))
        self.phase_std.put(float(phase.std()))
        self.phase_min.put(float(phase.min()))
        self.phase_max.put(float(phase.max()))
        self._note_quality(message)

    def _note_quality(self, message: Message) -> None:
        for name, values in frame_summaries(message.arrays, message.extra).items():
            self._quality[name].extend(values)
        for name, signal in (
            ("uncertainty_mean_rad", self.phase_uncertainty_mean),
            ("physics_residual", self.physics_residual_mean),
        ):
            window = self._quality[name]
            signal.put(float(np.mean(window)) if window else float("nan"))

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
        return super().unstage()

    def trigger(self) -> Status:
        """Refresh the readings from the endpoint (cheap; returns a finished status)."""
        status = Status(obj=self)
        self.refresh()
        status.set_finished()
        return status

    def latest_phase(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(frame ids, phase patches) of the newest result batch, or None before any."""
        if not self.latest_results:
            return None
        message = self.latest_results[-1]
        return np.asarray(message.frame_ids), message.arrays["phase"]
