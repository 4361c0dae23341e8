"""Where the loop finds a run's live mosaic, to seed the labels' ePIE (`options.SeedOptions`).

A mosaic source is any ``source(uid) -> ComplexImage | None``: the run's final live mosaic
ready to seed ePIE, or None when the run has none (the labels are then reconstructed from
scratch; a source never raises for a missing mosaic).

* `StitcherMosaics`: in a beamline session, a consumer of the `LiveStitcher`'s final snapshots
  (kept for the last ``keep`` runs; waits, bounded, for a run still being finished).
* `TiledMosaics`: in `bluesky-ptychonn continual serve` (another process), the final live
  mosaic the session's writer put in Tiled ``reconstructions``.

`seed_image` turns a snapshot (phase, amplitude, weights) into the seed: where the network saw
little (weight below `WELL_SEEN` of the typical weight) the image fades to free space (1), so
that ePIE does not start from the ragged edge of the mosaic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WELL_SEEN = 0.3
"""Weight, as a fraction of the 90th percentile of the measured weights, from which a mosaic
pixel is taken as it is; below it the seed fades linearly to free space."""


def seed_image(
    phase: np.ndarray,
    amplitude: np.ndarray,
    weights: np.ndarray,
    pixel_size_m: float,
    origin_m: tuple[float, float],
) -> Any:
    """A `ComplexImage` seed from a mosaic's arrays (phase rad, amplitude, summed weights).

    Raises:
        ValueError: arrays of different shapes, or no measured pixel at all.
    """
    from ..dataset import ComplexImage

    phase, amplitude, weights = (
        np.asarray(a, dtype=np.float64) for a in (phase, amplitude, weights)
    )
    if not phase.shape == amplitude.shape == weights.shape or phase.ndim != 2:
        raise ValueError(
            f"mosaic arrays must be 2-D and of one shape, got {phase.shape}, "
            f"{amplitude.shape}, {weights.shape}"
        )
    measured = weights[np.isfinite(weights) & (weights > 0)]
    if measured.size == 0:
        raise ValueError("the mosaic has no measured pixel")
    full = WELL_SEEN * float(np.percentile(measured, 90))
    fade = np.clip(np.nan_to_num(weights) / full, 0.0, 1.0)
    image = np.nan_to_num(amplitude * np.exp(1j * phase))
    return ComplexImage(
        (fade * image + (1.0 - fade)).astype(np.complex64), float(pixel_size_m), origin_m
    )


class StitcherMosaics:
    """The final live mosaics of a session's stitcher, by run uid.

    Args:
        stitcher: a `LiveStitcher` (or anything with ``add_consumer``); None: call `take`
            with each final `MosaicSnapshot` yourself.
        keep: runs remembered (the oldest are dropped).
        wait_s: how long `__call__` waits for a run whose final snapshot is not made yet.
    """

    def __init__(self, stitcher: Any = None, *, keep: int = 8, wait_s: float = 30.0):
        self.keep = int(keep)
        self.wait_s = float(wait_s)
        self._snapshots: OrderedDict[str, Any] = OrderedDict()
        self._cv = threading.Condition()
        if stitcher is not None:
            stitcher.add_consumer(self.take)

    def take(self, snapshot: Any) -> None:
        """A final `MosaicSnapshot` (the stitcher's finishing thread)."""
        if not getattr(snapshot, "run_uid", ""):
            return
        with self._cv:
            self._snapshots[snapshot.run_uid] = snapshot
            self._snapshots.move_to_end(snapshot.run_uid)
            while len(self._snapshots) > self.keep:
                self._snapshots.popitem(last=False)
            self._cv.notify_all()

    def __call__(self, uid: str) -> Any:
        deadline = time.monotonic() + self.wait_s
        with self._cv:
            while uid not in self._snapshots:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)
            snapshot = self._snapshots[uid]
        try:
            return seed_image(
                snapshot.phase,
                snapshot.amplitude,
                snapshot.weights,
                snapshot.pixel_size_m,
                snapshot.origin_m,
            )
        except ValueError as error:
            log.info("run %s: live mosaic not used as a seed: %s", uid, error)
            return None


class TiledMosaics:
    """The final live mosaic of a run from a Tiled catalog (`storage.tiled_results`).

    Args:
        client: a Tiled client of the catalog root.
    """

    def __init__(self, client: Any):
        self.client = client

    def __call__(self, uid: str) -> Any:
        from ..storage.tiled_catalog import TiledCatalog
        from ..storage.tiled_results import (
            KIND_LIVE_MOSAIC,
            find_reconstructions,
            read_live_mosaic,
        )

        try:
            found = find_reconstructions(
                TiledCatalog(self.client), scan_uid=uid, kind=KIND_LIVE_MOSAIC, final=True
            )
            nodes = list(found.values())
            if not nodes:
                return None
            mosaic = read_live_mosaic(nodes[-1])
            return seed_image(
                mosaic.phase, mosaic.amplitude, mosaic.weights, mosaic.pixel_size_m, mosaic.origin_m
            )
        except Exception as error:  # no mosaic is not an error: the labels start from scratch
            log.info("run %s: no live mosaic from Tiled (%s)", uid, error)
            return None
