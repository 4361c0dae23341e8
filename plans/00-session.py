"""bluesky-queueserver startup: the beamline session (devices, endpoint device, RunEngine and,
in the RE worker, the endpoint, stitcher, live view and Tiled writers), from the TOML file
named by BLUESKY_PTYCHONN_BEAMLINE or the simulated defaults (see bluesky_ptychonn.session).

Listing plans and devices (``qserver-list-plans-devices``, which also runs this file "in the
worker") builds the devices only; the RE worker starts the session's services too and owns
them until it exits. BLUESKY_PTYCHONN_SERVICES=0 or 1 overrides that choice.
"""

import os
import sys

from bluesky_queueserver import is_re_worker_active

from bluesky_ptychonn.session import Session

_listing = any("qserver-list-plans-devices" in arg for arg in sys.argv)
_services = os.environ.get("BLUESKY_PTYCHONN_SERVICES")
session = Session.from_config(
    start_services=(
        _services not in ("0", "")
        if _services is not None
        else (is_re_worker_active() and not _listing)
    )
)
RE = session.RE
globals().update(session.devices)  # stage, detectors, endpoint (and the simulated hutch)
