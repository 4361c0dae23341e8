"""Session base: matplotlib backend, the beamline session, its RunEngine and the best-effort
callback.

The session (`bluesky_ptychonn.session.Session`) is built from the TOML file named by
BLUESKY_PTYCHONN_BEAMLINE, else from the defaults: the simulated beamline, an inference
endpoint started here (the cached demo network, trained on first use), live stitching, the live
picture and a local Tiled server. It owns what it starts and stops it when IPython exits.
Headless sessions (no DISPLAY, no MPLBACKEND) use matplotlib's Agg backend and no live plots.
"""

import os
import sys

import matplotlib

HEADLESS = (
    not os.environ.get("DISPLAY")
    and not os.environ.get("MPLBACKEND")
    and sys.platform.startswith("linux")
)
if HEADLESS:
    matplotlib.use("Agg")

from bluesky.callbacks.best_effort import BestEffortCallback  # noqa: E402

from bluesky_ptychonn.session import Session  # noqa: E402

session = Session.from_config()
RE = session.RE
bec = BestEffortCallback()
if HEADLESS:
    bec.disable_plots()
RE.subscribe(bec)
