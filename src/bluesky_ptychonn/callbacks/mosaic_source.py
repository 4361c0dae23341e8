"""What the mosaic's readers (live view, Tiled mosaic writer) need from a stitcher.

`MosaicSource`: ``snapshot()``, the mosaic now. `FinalMosaicSource` adds ``add_consumer``:
the source calls each consumer once per run with the run's final snapshot
(``snapshot.run_uid`` names the run), on the source's own thread, as `LiveStitcher` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ..stitch.mosaic import MosaicSnapshot

__all__ = ["FinalMosaicSource", "MosaicSource", "SnapshotConsumer"]

#: A consumer of final snapshots: called once per run with the run's final `MosaicSnapshot`.
SnapshotConsumer = Callable[[MosaicSnapshot], None]


@runtime_checkable
class MosaicSource(Protocol):
    def snapshot(self) -> MosaicSnapshot | None:
        """The mosaic now (copies), or None when nothing has been stitched yet."""


@runtime_checkable
class FinalMosaicSource(MosaicSource, Protocol):
    def add_consumer(self, consumer: SnapshotConsumer) -> None:
        """Call ``consumer(snapshot)`` with each later run's final snapshot."""
