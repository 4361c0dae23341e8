"""bluesky-queueserver startup: the beamline session (devices, endpoint device, RunEngine and,
in the worker, the endpoint, stitcher, live view and Tiled writers), from the TOML file named
by BLUESKY_PTYCHONN_BEAMLINE or the simulated defaults (see bluesky_ptychonn.session).

Listing plans and devices (``qserver-list-plans-devices``) builds the devices only; the RE
worker also starts the session's services and owns them until it exits.
"""

from bluesky_queueserver import is_re_worker_active

from bluesky_ptychonn.session import Session

session = Session.from_config(start_services=is_re_worker_active())
RE = session.RE
globals().update(session.devices)  # stage, detectors, endpoint (and the simulated hutch)
