"""Iterative reconstruction: batched ePIE and alternating projections with phase synchronisation.

Holds the option dataclasses (`options`), input checks and grid layout (`prepare`), torch
building blocks (`ops`), the steppable engines (`task`, `epie`, `ap`), the front door
(`api.reconstruct`, `api.make_task`), phase synchronisation of overlapping frames
(`phase_sync`, pure numpy/scipy, reused by the live stitcher), mixed-state probe modes
(`modes`), quality checks against a ground truth (`quality`), the ground-truth-free
assessment that decides whether a reconstruction may
become labels (`assessment`) and the summary figure (`figure`). A diverged run raises
`ReconstructionDiverged` instead of returning. The same code runs on CPU and CUDA by the
``device`` option. May import `geometry`, `dataset`, `metrics` and `sim.forward`; knows nothing
of bluesky, devices, plans or callbacks.
"""

from .ap import APTask
from .api import make_task, reconstruct
from .epie import EPIETask
from .options import (
    APOptions,
    DivergenceOptions,
    EPIEOptions,
    ObjectOptions,
    PositionOptions,
    ProbeOptions,
    SyncOptions,
    options_from_dict,
    options_to_dict,
)
from .phase_sync import SyncResult, synchronise_exit_waves, synchronise_frames
from .task import ReconstructionDiverged, ReconstructionTask

__all__ = [
    "APOptions",
    "APTask",
    "DivergenceOptions",
    "EPIEOptions",
    "EPIETask",
    "ObjectOptions",
    "PositionOptions",
    "ProbeOptions",
    "ReconstructionDiverged",
    "ReconstructionTask",
    "SyncOptions",
    "SyncResult",
    "make_task",
    "options_from_dict",
    "options_to_dict",
    "reconstruct",
    "synchronise_exit_waves",
    "synchronise_frames",
]
