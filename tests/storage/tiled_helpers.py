"""Helpers of the Tiled tests: a simulated ptychography beamline on ophyd.sim, a stand-in
mosaic source, and real Tiled server processes (imported by the test modules)."""

from __future__ import annotations

import threading
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
from ophyd.sim import SynAxis, SynSignal

from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig, detector_preset
from bluesky_ptychonn.sim.scans import fermat_spiral
from bluesky_ptychonn.storage.tiled_results import MosaicSnapshot
from bluesky_ptychonn.storage.tiled_server import TiledServerProcess


def start_server(folder: Path, **options) -> TiledServerProcess:
    """A started Tiled server on ``folder`` (on a free port)."""
    return TiledServerProcess(folder, port=0, **options).start()


class SimDiffractionDetector(SynSignal):
    """An ophyd.sim image detector whose frame is the simulated pattern at the stage position.

    It declares ``dtype_numpy`` (so Tiled keeps the detector's integer dtype) and has no
    configuration readings (SynSignal would otherwise repeat its frame there).
    """

    def __init__(self, beamline: SimBeamline, stage_y: SynAxis, stage_x: SynAxis, **kwargs):
        self._beamline = beamline
        super().__init__(
            func=lambda: beamline.pattern(stage_y.readback.get(), stage_x.readback.get()),
            **kwargs,
        )

    def describe(self):
        description = super().describe()
        shape = list(self._beamline.readout_shape)
        description[self.name].update(
            dtype="array", shape=shape, dtype_numpy=np.dtype(self._beamline.detector.dtype).str
        )
        return description

    def read_configuration(self):
        return {}

    def describe_configuration(self):
        return {}


class SimPtychoBeamline:
    """Stage (y, x in metres), detector and the start-document geometry of a small scan."""

    def __init__(self, n_points: int = 24, seed: int = 0):
        self.beamline = SimBeamline(
            SimBeamlineConfig(field_of_view_m=(1e-6, 1e-6), defocus_m=0.0, seed=seed),
            detector=detector_preset("eiger", crop_px=64),
        )
        self.positions_m = fermat_spiral(0.35e-6, n_points=n_points)
        self.stage_y = SynAxis(name="stage_y")
        self.stage_x = SynAxis(name="stage_x")
        self.detector = SimDiffractionDetector(
            self.beamline, self.stage_y, self.stage_x, name="eiger"
        )

    def start_metadata(self, sample: str = "etched-gold") -> dict:
        b = self.beamline
        return {
            "sample": sample,
            "scan_pattern": "spiral",
            "energy_ev": b.energy_ev,
            "detector_distance_m": b.distance_m,
            "detector_pixel_size_m": b.detector.readout_pixel_size_m,
            "object_pixel_size_m": b.pixel_size_m,
            "beam_size_m": b.beam_size_on_sample_m,
            "overlap": 0.5,
        }

    def spiral_scan(self, *, sample: str = "etched-gold", step_delay_s: float = 0.0):
        """``bp.list_scan`` over the spiral, optionally sleeping at every point."""

        def per_step(detectors, step, pos_cache):
            yield from bps.one_nd_step(detectors, step, pos_cache)
            if step_delay_s:
                yield from bps.sleep(step_delay_s)

        return bp.list_scan(
            [self.detector],
            self.stage_y,
            list(self.positions_m[:, 0]),
            self.stage_x,
            list(self.positions_m[:, 1]),
            per_step=per_step,
            md=self.start_metadata(sample),
        )


class DocumentRecorder:
    """Keeps every document, and the frames and positions of events, as emitted."""

    def __init__(self):
        self.documents: list[tuple[str, dict]] = []
        self.frames: list[np.ndarray] = []
        self.positions: list[tuple[float, float]] = []

    def __call__(self, name, doc):
        self.documents.append((name, doc))
        if name == "event":
            self.frames.append(np.array(doc["data"]["eiger"]))
            self.positions.append((doc["data"]["stage_y"], doc["data"]["stage_x"]))

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.documents if n == name)


class GroundTruthMosaic:
    """A stand-in for the live stitcher: ground-truth patches at each event's position.

    Subscribe it to the RunEngine; `snapshot` returns copies (thread-safe), as a real
    stitcher's must.
    """

    def __init__(self, beamline: SimBeamline, model_version: str = "ground-truth-v1"):
        self.beamline = beamline
        self.model_version = model_version
        sample = beamline.sample
        self.pixel_size_m = sample.pixel_size_m
        self.origin_m = sample.origin_m
        self.shape = sample.array.shape
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self.sum = np.zeros(self.shape, np.complex128)
        self.weights = np.zeros(self.shape, np.float32)
        self.frames = 0

    def __call__(self, name, doc):
        if name == "start":
            with self._lock:
                self._reset()
        if name != "event":
            return
        position = np.array([[doc["data"]["stage_y"], doc["data"]["stage_x"]]])
        patch = self.beamline.ground_truth_patches(position)[0]
        h, w = patch.shape
        row, col = np.round((position[0] - np.array(self.origin_m)) / self.pixel_size_m)
        r0, c0 = int(row) - h // 2, int(col) - w // 2
        with self._lock:
            self.sum[r0 : r0 + h, c0 : c0 + w] += patch
            self.weights[r0 : r0 + h, c0 : c0 + w] += 1
            self.frames += 1

    def snapshot(self) -> MosaicSnapshot | None:
        with self._lock:
            if not self.frames:
                return None
            mean = self.sum / np.maximum(self.weights, 1)
            return MosaicSnapshot(
                phase=np.angle(mean),
                amplitude=np.abs(mean),
                weights=self.weights.copy(),
                pixel_size_m=self.pixel_size_m,
                origin_m=self.origin_m,
                frames_used=self.frames,
                model_version=self.model_version,
                metrics={"coverage": float((self.weights > 0).mean())},
            )
