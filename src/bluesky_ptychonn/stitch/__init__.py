"""The live mosaic: phase/amplitude patches placed at their positions in metres.

``weights`` makes the probe-shaped weight of a patch; ``mosaic`` accumulates weighted complex
patches into a canvas (each new patch's phase offset greedily aligned to what is already
there) and hands out snapshots; ``accumulate`` is its compiled inner loop (numba: sines,
cosines, weights, alignment and sums in one pass per patch); ``synchronise`` keeps the stitched
patches and synchronises their phases globally. numpy, scipy and numba: may import
``geometry``, ``fourier`` and ``recon.phase_sync``, nothing of bluesky or ZMQ."""

from .mosaic import Mosaic, MosaicSnapshot
from .weights import default_weight, gaussian_weight, probe_patch_weight, probe_weight

__all__ = [
    "Mosaic",
    "MosaicSnapshot",
    "default_weight",
    "gaussian_weight",
    "probe_patch_weight",
    "probe_weight",
]
