"""`ViewServer`: the browser view served by uvicorn on a thread of the calling process.

Binds 127.0.0.1 on a free port by default. Any other address needs a read-only token (it is
refused without one: the page shows a beamline's live data to whoever reaches the port); the
token comes from the caller (e.g. an environment variable named in the session's
configuration). ``url`` is the address to open (with ``?token=...`` when there is one).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

__all__ = ["ViewServer", "is_loopback"]

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class ViewServer:
    """Serve a `ViewRenderer` over HTTP (see the module docstring).

    Args:
        renderer: what to show.
        host: the address to bind (default loopback).
        port: the TCP port (0: a free one).
        token: the read-only token; required unless ``host`` is loopback.
        title: the page's title.
        startup_timeout_s: longest wait for the server to listen, s.

    Raises:
        ValueError: a non-loopback ``host`` without a token, or a token shorter than 16
            characters.
    """

    def __init__(
        self,
        renderer: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        title: str = "",
        startup_timeout_s: float = 20.0,
    ):
        import uvicorn

        from .app import make_app

        if not is_loopback(host) and not token:
            raise ValueError(
                f"the live view refuses to listen on {host!r} (not loopback) without a "
                "read-only token: set one (e.g. [view] token_env) or bind 127.0.0.1"
            )
        if token is not None and len(token) < 16:
            raise ValueError("the live view's token must be at least 16 characters long")
        self.renderer = renderer
        self.token = token
        self.app = make_app(renderer, token=token, title=title)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = host, self._socket.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off",
            ws="none",
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="live-view-http",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the live view did not start on {host}:{self.port}")
            time.sleep(0.02)
        log.info("live view at %s", self.url)

    @property
    def url(self) -> str:
        """The page's address (with the token when there is one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.port}/"
        return f"{base}?token={self.token}" if self.token else base

    def close(self) -> None:
        """Stop serving (open event streams end) and close the socket; idempotent."""
        self.app.state.closing.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()
