"""The session's devices (stage, detectors, endpoint; hutch in simulation), its stitcher and
its Tiled clients (catalog, tiled_client) as names (see bluesky_ptychonn.session)."""

globals().update(session.namespace())  # noqa: F821 (from 00-base.py)
devices = session.devices  # noqa: F821
