"""`ViewRenderer`: the board turned into PNG panels and a JSON state, at a bounded rate.

A thread that, at most ``max_rate_hz`` times a second and only while a browser is connected,
asks the `LiveBoard` for its state, encodes the panels that changed since the last update (one
PNG each, shared by every browser) and publishes a new `Frame` (a version number, the
panels' PNG bytes, the JSON state). Whatever arrived in between is not shown: the newest
wins, and the JSON state says how much was skipped (``decimation``), so the page can say so.
The renderer never waits for anything on the pipeline's side; a slow browser only slows its
own connection.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .images import encode_png, shrink, to_indexed

__all__ = ["PANELS", "Frame", "ViewRenderer"]

log = logging.getLogger(__name__)

PANELS = ("frame", "phase", "mosaic", "composite", "uncertainty")
PANEL_TITLES = {
    "frame": "detector frame (log counts)",
    "phase": "inferred phase of that frame (rad)",
    "mosaic": "live mosaic of this scan (phase, rad)",
    "composite": "accumulated image of the session's scans (phase, rad)",
    "uncertainty": "phase uncertainty mosaic (rad)",
}


@dataclass
class Frame:
    """One published update of the view.

    Attributes:
        version: grows by one with every update.
        images: PNG bytes by panel name (panels with nothing to show are absent).
        image_versions: the update at which each panel's image last changed.
        state: the JSON-able state (stats, metadata, continual learning, run, decimation).
    """

    version: int = 0
    images: dict[str, bytes] = field(default_factory=dict)
    image_versions: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


class ViewRenderer:
    """Render a board at most ``max_rate_hz`` times a second (see the module docstring).

    Args:
        board: a `LiveBoard` (``state()``).
        max_rate_hz: the most updates a second (images and numbers).
        always: render even with no browser connected (tests, benchmarks of the cost).
    """

    def __init__(self, board: Any, *, max_rate_hz: float = 5.0, always: bool = False):
        if not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz must be positive, got {max_rate_hz!r}")
        self.board = board
        self.max_rate_hz = float(max_rate_hz)
        self.always = always
        self.clients = 0  # connected browsers (the server counts them)
        self.frame = Frame()
        self.render_seconds = 0.0  # CPU-side time spent rendering, s (for the page and tests)
        self._keys: dict[str, Any] = {}
        self._seen = {"results": 0, "frames": 0}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="view-renderer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = 1.0 / self.max_rate_hz
        next_at = time.monotonic()
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            next_at = max(next_at + period, time.monotonic())
            if not (self.clients or self.always):
                continue
            try:
                self.render()
            except Exception:  # noqa: BLE001 - the view must never stop anything else
                log.exception("rendering the live view failed")

    def render(self) -> Frame:
        """Make and publish one update now."""
        started = time.perf_counter()
        state = self.board.state()
        previous = self.frame
        version = previous.version + 1
        images = dict(previous.images)
        image_versions = dict(previous.image_versions)
        for panel, key, make in self._panels(state):
            if key is None:
                images.pop(panel, None)
                image_versions.pop(panel, None)
                self._keys.pop(panel, None)
                continue
            if self._keys.get(panel) == key and panel in images:
                continue
            pixels, cmap = make()
            images[panel] = encode_png(pixels, cmap)
            image_versions[panel] = version
            self._keys[panel] = key
        counters = state.counters
        shown = {"results": counters.get("results", 0), "frames": counters.get("frames", 0)}
        arrived = {k: shown[k] - self._seen[k] for k in shown}
        self._seen = shown
        self.render_seconds += time.perf_counter() - started
        frame = Frame(
            version=version,
            images=images,
            image_versions=image_versions,
            state={
                "version": version,
                "time": time.time(),
                "stats": state.stats,
                "metadata": state.metadata,
                "continual": state.continual,
                "run": state.run,
                "panels": {
                    p: {"version": image_versions[p], "title": PANEL_TITLES[p]}
                    for p in image_versions
                },
                "frame_id": state.frame_id,
                "phase_frame_id": state.phase_frame_id,
                "mosaic_frames": counters.get("mosaic_frames", 0),
                "accumulated_runs": 0 if state.composite is None else len(state.composite.runs),
                "decimation": {
                    "max_rate_hz": self.max_rate_hz,
                    "results_since_last_update": arrived["results"],
                    "frames_since_last_update": arrived["frames"],
                    "policy": "latest wins",
                },
            },
        )
        with self._changed:
            self.frame = frame
            self._changed.notify_all()
        return frame

    def _panels(self, state: Any) -> list[tuple[str, Any, Any]]:
        """(panel, change key or None when empty, a function making its (palette indices,
        colour map))."""
        mosaic, composite, uncertainty = state.mosaic, state.composite, state.uncertainty
        counters = state.counters
        panels: list[tuple[str, Any, Any]] = []
        frame_key = None if state.frame is None else (state.frame_id, id(state.frame))
        panels.append(
            ("frame", frame_key,
             lambda: (to_indexed(shrink(np.asarray(state.frame)), log=True), "viridis"))
        )  # fmt: skip
        phase_key = None if state.phase is None else (state.phase_frame_id, counters["results"])
        panels.append(("phase", phase_key, lambda: (to_indexed(state.phase), "gray")))
        mosaic_key = None
        if mosaic is not None:
            mosaic_key = (mosaic.run_uid, mosaic.frames_used, tuple(mosaic.metrics))
        panels.append(
            ("mosaic", mosaic_key, lambda: (_mosaic_pixels(mosaic.phase, mosaic.weights), "gray"))
        )  # fmt: skip
        composite_key = None if composite is None else len(composite.runs)
        panels.append(
            ("composite", composite_key,
             lambda: (_mosaic_pixels(composite.phase, composite.weights), "gray"))
        )  # fmt: skip
        uncertainty_key = None if uncertainty is None else counters.get("uncertainty_patches")
        panels.append(
            ("uncertainty", uncertainty_key,
             lambda: (to_indexed(shrink(uncertainty), percentiles=(0.0, 99.0)), "magma"))
        )  # fmt: skip
        return panels

    def wait_for(self, version: int, timeout_s: float) -> Frame:
        """The newest frame once its version exceeds ``version`` (or after ``timeout_s``)."""
        with self._changed:
            self._changed.wait_for(lambda: self.frame.version > version, timeout_s)
            return self.frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._changed:
            self._changed.notify_all()


def _mosaic_pixels(phase: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A mosaic's phase where it was measured (weights above 5 % of their peak), black
    elsewhere: the flashlight in the dark."""
    weights = shrink(np.asarray(weights))
    measured = weights > 0.05 * float(weights.max()) if weights.size else weights > 0
    return to_indexed(shrink(np.asarray(phase)), mask=measured)
