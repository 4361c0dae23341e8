"""Iterative reconstruction: batched ePIE and alternating projections with phase synchronisation.

Holds the option dataclasses (`options`), input checks and grid layout (`prepare`), torch
building blocks (`ops`), the steppable engines (`task`, `epie`, `ap`), the front door
(`api.reconstruct`, `api.make_task`), phase synchronisation of overlapping frames
(`phase_sync`, pure numpy/scipy, reused by the live stitcher), mixed-state probe modes
(`modes`), quality checks against a ground truth (`quality`), the ground-truth-free assessment
that decides whether a reconstruction may become labels (`assessment`), the summary figure
(`figure`), a stitched network image resampled as the starting object (`seed`) and ePIE started
from it (`refine`). A diverged run raises
`ReconstructionDiverged` instead of returning. The same code runs on CPU and CUDA by the
``device`` option. May import `geometry`, `dataset`, `metrics` and `sim.forward`; knows nothing
of bluesky, devices, plans or callbacks.
"""

from ..lazy import lazy_exports

_LAZY = {
    "APTask": ".ap",
    "make_task": ".api",
    "reconstruct": ".api",
    "EPIETask": ".epie",
    "APOptions": ".options",
    "DivergenceOptions": ".options",
    "EPIEOptions": ".options",
    "ObjectOptions": ".options",
    "PositionOptions": ".options",
    "ProbeOptions": ".options",
    "SyncOptions": ".options",
    "options_from_dict": ".options",
    "options_to_dict": ".options",
    "SyncResult": ".phase_sync",
    "synchronise_exit_waves": ".phase_sync",
    "synchronise_frames": ".phase_sync",
    "ReconstructionDiverged": ".task",
    "ReconstructionTask": ".task",
}

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
