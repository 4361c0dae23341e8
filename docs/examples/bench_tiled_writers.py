"""How fast runs reach Tiled: TiledWriter in the RunEngine thread vs SpooledTiledWriter.

    python docs/examples/bench_tiled_writers.py --points 300

Starts its own Tiled server (a child process on a temporary folder), runs a spiral scan of
64x64 uint16 frames per writer and batch size, and prints events per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bluesky import RunEngine
from bluesky import plans as bp
from bluesky_tiled_plugins import TiledWriter
from ophyd.sim import SynAxis

from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig, detector_preset
from bluesky_ptychonn.sim.scans import fermat_spiral
from bluesky_ptychonn.storage.tiled_server import TiledServerProcess

sys.path.insert(0, str(Path(__file__).parent))
from scan_to_tiled import Detector  # noqa: E402


def scan(n_points):
    beamline = SimBeamline(
        SimBeamlineConfig(field_of_view_m=(1e-6, 1e-6), defocus_m=0.0),
        detector=detector_preset("eiger", crop_px=64),
    )
    positions = fermat_spiral(0.35e-6, n_points=n_points)
    y, x = SynAxis(name="stage_y"), SynAxis(name="stage_x")
    detector = Detector(beamline, y, x, name="eiger")
    return bp.list_scan([detector], y, list(positions[:, 0]), x, list(positions[:, 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    args = parser.parse_args()
    n = args.points
    with tempfile.TemporaryDirectory() as folder, TiledServerProcess(Path(folder) / "s") as srv:
        catalog = srv.connect()
        RE = RunEngine()
        start = time.perf_counter()
        RE(scan(n))
        print(f"no writer: scan {n / (time.perf_counter() - start):.0f} events/s")
        for batch in (5, 50):
            RE = RunEngine()
            RE.subscribe(TiledWriter(catalog.raw, batch_size=batch))
            start = time.perf_counter()
            RE(scan(n))
            print(f"TiledWriter batch={batch}: {n / (time.perf_counter() - start):.0f} events/s")
        for batch in (5, 50):
            RE = RunEngine()
            writer = SpooledTiledWriter(
                catalog, spool_dir=Path(folder) / f"spool{batch}", batch_size=batch
            )
            RE.subscribe(writer)
            start = time.perf_counter()
            RE(scan(n))
            scanned = time.perf_counter() - start
            writer.flush()
            delivered = time.perf_counter() - start
            writer.close()
            print(
                f"SpooledTiledWriter batch={batch}: scan {n / scanned:.0f} events/s, "
                f"delivered {n / delivered:.0f} events/s"
            )


if __name__ == "__main__":
    main()
