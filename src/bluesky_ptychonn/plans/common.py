"""What every ptychography plan does before its first message: check and describe the scan.

`scan_setup` validates the devices and the trajectory (types, beam size, sample name,
exposure, the stage's units and limits) and builds the start document, so that a plan with bad
arguments raises before it yields anything and moves nothing. The start document holds what
downstream code needs and nothing else:

* ``plan_name``, ``detectors``, ``motors``, ``num_points``, ``hints``: bluesky's usual keys;
  ``hints.dimensions`` are the beam positions (x, y), for live scatter plots;
* ``scan_pattern``: "spiral", "raster" or "sparse";
* ``scan_extent_m`` (height, width), ``scan_step_m`` (nominal step; (y, x) for a raster with
  two steps), ``scan_centre_m`` (y, x): metres;
* ``overlap``: ``1 - step / beam_size`` (measured on the positions for a spiral by count);
* ``beam_size_m``: beam size (half-power diameter) on the sample, m;
* ``energy_ev``, ``distance_m``: photon energy (eV), sample-detector distance (m);
* ``detector_pixel_size_m``: pixel pitch of the delivered (binned) frames, m;
* ``object_pixel_size_m``: ``wavelength * distance / (frame width * pixel size)``, m;
* ``detector_name``: "eiger" or "medipix3"; ``sample_name``; ``exposure_s`` (s per frame);
* ``frames_key``, ``frame_numbers_key``, ``position_keys``: the data keys of the frames,
  the frame numbers and the (y, x) beam positions (m);
* ``simulated``: True when the devices are simulated twins.

Fly scans add ``frame_rate_hz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..devices.areadetector import PtychoDetector
from ..devices.stage import SampleStage
from ..geometry import as_positions_m

MAX_EXPOSURE_S = 60.0


@dataclass
class ScanSetup:
    """A checked scan: devices, positions (N, 2) (y, x) m, exposure and start document."""

    detectors: list[Any]
    primary: PtychoDetector
    stage: SampleStage
    positions_m: np.ndarray
    exposure_s: float | None
    metadata: dict[str, Any]


def check_stage(stage: Any) -> SampleStage:
    if not isinstance(stage, SampleStage):
        raise TypeError(
            f"the stage must be a SampleStage (or SimStage), got {type(stage).__name__}"
        )
    return stage


def resolve_beam_size(stage: SampleStage, beam_size_m: float | None) -> float:
    """The beam size (m) to use: the argument, else the stage's ``beam_size`` setting."""
    check_stage(stage)
    value = stage.beam_size.get() if beam_size_m is None else beam_size_m
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"beam size must be a length in metres, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(
            f"beam size unknown ({value!r}): pass beam_size_m=... (metres) or set "
            f"{stage.name}.beam_size"
        )
    return value


def _primary_detector(detectors: Sequence[Any]) -> PtychoDetector:
    if isinstance(detectors, (str, bytes)) or not isinstance(detectors, Sequence):
        raise TypeError(f"detectors must be a list of devices, got {type(detectors).__name__}")
    if not detectors:
        raise ValueError("a scan needs at least one detector")
    for detector in detectors:
        if isinstance(detector, PtychoDetector):
            return detector
    raise TypeError(
        "none of the detectors is an EigerDetector or Medipix3Detector (or simulated twin): "
        f"got {[type(d).__name__ for d in detectors]}"
    )


def _check_exposure(exposure_s: float | None) -> float | None:
    if exposure_s is None:
        return None
    if not (np.isfinite(exposure_s) and 0 < exposure_s <= MAX_EXPOSURE_S):
        raise ValueError(f"exposure must lie in (0, {MAX_EXPOSURE_S}] s, got {exposure_s!r}")
    return float(exposure_s)


def scan_setup(
    detectors: Sequence[Any],
    stage: Any,
    positions_m: np.ndarray,
    *,
    plan_name: str,
    pattern: str,
    extent_m: tuple[float, float],
    step_m: float | tuple[float, float],
    centre_m: tuple[float, float],
    beam_size_m: float,
    overlap: float | None,
    sample_name: str | None,
    exposure_s: float | None,
    extra: dict[str, Any] | None = None,
) -> ScanSetup:
    """Check everything a scan needs and build its start document (see the module docstring).

    Raises:
        TypeError: a device of the wrong kind.
        ValueError: a bad argument, a position outside the stage's limits, motor units that
            differ from the stage's configuration.
    """
    stage = check_stage(stage)
    detectors = list(detectors) if isinstance(detectors, Sequence) else detectors
    primary = _primary_detector(detectors)
    positions = as_positions_m(positions_m)
    exposure = _check_exposure(exposure_s)
    sample = stage.sample_name.get() if sample_name is None else sample_name
    if not isinstance(sample, str) or not sample.strip():
        raise ValueError(f"name the sample: pass sample_name=... or set {stage.name}.sample_name")
    if overlap is None:
        nominal = min(np.atleast_1d(step_m))
        overlap = 1.0 - float(nominal) / beam_size_m if nominal > 0 else None
    stage.check_positions(positions)
    geometry = primary.geometry()
    if exposure is None:
        exposure = float(primary.cam.acquire_time.get())
    x_key, y_key = stage.beam_x.name, stage.beam_y.name
    metadata: dict[str, Any] = {
        "plan_name": plan_name,
        "detectors": [d.name for d in detectors],
        "motors": [y_key, x_key],
        "num_points": int(len(positions)),
        "scan_pattern": pattern,
        "scan_extent_m": [float(extent_m[0]), float(extent_m[1])],
        "scan_step_m": [float(s) for s in step_m] if np.ndim(step_m) else float(step_m),
        "scan_centre_m": [float(centre_m[0]), float(centre_m[1])],
        "overlap": None if overlap is None else float(overlap),
        "beam_size_m": float(beam_size_m),
        "energy_ev": geometry["energy_ev"],
        "detector_distance_m": geometry["distance_m"],
        "detector_pixel_size_m": geometry["detector_pixel_size_m"],
        "object_pixel_size_m": geometry["object_pixel_size_m"],
        "detector_name": primary.model_name,
        "sample_name": sample,
        "exposure_s": exposure,
        "frames_key": primary.image.name,
        "frame_numbers_key": primary.frame_number.name,
        "position_keys": [y_key, x_key],
        "simulated": hasattr(stage, "hutch"),
        "hints": {"dimensions": [[[x_key], "primary"], [[y_key], "primary"]]},
    }
    metadata.update(extra or {})
    return ScanSetup(
        detectors=detectors,
        primary=primary,
        stage=stage,
        positions_m=positions,
        exposure_s=None if exposure_s is None else exposure,
        metadata=metadata,
    )


def merge_md(defaults: dict[str, Any], md: dict[str, Any] | None) -> dict[str, Any]:
    """The start document: the plan's keys, overridden by the caller's ``md``."""
    if md is not None and not isinstance(md, dict):
        raise TypeError(f"md must be a dict, got {type(md).__name__}")
    return {**defaults, **(md or {})}
