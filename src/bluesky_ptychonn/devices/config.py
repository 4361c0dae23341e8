"""The devices of a session from a TOML file: simulated by default, EPICS by configuration.

A beamline session (`bluesky_ptychonn.session`) reads the same file and calls
`build_devices`; the session's own tables (``[endpoint]``, ``[tiled]``, ...; `SESSION_SECTIONS`)
may sit in the same file and are ignored here. Without a file (``BLUESKY_PTYCHONN_BEAMLINE``
unset) everything is simulated. A file::

    mode = "epics"                  # "sim" (default) or "epics"
    connection_timeout_s = 5.0
    on_disconnected = "warn"        # or "raise"

    [stage]
    prefix = "XF:99ID-ES{PTY}"
    y = "Mtr:Y"                     # motor records after the prefix
    x = "Mtr:X"
    trajectory = "Traj:"            # trajectoryScan PVs after the prefix (fly scans)
    egu = "um"                      # the motors' units, checked against their EGU field
    sign = -1                       # -1: the motors report the sample's displacement
    beam_size_m = 60e-9
    sample_name = ""

    [eiger]                         # leave a detector's section out if it is not there
    prefix = "XF:99ID-ES{Det:Eiger}"
    file_directory = "/data/eiger"  # where its HDF5 plugin writes, as the IOC sees it

    [medipix3]
    prefix = "XF:99ID-ES{Det:MPX}"
    distance_m = 2.27               # ADMerlin has no distance PV

    [sim]                           # mode = "sim": SimBeamlineConfig fields, hutch options
    detectors = ["eiger", "medipix3"]
    sample = "etched"
    photons = 1e6
    motor_egu = "um"
    motor_sign = 1
"""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

ENV_VAR = "BLUESKY_PTYCHONN_BEAMLINE"
SECTIONS = {"mode", "connection_timeout_s", "on_disconnected", "stage", "eiger", "medipix3", "sim"}
#: tables of the same file that the session reads (bluesky_ptychonn.session.config)
SESSION_SECTIONS = {
    "data_dir", "endpoint", "tiled", "stitcher", "live_view", "view", "callbacks", "continual",
    "agent",
}  # fmt: skip
HUTCH_OPTIONS = {"prefix", "motor_egu", "motor_sign", "velocity_m_s", "acceleration_s"}


def load_settings(path: str | Path | None = None) -> dict[str, Any]:
    """Settings from ``path``, else from the file named by ``BLUESKY_PTYCHONN_BEAMLINE``, else
    the simulated defaults."""
    path = path if path is not None else os.environ.get(ENV_VAR)
    if not path:
        return {"mode": "sim"}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"beamline settings {path} not found (from {ENV_VAR}?)")
    with path.open("rb") as handle:
        settings = tomllib.load(handle)
    unknown = set(settings) - SECTIONS - SESSION_SECTIONS
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(SECTIONS)}")
    settings = {key: value for key, value in settings.items() if key in SECTIONS}
    check_settings(settings, str(path))
    return settings


def check_settings(settings: dict[str, Any], where: str) -> None:
    """Refuse unknown top-level settings and modes (``where`` names the file in the message)."""
    unknown = set(settings) - SECTIONS
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}; known: {sorted(SECTIONS)}")
    if settings.get("mode", "sim") not in ("sim", "epics"):
        raise ValueError(f"{where}: mode must be 'sim' or 'epics', got {settings['mode']!r}")


def build_devices(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Devices by name: ``stage`` and the detectors (``eiger``, ``medipix3``); in simulation
    also ``hutch``, the simulated hardware."""
    settings = settings or {"mode": "sim"}
    if settings.get("mode", "sim") == "sim":
        return _simulated(dict(settings.get("sim", {})))
    return _epics(settings)


def _simulated(options: dict[str, Any]) -> dict[str, Any]:
    from ..sim import SimBeamlineConfig
    from .sim import make_sim_devices

    detectors = tuple(options.pop("detectors", ("eiger", "medipix3")))
    hutch = {key: options.pop(key) for key in list(options) if key in HUTCH_OPTIONS}
    known = {f.name for f in fields(SimBeamlineConfig)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"[sim]: unknown settings {sorted(unknown)}; known: {sorted(known | HUTCH_OPTIONS)}"
        )
    if "field_of_view_m" in options:
        options["field_of_view_m"] = tuple(options["field_of_view_m"])
    return make_sim_devices(SimBeamlineConfig(**options), detectors=detectors, **hutch)


def _epics(settings: dict[str, Any]) -> dict[str, Any]:
    from .areadetector import EigerDetector, Medipix3Detector
    from .connection import connect
    from .stage import SampleStage

    if "stage" not in settings:
        raise ValueError("mode 'epics' needs a [stage] section")
    stage_settings = dict(settings["stage"])
    stage = SampleStage(
        stage_settings.pop("prefix"),
        name="stage",
        y_suffix=stage_settings.pop("y", "Y"),
        x_suffix=stage_settings.pop("x", "X"),
        trajectory_suffix=stage_settings.pop("trajectory", "Traj:"),
        egu=stage_settings.pop("egu", "um"),
        sign=int(stage_settings.pop("sign", 1)),
        beam_size_m=float(stage_settings.pop("beam_size_m", 0.0)),
        sample_name=stage_settings.pop("sample_name", ""),
    )
    if stage_settings:
        raise ValueError(f"[stage]: unknown settings {sorted(stage_settings)}")
    devices: dict[str, Any] = {"stage": stage}
    for name, cls in (("eiger", EigerDetector), ("medipix3", Medipix3Detector)):
        if name in settings:
            options = dict(settings[name])
            devices[name] = cls(options.pop("prefix"), name=name, **options)
    timeout = float(settings.get("connection_timeout_s", 5.0))
    try:
        connect(*devices.values(), timeout=timeout)
    except TimeoutError as error:
        if settings.get("on_disconnected", "warn") == "raise":
            raise
        warnings.warn(str(error), stacklevel=2)
    return devices
