"""`LiveStitcher`: the live image of the running scan from the inference endpoint's patches.

A document callback. The start document gives the geometry (object pixel size, scan extent and
centre, beam size, number of points); the primary descriptor's configuration of the
`InferenceEndpoint` device gives the ``stream_id`` that this run's frames carry on the wire.
Patches (phase, amplitude, frame ids, positions) arrive out of band on the endpoint's ZMQ result
stream, to which the stitcher subscribes once, when it is made (a subscription made at the
start of a run could miss the first results: PUB/SUB drops what is published before a
subscriber is connected). Results of a stream the stitcher does not know yet are held until
the descriptor names it. They go into a `stitch.Mosaic` (each patch weighted by the probe's
intensity on the patch grid when a probe is known, ``probe=`` or `use_probe`: the beamline's,
the model's or the last ePIE's; else by a Gaussian of the beam size in the start document;
duplicates dropped by frame id), each new patch rotated to agree with what is
already there (greedy alignment, for the live view). ``snapshot()`` is safe to call from any
thread (for the live view and the Tiled writer).

The stop document starts the end of a run, it does not wait for it: the run is handed to the
stitcher's own finishing thread, which waits until every frame of the run is stitched (or
``settle_timeout_s`` passes), synchronises the phases, makes the final snapshot (its
``run_uid`` is the run's start uid) and hands it to the consumers (``consumers=`` or
`add_consumer`; the live view and the Tiled mosaic writer take their final picture from there).
So a slow endpoint never holds the RunEngine's thread, and the next run starts at once: state is
kept per run (results are routed by their stream id), so the next run's patches are stitched
while the previous run is still being finished. `wait` blocks until every stopped run's final
snapshot is made; ``last_snapshot`` waits the same way, then gives the newest final snapshot.

Global phase synchronisation: the stitcher keeps the run's patches (8 bytes a pixel, float32
phase and amplitude: 32 KiB a 64x64 patch, 3.3 GB for 100,000 of them, so by default up to
``keep_patches_bytes`` = 2 GiB, 65,536 such patches; past that the run stays greedily aligned
and a warning says so). At the stop document (``synchronise=True``) and, with
``resync_every=N``, in ``snapshot()`` once N new patches have arrived since the last time, it
synchronises all of them at once (`Mosaic.synchronise`: the Gramian of every overlap and its
leading eigenvector, `recon.phase_sync.synchronise_frames`, warm-started from the previous one)
and rebuilds the mosaic with those phases, so that patches without a common phase reference
agree even where greedy alignment let errors pile up along the scan. Patches that overlap
nothing keep their own phase. The computation runs outside the stitcher's lock (patches keep
arriving meanwhile, greedily aligned); only the rebuild holds it. The final snapshot's
``metrics`` say how it went (``phase_sync_patches``, ``phase_sync_iterations``,
``phase_sync_residual``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase

from ..intervals import FIELD as UNCERTAINTY_ARRAY
from ..stitch.accumulate import warm_up
from ..stitch.mosaic import Mosaic, MosaicSnapshot
from ..stitch.uncertainty import InverseVarianceMosaic, UncertaintyMosaic
from ..stitch.weights import gaussian_weight, probe_patch_weight
from ..stream.payloads import ResultsPayload
from ..stream.security import KeySource
from ..stream.sockets import ResultCollector, ResultSubscriber
from ..stream.wire import Message
from .mosaic_source import SnapshotConsumer

log = logging.getLogger(__name__)

WEIGHTINGS = ("probe", "inverse_variance")
HELD_MESSAGES = 10_000  # result messages held while a run's stream id is not known yet
KEEP_PATCHES_BYTES = 2 << 30  # default memory for a run's kept patches (65,536 of 64x64)


@dataclass
class _Run:
    """What the stitcher knows of one run, from its start document to its final snapshot."""

    start: dict[str, Any]
    stream_id: str | None = None
    mosaic: Mosaic | None = None
    collector: ResultCollector = field(default_factory=ResultCollector)
    model_version: str = ""
    frames_rejected: int = 0
    stop: dict[str, Any] | None = None
    stopped_at: float = 0.0  # time.monotonic() of the stop document
    uncertainty: UncertaintyMosaic | None = None  # when the patches carry a phase uncertainty

    @property
    def uid(self) -> str:
        return str(self.start.get("uid", ""))

    @property
    def expected(self) -> int:
        return int(self.start.get("num_points") or 0)

    @property
    def frames_stitched(self) -> int:
        mosaic = self.mosaic
        return 0 if mosaic is None else mosaic.frames_used + mosaic.frames_outside


class LiveStitcher(CallbackBase):
    """Stitch the endpoint's patches of each run into a mosaic (see the module docstring).

    Args:
        results_addresses: the endpoints' result sockets (None: patches come inside the
            documents, the ``ptychonn`` stream of `LiveInference`).
        endpoint_name: name of the `InferenceEndpoint` device in the documents.
        align_phase: rotate each patch to agree with the mosaic where they overlap.
        subpixel: place patches at their exact sub-pixel positions (slower).
        consumers: called with the final `MosaicSnapshot` of each run, on the stitcher's
            finishing thread (never the RunEngine's); more with `add_consumer`.
        settle_timeout_s: longest wait, counted from the stop document, for late patches.
        synchronise: synchronise the phases of all the run's patches globally before the
            final snapshot.
        resync_every: also synchronise in ``snapshot()`` once this many patches arrived since
            the last synchronisation (None: only at the end of the run).
        keep_patches_bytes: memory for the kept patches of a run (see the module docstring).
        sync_iterations: power iteration budget of one synchronisation.
        probe: (h, w) complex probe on the detector's readout grid (or an intensity on the
            patch grid): the patch weight of later runs (see `use_probe`).
        weighting: ``"probe"`` (default) weights patches by the probe-shaped weight;
            ``"inverse_variance"`` also by their stated phase uncertainty, pixel by pixel
            (`stitch.uncertainty.InverseVarianceMosaic`; patches without one weigh as with
            ``"probe"``). Patches that carry a phase uncertainty also build an uncertainty
            mosaic, in every snapshot's ``phase_uncertainty``.
        keys: CURVE client keys or their folder for endpoints that use keys (default
            ``$BLUESKY_PTYCHONN_KEYS``).
    """

    def __init__(
        self,
        results_addresses: str | Iterable[str] | None = None,
        *,
        endpoint_name: str = "endpoint",
        align_phase: bool = True,
        subpixel: bool = False,
        consumers: Iterable[SnapshotConsumer] = (),
        settle_timeout_s: float = 60.0,
        synchronise: bool = True,
        resync_every: int | None = None,
        keep_patches_bytes: int = KEEP_PATCHES_BYTES,
        sync_iterations: int = 1000,
        probe: np.ndarray | None = None,
        weighting: str = "probe",
        keys: KeySource = None,
    ):
        super().__init__()
        self._probe = None if probe is None else np.asarray(probe)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        if resync_every is not None and resync_every < 1:
            raise ValueError(
                f"resync_every must be a positive number of patches, got {resync_every}"
            )
        self.endpoint_name = endpoint_name
        self.align_phase = align_phase
        self.subpixel = subpixel
        self.consumers: list[SnapshotConsumer] = list(consumers)
        self.settle_timeout_s = settle_timeout_s
        self.synchronise = synchronise
        self.resync_every = resync_every
        self.keep_patches_bytes = keep_patches_bytes if synchronise or resync_every else 0
        self.sync_iterations = sync_iterations
        self._lock = threading.Lock()
        self._resyncing = threading.Lock()
        self._current: _Run | None = None  # between the start and the stop document
        self._latest: _Run | None = None  # the newest run, stopped or not (for snapshot())
        self._by_stream: dict[str, _Run] = {}  # runs that still take patches, by stream id
        self._held: deque[Message] = deque(maxlen=HELD_MESSAGES)
        self._last_snapshot: MosaicSnapshot | None = None
        self._finishing: queue.Queue[_Run | None] = queue.Queue()
        self._unfinished = 0  # stopped runs whose final snapshot is not made yet
        self._finished = threading.Condition()
        self._finisher: threading.Thread | None = None
        self._closing = threading.Event()
        self._subscriber = self._listener = None
        warm_up()  # the stitching kernel loads now, not when the first patches of a scan arrive
        if results_addresses is not None:
            self._subscriber = ResultSubscriber(results_addresses, keys=keys)
            self._listener = threading.Thread(
                target=self._listen, name="live-stitcher", daemon=True
            )
            self._listener.start()

    def use_probe(self, probe: np.ndarray | None) -> None:
        """Weight the patches of runs that start from now on by this probe's intensity on the
        patch grid (`stitch.weights.probe_patch_weight`); None: back to the Gaussian of the beam
        size. A probe that does not fit the patches falls back to the Gaussian, with a
        warning, when the run's first patches arrive."""
        self._probe = None if probe is None else np.asarray(probe)

    def add_consumer(self, consumer: SnapshotConsumer) -> None:
        """Call ``consumer(final_snapshot)`` at the end of every later run."""
        self.consumers.append(consumer)

    # ---- documents -----------------------------------------------------------------------------
    def start(self, doc: dict[str, Any]) -> None:
        run = _Run(start=doc)
        with self._lock:
            self._current = self._latest = run

    def descriptor(self, doc: dict[str, Any]) -> None:
        configuration = doc.get("configuration", {}).get(self.endpoint_name)
        run = self._current
        if configuration is None or run is None or run.stream_id is not None:
            return
        stream_id = configuration["data"][f"{self.endpoint_name}_stream_id"]
        with self._lock:
            run.stream_id = stream_id
            self._by_stream[stream_id] = run
            held = [m for m in self._held if m.run_uid == stream_id]
            self._held.clear()
        for message in held:
            self._stitch(run, message)

    def event(self, doc: dict[str, Any]) -> None:
        """Patches inside documents (the ``ptychonn`` stream of `LiveInference`)."""
        data = doc["data"]
        run = self._current
        if "ptychonn_phase" not in data or run is None:
            return
        positions = None
        if "beam_y" in data and "beam_x" in data:
            positions = np.array([[data["beam_y"], data["beam_x"]]], dtype=float)
        message = Message(
            kind="results",
            arrays={
                "phase": np.asarray(data["ptychonn_phase"], dtype=np.float32)[None],
                "amplitude": np.asarray(data["ptychonn_amplitude"], dtype=np.float32)[None],
            },
            frame_ids=[int(data.get("frame_index", doc["seq_num"]))],
            positions_m=positions,
            model_version=run.start.get("ptychonn_model_version", ""),
            extra={"pixel_scale": run.start.get("ptychonn_pixel_scale", 1.0)},
        )
        if f"ptychonn_{UNCERTAINTY_ARRAY}" in data:
            sigma = np.asarray(data[f"ptychonn_{UNCERTAINTY_ARRAY}"], dtype=np.float32)
            message.arrays[UNCERTAINTY_ARRAY] = sigma[None]
        self._stitch(run, message)

    def stop(self, doc: dict[str, Any]) -> None:
        """Hand the run to the finishing thread and return at once (see the module docstring)."""
        with self._lock:
            run, self._current = self._current, None
        if run is None:
            return
        run.stop = doc
        run.stopped_at = time.monotonic()
        with self._finished:
            self._unfinished += 1
            if self._finisher is None:
                self._finisher = threading.Thread(
                    target=self._finish_forever, name="live-stitcher-finish", daemon=True
                )
                self._finisher.start()
        self._finishing.put(run)

    # ---- the end of a run, on the finishing thread -----------------------------------------------
    def _finish_forever(self) -> None:
        while True:
            run = self._finishing.get()
            if run is None:
                return
            try:
                self._finish(run)
            except Exception:  # a bug here must not stop the finishing of later runs
                log.exception("finishing the live mosaic of run %s failed", run.uid)
            finally:
                with self._finished:
                    self._unfinished -= 1
                    self._finished.notify_all()

    def _finish(self, run: _Run) -> None:
        expected = run.expected
        deadline = run.stopped_at + self.settle_timeout_s
        while (
            self._listener is not None
            and run.stream_id is not None
            and not self._closing.is_set()
            and time.monotonic() < deadline
        ):
            if expected and run.frames_stitched + run.frames_rejected >= expected:
                break
            time.sleep(0.01)
        with self._lock:
            if run.stream_id is not None:
                self._by_stream.pop(run.stream_id, None)  # late patches of this run are dropped
        if self.synchronise:
            self._resync(run, wait=True)
            kept = None if run.mosaic is None else run.mosaic.kept
            if kept is not None and kept.overflowed:
                log.warning(
                    "run %s: more patches than keep_patches_bytes=%d holds, the mosaic was "
                    "not synchronised globally (greedy alignment only)",
                    run.uid, self.keep_patches_bytes,
                )  # fmt: skip
        snapshot = self._snapshot(run)
        if snapshot is None:
            if run.stream_id is None and self._listener is not None:
                log.debug("run %s: the endpoint took no part in it, nothing to stitch", run.uid)
            else:
                log.warning("run %s: no patch arrived to stitch", run.uid)
            return
        self._last_snapshot = snapshot
        if expected and snapshot.frames_used + snapshot.frames_outside < expected:
            log.warning(
                "run %s: %d of %d frames stitched before the timeout",
                run.uid, snapshot.frames_used, expected,
            )  # fmt: skip
        for consumer in list(self.consumers):
            try:
                consumer(snapshot)
            except Exception:  # one consumer's failure must not starve the others
                log.exception("a consumer of run %s's final mosaic failed", run.uid)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the final snapshot of every stopped run is made (and handed to the
        consumers); False if ``timeout_s`` passed first. Returns at once on the finishing
        thread itself (a consumer asking would otherwise wait for itself)."""
        if threading.current_thread() is self._finisher:
            return self._unfinished <= 1
        with self._finished:
            return self._finished.wait_for(lambda: self._unfinished == 0, timeout_s)

    @property
    def last_snapshot(self) -> MosaicSnapshot | None:
        """The newest run's final snapshot, after waiting (up to ``settle_timeout_s`` + 120 s)
        for runs that stopped but are still being finished; None before any."""
        self.wait(self.settle_timeout_s + 120.0)
        return self._last_snapshot

    @property
    def frames_rejected(self) -> int:
        """Frames of the newest run that the endpoint rejected or dropped."""
        run = self._latest
        return 0 if run is None else run.frames_rejected

    # ---- patches -------------------------------------------------------------------------------
    @property
    def frames_stitched(self) -> int:
        """Patches of the newest run taken so far (on the canvas or outside it)."""
        run = self._latest
        return 0 if run is None else run.frames_stitched

    def _new_mosaic(self, run: _Run, patch_shape: tuple[int, int], pixel_scale: float) -> Mosaic:
        """A canvas over the scanned area at the patches' pixel size (object pixel x scale)."""
        start = run.start
        pixel = float(start["object_pixel_size_m"]) * pixel_scale
        extent = np.asarray(start.get("scan_extent_m", (0.0, 0.0)), dtype=float).reshape(-1)
        extent = np.resize(extent, 2)
        centre = np.asarray(start.get("scan_centre_m", (0.0, 0.0)), dtype=float)
        corners = np.array([centre - extent / 2, centre + extent / 2])
        beam_px = float(start.get("beam_size_m", patch_shape[0] * pixel / 2)) / pixel
        weight = gaussian_weight(patch_shape, fwhm_px=beam_px)
        if self._probe is not None:
            try:
                weight = probe_patch_weight(self._probe, patch_shape, pixel_scale)
            except ValueError as error:
                log.warning("run %s: stitched with the beam-size Gaussian: %s", run.uid, error)
        return Mosaic.covering(
            corners,
            pixel,
            weight,
            align_phase=self.align_phase,
            subpixel=self.subpixel,
            keep_patches_bytes=self.keep_patches_bytes,
        )

    def _weighted(self, mosaic: Mosaic) -> Mosaic:
        """The run's mosaic in the configured weighting (same canvas, weight and options)."""
        if self.weighting != "inverse_variance":
            return mosaic
        return InverseVarianceMosaic(
            mosaic.grid,
            mosaic.weight,
            align_phase=mosaic.align_phase,
            subpixel=mosaic.subpixel,
            keep_patches_bytes=self.keep_patches_bytes,
        )

    def add(self, message: Message) -> None:
        """Take one result message from the wire (held if its stream is not known yet)."""
        with self._lock:
            run = self._by_stream.get(message.run_uid)
            if run is None:
                current = self._current
                if current is None or current.stream_id is None:
                    self._held.append(message)
                return
        self._stitch(run, message)

    def _stitch(self, run: _Run, message: Message) -> None:
        if message.kind == "rejected":
            run.frames_rejected += len(message.frame_ids)
            return
        results = ResultsPayload.from_message(message)  # PayloadError names what is wrong
        if results.positions_m is None:
            raise ValueError("result message without positions: cannot place the patches")
        fresh = run.collector.new_indices(message)
        if not fresh.size:
            return
        phase = results.phase[fresh]
        amplitude = results.amplitude
        sigma = results.phase_uncertainty
        sigma = None if sigma is None else sigma[fresh]
        with self._lock:
            if run.mosaic is None:
                run.mosaic = self._weighted(
                    self._new_mosaic(run, phase.shape[1:], results.pixel_scale)
                )
            amplitude = None if amplitude is None else amplitude[fresh]
            positions = results.positions_m[fresh]
            if isinstance(run.mosaic, InverseVarianceMosaic):
                run.mosaic.add_with_uncertainty(phase, amplitude, sigma, positions)
            else:
                run.mosaic.add(phase, amplitude, positions)
            if sigma is not None:
                if run.uncertainty is None:
                    run.uncertainty = UncertaintyMosaic(run.mosaic.grid, run.mosaic.weight)
                variance_weight = (
                    InverseVarianceMosaic.variance_weights(sigma)
                    if isinstance(run.mosaic, InverseVarianceMosaic)
                    else None
                )
                run.uncertainty.add(sigma, positions, variance_weight)
            run.model_version = results.model_version or run.model_version

    def _listen(self) -> None:
        while not self._closing.is_set():
            message = self._subscriber.receive(timeout_s=0.05)
            if message is None:
                continue
            try:
                self.add(message)
            except ValueError:
                log.exception("could not stitch a result message")

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop listening, finish the stopped runs without waiting for more patches (up to
        ``timeout_s``), and stop the threads; idempotent. The stitcher cannot be used
        afterwards."""
        self._closing.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._subscriber.close()
            self._listener = None
        finisher = self._finisher
        if finisher is not None and finisher.is_alive():
            self._finishing.put(None)
            finisher.join(timeout=timeout_s)

    def snapshot(self) -> MosaicSnapshot | None:
        """The newest run's mosaic now (copies), or None before its first patch.

        With ``resync_every``, first synchronises the phases of all patches globally when that
        many arrived since the last time (unless another thread is doing it already).
        """
        run = self._latest
        if run is None:
            return None
        mosaic = run.mosaic
        if (
            self.resync_every is not None
            and mosaic is not None
            and mosaic.patches_since_sync >= self.resync_every
        ):
            self._resync(run, wait=False)
        return self._snapshot(run)

    def _snapshot(self, run: _Run) -> MosaicSnapshot | None:
        with self._lock:
            if run.mosaic is None:
                return None
            metrics = {}
            sync = run.mosaic.last_sync
            if sync is not None:
                metrics = {
                    "phase_sync_patches": len(sync.phases),
                    "phase_sync_iterations": sync.iterations,
                    "phase_sync_residual": sync.residual,
                }
            snapshot = run.mosaic.snapshot(model_version=run.model_version, **metrics)
            sigma = None if run.uncertainty is None else run.uncertainty.sigma()
        return replace(snapshot, run_uid=run.uid, phase_uncertainty=sigma)

    def _resync(self, run: _Run, wait: bool) -> None:
        """Synchronise a run's patches globally (see the module docstring)."""
        if not self._resyncing.acquire(blocking=wait):
            return
        try:
            mosaic = run.mosaic
            if mosaic is None or mosaic.patches_since_sync == 0 or not mosaic.can_synchronise:
                return
            started = time.perf_counter()
            try:
                result = mosaic.synchronise(iterations=self.sync_iterations, lock=self._lock)
            except (ValueError, ArithmeticError, MemoryError):
                log.exception("global phase synchronisation failed: the mosaic stays greedy")
                return
            if result is not None:
                log.info(
                    "phases of %d patches synchronised in %.2f s (%d iterations, residual %.1e)",
                    len(result.phases), time.perf_counter() - started, result.iterations,
                    result.residual,
                )  # fmt: skip
        finally:
            self._resyncing.release()
