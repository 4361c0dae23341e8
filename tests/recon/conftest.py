"""Small simulated scans shared by the reconstruction tests (built once per session)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bluesky_ptychonn.dataset import PtychoDataset
from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig, detector_preset
from bluesky_ptychonn.sim.scans import fermat_spiral, step_from_overlap


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run each test on one torch thread (restored afterwards).

    The test machines have 2 cores shared with other jobs; two OpenMP threads stall whenever
    one loses its core, which made these small reconstructions several times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _beamline() -> SimBeamline:
    detector = detector_preset("eiger", crop_px=64)
    config = SimBeamlineConfig(
        detector="eiger",
        beam_size_m=100e-9,
        photons=5e4,
        field_of_view_m=(0.8e-6, 0.8e-6),
        sample="etched",
        thickness_m=300e-9,
        seed=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe's tail reaches the small window's edge
        return SimBeamline(config, detector=detector)


@pytest.fixture(scope="session")
def small_beamline() -> SimBeamline:
    return _beamline()


@pytest.fixture(scope="session")
def small_scan(small_beamline: SimBeamline) -> PtychoDataset:
    """About 60 Poisson-noisy 64x64 patterns of a gold test pattern (0.45 rad phase range)."""
    bl = small_beamline
    positions = fermat_spiral(0.35e-6, step_m=step_from_overlap(bl.beam_size_on_sample_m, 0.6))
    return bl.measure(positions)


@pytest.fixture(scope="session")
def noiseless_scan(small_beamline: SimBeamline, small_scan: PtychoDataset) -> PtychoDataset:
    """The same scan with exact expected intensities."""
    exact = small_beamline.patterns(small_scan.positions_m, noise=False)
    return PtychoDataset(
        patterns=np.asarray(exact, dtype=np.float32),
        positions_m=small_scan.positions_m,
        energy_ev=small_scan.energy_ev,
        distance_m=small_scan.distance_m,
        detector_pixel_size_m=small_scan.detector_pixel_size_m,
        probe=small_scan.probe,
        ground_truth=small_scan.ground_truth,
    )
