"""The retraining dispatcher: a document-stream callback that hands finished runs to the loop.

`RetrainDispatcher` is subscribed to the RunEngine (or to a `RemoteDispatcher` in another
process, `bluesky-ptychonn continual serve`). At a run's stop document it appends the run's uid
to a queue file and returns: the RunEngine never waits for it. A worker thread takes the queue
in order: it reads the run (from Tiled by default, `TiledRunSource`; waiting, bounded, for the
writer to deliver it), writes it as CXI into the loop's folder and runs
`ContinualLoop.process_scan`. When the run cannot be read yet (Tiled down) or no cluster
answers (`ConnectionError`), the run stays queued, the status says why, and the thread tries
again after ``retry_s`` (doubling up to ``retry_max_s``). The queue file survives a restart.

Runs whose stop document says they did not succeed, and runs without the ptychography keys
(see ``is_ptychography``), are ignored.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..documents import read_start
from .gate import LiveQuality
from .loop import ContinualLoop, ScanRecord

log = logging.getLogger(__name__)


def is_ptychography(start: Mapping[str, Any]) -> bool:
    """A run the loop can learn from: its start document names the scan geometry."""
    start = read_start(start, warn=False)  # recorded runs may spell it distance_m
    return bool(start.get("energy_ev")) and "detector_distance_m" in start


class TiledRunSource:
    """Reads a finished run from Tiled as a CXI file for the loop.

    Args:
        client: a Tiled client of the catalog root (its ``raw`` container holds the runs) or
            of the runs' container itself.
        wait_s: how long to wait for the run's stop document to reach Tiled (the writer
            delivers asynchronously).
    """

    def __init__(self, client: Any, *, wait_s: float = 60.0):
        self.client = client
        self.wait_s = float(wait_s)

    def _runs(self) -> Any:
        return self.client["raw"] if "raw" in self.client else self.client

    def __call__(self, uid: str, out_path: Path) -> Path:
        from ..storage.cxi import write_cxi
        from ..storage.tiled_runs import dataset_from_run

        deadline = time.monotonic() + self.wait_s
        while True:
            runs = self._runs()
            run = runs[uid] if uid in runs else None
            if run is not None and run.metadata.get("stop"):
                break
            if time.monotonic() > deadline:
                raise ConnectionError(f"run {uid} has not reached Tiled within {self.wait_s:g} s")
            time.sleep(0.5)
        dataset = dataset_from_run(run)
        return write_cxi(out_path, dataset, overwrite=True)


class RetrainDispatcher:
    """Queue finished runs for the continual-learning loop without blocking the RunEngine.

    Args:
        loop: the loop (its ``state_dir`` also holds the queue and the scans' CXI files).
        source: ``source(uid, cxi_path) -> cxi_path`` writes a finished run as CXI (default:
            none; give a `TiledRunSource`). It raises ``ConnectionError`` while the run
            cannot be read yet.
        retry_s, retry_max_s: first and longest wait before a queued run is tried again (s).
        min_overlap: runs whose start document declares a smaller ``overlap`` (sparse scans
            for the network alone) are recorded as refused without being read: ePIE cannot
            reconstruct them.
        mosaic_source: ``mosaic_source(uid) -> ComplexImage | None``, the run's final live
            mosaic (`mosaics.StitcherMosaics`, `mosaics.TiledMosaics`) to seed the labels'
            ePIE (`options.SeedOptions`); None: never seeded.
        start: start the worker thread now.
    """

    def __init__(
        self,
        loop: ContinualLoop,
        source: Callable[[str, Path], Path],
        *,
        retry_s: float = 2.0,
        retry_max_s: float = 60.0,
        min_overlap: float = 0.3,
        mosaic_source: Callable[[str], Any] | None = None,
        start: bool = True,
    ):
        self.loop = loop
        self.source = source
        self.retry_s = float(retry_s)
        self.retry_max_s = float(retry_max_s)
        self.min_overlap = float(min_overlap)
        self.mosaic_source = mosaic_source
        self.queue_file = loop.state_dir / "queue.json"
        self.scans_dir = loop.state_dir / "scans"
        self.scans_dir.mkdir(parents=True, exist_ok=True)
        self._queue: list[str] = (
            json.loads(self.queue_file.read_text()) if self.queue_file.is_file() else []
        )
        self._starts: dict[str, dict[str, Any]] = {}  # runs open now
        self._live: dict[str, LiveQuality] = {}  # the endpoint's quality readings, by run
        self._descriptors: dict[str, str] = {}  # descriptor uid -> run uid
        self._finished: dict[str, dict[str, Any]] = {}  # start documents of queued runs
        self._cv = threading.Condition()
        self._closing = False
        self._busy = False
        self.last_error: str | None = None
        self.records: list[ScanRecord] = []
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._thread: threading.Thread | None = None
        loop.add_listener(self._forward)
        if start:
            self.start()

    # ---- the document callback (RunEngine thread: only cheap work) ------------------------------
    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            if is_ptychography(doc):
                self._starts[doc["uid"]] = doc
                self._live[doc["uid"]] = LiveQuality()
        elif name == "descriptor":
            if doc.get("run_start") in self._live:
                self._descriptors[doc["uid"]] = doc["run_start"]
        elif name in ("event", "event_page"):
            self._note_quality(doc)
        elif name == "stop":
            start = self._starts.pop(doc.get("run_start", ""), None)
            if start is None:
                return
            self._descriptors = {d: r for d, r in self._descriptors.items() if r != start["uid"]}
            if doc.get("exit_status", "success") != "success":
                self._live.pop(start["uid"], None)
                log.info("run %s ended with %s: not queued", start["uid"], doc["exit_status"])
                return
            self._finished[start["uid"]] = start
            self.enqueue(start["uid"])

    def _note_quality(self, doc: dict[str, Any]) -> None:
        """Keep the endpoint device's live quality readings of a run (the gate's early
        trigger, `gate.LiveQuality`): cheap, one float per reading and event."""
        live = self._live.get(self._descriptors.get(doc.get("descriptor", ""), ""))
        if live is None:
            return
        for key, values in doc.get("data", {}).items():
            target = (
                live.residuals
                if key.endswith("_physics_residual_mean")
                else live.uncertainties_rad
                if key.endswith("_phase_uncertainty_mean")
                else None
            )
            if target is None:
                continue
            for value in values if isinstance(values, list) else [values]:  # event pages
                if isinstance(value, int | float) and math.isfinite(value):
                    target.append(float(value))

    def enqueue(self, uid: str) -> None:
        """Queue a finished run by uid (also for runs recorded earlier)."""
        with self._cv:
            if uid not in self._queue:
                self._queue.append(uid)
                self._save_queue()
            self._cv.notify_all()
        self._forward(self.loop.status())

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The loop's status plus the queue (JSON-ready)."""
        with self._cv:
            queued = list(self._queue)
        return {
            **self.loop.status(),
            "queued": len(queued),
            "queue": queued,
            "last_error": self.last_error,
        }

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)
        listener(self.status())

    def _forward(self, _loop_status: dict[str, Any]) -> None:
        snapshot = self.status()
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("dispatcher listener failed")

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the queue is empty and nothing runs; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    # ---- the worker thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work_forever, name="RetrainDispatcher", daemon=True
            )
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking runs (a scan being processed finishes on its own); the queue is kept."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self._thread is None or not self._thread.is_alive():
            self.loop.executor.close()
        if self.loop.writer is not None:
            self.loop.writer.close()

    def _save_queue(self) -> None:
        tmp = self.queue_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._queue))
        tmp.replace(self.queue_file)

    def _work_forever(self) -> None:
        wait = self.retry_s
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait(1.0)
                if self._closing:
                    return
                uid = self._queue[0]
                self._busy = True
            try:
                record = self._process(uid)
            except ConnectionError as error:  # Tiled or the cluster is away: keep it queued
                self.last_error = f"run {uid} stays queued: {error}"
                log.warning("%s (next try in %.0f s)", self.last_error, wait)
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                    self._cv.wait(wait)
                wait = min(wait * 2, self.retry_max_s)
                self._forward(self.loop.status())
                continue
            except Exception as error:  # a bug or bad data: recorded, never retried forever
                log.exception("continual learning could not take run %s", uid)
                self.last_error = f"run {uid} dropped: {type(error).__name__}: {error}"
                record = None
            wait = self.retry_s
            with self._cv:
                if self._queue and self._queue[0] == uid:
                    self._queue.pop(0)
                    self._save_queue()
                self._busy = False
                if record is not None:
                    self.records.append(record)
                    self.last_error = None
                self._cv.notify_all()
            self._forward(self.loop.status())

    def _process(self, uid: str) -> ScanRecord:
        overlap = self._finished.pop(uid, {}).get("overlap")
        if overlap is not None and float(overlap) < self.min_overlap:
            reason = (
                f"the scan's overlap {float(overlap):g} is below {self.min_overlap:g}: ePIE "
                "cannot reconstruct it, so it gives no labels"
            )
            return self.loop.refuse(uid, uid, ValueError(reason))
        path = self.scans_dir / f"{uid}.cxi"
        if not path.is_file():
            try:
                self.source(uid, path)
            except (ValueError, KeyError) as error:  # not a usable scan: say so in a record
                return self.loop.refuse(uid, uid, error)
        live = self._live.pop(uid, None)
        return self.loop.process_scan(
            path, uid, initial_object_path=self._live_mosaic(uid), live_quality=live
        )

    def _live_mosaic(self, uid: str) -> Path | None:
        """The run's live mosaic as a CXI reconstruction file for the loop, or None."""
        if self.mosaic_source is None or not self.loop.options.seed.live_mosaic:
            return None
        path = self.scans_dir / f"{uid}-mosaic.cxi"
        if path.is_file():
            return path
        try:
            image = self.mosaic_source(uid)
        except Exception:  # a seed is an optimisation: the labels start from scratch
            log.exception("run %s: the live mosaic could not be read", uid)
            return None
        if image is None:
            return None
        return write_seed(path, image, uid)


def write_seed(path: Path, image: Any, uid: str) -> Path:
    """Write a live-mosaic seed (`ComplexImage`) as a CXI reconstruction file (atomically)."""
    import h5py

    from ..dataset import Reconstruction
    from ..storage.cxi import write_reconstruction

    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_group("entry_1")
    write_reconstruction(
        tmp, Reconstruction(image, algorithm="live-mosaic", settings={"scan_uid": uid})
    )
    tmp.replace(path)
    return path


def dispatcher_from_config(
    table: Mapping[str, Any],
    *,
    tiled_client: Any,
    endpoint_control_address: str | None,
    model_dir: str | None,
    stitcher: Any = None,
) -> RetrainDispatcher:
    """The dispatcher a beamline session configures (its ``[continual]`` TOML table).

    Keys: ``state_dir`` (default ``~/.cache/bluesky-ptychonn/continual``), ``cluster`` (a
    `cluster.ClusterConfig` table; default a one-worker local cluster; ``{kind = "inline"}``
    runs the steps in this process), ``tiled_api_key`` / ``tiled_uri`` (the writer; default the
    session's client), and the `LoopOptions` tables ``gate``, ``train``, ``promote``, ``recon``.
    ``enabled`` is the session's switch and is ignored here. The labels' ePIE is seeded with
    the run's live mosaic from ``stitcher`` (the session's `LiveStitcher`) when given, else from
    Tiled (``[continual.seed] live_mosaic = false`` turns it off).
    """
    from .executors import DaskExecutor, InlineExecutor
    from .options import LoopOptions

    table = dict(table)
    table.pop("enabled", None)
    state_dir = Path(
        table.pop("state_dir", Path.home() / ".cache" / "bluesky-ptychonn" / "continual")
    ).expanduser()
    cluster = dict(table.pop("cluster", {"kind": "local"}))
    options = LoopOptions.from_mapping(table)
    if cluster.get("kind") == "inline":
        executor = InlineExecutor()
    else:
        executor = DaskExecutor(cluster, retries=options.step_retries)
    writer = None
    if tiled_client is not None:
        from ..callbacks.tiled_writer import SpooledTiledWriter
        from ..storage.tiled_catalog import TiledCatalog

        writer = SpooledTiledWriter(TiledCatalog(tiled_client), spool_dir=state_dir / "spool")
    loop = ContinualLoop(
        state_dir,
        options,
        executor=executor,
        model_dir=model_dir,
        writer=writer,
        endpoint_control=endpoint_control_address,
    )
    from .mosaics import StitcherMosaics, TiledMosaics

    mosaic_source = None
    if stitcher is not None:
        mosaic_source = StitcherMosaics(stitcher)
    elif tiled_client is not None:
        mosaic_source = TiledMosaics(tiled_client)
    return RetrainDispatcher(loop, TiledRunSource(tiled_client), mosaic_source=mosaic_source)
