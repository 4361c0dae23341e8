"""The edge inference endpoint: frames in (ZMQ PULL), phase/amplitude out (ZMQ PUB).

One process, four kinds of thread:

* **receive**: decodes wire messages, validates every frame (shape, dtype, finite values)
  and queues the good ones in a bounded buffer; bad frames are rejected with a reason and
  answered at once with a ``rejected`` message (so the sender stops waiting for them); frames
  beyond the buffer are dropped, counted and answered the same way — never silently.
* **infer**: adaptive batching: whenever the engine is free it takes what has arrived, up to a
  full batch (with ``batch_timeout_s`` > 0 it first waits up to that long for a batch to fill).
  At low rates a frame is inferred alone the moment it arrives (lowest latency); under load
  frames queue while the engine works and the next batch is bigger (highest throughput). The
  tail of a run always goes. With ``lanes`` > 1 there are that many infer threads, each with
  its own engine (the CPU threads divided among them), each taking the next batch the moment
  it is free: a frame that arrives while one lane is busy goes to an idle one instead of
  waiting, and no lane waits for another (one batch split over all cores waits for its
  slowest thread, which on cores shared with the frame source and the stitcher is often a
  preempted one).
  Each batch is preprocessed and inferred by the current engine and published as a
  ``results`` message (phase, amplitude, frame ids, positions, model version, the frames'
  creation time for latency).
* **publish**: sends what the other threads answered (rejections, and results while frames
  are waiting), so that under load the infer thread starts the next batch while the last
  one's results are encoded and sent (measured: the engine otherwise idles during every
  publish); with nothing waiting, the infer thread sends its results itself (a hand-over
  costs latency when there is nothing to overlap).
* **control**: a REP socket answering JSON requests: ``status``, ``load_model`` (the new model
  is loaded and checked before it replaces the old one, which keeps serving on failure),
  ``run_start``, ``run_stop`` (waits until the run's frames are all answered), ``shutdown``.

Sockets bind to 127.0.0.1 unless configured otherwise; beyond loopback the endpoint needs a
CURVE key folder (`inference.security.EndpointGuard`): every socket is then encrypted and
authenticated, only allow-listed clients may send control requests, and ``load_model`` loads
a model only when its sidecar's sha256 matches the one the request carries. Malformed or
unauthenticated traffic is counted (``status()["security"]``) and refused. Run it with
``bluesky-ptychonn serve --model MODEL``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zmq

from ..stream.payloads import (
    RESIDUAL_KEY,
    UNCERTAINTY_KEY,
    FramesPayload,
    PayloadError,
    RejectedPayload,
    ResultsPayload,
)
from ..stream.security import KeySource, client_keys
from ..stream.sockets import LOOPBACK, FrameReceiver, ResultPublisher, tcp_address
from ..stream.wire import Message
from .quality import frame_summaries, result_fields
from .security import EndpointGuard, ModelDigestError, sidecar_digest, verify_model_digest

log = logging.getLogger(__name__)

LATENCY_WINDOW = 4096  # latencies kept for the status percentiles
QUALITY_WINDOW = 256  # latest frames whose uncertainty and residual the status averages
MAX_CONTROL_BYTES = 65_536  # a control request is a small JSON object


@dataclass
class EndpointConfig:
    """Settings of an inference endpoint.

    Attributes:
        model: model file or directory (sidecar + weights or ONNX).
        backend: engine backend ("auto", "tensorrt", "onnxruntime", "pytorch").
        precision: engine precision, or None for the backend's default.
        host: interface the sockets bind to (loopback unless configured).
        frames_port, results_port, control_port: TCP ports.
        batch_size: largest batch sent to the engine (frames).
        batch_timeout_s: longest the oldest queued frame waits for a batch to fill, seconds;
            0 (default): never wait, infer what has arrived whenever the engine is free.
        threads: CPU threads of the engine (None: the cores this process may use).
        spin: let ONNX Runtime's worker threads spin between calls (lower latency on an
            otherwise idle machine, but they burn CPU that the receive / publish threads and
            a stitcher on the same cores need; off by default).
        workers: ONNX Runtime sessions that split each batch between them (CPU only; the
            threads are divided among them).
        micro_batch: ONNX Runtime sessions run their share in pieces of this many frames.
        lanes: independent infer threads, each with its own engine (ONNX Runtime: with
            ``threads // lanes`` CPU threads; PyTorch engines share torch's one thread pool),
            each taking the next batch as soon as it is free (results may then leave out of
            order; every frame is still answered once).
        buffer_frames: frames the endpoint holds before it drops (and reports) new ones.
        name: label in status replies and result messages.
        physics: compute the physics residual of every frame (`physics.PhysicsCheck`) when
            the model's files carry its probe; published in each result's
            ``extra["physics_residual"]``.
        keys: CURVE key folder (`stream.security`); required to bind beyond loopback.
        require_sha256: ``load_model`` requests must carry the model sidecar's sha256
            (None: required exactly when ``keys`` is set).
        model_sha256: expected sha256 of the first model's sidecar (None: not checked).
    """

    model: str
    backend: str = "auto"
    precision: str | None = None
    host: str = LOOPBACK
    frames_port: int = 5560
    results_port: int = 5561
    control_port: int = 5562
    batch_size: int = 32
    batch_timeout_s: float = 0.0
    buffer_frames: int = 10_000
    threads: int | None = None
    spin: bool = False
    workers: int = 1
    micro_batch: int | None = None
    lanes: int = 1
    name: str = "ptychonn-endpoint"
    physics: bool = True
    keys: str | None = None
    require_sha256: bool | None = None
    model_sha256: str | None = None

    @property
    def sha256_required(self) -> bool:
        return self.keys is not None if self.require_sha256 is None else self.require_sha256

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 64:
            raise ValueError(f"batch_size must lie in 1..64, got {self.batch_size}")
        if not self.batch_timeout_s >= 0:
            raise ValueError(f"batch_timeout_s must be >= 0, got {self.batch_timeout_s}")
        if self.buffer_frames < self.batch_size:
            raise ValueError("buffer_frames must hold at least one batch")
        if not 1 <= self.lanes <= 64:
            raise ValueError(f"lanes must lie in 1..64, got {self.lanes}")

    @property
    def addresses(self) -> dict[str, str]:
        return {
            "frames": tcp_address(self.frames_port, self.host),
            "results": tcp_address(self.results_port, self.host),
            "control": tcp_address(self.control_port, self.host),
        }


@dataclass
class _Item:
    frame: np.ndarray
    frame_id: int
    position: np.ndarray | None
    created: float  # the sender's clock (frame creation), s since the epoch
    run_uid: str
    received: float = 0.0  # this endpoint's clock when the message was decoded


@dataclass
class RunCounters:
    """Per-run tallies, reset by ``run_start``."""

    run_uid: str = ""
    received: int = 0
    inferred: int = 0
    rejected: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.time)


def check_engine(engine: Any) -> None:
    """Run an engine once on zeros and check its output; raises ValueError if it is unusable."""
    h, w = engine.preprocessing.frame_shape
    output = engine.infer(np.zeros((2, h, w), dtype=np.float32))
    channels = 3 if getattr(engine, "has_uncertainty", False) else 2
    if output.ndim != 4 or output.shape[:2] != (2, channels):
        raise ValueError(f"the model returned shape {output.shape}, expected (2, {channels}, H, W)")
    if not np.all(np.isfinite(output)):
        raise ValueError("the model returned non-finite values on a blank frame")


class EndpointServer:
    """An inference endpoint serving one model at a time (see the module docstring)."""

    def __init__(self, config: EndpointConfig, *, context: zmq.Context | None = None):
        config.validate()
        self.config = config
        self.context = context or zmq.Context()
        # refuses an insecure bind before anything is loaded
        self.guard = EndpointGuard(self.context, config.host, config.keys)
        try:
            verify_model_digest(config.model, config.model_sha256)
            self._engines = self._load_lanes(config.model)  # one engine per lane
        except BaseException:
            self.guard.stop()
            raise
        self._lane_locks = [threading.Lock() for _ in self._engines]  # held while a lane infers
        self._queue: deque[_Item] = deque()
        self._queue_ready = threading.Condition()
        self._in_flight = [0] * config.lanes  # per lane: frames taken and not yet answered
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.totals = Counter()
        self.reject_reasons: Counter[str] = Counter()
        self.run = RunCounters()
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        # where a frame's time goes (ms): creation -> decoded here (sender's clock against
        # ours: meaningful when the clocks agree, e.g. the same host), queued -> taken by a
        # lane, and the engine call of its batch
        self._segments_ms: dict[str, deque[float]] = {
            name: deque(maxlen=LATENCY_WINDOW) for name in ("transport", "queue_wait", "engine")
        }
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=256)
        self._quality: dict[str, deque[float]] = {
            name: deque(maxlen=QUALITY_WINDOW)
            for name in ("uncertainty_mean_rad", "physics_residual")
        }
        self.started = time.time()
        addresses = config.addresses
        self.receiver = FrameReceiver(
            addresses["frames"], context=self.context, setup=self.guard.setup_for("frames")
        )
        self.publisher = ResultPublisher(
            addresses["results"], context=self.context, setup=self.guard.setup_for("results")
        )
        self._publish_lock = threading.Lock()  # the PUB socket, used by two threads in turn
        self._outbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._unpublished = 0  # messages handed to the publish thread and not yet sent
        self._unpublished_lock = threading.Lock()
        self.control = self.context.socket(zmq.REP)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
        control_setup = self.guard.setup_for("control")
        if control_setup is not None:
            control_setup(self.control)
        self.control.bind(addresses["control"])
        if self.guard.curve:
            self.guard.watch({"frames": self.receiver.socket, "results": self.publisher.socket,
                              "control": self.control})  # fmt: skip

    # ---- model ---------------------------------------------------------------------------------
    def _load(self, model_path: str, threads: int | None):
        from .loader import load_engine

        engine = load_engine(
            model_path, self.config.backend, precision=self.config.precision,
            max_batch=max(self.config.batch_size, 1), threads=threads,
            spin=self.config.spin,
            **({"workers": self.config.workers} if self.config.workers != 1 else {}),
            **({"micro_batch": self.config.micro_batch} if self.config.micro_batch else {}),
        )  # fmt: skip
        check_engine(engine)
        engine.warmup((1, self.config.batch_size))
        physics = self._physics_for(model_path, engine) if self.config.physics else None
        engine.physics_check = physics
        return engine

    @staticmethod
    def _physics_for(model_path: str, engine: Any) -> Any:
        """The physics check (`physics.PhysicsCheck`) of a model whose files carry its probe
        (None otherwise); imported here, so that clients of this module need no scipy."""
        from ..model.checkpoint import read_probe, resolve
        from .physics import PhysicsCheck

        probe = read_probe(resolve(model_path))
        if probe is None:
            return None
        try:
            return PhysicsCheck(probe, engine.preprocessing)
        except ValueError as error:
            log.warning("no physics check for %s: %s", model_path, error)
            return None

    def _load_lanes(self, model_path: str) -> list:
        """One checked engine per lane, the CPU threads divided among them."""
        lanes = self.config.lanes
        threads = self.config.threads
        if lanes > 1:
            from .onnx_engine import default_threads

            threads = max(1, (threads or default_threads()) // lanes)
        engines: list = []
        try:
            for _ in range(lanes):
                engines.append(self._load(model_path, threads))
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        return engines

    @property
    def _engine(self):
        """The first lane's engine (the model, preprocessing and backend every lane shares)."""
        return self._engines[0]

    @property
    def model_version(self) -> str:
        return self._engine.info.model_version

    def load_model(self, model_path: str, sha256: str | None = None) -> dict[str, Any]:
        """Load, check and swap in a new model; the old one keeps serving if anything fails.

        ``sha256``: the expected digest of the model's sidecar (required when
        ``config.sha256_required``); a model whose sidecar differs is refused.
        """
        engines: list = []
        try:
            if sha256 is None and self.config.sha256_required:
                raise ModelDigestError(
                    "this endpoint loads a model only with the sha256 of its sidecar (from the "
                    "registry or the sidecar you pointed at)"
                )
            verify_model_digest(model_path, sha256)
            engines = self._load_lanes(model_path)
            old_shape = self._engine.preprocessing.frame_shape
            if engines[0].preprocessing.frame_shape != old_shape:
                raise ValueError(
                    f"the new model takes {engines[0].preprocessing.frame_shape} frames, the "
                    f"stream carries {old_shape}"
                )
        except Exception as error:  # noqa: BLE001 - any failure keeps the old model
            for engine in engines:
                engine.close()
            log.error("model swap to %s refused: %s", model_path, error)
            return {"ok": False, "error": f"{type(error).__name__}: {error}",
                    "model_version": self.model_version}  # fmt: skip
        for lane, engine in enumerate(engines):  # each lane swaps between two of its batches
            with self._lane_locks[lane]:
                old, self._engines[lane] = self._engines[lane], engine
            old.close()
        log.info("now serving model %s", self.model_version)
        return {"ok": True, "model_version": self.model_version}

    # ---- threads -------------------------------------------------------------------------------
    def start(self) -> EndpointServer:
        loops = [
            (self._receive_loop, ()),
            *((self._infer_loop, (lane,)) for lane in range(self.config.lanes)),
            (self._publish_loop, ()),
            (self._control_loop, ()),
        ]
        for target, args in loops:
            name = target.__name__ + "".join(f"-{a}" for a in args)
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("endpoint %s serving %s on %s", self.config.name, self.model_version,
                 self.config.addresses)  # fmt: skip
        return self

    def wait(self) -> None:
        """Block until ``shutdown`` (control request) or `stop`."""
        while not self._stop.wait(0.5):
            pass

    def stop(self) -> None:
        self._stop.set()
        with self._queue_ready:
            self._queue_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        for closable in (self.receiver, self.publisher):
            closable.close()
        self.control.close(linger=0)
        for engine in self._engines:
            engine.close()
        self.guard.stop()

    def _reject(self, message: Message, indices: list[int], reason: str, dropped: bool) -> None:
        key = "dropped" if dropped else "rejected"
        self.totals[key] += len(indices)
        setattr(self.run, key, getattr(self.run, key) + len(indices))
        self.reject_reasons[reason] += len(indices)
        answer = RejectedPayload(
            run_uid=message.run_uid,
            frame_ids=[message.frame_ids[i] for i in indices],
            reason=reason,
            dropped=dropped,
            endpoint=self.config.name,
            timestamp=message.timestamp,
        )
        self._publish(answer.to_message())

    def _frame_problem(self, frames: np.ndarray) -> list[str | None]:
        """One reason per frame (None: good)."""
        try:
            self._engine.preprocessing.check_frames(frames)
        except ValueError as error:
            return [str(error)] * len(frames)
        finite = np.ones(len(frames), dtype=bool)
        if frames.dtype.kind in "fc":
            finite = np.isfinite(frames.reshape(len(frames), -1)).all(axis=1)
        return [None if ok else "frame contains NaN or infinite values" for ok in finite]

    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            message = self.receiver.receive(timeout_s=0.1)
            if message is None:
                continue
            arrived = time.time()
            try:
                payload = FramesPayload.from_message(message)
            except PayloadError as error:  # answered, so that the sender does not resend it
                if message.frame_ids:
                    self._reject(message, list(range(len(message.frame_ids))),
                                 error.reason, dropped=False)  # fmt: skip
                continue
            frames = payload.frames
            self.totals["received"] += len(frames)
            if message.run_uid == self.run.run_uid:
                self.run.received += len(frames)
            problems = self._frame_problem(frames)
            by_reason: dict[str, list[int]] = {}
            good: list[int] = []
            for index, problem in enumerate(problems):
                (by_reason.setdefault(problem, []) if problem else good).append(index)
            for reason, indices in by_reason.items():
                self._reject(message, indices, reason, dropped=False)
            with self._queue_ready:
                room = self.config.buffer_frames - len(self._queue)
                accepted, overflow = good[: max(room, 0)], good[max(room, 0) :]
                for index in accepted:
                    position = None if payload.positions_m is None else payload.positions_m[index]
                    self._queue.append(
                        _Item(frames[index], payload.frame_ids[index], position,
                              payload.timestamp, payload.run_uid, arrived)
                    )  # fmt: skip
                self._queue_ready.notify()
            if overflow:
                self._reject(message, overflow, "endpoint buffer full", dropped=True)

    def _next_batch(self, lane: int) -> list[_Item]:
        batch_size, timeout = self.config.batch_size, self.config.batch_timeout_s
        with self._queue_ready:
            while not self._queue and not self._stop.is_set():
                self._queue_ready.wait(0.1)
            if self._stop.is_set():
                return []
            deadline = time.monotonic() + timeout
            while len(self._queue) < batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._queue_ready.wait(remaining)
            count = min(batch_size, len(self._queue))
            self._in_flight[lane] = count
            return [self._queue.popleft() for _ in range(count)]

    def _publish(self, message: Message, inline: bool = False) -> None:
        """Send now (``inline``, when nothing is queued for the publish thread) or hand the
        message to the publish thread."""
        if inline and not self._unpublished:
            with self._publish_lock:
                self.publisher.publish(message)
            return
        with self._unpublished_lock:
            self._unpublished += 1
        self._outbox.put(message)

    def _publish_loop(self) -> None:
        while True:
            try:
                message = self._outbox.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return  # stopped, and everything handed over has been sent
                continue
            try:
                with self._publish_lock:
                    self.publisher.publish(message)
            except Exception:  # noqa: BLE001 - one bad message must not stop the answers
                log.exception("could not publish a %s message", message.kind)
            finally:
                with self._unpublished_lock:
                    self._unpublished -= 1

    def _infer_loop(self, lane: int) -> None:
        while not self._stop.is_set():
            batch = self._next_batch(lane)
            if not batch:
                continue
            # a batch never mixes runs: split where the run uid changes
            start = 0
            for end in range(1, len(batch) + 1):
                if end == len(batch) or batch[end].run_uid != batch[start].run_uid:
                    self._infer(batch[start:end], lane)
                    start = end
            self._in_flight[lane] = 0

    def _infer(self, items: list[_Item], lane: int = 0) -> None:
        frames = np.stack([item.frame for item in items])
        with self._lane_locks[lane]:
            engine = self._engines[lane]
            started = time.time()
            output = engine.infer(frames)
            version = engine.info.model_version
            arrays, quality = result_fields(output, frames, getattr(engine, "physics_check", None))
        positions = [item.position for item in items]
        now = time.time()
        self._note_quality(arrays, quality)
        message = ResultsPayload(
            run_uid=items[0].run_uid,
            frame_ids=[item.frame_id for item in items],
            phase=output[:, 0],
            amplitude=output[:, 1],
            positions_m=None if any(p is None for p in positions) else np.stack(positions),
            model_version=version,
            # patch pixel size over the full frame's object pixel size (crop coarsens it)
            pixel_scale=engine.preprocessing.object_patch_geometry(1.0)[0],
            created=np.array([item.created for item in items], dtype=np.float64),
            phase_uncertainty=arrays.get(UNCERTAINTY_KEY),
            physics_residual=quality.get(RESIDUAL_KEY),
            endpoint=self.config.name,
            timestamp=now,
        ).to_message()
        # count before publishing: whoever sees the result may ask for the counts at once
        self.totals["inferred"] += len(items)
        self.totals["batches"] += 1
        if items[0].run_uid == self.run.run_uid:
            self.run.inferred += len(items)
        self._latencies_ms.extend((now - item.created) * 1e3 for item in items)
        self._segments_ms["transport"].extend((i.received - i.created) * 1e3 for i in items)
        self._segments_ms["queue_wait"].extend((started - i.received) * 1e3 for i in items)
        self._segments_ms["engine"].extend([(now - started) * 1e3] * len(items))
        self._rate_window.append((time.monotonic(), len(items)))
        # frames waiting: let the publish thread send these while the engine runs the next
        self._publish(message, inline=not self._queue)

    def _note_quality(self, arrays: dict[str, np.ndarray], quality: dict[str, Any]) -> None:
        for name, values in frame_summaries(arrays, quality).items():
            self._quality[name].extend(values)

    # ---- control -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters, queue depth, rate, latency percentiles (end to end: frame creation to
        result, and by segment: ``transport`` creation -> decoded here, ``queue_wait`` decoded
        -> taken by a lane, ``engine`` the batch's engine call; ms), model version."""
        latencies = np.array(self._latencies_ms) if self._latencies_ms else np.zeros(1)
        window = list(self._rate_window)
        rate = 0.0
        if len(window) > 1 and window[-1][0] > window[0][0]:
            rate = sum(n for _, n in window[1:]) / (window[-1][0] - window[0][0])
        return {
            "name": self.config.name,
            "model_version": self.model_version,
            "backend": self._engine.info.backend,
            "precision": self._engine.info.precision,
            "device": self._engine.info.device,
            "frames_received": self.totals["received"],
            "frames_inferred": self.totals["inferred"],
            "frames_rejected": self.totals["rejected"],
            "frames_dropped": self.totals["dropped"],
            "batches": self.totals["batches"],
            "reject_reasons": dict(self.reject_reasons),
            "queue_depth": len(self._queue),
            "lanes": self.config.lanes,
            "rate_fps": rate,
            "latency_p50_ms": float(np.percentile(latencies, 50)),
            "latency_p99_ms": float(np.percentile(latencies, 99)),
            "latency_segments_ms": {
                name: {
                    "p50": float(np.percentile(values, 50)) if values else 0.0,
                    "p99": float(np.percentile(values, 99)) if values else 0.0,
                }
                for name, values in ((k, list(v)) for k, v in self._segments_ms.items())
            },
            "run": asdict(self.run),
            # means over the latest frames; None when the model states no uncertainty / the
            # probe is unknown
            "quality": {
                name: (float(np.mean(values)) if values else None)
                for name, values in ((k, list(v)) for k, v in self._quality.items())
            },
            "uptime_s": time.time() - self.started,
            "addresses": self.config.addresses,
            "security": {
                **self.guard.status(),
                "malformed_frames": len(self.receiver.rejected),
                "sha256_required": self.config.sha256_required,
            },
        }

    def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "load_model":
            path, sha256 = request.get("path"), request.get("sha256")
            if not isinstance(path, str):
                return {"ok": False, "error": "load_model needs a 'path' string"}
            if sha256 is not None and not isinstance(sha256, str):
                return {"ok": False, "error": "'sha256' must be a hex string"}
            return self.load_model(path, sha256)
        if command == "run_start":
            self.run = RunCounters(run_uid=str(request.get("run_uid", ""))[:256])
            return {"ok": True, "run": asdict(self.run)}
        if command == "run_stop":
            timeout_s = request.get("timeout_s", 30.0)
            if not isinstance(timeout_s, int | float) or not 0 <= timeout_s <= 3600:
                return {"ok": False, "error": "'timeout_s' must be a number of seconds in 0..3600"}
            deadline = time.monotonic() + float(timeout_s)
            uid = self.run.run_uid
            while time.monotonic() < deadline and (
                any(self._in_flight)
                or self._unpublished
                or any(i.run_uid == uid for i in list(self._queue))
            ):
                time.sleep(0.005)
            return {"ok": True, "run": asdict(self.run), "queue_depth": len(self._queue)}
        if command == "shutdown":
            self._stop.set()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.control.poll(100):
                    continue
                parts = self.control.recv_multipart()  # REP must read every part to reply
            except zmq.ZMQError as error:
                if self._stop.is_set():
                    return
                self.guard.count("control_receive_error")
                log.warning("control socket: %s", error)
                continue
            reply = self._answer(parts)
            try:
                self.control.send(json.dumps(reply, default=str).encode())
            except zmq.ZMQError as error:  # the peer went away; the REP socket resets itself
                log.warning("control reply not sent: %s", error)

    def _answer(self, parts: list[bytes]) -> dict[str, Any]:
        """The reply to one control message; malformed ones are counted and refused."""
        try:
            if len(parts) != 1:
                raise ValueError("a request is one message part")
            request = json.loads(parts[0])
            if not isinstance(request, dict):
                raise ValueError("a request must be a JSON object")
        except (ValueError, RecursionError) as error:  # bad JSON or UTF-8 are ValueErrors
            self.guard.count("control_malformed")
            return {"ok": False, "error": f"malformed request: {str(error)[:200]}"}
        try:
            return self._handle(request)
        except Exception as error:  # noqa: BLE001 - no request may stop the control thread
            self.guard.count("control_failed")
            log.exception("control request %r failed", str(request.get("command"))[:64])
            return {"ok": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}


class EndpointClient:
    """Control-channel client (REQ) with timeouts: a dead endpoint raises, it does not hang."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 10.0,
        context: zmq.Context | None = None,
        keys: KeySource = None,
    ):
        self.address = address
        self.timeout_s = timeout_s
        self.context = context or zmq.Context.instance()
        self.keys = client_keys(keys)  # CURVE keys, or $BLUESKY_PTYCHONN_KEYS, or none
        self._socket: zmq.Socket | None = None

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            self._socket = self.context.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:
                self.keys.apply(self._socket)
            self._socket.connect(self.address)
        return self._socket

    def request(
        self, command: str, *, reply_timeout_s: float | None = None, **arguments: Any
    ) -> dict:
        """Send one request; raises TimeoutError naming the endpoint if no reply comes."""
        socket = self._connect()
        socket.send(json.dumps({"command": command, **arguments}).encode())
        if not socket.poll(int((reply_timeout_s or self.timeout_s) * 1000)):
            socket.close(linger=0)  # a REQ socket without its reply is unusable: start afresh
            self._socket = None
            raise TimeoutError(f"inference endpoint at {self.address} did not answer {command!r}")
        return json.loads(socket.recv())

    def status(self) -> dict:
        return self.request("status")

    def load_model(self, path: str, timeout_s: float = 120.0, *, sha256: str | None = None) -> dict:
        """Ask for a hot swap to the model at ``path`` (as the endpoint sees it).

        ``sha256``: the sidecar digest the endpoint must find (from the registry,
        `security.registry_digest`); by default the digest of the sidecar at ``path`` as this
        client reads it (the sidecar the operator points at), when it can read it.
        """
        if sha256 is None:
            try:
                sha256 = sidecar_digest(path)
            except (OSError, ValueError):
                sha256 = None  # not visible from here: the endpoint decides
        extra = {} if sha256 is None else {"sha256": sha256}
        return self.request("load_model", reply_timeout_s=timeout_s, path=str(path), **extra)

    def run_start(self, run_uid: str) -> dict:
        return self.request("run_start", run_uid=run_uid)

    def run_stop(self, timeout_s: float = 30.0) -> dict:
        return self.request("run_stop", reply_timeout_s=timeout_s + 5, timeout_s=timeout_s)

    def shutdown(self) -> dict:
        return self.request("shutdown")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
