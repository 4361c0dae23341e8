"""The composition root of a beamline session: one configuration builds the whole graph.

`Session` builds the devices (simulated hutch by default, EPICS prefixes by configuration), the
inference endpoint (a local child process or a remote address) and its device, the live
stitcher, the live view, the Tiled writers (an embedded server or a URI and key) and, when
enabled, the continual-learning dispatcher, from one `SessionConfig` (a TOML file: see
`config` and docs/session.md); it owns what it starts and closes it. The IPython profile, the
queue server's startup, the demo, the ``callbacks`` command and the tests go through it.

May import every lower layer (devices, plans, callbacks, retrain, storage, inference, ...);
only ``commands``, ``cli`` and ``demo`` import it.
"""

from .config import SessionConfig, load_session_config
from .core import Session

__all__ = ["Session", "SessionConfig", "load_session_config"]
