"""The live mosaic: phase/amplitude patches placed at their positions in metres.

``weights`` makes the probe-shaped weight of a patch; ``mosaic`` accumulates weighted complex
patches into a canvas (vectorised per batch, with each new patch's phase offset aligned to what
is already there) and hands out snapshots. Pure numpy: may import ``geometry``, ``fourier``
and ``recon.phase_sync`` for global synchronisation, nothing of bluesky or ZMQ.
"""

from .mosaic import Mosaic, MosaicSnapshot
from .weights import gaussian_weight, probe_weight

__all__ = ["Mosaic", "MosaicSnapshot", "gaussian_weight", "probe_weight"]
