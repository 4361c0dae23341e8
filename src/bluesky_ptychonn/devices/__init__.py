"""Ophyd devices of the beamline and their simulated twins.

Real devices (EPICS): `SampleStage` (two motor records and a ``trajectoryScan`` controller;
the one place that converts motor units to beam positions in metres), `EigerDetector`
(ADEiger) and `Medipix3Detector` (ADMerlin), each with ROI, image and HDF5 plugins;
`PtychoFlyer` runs a hardware-triggered fly scan of a detector over the stage's trajectory.
Simulated twins (`SimStage`, `SimEiger`, `SimMedipix3`) are the same classes on in-process PVs
served by an `ioc.SimHutch` (`softcl` is the in-process control layer). `connect` waits for
a device's PVs and names those that do not answer; `config` builds the devices of a session
(simulated by default, EPICS prefixes by configuration). ophyd v1 only.

May import ``sim``, ``geometry``, ``ioc`` (its hardware model and in-process PVs); never
``plans`` or ``callbacks``.
"""

from ..lazy import lazy_exports

_LAZY = {
    "EigerDetector": ".areadetector",
    "Medipix3Detector": ".areadetector",
    "PtychoDetector": ".areadetector",
    "connect": ".connection",
    "FlyTrajectory": ".flyer",
    "PtychoFlyer": ".flyer",
    "SimEiger": ".sim",
    "SimMedipix3": ".sim",
    "SimStage": ".sim",
    "make_sim_devices": ".sim",
    "SampleStage": ".stage",
    "TrajectoryScan": ".stage",
}

__all__ = [
    "EigerDetector",
    "FlyTrajectory",
    "Medipix3Detector",
    "PtychoDetector",
    "PtychoFlyer",
    "SampleStage",
    "SimEiger",
    "SimMedipix3",
    "SimStage",
    "TrajectoryScan",
    "connect",
    "make_sim_devices",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
