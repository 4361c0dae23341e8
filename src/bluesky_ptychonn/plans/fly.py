"""Fly scan: the detector free-runs at its frame rate on trigger pulses from the stage's
trajectory, and frames reach the document stream by reference (StreamResource/StreamDatum
to the HDF5 file) with frame numbers and positions in event pages (see `devices.flyer`)."""

import uuid
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from ..devices.areadetector import PtychoDetector
from ..devices.connection import connect
from ..devices.flyer import FlyTrajectory, PtychoFlyer
from ..sim import scans as trajectories
from .common import check_stage, merge_md, resolve_beam_size, scan_setup


def fly_scan(
    detector: Readable,
    stage: Movable,
    pattern: str = "spiral",
    extent_m: tuple[float, float] = (2e-6, 2e-6),
    overlap: float = 0.7,
    *,
    n_points: int | None = None,
    frame_rate_hz: float | None = None,
    exposure_s: float | None = None,
    centre_m: tuple[float, float] = (0.0, 0.0),
    beam_size_m: float | None = None,
    sample_name: str | None = None,
    flush_period_s: float = 0.2,
    md: dict[str, Any] | None = None,
) -> MsgGenerator:
    """Hardware-triggered fly scan: one frame per trajectory element at ``frame_rate_hz``.

    The trajectory (spiral, raster or sparse, set by the beam size and overlap) is built in
    the stage's trajectory controller with one element per frame; the detector takes a frame
    on each pulse and its HDF5 plugin writes them; every ``flush_period_s`` the plan emits a
    StreamDatum for the new frames and an event page with their frame numbers and positions.

    Parameters
    ----------
    detector : EigerDetector or Medipix3Detector
        The detector (or its simulated twin).
    stage : SampleStage
        The sample stage, with a trajectory controller.
    pattern : str, optional
        "spiral", "raster" or "sparse".
    extent_m : (float, float), optional
        (height, width) of the scanned area, m (a spiral fills the inscribed disc).
    overlap : float, optional
        Overlap ratio ``1 - step / beam_size``, below 1.
    n_points : int, optional
        A spiral of exactly this many points instead of a step set by ``overlap``.
    frame_rate_hz : float, optional
        Frame (and trajectory element) rate, Hz; default the detector's maximum.
    exposure_s : float, optional
        Exposure per frame, s; default the frame period.
    centre_m : (float, float), optional
        (y, x) centre, m.
    beam_size_m : float, optional
        Beam size on the sample, m (default ``stage.beam_size``).
    sample_name : str, optional
        Default ``stage.sample_name``.
    flush_period_s : float, optional
        How often documents are emitted while the scan runs, s.
    md : dict, optional
        Extra start-document keys.

    See Also
    --------
    bluesky_ptychonn.devices.flyer.PtychoFlyer, bluesky_ptychonn.sim.scans.scan_positions,
    spiral_scan
    """
    stage = check_stage(stage)
    if not isinstance(detector, PtychoDetector):
        raise TypeError(
            f"fly scans need an EigerDetector or Medipix3Detector, got {type(detector).__name__}"
        )
    beam = resolve_beam_size(stage, beam_size_m)
    if n_points is not None:
        if pattern != "spiral":
            raise ValueError(f"n_points applies to spirals, not to {pattern!r} scans")
        positions = trajectories.fermat_spiral(
            min(extent_m) / 2, n_points=n_points, centre_m=centre_m
        )
        step = (
            float(np.median(trajectories.nearest_neighbour_distances(positions)))
            if len(positions) > 1
            else 0.0
        )
        overlap_value = 1 - step / beam if step > 0 else None
    else:
        step = trajectories.step_from_overlap(beam, overlap)
        positions = trajectories.scan_positions(pattern, extent_m, beam, overlap, centre_m=centre_m)
        overlap_value = overlap
    max_rate = detector.max_frame_rate_hz
    rate = max_rate if frame_rate_hz is None else float(frame_rate_hz)
    if not (np.isfinite(rate) and 0 < rate <= max_rate):
        raise ValueError(
            f"frame rate must lie in (0, {max_rate:g}] Hz for {detector.name}, got {rate!r}"
        )
    period = 1.0 / rate
    exposure = period if exposure_s is None else float(exposure_s)
    if not 0 < exposure <= period:
        raise ValueError(f"exposure ({exposure!r} s) must lie in (0, frame period {period:g} s]")
    setup = scan_setup(
        [detector], stage, positions, plan_name="fly_scan", pattern=pattern,
        extent_m=extent_m, step_m=step, centre_m=centre_m, beam_size_m=beam,
        overlap=overlap_value, sample_name=sample_name, exposure_s=exposure,
        extra={"frame_rate_hz": rate},
    )  # fmt: skip
    connect(stage.trajectory, timeout=5.0)
    flyer = PtychoFlyer(detector, stage, name=f"{detector.name}_flyer")
    trajectory = FlyTrajectory(
        positions_m=setup.positions_m,
        frame_period_s=period,
        exposure_s=exposure,
        file_name=f"{detector.name}_{uuid.uuid4().hex[:12]}",
    )
    start = merge_md(setup.metadata, md)

    @bpp.stage_decorator([detector, stage])
    @bpp.run_decorator(md=start)
    def inner() -> MsgGenerator:
        yield from bps.declare_stream(flyer, name="primary", collect=True)
        yield from bps.prepare(flyer, trajectory, wait=True)
        yield from bps.kickoff(flyer, wait=True)
        yield from bps.collect_while_completing(
            [flyer], [flyer], flush_period=flush_period_s, stream_name="primary"
        )

    return (yield from inner())
