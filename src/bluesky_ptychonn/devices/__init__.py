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

from .areadetector import EigerDetector, Medipix3Detector, PtychoDetector
from .connection import connect
from .flyer import FlyTrajectory, PtychoFlyer
from .sim import SimEiger, SimMedipix3, SimStage, make_sim_devices
from .stage import SampleStage, TrajectoryScan

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
