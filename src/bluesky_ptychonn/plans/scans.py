"""Step scans: move the stage to each position, take one frame per detector, read everything.

Each plan computes its trajectory with a pure function of `sim.scans`, checks it and the
devices with `common.scan_setup` (before its first message: bad arguments move nothing), then
runs `step_scan`. One event per point: fine up to a few hundred points per second; for kHz
use `fly.fly_scan`.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from ..sim import scans as trajectories
from .common import ScanSetup, merge_md, resolve_beam_size, scan_setup


def step_scan(setup: ScanSetup, md: dict[str, Any] | None = None) -> MsgGenerator:
    """Run a checked scan: for each position, move the stage, trigger and read all devices.

    Parameters
    ----------
    setup : ScanSetup
        From `common.scan_setup`.
    md : dict, optional
        Extra start-document keys (override the plan's).
    """
    start = merge_md(setup.metadata, md)
    devices = [*setup.detectors, setup.stage]
    stage = setup.stage

    @bpp.stage_decorator(devices)
    @bpp.run_decorator(md=start)
    def inner() -> MsgGenerator:
        for y, x in setup.positions_m:
            yield from bps.mv(stage, (float(y), float(x)))
            yield from bps.trigger_and_read(devices)

    if setup.exposure_s is not None:
        for detector in setup.detectors:
            cam = getattr(detector, "cam", None)
            if cam is not None:
                period = max(setup.exposure_s, float(cam.acquire_period.get()))
                yield from bps.mv(cam.acquire_time, setup.exposure_s, cam.acquire_period, period)
    return (yield from inner())


def _median_step(positions: np.ndarray) -> float:
    if len(positions) < 2:
        return 0.0
    return float(np.median(trajectories.nearest_neighbour_distances(positions)))


def spiral_scan(
    detectors: Sequence[Readable],
    stage: Movable,
    radius_m: float,
    *,
    step_m: float | None = None,
    n_points: int | None = None,
    centre_m: tuple[float, float] = (0.0, 0.0),
    exposure_s: float | None = None,
    beam_size_m: float | None = None,
    sample_name: str | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator:
    """Fermat-spiral step scan (golden angle, uniform density) over a disc.

    Give exactly one of ``step_m`` and ``n_points``.

    Parameters
    ----------
    detectors : list of detectors
        Read at each point; the first Eiger/Medipix3 sets the geometry in the start document.
    stage : SampleStage
        The sample stage (or its simulated twin).
    radius_m : float
        Radius of the scanned disc, m.
    step_m : float, optional
        Nearest-neighbour distance, m (see `sim.scans.step_from_overlap`).
    n_points : int, optional
        Number of points instead of a step.
    centre_m : (float, float), optional
        (y, x) centre of the spiral, m.
    exposure_s : float, optional
        Exposure per frame, s (default: the detector's current setting).
    beam_size_m : float, optional
        Beam size on the sample, m (default: ``stage.beam_size``); sets the recorded
        overlap ``1 - step / beam_size``.
    sample_name : str, optional
        Default: ``stage.sample_name``.
    md : dict, optional
        Extra start-document keys.

    See Also
    --------
    bluesky_ptychonn.sim.scans.fermat_spiral, raster_scan, sparse_scan, fly_scan
    """
    beam = resolve_beam_size(stage, beam_size_m)
    positions = trajectories.fermat_spiral(
        radius_m, step_m=step_m, n_points=n_points, centre_m=centre_m
    )
    step = step_m if step_m is not None else _median_step(positions)
    overlap = None if step_m is not None or len(positions) < 2 else 1 - step / beam
    setup = scan_setup(
        detectors, stage, positions, plan_name="spiral_scan", pattern="spiral",
        extent_m=(2 * radius_m, 2 * radius_m), step_m=step, centre_m=centre_m,
        beam_size_m=beam, overlap=overlap, sample_name=sample_name, exposure_s=exposure_s,
    )  # fmt: skip
    return (yield from step_scan(setup, md))


def raster_scan(
    detectors: Sequence[Readable],
    stage: Movable,
    extent_m: tuple[float, float],
    step_m: float,
    *,
    jitter_fraction: float = 0.0,
    snake: bool = True,
    centre_m: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
    exposure_s: float | None = None,
    beam_size_m: float | None = None,
    sample_name: str | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator:
    """Rectangular grid step scan, row by row (y outer, x inner), optionally jittered.

    Parameters
    ----------
    detectors : list of detectors
        Read at each point (see `spiral_scan`).
    stage : SampleStage
        The sample stage.
    extent_m : (float, float)
        (height, width) of the scanned rectangle, m.
    step_m : float
        Grid step, m.
    jitter_fraction : float, optional
        Random offset of each point, up to this fraction of the step (below 0.5).
    snake : bool, optional
        Reverse every other row.
    centre_m : (float, float), optional
        (y, x) centre, m.
    seed : int, optional
        Seed of the jitter.
    exposure_s : float, optional
        Exposure per frame, s (default: the detector's setting).
    beam_size_m : float, optional
        Beam size on the sample, m (default ``stage.beam_size``).
    sample_name : str, optional
        Default ``stage.sample_name``.
    md : dict, optional
        Extra start-document keys.

    See Also
    --------
    bluesky_ptychonn.sim.scans.raster_scan, sparse_scan, spiral_scan
    """
    beam = resolve_beam_size(stage, beam_size_m)
    positions = trajectories.raster_scan(
        extent_m, step_m, jitter_fraction=jitter_fraction, snake=snake, centre_m=centre_m,
        seed=seed,
    )  # fmt: skip
    setup = scan_setup(
        detectors, stage, positions, plan_name="raster_scan", pattern="raster",
        extent_m=extent_m, step_m=step_m, centre_m=centre_m, beam_size_m=beam, overlap=None,
        sample_name=sample_name, exposure_s=exposure_s,
        extra={"jitter_fraction": float(jitter_fraction)},
    )  # fmt: skip
    return (yield from step_scan(setup, md))


def sparse_scan(
    detectors: Sequence[Readable],
    stage: Movable,
    extent_m: tuple[float, float],
    overlap: float,
    *,
    snake: bool = True,
    centre_m: tuple[float, float] = (0.0, 0.0),
    exposure_s: float | None = None,
    beam_size_m: float | None = None,
    sample_name: str | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator:
    """Grid step scan whose step follows from the overlap ratio ``1 - step / beam_size``.

    Overlap 0 gives touching patches, negative values gaps: the sparse scans a CNN images
    and iterative reconstruction cannot.

    Parameters
    ----------
    detectors : list of detectors
        Read at each point (see `spiral_scan`).
    stage : SampleStage
        The sample stage.
    extent_m : (float, float)
        (height, width) of the scanned rectangle, m.
    overlap : float
        Overlap ratio ``1 - step / beam_size``, below 1.
    snake : bool, optional
        Reverse every other row.
    centre_m : (float, float), optional
        (y, x) centre, m.
    exposure_s : float, optional
        Exposure per frame, s (default: the detector's setting).
    beam_size_m : float, optional
        Beam size on the sample, m (default ``stage.beam_size``).
    sample_name : str, optional
        Default ``stage.sample_name``.
    md : dict, optional
        Extra start-document keys.

    See Also
    --------
    bluesky_ptychonn.sim.scans.sparse_grid, bluesky_ptychonn.sim.scans.step_from_overlap,
    raster_scan
    """
    beam = resolve_beam_size(stage, beam_size_m)
    step = trajectories.step_from_overlap(beam, overlap)
    positions = trajectories.sparse_grid(extent_m, beam, overlap, centre_m=centre_m, snake=snake)
    setup = scan_setup(
        detectors, stage, positions, plan_name="sparse_scan", pattern="sparse",
        extent_m=extent_m, step_m=step, centre_m=centre_m, beam_size_m=beam, overlap=overlap,
        sample_name=sample_name, exposure_s=exposure_s,
    )  # fmt: skip
    return (yield from step_scan(setup, md))
