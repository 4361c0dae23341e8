"""Bluesky plans for ptychography: step scans (spiral, raster, sparse) and a fly scan.

Each plan is a thin generator around a pure trajectory function of `sim.scans`; `common`
checks the arguments and devices before the first message (bad arguments move nothing) and
builds the start document (its keys are listed in `common`'s docstring). Positions are (y, x)
beam positions in metres. May import ``devices``, ``sim``, ``geometry``; never ``callbacks``.
"""

from .adaptive import adaptive_problem, adaptive_scan
from .fly import fly_scan
from .scans import raster_scan, sparse_scan, spiral_scan, step_scan

__all__ = [
    "adaptive_problem",
    "adaptive_scan",
    "fly_scan",
    "raster_scan",
    "sparse_scan",
    "spiral_scan",
    "step_scan",
]
