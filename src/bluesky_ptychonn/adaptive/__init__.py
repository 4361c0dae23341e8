"""Adaptive scanning: an agent that chooses where to measure next from the live phase.

`agent.MosaicAgent` implements bluesky-adaptive 1.0's `Optimizer` protocol (``suggest``,
``ingest``) and its optional ones (``should_stop``, ``checkpoint``, ``register_failures``,
``register_suggestions``) structurally, without importing bluesky-adaptive: it scores
candidate beam positions on a coarse map of the region by what is not yet measured, by the
structure (phase gradients) measured nearby and by the network's uncertainty when results
carry one, minus a cost for stage travel, and records for every point why it was chosen.
`options` holds its settings, `maps` the region's maps, `scoring` the pure score functions,
`strategies` the non-adaptive baselines the benchmark compares it with. Pure numpy and
scipy: a layer-1 package like ``stitch`` (imports ``geometry``, ``metrics`` only; no bluesky).
"""

from .agent import MosaicAgent
from .options import AgentOptions, ScanMode

__all__ = ["AgentOptions", "MosaicAgent", "ScanMode"]
