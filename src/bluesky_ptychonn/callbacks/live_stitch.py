"""`LiveStitcher`: the live image of the running scan from the inference endpoint's patches.

A document callback. The start document gives the geometry (object pixel size, scan extent and
centre, beam size, number of points); the primary descriptor's configuration of the
`InferenceEndpoint` device gives the ``stream_id`` that this run's frames carry on the wire.
Patches (phase, amplitude, frame ids, positions) arrive out of band on the endpoint's ZMQ result
stream, to which the stitcher subscribes once, when it is made (a subscription made at the
start of a run could miss the first results: PUB/SUB drops what is published before a
subscriber is connected). Results of a stream the stitcher does not know yet are held until
the descriptor names it. They go into a `stitch.Mosaic` (probe-shaped Gaussian weights of the
beam size, duplicates dropped by frame id), each new patch rotated to agree with what is
already there (greedy alignment, for the live view). ``snapshot()`` is safe to call from any
thread (for the live view and the Tiled writer); at the stop document the stitcher waits until
every frame of the run is stitched (or ``settle_timeout_s`` passes), then hands the final
snapshot to its consumers.

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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from bluesky.callbacks.core import CallbackBase

from ..stitch.accumulate import warm_up
from ..stitch.mosaic import Mosaic, MosaicSnapshot
from ..stitch.weights import gaussian_weight
from ..stream.sockets import ResultCollector, ResultSubscriber
from ..stream.wire import Message

log = logging.getLogger(__name__)

HELD_MESSAGES = 10_000  # result messages held while a run's stream id is not known yet
KEEP_PATCHES_BYTES = 2 << 30  # default memory for a run's kept patches (65,536 of 64x64)


class LiveStitcher(CallbackBase):
    """Stitch the endpoint's patches of each run into a mosaic (see the module docstring).

    Args:
        endpoint_name: name of the `InferenceEndpoint` device in the documents.
        align_phase: rotate each patch to agree with the mosaic where they overlap.
        subpixel: place patches at their exact sub-pixel positions (slower).
        consumers: called with the final `MosaicSnapshot` of each run.
        settle_timeout_s: longest wait at the stop document for late patches.
        synchronise: synchronise the phases of all the run's patches globally at the stop
            document, before the final snapshot.
        resync_every: also synchronise in ``snapshot()`` once this many patches arrived since
            the last synchronisation (None: only at the stop document).
        keep_patches_bytes: memory for the kept patches of a run (see the module docstring).
        sync_iterations: power iteration budget of one synchronisation.
    """

    def __init__(
        self,
        results_addresses: str | Iterable[str] | None = None,
        *,
        endpoint_name: str = "endpoint",
        align_phase: bool = True,
        subpixel: bool = False,
        consumers: Iterable[Callable[[MosaicSnapshot], None]] = (),
        settle_timeout_s: float = 60.0,
        synchronise: bool = True,
        resync_every: int | None = None,
        keep_patches_bytes: int = KEEP_PATCHES_BYTES,
        sync_iterations: int = 1000,
    ):
        super().__init__()
        if resync_every is not None and resync_every < 1:
            raise ValueError(
                f"resync_every must be a positive number of patches, got {resync_every}"
            )
        self.endpoint_name = endpoint_name
        self.align_phase = align_phase
        self.subpixel = subpixel
        self.consumers = list(consumers)
        self.settle_timeout_s = settle_timeout_s
        self.synchronise = synchronise
        self.resync_every = resync_every
        self.keep_patches_bytes = keep_patches_bytes if synchronise or resync_every else 0
        self.sync_iterations = sync_iterations
        self._lock = threading.Lock()
        self._resyncing = threading.Lock()
        self._start: dict[str, Any] | None = None
        self._stream_id: str | None = None
        self._held: deque[Message] = deque(maxlen=HELD_MESSAGES)
        self._mosaic: Mosaic | None = None
        self._model_version = ""
        self._collector = ResultCollector()
        self.last_snapshot: MosaicSnapshot | None = None
        self.frames_rejected = 0
        self._closing = threading.Event()
        self._subscriber = self._listener = None
        warm_up()  # the stitching kernel loads now, not when the first patches of a scan arrive
        if results_addresses is not None:
            self._subscriber = ResultSubscriber(results_addresses)
            self._listener = threading.Thread(
                target=self._listen, name="live-stitcher", daemon=True
            )
            self._listener.start()

    # ---- documents -----------------------------------------------------------------------------
    def start(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._start = doc
            self._stream_id = None
            self._mosaic = None
            self._collector = ResultCollector()
            self.frames_rejected = 0
            self.last_snapshot = None

    def descriptor(self, doc: dict[str, Any]) -> None:
        configuration = doc.get("configuration", {}).get(self.endpoint_name)
        if configuration is None or self._stream_id is not None:
            return
        stream_id = configuration["data"][f"{self.endpoint_name}_stream_id"]
        with self._lock:
            self._stream_id = stream_id
            held = [m for m in self._held if m.run_uid == stream_id]
            self._held.clear()
        for message in held:
            self._stitch(message)

    def event(self, doc: dict[str, Any]) -> None:
        """Patches inside documents (the ``ptychonn`` stream of `LiveInference`)."""
        data = doc["data"]
        if "ptychonn_phase" not in data:
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
            model_version=(self._start or {}).get("ptychonn_model_version", ""),
            extra={"pixel_scale": (self._start or {}).get("ptychonn_pixel_scale", 1.0)},
        )
        self._stitch(message)

    def stop(self, doc: dict[str, Any]) -> None:
        expected = int((self._start or {}).get("num_points") or 0)
        deadline = time.monotonic() + self.settle_timeout_s
        while (
            self._listener is not None
            and self._stream_id is not None
            and (time.monotonic() < deadline)
        ):
            if expected and self.frames_stitched + self.frames_rejected >= expected:
                break
            time.sleep(0.01)
        if self.synchronise:
            self._resync(wait=True)
            kept = None if self._mosaic is None else self._mosaic.kept
            if kept is not None and kept.overflowed:
                log.warning(
                    "run %s: more patches than keep_patches_bytes=%d holds, the mosaic was "
                    "not synchronised globally (greedy alignment only)",
                    doc.get("run_start"), self.keep_patches_bytes,
                )  # fmt: skip
        snapshot = self._snapshot()
        with self._lock:
            self._stream_id = None
        self.last_snapshot = snapshot
        if snapshot is None:
            log.warning("run %s: no patch arrived to stitch", doc.get("run_start"))
            return
        if expected and snapshot.frames_used + snapshot.frames_outside < expected:
            log.warning(
                "run %s: %d of %d frames stitched before the timeout",
                doc.get("run_start"), snapshot.frames_used, expected,
            )  # fmt: skip
        for consumer in self.consumers:
            consumer(snapshot)

    # ---- patches -------------------------------------------------------------------------------
    @property
    def frames_stitched(self) -> int:
        mosaic = self._mosaic
        return 0 if mosaic is None else mosaic.frames_used + mosaic.frames_outside

    def _new_mosaic(self, patch_shape: tuple[int, int], pixel_scale: float) -> Mosaic:
        """A canvas over the scanned area at the patches' pixel size (object pixel x scale)."""
        start = self._start or {}
        pixel = float(start["object_pixel_size_m"]) * pixel_scale
        extent = np.asarray(start.get("scan_extent_m", (0.0, 0.0)), dtype=float).reshape(-1)
        extent = np.resize(extent, 2)
        centre = np.asarray(start.get("scan_centre_m", (0.0, 0.0)), dtype=float)
        corners = np.array([centre - extent / 2, centre + extent / 2])
        beam_px = float(start.get("beam_size_m", patch_shape[0] * pixel / 2)) / pixel
        weight = gaussian_weight(patch_shape, fwhm_px=beam_px)
        return Mosaic.covering(
            corners,
            pixel,
            weight,
            align_phase=self.align_phase,
            subpixel=self.subpixel,
            keep_patches_bytes=self.keep_patches_bytes,
        )

    def add(self, message: Message) -> None:
        """Take one result message from the wire (held if its stream is not known yet)."""
        with self._lock:
            if self._stream_id is None or message.run_uid != self._stream_id:
                if self._start is not None and self._stream_id is None:
                    self._held.append(message)
                return
        self._stitch(message)

    def _stitch(self, message: Message) -> None:
        if message.kind == "rejected":
            self.frames_rejected += len(message.frame_ids)
            return
        fresh = self._collector.new_indices(message)
        if not fresh.size:
            return
        if message.positions_m is None:
            raise ValueError("result message without positions: cannot place the patches")
        phase = message.arrays["phase"][fresh]
        amplitude = message.arrays.get("amplitude")
        with self._lock:
            if self._mosaic is None:
                scale = float(message.extra.get("pixel_scale", 1.0))
                self._mosaic = self._new_mosaic(phase.shape[1:], scale)
            self._mosaic.add(
                phase, None if amplitude is None else amplitude[fresh], message.positions_m[fresh]
            )
            self._model_version = message.model_version or self._model_version

    def _listen(self) -> None:
        while not self._closing.is_set():
            message = self._subscriber.receive(timeout_s=0.05)
            if message is None:
                continue
            try:
                self.add(message)
            except ValueError:
                log.exception("could not stitch a result message")

    def close(self) -> None:
        """Stop listening (the stitcher cannot be used afterwards)."""
        self._closing.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._subscriber.close()

    def snapshot(self) -> MosaicSnapshot | None:
        """The mosaic now (copies), or None before the first patch.

        With ``resync_every``, first synchronises the phases of all patches globally when that
        many arrived since the last time (unless another thread is doing it already).
        """
        mosaic = self._mosaic
        if (
            self.resync_every is not None
            and mosaic is not None
            and mosaic.patches_since_sync >= self.resync_every
        ):
            self._resync(wait=False)
        return self._snapshot()

    def _snapshot(self) -> MosaicSnapshot | None:
        with self._lock:
            if self._mosaic is None:
                return None
            metrics = {}
            sync = self._mosaic.last_sync
            if sync is not None:
                metrics = {
                    "phase_sync_patches": len(sync.phases),
                    "phase_sync_iterations": sync.iterations,
                    "phase_sync_residual": sync.residual,
                }
            return self._mosaic.snapshot(model_version=self._model_version, **metrics)

    def _resync(self, wait: bool) -> None:
        """Synchronise the current run's patches globally (see the module docstring)."""
        if not self._resyncing.acquire(blocking=wait):
            return
        try:
            mosaic = self._mosaic
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
