"""Adaptive scans: the agent (`adaptive.MosaicAgent`) chooses each next point from the live
phase that the inference endpoint returns for the points measured so far.

* `adaptive_scan`: one run with every point in it. Before the first message the agent's
  settings, the devices and the region (its corners against the stage's limits) are checked;
  each point's position is checked again before its motion. At every point the endpoint's
  reading waits for that point's own frame (`InferenceEndpoint.trigger`); a NaN patch or an
  endpoint that does not answer stops the scan with `LivePhaseError` /
  `FrameResultTimeoutError` before any further motion. Every event carries why its point was
  chosen (``agent_reason``, ``agent_score``, ``agent_point_id``).
* `adaptive_problem`: the same agent, devices and endpoint as a bluesky-adaptive 1.0
  `OptimizationProblem`, for ``RE(optimize(problem, iterations=None, n_points=8))``, which
  ends by the agent's stopping rule (one run per step: `acquire_points`).
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator
from ophyd import Component as Cpt
from ophyd import Device, Signal

from ..adaptive import AgentOptions, MosaicAgent
from ..adaptive.agent import STRUCTURE_KEY, UNCERTAINTY_KEY
from ..adaptive.maps import patch_structure
from ..devices.endpoint import InferenceEndpoint
from .common import check_stage, merge_md, resolve_beam_size, scan_setup

log = logging.getLogger(__name__)


class LivePhaseError(RuntimeError):
    """The endpoint's phase for a point is unusable (NaN or infinite): the scan stops."""


class AgentReadback(Device):
    """Why the current point was chosen, read with every event of an adaptive scan."""

    point_id = Cpt(Signal, value="", kind="normal")
    reason = Cpt(Signal, value="", kind="normal")
    score = Cpt(Signal, value=0.0, kind="normal")


def _check_endpoint(endpoint: Any, detector: Any) -> InferenceEndpoint:
    if not isinstance(endpoint, InferenceEndpoint):
        raise TypeError(f"the endpoint must be an InferenceEndpoint, got {type(endpoint).__name__}")
    if endpoint.frame_number is None:
        endpoint.follow(detector)  # readings wait for this detector's frames
    return endpoint


def point_outcome(endpoint: InferenceEndpoint, point_id: str, pixel_size_m: float) -> dict:
    """The agent's outcome for the endpoint's current frame; `LivePhaseError` on garbage."""
    frame = int(endpoint.frame_id.get())
    result = endpoint.result_for(frame)
    if result["phase"] is None:
        raise LivePhaseError(
            f"the endpoint rejected frame {frame} (point {point_id}): {result.get('rejected')}; "
            "the adaptive scan stops before any further motion"
        )
    phase = np.asarray(result["phase"], dtype=np.float64)
    if not np.all(np.isfinite(phase)):
        raise LivePhaseError(
            f"the endpoint's phase for frame {frame} (point {point_id}) holds NaN or infinite "
            "values: the adaptive scan stops before any further motion"
        )
    outcome: dict[str, Any] = {
        "_id": point_id,
        "frame_id": frame,
        STRUCTURE_KEY: patch_structure(phase, pixel_size_m),
    }
    if result.get("uncertainty") is not None:
        u = float(np.mean(result["uncertainty"]))
        if not math.isfinite(u):
            raise LivePhaseError(f"the endpoint's uncertainty for frame {frame} is not finite")
        outcome[UNCERTAINTY_KEY] = u
    return outcome


def adaptive_scan(
    detectors: Sequence[Readable],
    stage: Movable,
    endpoint: Readable,
    region_m: tuple[float, float, float, float],
    budget: int,
    *,
    mode: str = "no_overlap",
    batch: int = 8,
    min_overlap: float = 0.3,
    max_overlap: float = 0.7,
    footprint_m: float | None = None,
    survey_fraction: float = 0.2,
    photons_per_point: float | None = None,
    dose_budget_photons: float | None = None,
    exposure_s: float | None = None,
    beam_size_m: float | None = None,
    sample_name: str | None = None,
    result_timeout_s: float | None = None,
    mosaic_source: Any = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator:
    """Step scan whose points an agent chooses from the live phase, in one run.

    Parameters
    ----------
    detectors : list of detectors
        Read at each point; the first Eiger/Medipix3 sets the geometry and its frames are the
        ones the endpoint's readings wait for.
    stage : SampleStage
        The sample stage.
    endpoint : InferenceEndpoint
        The inference endpoint device (its readings at a point include that point's frame).
    region_m : (float, float, float, float)
        (y_min, y_max, x_min, x_max) of the beam positions the agent may choose, m.
    budget : int
        Most points measured (at least 1).
    mode : str, optional
        "no_overlap" (network only, lowest dose) or "overlap" (each point overlaps a measured
        one by ``min_overlap`` .. ``max_overlap``: ePIE can reconstruct the scan).
    batch : int, optional
        Points the agent chooses at once (it re-plans after each batch).
    min_overlap, max_overlap : float, optional
        Overlap ratios for "overlap" mode.
    footprint_m : float, optional
        Width of the area one point images, m (default the beam size).
    survey_fraction : float, optional
        Share of the budget first spent on a coarse uniform grid ("no_overlap" mode).
    photons_per_point, dose_budget_photons : float, optional
        Dose bookkeeping (photons): the scan stops when the next point would exceed the dose.
    exposure_s : float, optional
        Exposure per frame, s (default: the detector's setting).
    beam_size_m : float, optional
        Beam size on the sample, m (default ``stage.beam_size``).
    sample_name : str, optional
        Default ``stage.sample_name``.
    result_timeout_s : float, optional
        Longest wait for a point's result from the endpoint, s (default the device's).
    mosaic_source : callable, optional
        Returns the live mosaic now (e.g. ``session.stitcher.snapshot``, or a reader of the
        mosaic in Tiled); after every batch the agent takes its structure (and uncertainty,
        when present) from it at full resolution. None: from each point's own patch.
    md : dict, optional
        Extra start-document keys.

    See Also
    --------
    bluesky_ptychonn.adaptive.MosaicAgent, adaptive_problem, spiral_scan
    """
    stage = check_stage(stage)
    if not isinstance(endpoint, InferenceEndpoint):
        raise TypeError(f"the endpoint must be an InferenceEndpoint, got {type(endpoint).__name__}")
    beam = resolve_beam_size(stage, beam_size_m)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    options = AgentOptions(
        region_m=tuple(region_m),
        beam_size_m=beam,
        budget_points=budget,
        mode=mode,
        min_overlap=min_overlap,
        max_overlap=max_overlap,
        footprint_m=footprint_m,
        survey_fraction=survey_fraction,
        photons_per_point=photons_per_point,
        dose_budget_photons=dose_budget_photons,
    )
    y0, y1, x0, x1 = options.region_m
    corners = np.array([[y0, x0], [y0, x1], [y1, x0], [y1, x1]])
    setup = scan_setup(
        [*detectors, endpoint],
        stage,
        corners,
        plan_name="adaptive_scan",
        pattern="adaptive",
        extent_m=(y1 - y0, x1 - x0),
        step_m=options.footprint,
        centre_m=((y0 + y1) / 2, (x0 + x1) / 2),
        beam_size_m=beam,
        overlap=None if mode == "no_overlap" else min_overlap,
        sample_name=sample_name,
        exposure_s=exposure_s,
        extra={
            "num_points": options.max_points,
            "adaptive_agent": options.as_dict(),
            "adaptive_region_m": list(options.region_m),
        },
    )
    endpoint = _check_endpoint(endpoint, setup.primary)
    if result_timeout_s is not None:
        endpoint.result_timeout_s = float(result_timeout_s)
    agent = MosaicAgent(options)
    readback = AgentReadback(name="agent")
    pixel = float(setup.metadata["object_pixel_size_m"])
    start = merge_md(setup.metadata, md)
    devices = [*setup.detectors, stage]

    @bpp.stage_decorator(devices)
    @bpp.run_decorator(md=start)
    def inner() -> MsgGenerator:
        while not agent.should_stop()[0]:
            suggestions = agent.suggest(batch)
            if not suggestions:
                break
            for s in suggestions:
                position = (s["beam_y_m"], s["beam_x_m"])
                stage.check_positions(np.array([position]))
                readback.point_id.put(s["_id"])
                readback.reason.put(s["reason"])
                readback.score.put(float(s["score"]))
                yield from bps.mv(stage, position)
                yield from bps.trigger_and_read([*devices, readback])
                agent.ingest([point_outcome(endpoint, s["_id"], pixel)])
            if mosaic_source is not None:
                snapshot = mosaic_source()
                if snapshot is not None:
                    agent.observe_mosaic(snapshot)
        log.info("adaptive_scan: %d points; %s", len(agent.measured), agent.should_stop()[1])

    if setup.exposure_s is not None:
        cam = getattr(setup.primary, "cam", None)
        if cam is not None:
            period = max(setup.exposure_s, float(cam.acquire_period.get()))
            yield from bps.mv(cam.acquire_time, setup.exposure_s, cam.acquire_period, period)
    return (yield from inner())


# ---- bluesky-adaptive's optimize ------------------------------------------------------------
@dataclass
class Acquisition:
    """What `acquire_points` hands the evaluation: the run and each point's outcome."""

    run_uid: str | None
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:  # bluesky-adaptive records repr(uid) in its events
        return str(self.run_uid)


def make_acquire_points(endpoint: InferenceEndpoint, pixel_size_m: float):
    """The acquisition plan of `adaptive_problem`: one run per step, the stage moved to each
    suggestion (after checking all of them against its limits), every sensor read, the
    endpoint's result of each point's frame turned into the agent's outcome."""

    def acquire_points(
        suggestions: Sequence[Mapping],
        actuators: Sequence[Any],
        sensors: Sequence[Any] | None = None,
        md: Mapping[str, Any] | None = None,
    ) -> MsgGenerator:
        (stage,) = actuators
        acquisition = Acquisition(run_uid=None)
        if not suggestions:
            return acquisition
        positions = np.array([[s["beam_y_m"], s["beam_x_m"]] for s in suggestions])
        stage.check_positions(positions)
        devices = [*(sensors or []), stage]
        run_md = {
            **(md or {}),
            "plan_name": "acquire_points",
            "num_points": len(suggestions),
            "adaptive_suggestions": [dict(s) for s in suggestions],
        }

        @bpp.set_run_key_decorator("acquire_points")
        @bpp.stage_decorator(devices)
        @bpp.run_decorator(md=run_md)
        def inner() -> MsgGenerator:
            for s, position in zip(suggestions, positions, strict=True):
                yield from bps.mv(stage, (float(position[0]), float(position[1])))
                yield from bps.trigger_and_read(devices)
                acquisition.outcomes[str(s["_id"])] = point_outcome(
                    endpoint, s["_id"], pixel_size_m
                )

        acquisition.run_uid = yield from inner()
        return acquisition

    return acquire_points


def evaluate_points(acquisition: Acquisition, suggestions: Sequence[Mapping]) -> list[dict]:
    """bluesky-adaptive's evaluation function: the outcomes, matched to suggestions by _id."""
    return [acquisition.outcomes[str(s["_id"])] for s in suggestions]


def adaptive_problem(
    agent: MosaicAgent,
    detectors: Sequence[Readable],
    stage: Movable,
    endpoint: Readable,
) -> Any:
    """A bluesky-adaptive `OptimizationProblem` of ``agent`` on these devices (see the module
    docstring). The agent's region is checked against the stage's limits here."""
    from bluesky_adaptive.protocols import OptimizationProblem

    stage = check_stage(stage)
    y0, y1, x0, x1 = agent.options.region_m
    stage.check_positions(np.array([[y0, x0], [y0, x1], [y1, x0], [y1, x1]]))
    detectors = list(detectors)
    primary = next(d for d in detectors if hasattr(d, "geometry"))
    endpoint = _check_endpoint(endpoint, primary)
    pixel = float(primary.geometry()["object_pixel_size_m"])
    return OptimizationProblem(
        optimizer=agent,
        actuators=[stage],
        sensors=[*detectors, endpoint],
        evaluation_function=evaluate_points,
        acquisition_plan=make_acquire_points(endpoint, pixel),
    )
