"""The document-side half of a session: stitcher, live view and Tiled writers, as one graph.

`build_callbacks` makes them from a `SessionConfig`, the endpoint's results address and a Tiled
server; `CallbackGraph.callbacks` lists them in subscription order. A `Session` subscribes them
to its RunEngine; the ``bluesky-ptychonn callbacks`` command subscribes the same graph to a
bluesky ``RemoteDispatcher``, so that they run in another process (or on another host) behind a
0MQ ``Publisher`` and proxy. They work from documents alone, so nothing else changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import SessionConfig

__all__ = ["CallbackGraph", "build_callbacks"]


@dataclass
class CallbackGraph:
    """The callbacks of a session (None where not configured).

    Attributes:
        stitcher: `LiveStitcher` on the endpoint's results.
        live_view: `LiveMosaicView` of the stitcher.
        tiled_writer: `SpooledTiledWriter` (runs, and the mosaic writer's results).
        mosaic_writer: `LiveMosaicWriter` of the stitcher into the Tiled writer.
        catalog: a `TiledCatalog` on the same server (read/write).
        view: `view.LiveView` (the browser view: ``view.url``).
    """

    stitcher: Any = None
    live_view: Any = None
    tiled_writer: Any = None
    mosaic_writer: Any = None
    catalog: Any = None
    view: Any = None

    @property
    def callbacks(self) -> list[Any]:
        """The document callbacks, in the order to subscribe them."""
        parts = (
            self.stitcher, self.live_view, self.view, self.tiled_writer, self.mosaic_writer
        )  # fmt: skip
        return [part for part in parts if part is not None]

    def wait(self, timeout_s: float = 120.0) -> bool:
        """Wait until the finished runs' final mosaics are made and handed to the writers, and
        the documents are delivered to Tiled; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        done = True
        if self.stitcher is not None:  # its consumers (mosaic writer, view) have run then
            done &= self.stitcher.wait(max(0.0, deadline - time.monotonic()))
        if self.tiled_writer is not None:
            done &= self.tiled_writer.flush(max(0.0, deadline - time.monotonic()))
        return done

    def close(self, timeout_s: float = 60.0) -> list[tuple[str, BaseException]]:
        """Close every part (whatever fails); returns the failures."""
        failures: list[tuple[str, BaseException]] = []
        steps = (
            ("stitcher", lambda s: s.close()),
            ("live_view", lambda v: v.close()),
            ("view", lambda v: v.close()),
            ("tiled_writer", lambda w: w.close(timeout_s=timeout_s)),
        )
        for name, step in steps:
            part = getattr(self, name)
            if part is None:
                continue
            try:
                step(part)
            except Exception as error:  # noqa: BLE001 - the next parts still get closed
                failures.append((name, error))
        return failures


def build_callbacks(
    config: SessionConfig,
    *,
    results_address: str | None,
    tiled_uri: str | None,
    api_key: str | None,
    control_address: str | None = None,
    frame_source: Any = None,
) -> CallbackGraph:
    """The callback graph of ``config``: a stitcher (and its live view, mosaic writer and,
    with ``[view] enabled``, the browser view) when ``results_address`` is given, Tiled writers
    when ``tiled_uri`` is given. The browser view polls the endpoint's status at
    ``control_address`` and shows ``frame_source``'s frames (a detector frame stream) when
    given."""
    graph = CallbackGraph()
    try:
        _build(graph, config, results_address, tiled_uri, api_key, control_address, frame_source)
    except BaseException:
        graph.close(timeout_s=5.0)  # what was built before the failure stops its threads
        raise
    return graph


def _build(
    graph: CallbackGraph,
    config: SessionConfig,
    results_address: str | None,
    tiled_uri: str | None,
    api_key: str | None,
    control_address: str | None,
    frame_source: Any,
) -> None:
    from ..callbacks.live_stitch import LiveStitcher
    from ..callbacks.live_view import LiveMosaicView

    if results_address is not None:
        stitch = config.stitcher
        graph.stitcher = LiveStitcher(
            results_address,
            settle_timeout_s=stitch.settle_timeout_s,
            synchronise=stitch.synchronise,
            resync_every=stitch.resync_every,
            subpixel=stitch.subpixel,
            align_phase=stitch.align_phase,
        )
        view = config.live_view
        if view.enabled:
            png = Path(view.png_path).expanduser() if view.png_path else None
            graph.live_view = LiveMosaicView(
                graph.stitcher,
                period_s=view.period_s,
                png_path=png or config.data_dir / "live-mosaic.png",
                publish_address=view.publish_address,
            )
        if config.view.enabled:
            from ..view.live import LiveView

            settings = config.view
            graph.view = LiveView(
                graph.stitcher,
                results_addresses=results_address,
                control_address=control_address,
                frame_source=frame_source,
                host=settings.host,
                port=settings.port,
                token=settings.token,
                max_rate_hz=settings.max_rate_hz,
                status_period_s=settings.status_period_s,
            )
    if tiled_uri is not None:
        from ..callbacks.tiled_mosaic import LiveMosaicWriter
        from ..callbacks.tiled_writer import SpooledTiledWriter
        from ..storage.tiled_catalog import connect

        settings = config.tiled
        graph.catalog = connect(tiled_uri, api_key=api_key)
        spool = Path(settings.spool_dir).expanduser() if settings.spool_dir else None
        graph.tiled_writer = SpooledTiledWriter(
            tiled_uri,
            api_key=api_key,
            spool_dir=spool or config.data_dir / "spool",
            batch_size=settings.batch_size,
        )
        if graph.stitcher is not None:
            graph.mosaic_writer = LiveMosaicWriter(
                graph.stitcher, graph.tiled_writer, period_s=settings.mosaic_period_s
            )
