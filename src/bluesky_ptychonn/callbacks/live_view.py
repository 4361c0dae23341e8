"""The live view: the mosaic as a figure that updates, and as snapshots on ZMQ for dashboards.

`LiveMosaicView` is a document callback that, from start to stop, takes a snapshot of its
source (anything with ``snapshot() -> MosaicSnapshot | None``, e.g. the `LiveStitcher`) every
``period_s`` seconds on its own thread, and

* redraws a matplotlib figure: an interactive window when a GUI backend is running, else (on a
  headless machine) the figure is written as a PNG to ``png_path`` after every update;
* publishes the snapshot on a ZMQ PUB socket (``publish_address``, loopback by default) as a
  `stream.payloads.MosaicPayload` (wire kind ``"mosaic"``: arrays ``phase``, ``amplitude``,
  ``weights``; ``pixel_size_m``, ``origin_m``, ``frames_used``, ``model_version``), so any
  dashboard in any process can show it (``MosaicPayload.from_message``).

The browser view (panels, numbers, continual learning) is `view.LiveView`; this one draws a
PNG for a headless session.

Nothing runs in the RunEngine's thread but a flag: the periodic updates run on the view's own
thread, and the final picture of a run comes from the source's final snapshot when the source
hands those out (``add_consumer``, as the `LiveStitcher` does; the view registers itself),
drawn on the source's thread. A plain source is drawn one last time at the stop document.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from bluesky.callbacks.core import CallbackBase

from ..stream.payloads import MosaicPayload
from ..stream.sockets import ResultPublisher
from .mosaic_source import FinalMosaicSource

log = logging.getLogger(__name__)


class LiveMosaicView(CallbackBase):
    """Periodic figure and ZMQ snapshots of a live mosaic (see the module docstring).

    Args:
        source: gives ``snapshot()``.
        period_s: seconds between updates.
        png_path: where the figure goes on a headless machine (None: no file).
        publish_address: ZMQ address to bind a PUB socket on (None: no publishing).
    """

    def __init__(
        self,
        source: Any,
        *,
        period_s: float = 1.0,
        png_path: str | Path | None = None,
        publish_address: str | None = None,
    ):
        super().__init__()
        self.source = source
        self.period_s = period_s
        self.png_path = Path(png_path) if png_path else None
        self.publisher = ResultPublisher(publish_address) if publish_address else None
        self.updates = 0
        self._run_uid = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._figure = None
        self._draw_lock = threading.Lock()
        self.finals_from_source = isinstance(source, FinalMosaicSource)
        if self.finals_from_source:
            source.add_consumer(self._final)

    def start(self, doc: dict[str, Any]) -> None:
        self._run_uid = doc["uid"]
        self._stop = threading.Event()  # one per run: a late thread never sees the next run's
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="live-view", daemon=True
        )
        self._thread.start()

    def stop(self, doc: dict[str, Any]) -> None:
        self._stop.set()
        if self.finals_from_source:
            self._thread = None  # it ends by itself; the final picture comes from the source
            return
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.update()  # the final picture

    def _final(self, snapshot: Any) -> None:
        try:
            self.show(snapshot, run_uid=snapshot.run_uid or self._run_uid)
        except Exception:  # noqa: BLE001 - the view must never stop a scan
            log.exception("live view of the final mosaic failed")

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.period_s):
            try:
                self.update()
            except Exception:  # noqa: BLE001 - the view must never stop a scan
                log.exception("live view update failed")

    def update(self) -> bool:
        """Draw and publish the current snapshot; False when there is none yet."""
        snapshot = self.source.snapshot()
        if snapshot is None:
            return False
        self.show(snapshot, run_uid=self._run_uid)
        return True

    def show(self, snapshot: Any, *, run_uid: str = "") -> None:
        """Draw and publish one snapshot (thread-safe)."""
        with self._draw_lock:
            self._show(snapshot, run_uid)

    def _show(self, snapshot: Any, run_uid: str) -> None:
        if self.publisher is not None:
            self.publisher.publish(
                MosaicPayload(
                    run_uid=run_uid,
                    phase=snapshot.phase,
                    amplitude=snapshot.amplitude,
                    weights=snapshot.weights,
                    pixel_size_m=snapshot.pixel_size_m,
                    origin_m=tuple(snapshot.origin_m),
                    frames_used=snapshot.frames_used,
                    model_version=snapshot.model_version or "",
                    timestamp=time.time(),
                ).to_message()
            )
        if self.png_path is not None:
            self._draw(snapshot)
        self.updates += 1

    def _draw(self, snapshot: Any) -> None:
        from matplotlib.figure import Figure

        if self._figure is None:
            self._figure = Figure(figsize=(6, 5), layout="constrained")
        figure = self._figure
        figure.clear()
        ax = figure.subplots()
        extent = [v * 1e6 for v in snapshot.grid.extent_m]
        image = ax.imshow(snapshot.phase, cmap="gray", extent=extent)
        figure.colorbar(image, ax=ax, label="phase (rad)")
        ax.set_title(f"live mosaic: {snapshot.frames_used} patches ({snapshot.model_version})")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        self.png_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.png_path.with_suffix(".tmp.png")
        figure.savefig(temporary, dpi=90)
        temporary.replace(self.png_path)  # readers never see a half-written file

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
