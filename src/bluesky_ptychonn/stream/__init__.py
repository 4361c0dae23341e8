"""The wire: how frames and results travel between processes.

``wire`` holds the versioned message format (a JSON header plus raw array buffers, never
pickle) with a decoder that rejects malformed input with a reason; ``sockets`` holds the ZMQ
patterns built on it (PUSH/PULL for frames, PUB/SUB for results) with loopback binding by
default; ``streamer`` the detector-side sender that keeps what is not acknowledged; ``pva`` an
optional pvAccess ingest (areaDetector's PVA plugin, NTNDArray, via p4p, imported only when a
source is made); ``security`` the CURVE keys of the endpoint's sockets (key files, the key
folder, client and server setup, ``$BLUESKY_PTYCHONN_KEYS``). May import numpy, pyzmq (and
p4p in ``pva``); knows nothing of bluesky, torch or the simulator.
"""

from .wire import WIRE_VERSION, Message, WireError, decode, encode

__all__ = ["WIRE_VERSION", "Message", "WireError", "decode", "encode"]
