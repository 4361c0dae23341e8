"""The live view in a browser: the board of `callbacks.live_board` as a web page.

``images`` turns arrays into PNGs (colour maps, bounded size); ``renderer`` asks the board for
its state at a bounded rate (5 Hz by default, the newest wins) and encodes the panels that
changed; ``app`` is the FastAPI application (the page, a Server-Sent Events stream, the PNGs,
a read-only token); ``page`` holds the HTML; ``server`` runs it with uvicorn on a thread,
loopback by default, refusing other addresses without a token; ``live`` wires a board, a
renderer and a server together (`LiveView`), as the session and ``bluesky-ptychonn view`` do.

Same layer as ``callbacks`` (RunEngine side, no torch): may import ``callbacks``, ``stitch``,
``stream`` and the lower layers; only ``session``, ``commands`` and ``cli`` import it.
"""
