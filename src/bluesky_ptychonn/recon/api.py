"""The front door: `reconstruct(dataset, options) -> Reconstruction`, and `make_task` to step."""

from __future__ import annotations

import numpy as np

from ..dataset import ComplexImage, PtychoDataset, Reconstruction
from .ap import APTask
from .epie import EPIETask
from .options import APOptions, EPIEOptions
from .task import ReconstructionTask


def make_task(
    dataset: PtychoDataset,
    options: EPIEOptions | APOptions | None = None,
    *,
    initial_object: ComplexImage | None = None,
    initial_probe: np.ndarray | None = None,
) -> ReconstructionTask:
    """A steppable reconstruction task (``.step()``, ``.run(n)``, ``.result()``).

    Args:
        dataset: centred patterns (counts), positions (y, x) m, geometry; a probe if known.
        options: `EPIEOptions` (default) or `APOptions`.
        initial_object: start from this object, e.g. a stitched CNN mosaic (the seeds'
            "CNN + 10 ePIE iterations" refinement); it must share the data's pixel size.
        initial_probe: (H, W) complex probe that overrides the data set's.

    Raises:
        ValueError: bad input (NaN in the data, probe shape, positions outside the object, bad
            options), before any iteration runs.
    """
    options = EPIEOptions() if options is None else options
    if isinstance(options, EPIEOptions):
        cls = EPIETask
    elif isinstance(options, APOptions):
        cls = APTask
    else:
        raise TypeError(f"options must be EPIEOptions or APOptions, got {type(options).__name__}")
    return cls(dataset, options, initial_object=initial_object, initial_probe=initial_probe)


def reconstruct(
    dataset: PtychoDataset,
    options: EPIEOptions | APOptions | None = None,
    *,
    initial_object: ComplexImage | None = None,
    initial_probe: np.ndarray | None = None,
) -> Reconstruction:
    """Run a full reconstruction and return it (see `make_task` for the arguments)."""
    task = make_task(dataset, options, initial_object=initial_object, initial_probe=initial_probe)
    return task.run().result()
