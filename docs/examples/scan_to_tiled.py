"""Run a simulated spiral scan into Tiled, with its live mosaic, as a beamline session would.

    bluesky-ptychonn tiled serve --data ./tiled-data --port 8000 &
    python docs/examples/scan_to_tiled.py --uri http://127.0.0.1:8000 \
        --api-key "$(cat tiled-data/api_key)" --sample siemens-star

The RunEngine's documents go to Tiled through `SpooledTiledWriter` (bluesky-tiled-plugins'
TiledWriter behind an on-disk spool), and `LiveMosaicWriter` writes a snapshot of the mosaic
every second. Until the live stitcher of the inference pipeline is plugged in, the mosaic here
is stitched from the simulated object's own patches at each measured position (a "perfect
model"), labelled model version ``ground-truth-demo``.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

import numpy as np
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import plans as bp
from ophyd.sim import SynAxis, SynSignal

from bluesky_ptychonn.callbacks.tiled_mosaic import LiveMosaicWriter
from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
from bluesky_ptychonn.sim.scans import scan_positions
from bluesky_ptychonn.storage.tiled_results import MosaicSnapshot


class Detector(SynSignal):
    """An ophyd.sim image detector reading the simulated pattern at the stage position."""

    def __init__(self, beamline, y, x, **kwargs):
        self._beamline = beamline
        super().__init__(
            func=lambda: beamline.pattern(y.readback.get(), x.readback.get()), **kwargs
        )

    def describe(self):
        d = super().describe()
        d[self.name].update(
            dtype="array",
            shape=list(self._beamline.readout_shape),
            dtype_numpy=np.dtype(self._beamline.detector.dtype).str,
        )
        return d

    def read_configuration(self):
        return {}

    def describe_configuration(self):
        return {}


class PatchStitcher:
    """Stand-in for the live stitcher: object patches averaged at the measured positions."""

    def __init__(self, beamline, model_version="ground-truth-demo"):
        self.beamline, self.model_version = beamline, model_version
        grid = beamline.sample.grid
        self.pixel_size_m, self.origin_m = grid.pixel_size_m, grid.origin_m
        self.sum = np.zeros(grid.shape, np.complex128)
        self.weights = np.zeros(grid.shape, np.float32)
        self.frames = 0
        self.lock = threading.Lock()
        window = np.abs(beamline.probe_on_readout_grid) ** 2  # weight patches by the beam
        self.window = (window / window.max()).astype(np.float32)

    def __call__(self, name, doc):
        if name != "event":
            return
        position = np.array([[doc["data"]["stage_y"], doc["data"]["stage_x"]]])
        patch = self.beamline.ground_truth_patches(position)[0]
        h, w = patch.shape
        r, c = np.round((position[0] - self.origin_m) / self.pixel_size_m).astype(int)
        with self.lock:
            self.sum[r - h // 2 : r - h // 2 + h, c - w // 2 : c - w // 2 + w] += (
                patch * self.window
            )
            self.weights[r - h // 2 : r - h // 2 + h, c - w // 2 : c - w // 2 + w] += self.window
            self.frames += 1

    def snapshot(self):
        with self.lock:
            if not self.frames:
                return None
            mean = np.where(self.weights > 1e-3, self.sum / np.maximum(self.weights, 1e-3), 1)
            return MosaicSnapshot(
                np.angle(mean),
                np.abs(mean),
                self.weights.copy(),
                self.pixel_size_m,
                self.origin_m,
                self.frames,
                self.model_version,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("TILED_API_KEY"))
    parser.add_argument("--sample", default="siemens-star")
    parser.add_argument("--spool", default="tiled-spool", help="the writer's on-disk spool")
    parser.add_argument("--step-delay", type=float, default=0.1, help="seconds per point")
    args = parser.parse_args()

    beamline = SimBeamline(SimBeamlineConfig(sample=args.sample, field_of_view_m=(2.4e-6, 2.4e-6)))
    positions = scan_positions("spiral", (2.4e-6, 2.4e-6), beamline.beam_size_on_sample_m, 0.3)
    y, x = SynAxis(name="stage_y"), SynAxis(name="stage_x")
    detector = Detector(beamline, y, x, name="eiger")
    stitcher = PatchStitcher(beamline)
    writer = SpooledTiledWriter(args.uri, api_key=args.api_key, spool_dir=Path(args.spool))
    RE = RunEngine()
    RE.subscribe(stitcher)
    RE.subscribe(writer)
    RE.subscribe(LiveMosaicWriter(stitcher, writer, period_s=1.0))
    md = {
        "sample_name": args.sample,
        "scan_pattern": "spiral",
        "energy_ev": beamline.energy_ev,
        "detector_distance_m": beamline.distance_m,
        "detector_pixel_size_m": beamline.detector.readout_pixel_size_m,
        "object_pixel_size_m": beamline.pixel_size_m,
        "beam_size_m": beamline.beam_size_on_sample_m,
        "overlap": 0.3,
    }

    def per_step(detectors, step, pos_cache):  # a dwell time per point, as at a beamline
        yield from bps.one_nd_step(detectors, step, pos_cache)
        yield from bps.sleep(args.step_delay)

    (uid,) = RE(
        bp.list_scan(
            [detector], y, list(positions[:, 0]), x, list(positions[:, 1]), per_step=per_step, md=md
        )
    )
    writer.close(timeout_s=120)
    print(f"run {uid}: {len(positions)} frames; {writer.stats}")


if __name__ == "__main__":
    main()
