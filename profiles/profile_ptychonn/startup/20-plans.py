"""The ptychography plans (and bluesky's, as bp / bps, from 00-base.py)."""

from bluesky_ptychonn.plans import fly_scan, raster_scan, sparse_scan, spiral_scan  # noqa: F401
