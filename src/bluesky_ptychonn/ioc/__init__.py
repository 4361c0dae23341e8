"""The simulated EPICS hardware: what a beamline's IOCs serve, simulated on one laptop.

`hardware` holds the behaviour (motor records, a ``trajectoryScan`` controller, areaDetector
IOCs for the Eiger and the Medipix3 with cam, ROI, image and HDF5 plugins) of a `SimHutch`,
drawing frames from `sim.SimBeamline` at the motors' positions; `pvs` the PV definitions and
the `PVDatabase` interface it talks through; `softpv` an in-process database (used by the
simulated twins in `devices.sim`); `server` the same hardware served over Channel Access by
caproto (``bluesky-ptychonn ioc``, ``python -m bluesky_ptychonn.ioc``); `hdf5` the HDF5
plugin's file layout; `pva_server` the areaDetector PVA plugin's twin (NTNDArray frames over
pvAccess with p4p, loopback only). May import ``sim``, ``geometry`` (and caproto in `server`,
p4p in `pva_server` only); never
ophyd, bluesky, ``devices`` or ``plans``: the devices are tested against it, not built on it.
"""

from .hardware import METRES_PER_UNIT, SimHutch
from .pvs import PVSpec
from .softpv import SoftPVDatabase

__all__ = ["METRES_PER_UNIT", "PVSpec", "SimHutch", "SoftPVDatabase"]
