"""`LiveMosaicWriter`: the live mosaic of the running scan into Tiled, as the scan runs.

Subscribe it next to the writer of the raw run::

    writer = SpooledTiledWriter(uri, api_key=key, spool_dir="spool")
    mosaic = LiveMosaicWriter(stitcher, writer, period_s=5.0)
    RE.subscribe(writer)
    RE.subscribe(mosaic)

From the start document to the stop document it asks its source (anything with a
``snapshot() -> MosaicSnapshot | None`` method, e.g. the live stitcher) for the mosaic every
``period_s`` seconds, on its own thread, and writes it when new frames went in; at the stop
document it writes a final snapshot (``final=True``, the run's ``exit_status``). Snapshots of
one run and model version update one node of the ``reconstructions`` container
(`storage.tiled_results.mosaic_key`), so a Tiled client always finds the newest there.

The sink is a `SpooledTiledWriter` (writes spooled on disk, delivered when Tiled is there) or a
`TiledCatalog` (written at once, on the calling thread). The source's ``snapshot`` is called
from this writer's thread while the scan runs: it must be safe to call while the source is
being updated (return copies).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from ..storage.tiled_catalog import NodeWrite, utc_now
from ..storage.tiled_results import MosaicSnapshot, live_mosaic_write
from ..storage.tiled_runs import sample_of

__all__ = ["LiveMosaicWriter", "MosaicSource"]

log = logging.getLogger(__name__)


class MosaicSource(Protocol):
    def snapshot(self) -> MosaicSnapshot | None:
        """The mosaic now (copies), or None when nothing has been stitched yet."""


class LiveMosaicWriter:
    """A document callback that writes periodic and final live-mosaic snapshots to Tiled.

    Args:
        source: gives the mosaic (``snapshot()``).
        sink: a `SpooledTiledWriter` (``submit``) or a `TiledCatalog` (``put``).
        period_s: seconds between snapshots while the scan runs (0: only the final one).
        threaded: take periodic snapshots on a timer thread (True) or when documents
            arrive (False; for sources that are not thread-safe).

    Attributes:
        written: snapshots handed to the sink, all runs together.
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
        self._lock = threading.Lock()
        self._run: dict[str, Any] | None = None
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None
        self._last_time = 0.0

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._begin(doc)
        elif name == "stop":
            self._end(doc)
        elif name in ("event", "event_page", "stream_datum") and not self.threaded:
            self._maybe_snapshot(doc.get("time"))

    # ---- run lifecycle --------------------------------------------------------------------
    def _begin(self, start: dict[str, Any]) -> None:
        self._end_timer()
        with self._lock:
            self._run = {
                "uid": start["uid"],
                "sample": sample_of(start),
                "created": utc_now(),
                "index": 0,
                "frames": -1,
            }
            self._last_time = float(start.get("time", 0.0))
        if self.threaded and self.period_s > 0:
            self._stop_timer.clear()
            self._timer = threading.Thread(target=self._tick, name="LiveMosaicWriter", daemon=True)
            self._timer.start()

    def _end(self, stop: dict[str, Any]) -> None:
        self._end_timer()
        with self._lock:
            run, self._run = self._run, None
        if run is None or run["uid"] != stop.get("run_start"):
            return
        self._write(run, final=True, extra={"exit_status": stop.get("exit_status")})

    def _end_timer(self) -> None:
        if self._timer is not None:
            self._stop_timer.set()
            self._timer.join()
            self._timer = None

    def _tick(self) -> None:
        while not self._stop_timer.wait(self.period_s):
            with self._lock:
                run = self._run
            if run is None:
                return
            try:
                self._write(run, final=False)
            except Exception:  # a failing snapshot must not end the periodic ones
                log.exception("live mosaic snapshot of run %s failed", run["uid"])

    def _maybe_snapshot(self, time_s: float | None) -> None:
        with self._lock:
            run = self._run
        if run is None or self.period_s <= 0 or time_s is None:
            return
        if time_s - self._last_time >= self.period_s:
            self._last_time = time_s
            self._write(run, final=False)

    # ---- writing --------------------------------------------------------------------------
    def _write(self, run: dict[str, Any], *, final: bool, extra: dict[str, Any] | None = None):
        snapshot = self.source.snapshot()
        if snapshot is None:
            if final:
                log.warning("run %s ended with no live mosaic to write", run["uid"])
            return
        if not final and snapshot.frames_used == run["frames"]:
            return  # nothing new since the last snapshot
        write = live_mosaic_write(
            run["uid"],
            snapshot,
            snapshot_index=run["index"],
            final=final,
            sample=run["sample"],
            created=run["created"],
            extra=extra,
        )
        run["index"] += 1
        run["frames"] = snapshot.frames_used
        self._send(write)
        self.written += 1

    def _send(self, write: NodeWrite) -> None:
        if hasattr(self.sink, "submit"):
            self.sink.submit(write)
        else:
            self.sink.put(write)
