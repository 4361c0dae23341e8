"""The simulated beamline: the physics model every simulated twin in the package uses.

Holds samples (``samples``, ``materials``), the probe (``probe``), scan trajectories
(``scans``), the far-field forward model (``forward``), the detector model (``detector``) and
``SimBeamline`` (``beamline``), which ties them together and serves diffraction patterns at any
(y, x) position in metres. All quantities are SI (metres, eV, photons). May import
``geometry``, ``dataset``; knows nothing of bluesky, ophyd or torch.
"""

from .beamline import SimBeamline, SimBeamlineConfig
from .detector import DETECTOR_PRESETS, DetectorModel, detector_preset
from .materials import MATERIALS, Material
from .probe import focused_probe, gaussian_probe, probe_size_m
from .samples import SAMPLE_KINDS, make_sample
from .scans import fermat_spiral, overlap_ratio, raster_scan, sparse_grid

__all__ = [
    "DETECTOR_PRESETS",
    "MATERIALS",
    "SAMPLE_KINDS",
    "DetectorModel",
    "Material",
    "SimBeamline",
    "SimBeamlineConfig",
    "detector_preset",
    "fermat_spiral",
    "focused_probe",
    "gaussian_probe",
    "make_sample",
    "overlap_ratio",
    "probe_size_m",
    "raster_scan",
    "sparse_grid",
]
