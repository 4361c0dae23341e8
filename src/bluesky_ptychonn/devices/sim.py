"""Simulated twins: the real device classes on in-process PVs served by a `SimHutch`.

``SimStage``, ``SimEiger`` and ``SimMedipix3`` are `SampleStage`, `EigerDetector` and
`Medipix3Detector` whose EPICS signals use the in-process control layer (`softcl`); the PVs
are served by an `ioc.SimHutch`, the same simulated hardware the caproto IOC serves. So a
twin has the real device's read/describe/configuration keys and code path, and takes its
frames from the hutch's `SimBeamline` at the hutch's motor positions, with the hardware's
timing (exposure, frame period, motor velocity). Twins sharing one hutch share one sample
and one stage::

    hutch = SimHutch(SimBeamlineConfig(sample="siemens-star"), detectors=("eiger",))
    stage, eiger = SimStage(hutch), SimEiger(hutch)

or `make_sim_devices(...)`, which builds all three.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..ioc.hardware import SimHutch
from ..sim import SimBeamlineConfig
from .areadetector import EigerDetector, Medipix3Detector
from .connection import connect
from .softcl import make_soft_device
from .stage import SampleStage

DEFAULT_FILE_DIRECTORY = str(Path(tempfile.gettempdir()) / "bluesky-ptychonn")


def _sample_name(config: SimBeamlineConfig) -> str:
    return f"simulated {config.sample} ({config.material}, {config.thickness_m * 1e9:g} nm)"


class SimStage(make_soft_device(SampleStage)):
    """`SampleStage` on a simulated hutch; units, sign, beam size and sample from the hutch."""

    def __init__(self, hutch: SimHutch | None = None, *, name: str = "stage", **kwargs: Any):
        self.hutch = hutch if hutch is not None else SimHutch()
        beamline = next(iter(self.hutch.beamlines.values()))
        kwargs.setdefault("egu", self.hutch.motor_egu)
        kwargs.setdefault("sign", self.hutch.motor_sign)
        kwargs.setdefault("beam_size_m", beamline.beam_size_on_sample_m)
        kwargs.setdefault("sample_name", _sample_name(self.hutch.config))
        super().__init__(self.hutch.stage_prefix, name=name, **kwargs)
        connect(self, self.trajectory, timeout=10)


def _detector_prefix(hutch: SimHutch, kind: str) -> str:
    if kind not in hutch.detectors:
        raise ValueError(
            f"the hutch simulates {sorted(hutch.detectors)}, not {kind!r}: build it with "
            f"SimHutch(detectors=(..., {kind!r}))"
        )
    return hutch.detector_prefix(kind)


class SimEiger(make_soft_device(EigerDetector)):
    """`EigerDetector` on a simulated hutch (frames from its Eiger `SimBeamline`)."""

    def __init__(self, hutch: SimHutch, *, name: str = "eiger", **kwargs: Any):
        self.hutch = hutch
        kwargs.setdefault("file_directory", DEFAULT_FILE_DIRECTORY)
        super().__init__(_detector_prefix(hutch, "eiger"), name=name, **kwargs)
        connect(self, timeout=10)

    @property
    def beamline(self):
        return self.hutch.beamlines["eiger"]


class SimMedipix3(make_soft_device(Medipix3Detector)):
    """`Medipix3Detector` on a simulated hutch; distance and pixel size from its beamline."""

    def __init__(self, hutch: SimHutch, *, name: str = "medipix3", **kwargs: Any):
        self.hutch = hutch
        prefix = _detector_prefix(hutch, "medipix3")
        beamline = hutch.beamlines["medipix3"]
        kwargs.setdefault("distance_m", beamline.distance_m)
        kwargs.setdefault("pixel_size_m", beamline.detector.pixel_size_m)
        kwargs.setdefault("file_directory", DEFAULT_FILE_DIRECTORY)
        super().__init__(prefix, name=name, **kwargs)
        connect(self, timeout=10)

    @property
    def beamline(self):
        return self.hutch.beamlines["medipix3"]


def make_sim_devices(
    config: SimBeamlineConfig | None = None,
    *,
    detectors: tuple[str, ...] = ("eiger",),
    **hutch_options: Any,
) -> dict[str, Any]:
    """A simulated hutch and its twins: ``{"hutch", "stage", "eiger"?, "medipix3"?}``.

    ``hutch_options`` go to `SimHutch` (prefix, motor_egu, motor_sign, velocity_m_s, ...).
    """
    hutch = SimHutch(config, detectors=detectors, **hutch_options)
    devices: dict[str, Any] = {"hutch": hutch, "stage": SimStage(hutch)}
    if "eiger" in hutch.detectors:
        devices["eiger"] = SimEiger(hutch)
    if "medipix3" in hutch.detectors:
        devices["medipix3"] = SimMedipix3(hutch)
    return devices
