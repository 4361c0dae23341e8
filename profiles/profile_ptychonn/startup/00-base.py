"""Session base: matplotlib backend, the RunEngine and the best-effort callback.

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

from bluesky import RunEngine  # noqa: E402
from bluesky.callbacks.best_effort import BestEffortCallback  # noqa: E402

RE = RunEngine({})
bec = BestEffortCallback()
if HEADLESS:
    bec.disable_plots()
RE.subscribe(bec)
