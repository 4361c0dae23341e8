"""bluesky-queueserver startup: the plans a queue may run (module-level, type-hinted)."""

from bluesky_ptychonn.plans import (  # noqa: F401
    adaptive_scan,
    fly_scan,
    raster_scan,
    sparse_scan,
    spiral_scan,
)
