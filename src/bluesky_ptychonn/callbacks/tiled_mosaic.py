"""`LiveMosaicWriter`: the live mosaic of the running scan into Tiled, as the scan runs.

Subscribe it next to the writer of the raw run::

    writer = SpooledTiledWriter(uri, api_key=key, spool_dir="spool")
    mosaic = LiveMosaicWriter(stitcher, writer, period_s=5.0)
    RE.subscribe(writer)
    RE.subscribe(mosaic)

From the start document to the stop document it asks its source (anything with a
``snapshot() -> MosaicSnapshot | None`` method, e.g. the live stitcher) for the mosaic every
``period_s`` seconds, on its own thread, and writes it when new frames went in. At the end of
the run it writes a final snapshot (``final=True``, the run's ``exit_status``):

* from a source that hands out final snapshots (`FinalMosaicSource`: ``add_consumer``, as the
  `LiveStitcher` does), the writer registers itself as a consumer and writes the snapshot the
  source calls it with, on the source's thread, once it has seen the run's stop document.
  The order in which the writer and the stitcher are subscribed does not matter, and the
  RunEngine's thread never waits for the stitcher or for the write;
* from a plain source, at the stop document, in the RunEngine's thread (what the source holds
  then is taken as final).

Snapshots of one run and model version update one node of the ``reconstructions`` container
(`storage.tiled_results.mosaic_key`), so a Tiled client always finds the newest there; no
periodic snapshot is written after the final one.

The sink is a `SpooledTiledWriter` (writes spooled on disk, delivered when Tiled is there) or a
`TiledCatalog` (written at once, on the calling thread). The source's ``snapshot`` is called
from this writer's thread while the scan runs: it must be safe to call while the source is
being updated (return copies).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..storage.tiled_catalog import NodeWrite, utc_now
from ..storage.tiled_results import MosaicSnapshot, live_mosaic_write
from ..storage.tiled_runs import sample_of
from .mosaic_source import FinalMosaicSource, MosaicSource

__all__ = ["FinalMosaicSource", "LiveMosaicWriter", "MosaicSource"]

log = logging.getLogger(__name__)


STOP_WAIT_S = 30.0  # how long a final snapshot waits for its run's stop document here
KEPT_STOPPED_RUNS = 8  # stopped runs still waiting for their final snapshot


class _RunState:
    """One run's snapshots: numbering, the stop document and the final snapshot."""

    def __init__(self, start: dict[str, Any]):
        self.uid: str = start["uid"]
        self.sample = sample_of(start)
        self.created = utc_now()
        self.index = 0
        self.frames = -1
        self.last_time = float(start.get("time", 0.0))
        self.stop_timer = threading.Event()
        self.stopped = threading.Event()
        self.exit_status: str | None = None
        self.final_written = False


class LiveMosaicWriter:
    """A document callback that writes periodic and final live-mosaic snapshots to Tiled.

    Args:
        source: gives the mosaic (``snapshot()``) and, if it can (`FinalMosaicSource`), each
            run's final snapshot.
        sink: a `SpooledTiledWriter` (``submit``) or a `TiledCatalog` (``put``).
        period_s: seconds between snapshots while the scan runs (0: only the final one).
        threaded: take periodic snapshots on a timer thread (True) or when documents
            arrive (False; for sources that are not thread-safe).

    Attributes:
        written: snapshots handed to the sink, all runs together.
        finals_from_source: whether the final snapshots come from the source's consumers.
    """

    def __init__(
        self, source: MosaicSource, sink: Any, *, period_s: float = 5.0, threaded: bool = True
    ):
        if period_s < 0:
            raise ValueError(f"period_s must be >= 0, got {period_s}")
        if not (hasattr(sink, "submit") or hasattr(sink, "put")):
            raise TypeError("sink must be a SpooledTiledWriter (submit) or a TiledCatalog (put)")
        self.source = source
        self.sink = sink
        self.period_s = float(period_s)
        self.threaded = threaded
        self.written = 0
        self._lock = threading.Lock()  # the run table
        self._write_lock = threading.Lock()  # one write at a time, in order
        self._runs: dict[str, _RunState] = {}
        self._active: _RunState | None = None
        self.finals_from_source = isinstance(source, FinalMosaicSource)
        if self.finals_from_source:
            source.add_consumer(self._final)

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._begin(doc)
        elif name == "stop":
            self._end(doc)
        elif name in ("event", "event_page", "stream_datum") and not self.threaded:
            self._maybe_snapshot(doc.get("time"))

    # ---- run lifecycle --------------------------------------------------------------------
    def _begin(self, start: dict[str, Any]) -> None:
        run = _RunState(start)
        with self._lock:
            if self._active is not None:
                self._active.stop_timer.set()
            # runs whose source never made a final snapshot (no patch arrived) are forgotten
            stopped = [uid for uid, old in self._runs.items() if old.stopped.is_set()]
            for uid in stopped[:-KEPT_STOPPED_RUNS]:
                del self._runs[uid]
            self._runs[run.uid] = run
            self._active = run
        if self.threaded and self.period_s > 0:
            threading.Thread(
                target=self._tick, args=(run,), name="LiveMosaicWriter", daemon=True
            ).start()

    def _end(self, stop: dict[str, Any]) -> None:
        with self._lock:
            run = self._runs.get(stop.get("run_start"))
            if run is None:
                return
            if self._active is run:
                self._active = None
        run.stop_timer.set()  # the timer thread ends by itself; nobody waits for it here
        run.exit_status = stop.get("exit_status")
        run.stopped.set()
        if not self.finals_from_source:
            self._write_final(run, self.source.snapshot())

    def _final(self, snapshot: MosaicSnapshot) -> None:
        """A source's final snapshot (on the source's thread)."""
        with self._lock:
            run = self._runs.get(snapshot.run_uid)
        if run is None:
            log.warning("a final mosaic of run %r that this writer did not see", snapshot.run_uid)
            return
        if not run.stopped.wait(STOP_WAIT_S):
            log.warning("run %s: final mosaic written before its stop document came", run.uid)
        self._write_final(run, snapshot)

    def _write_final(self, run: _RunState, snapshot: MosaicSnapshot | None) -> None:
        with self._lock:
            self._runs.pop(run.uid, None)
        if snapshot is None:
            log.warning("run %s ended with no live mosaic to write", run.uid)
            return
        self._write(run, snapshot, final=True, extra={"exit_status": run.exit_status})

    def _tick(self, run: _RunState) -> None:
        while not run.stop_timer.wait(self.period_s):
            try:
                self._periodic(run)
            except Exception:  # a failing snapshot must not end the periodic ones
                log.exception("live mosaic snapshot of run %s failed", run.uid)

    def _maybe_snapshot(self, time_s: float | None) -> None:
        run = self._active
        if run is None or self.period_s <= 0 or time_s is None:
            return
        if time_s - run.last_time >= self.period_s:
            run.last_time = time_s
            self._periodic(run)

    def _periodic(self, run: _RunState) -> None:
        if run.final_written or run.stop_timer.is_set():
            return
        snapshot = self.source.snapshot()
        if snapshot is None or snapshot.frames_used == run.frames:
            return  # nothing yet, or nothing new since the last snapshot
        if snapshot.run_uid and snapshot.run_uid != run.uid:
            return  # the source already holds another run
        self._write(run, snapshot, final=False)

    # ---- writing --------------------------------------------------------------------------
    def _write(
        self,
        run: _RunState,
        snapshot: MosaicSnapshot,
        *,
        final: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        with self._write_lock:
            if run.final_written:
                return  # a late periodic snapshot never replaces the final one
            write = live_mosaic_write(
                run.uid,
                snapshot,
                snapshot_index=run.index,
                final=final,
                sample=run.sample,
                created=run.created,
                extra=extra,
            )
            run.index += 1
            run.frames = snapshot.frames_used
            run.final_written = final
            self._send(write)
            self.written += 1

    def _send(self, write: NodeWrite) -> None:
        if hasattr(self.sink, "submit"):
            self.sink.submit(write)
        else:
            self.sink.put(write)
