"""The start document of a ptychography run: its keys, written once, one spelling each.

`PtychographyStart` is what this package's plans write into a run's start document and what
its readers (the live stitcher and view, Tiled readers, the continual-learning loop) rely on.
Lengths in metres, energies in eV, times in seconds; positions are (y, x), the beam's centre
on the object.

Recorded runs may carry older spellings (``distance_m``, ``positions_keys``, ``sample``, or the
position keys as ``{"y": ..., "x": ...}``). `read_start` gives the start document with the
spellings of `PtychographyStart`, converting the old ones and warning (DeprecationWarning)
once per key and process; nothing writes them any more. The RunEngine's own keys (``uid``,
``time``, ``scan_id``, ``versions``, ``plan_type``) come through as they are.
"""

import warnings  # no `from __future__ import annotations`: TypedDict reads Required[] here
from collections.abc import Mapping
from typing import Any, Required, TypedDict

__all__ = [
    "DEPRECATED_START_KEYS",
    "REQUIRED_START_KEYS",
    "PtychographyStart",
    "read_start",
]


class PtychographyStart(TypedDict, total=False):
    """The keys of a ptychography run's start document (see the module docstring)."""

    uid: str
    """The run's uid (the RunEngine's)."""
    plan_name: str
    """The plan that made the run ("spiral_scan", "fly_scan", ...)."""
    detectors: list[str]
    """Names of the detectors read at each point."""
    motors: list[str]
    """Data keys of the (y, x) beam position readings."""
    num_points: int
    """Points (frames) the scan measures."""
    scan_pattern: str
    """"spiral", "raster", "sparse", "fly", ..."""
    scan_extent_m: list[float]
    """(height, width) of the scanned area, m."""
    scan_step_m: float | list[float]
    """Nominal step between points, m (one value, or (y, x))."""
    scan_centre_m: list[float]
    """(y, x) centre of the scanned area, m."""
    overlap: float | None
    """Requested overlap ratio (1 - step / beam size), or None."""
    beam_size_m: float
    """Beam size on the sample (half-power diameter), m."""
    energy_ev: Required[float]
    """Photon energy, eV."""
    detector_distance_m: Required[float]
    """Sample-to-detector distance, m (older runs: ``distance_m``)."""
    detector_pixel_size_m: Required[float]
    """(Binned) detector pixel pitch, m."""
    object_pixel_size_m: float
    """Object pixel size of the far-field geometry, m."""
    detector_name: str
    """The detector's model ("eiger", "medipix3")."""
    sample_name: str
    """The sample (searchable; older runs: ``sample``)."""
    exposure_s: float
    """Exposure per frame, s."""
    frames_key: str
    """Data key of the detector frames."""
    frame_numbers_key: str
    """Data key of the detector's frame numbers (the ids frames carry on the wire)."""
    position_keys: list[str]
    """[y key, x key]: data keys of the beam position in metres (older runs:
    ``positions_keys``, or ``{"y": key, "x": key}``)."""
    simulated: bool
    """True for the simulated beamline."""
    frame_rate_hz: float
    """Detector frame rate of a fly scan, Hz."""
    jitter_fraction: float
    """Random displacement of a raster's points, as a fraction of the step."""
    ptychonn_model_version: str
    """Model version of in-process inference (`callbacks.live_inference`)."""
    ptychonn_pixel_scale: float
    """Patch pixel size over object pixel size of that model."""


REQUIRED_START_KEYS = ("energy_ev", "detector_distance_m", "detector_pixel_size_m")
DEPRECATED_START_KEYS = {
    "distance_m": "detector_distance_m",
    "positions_keys": "position_keys",
    "sample": "sample_name",
}
_warned: set[str] = set()


def read_start(doc: Mapping[str, Any], *, warn: bool = True) -> PtychographyStart:
    """The start document with the spellings of `PtychographyStart` (a new dict).

    An older spelling is renamed (the current one wins when both are there) and, with
    ``warn``, a DeprecationWarning names both, once per key and process. Position keys given
    as ``{"y": ..., "x": ...}`` become ``[y, x]``.

    Raises:
        TypeError: ``doc`` is not a mapping.
        ValueError: position keys that are not two names.
    """
    if not isinstance(doc, Mapping):
        raise TypeError(f"a start document must be a mapping, got {type(doc).__name__}")
    start: dict[str, Any] = dict(doc)
    for old, new in DEPRECATED_START_KEYS.items():
        if old not in start:
            continue
        value = start.pop(old)
        start.setdefault(new, value)
        if warn and old not in _warned:
            _warned.add(old)
            warnings.warn(
                f"start document key {old!r} is deprecated: read as {new!r} (this package "
                f"writes {new!r}; recorded runs keep being read)",
                DeprecationWarning,
                stacklevel=2,
            )
    keys = start.get("position_keys")
    if keys is not None:
        if isinstance(keys, str):
            raise ValueError(f"position_keys must be [y key, x key], got {keys!r}")
        if isinstance(keys, Mapping):
            keys = [keys.get("y"), keys.get("x")]
        keys = list(keys)
        if len(keys) != 2 or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"position_keys must be [y key, x key], got {keys!r}")
        start["position_keys"] = keys
    return start  # type: ignore[return-value]
