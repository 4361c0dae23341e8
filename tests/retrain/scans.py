"""Small simulated scans (CXI) for the continual-learning tests."""

from __future__ import annotations

from pathlib import Path

from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig, detector_preset
from bluesky_ptychonn.sim.scans import scan_positions
from bluesky_ptychonn.storage.cxi import write_cxi

FRAME_PX = 128


def small_scan(
    path: Path,
    *,
    sample: str = "etched",
    seed: int = 0,
    extent_m: float = 0.8e-6,
    overlap: float = 0.7,
    frame_px: int = FRAME_PX,
    defocus_m: float = 250e-6,
) -> Path:
    """A spiral scan of the simulated beamline with a ``frame_px`` readout crop (CXI file).

    The default is the Eiger preset's 128-pixel readout, which holds the whole far field: a
    smaller crop cuts off scattering that the band-limited reconstruction then cannot explain
    (its data error stays ~10x the Poisson floor and the labels are refused).
    """
    beamline = SimBeamline(
        SimBeamlineConfig(sample=sample, seed=seed, photons=1e6, defocus_m=defocus_m),
        detector=detector_preset("eiger", crop_px=frame_px),
    )
    positions = scan_positions(
        "spiral", (extent_m, extent_m), beamline.beam_size_on_sample_m, overlap=overlap, seed=seed
    )
    return write_cxi(path, beamline.measure(positions), overwrite=True)
