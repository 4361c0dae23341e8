"""`LiveView`: a board, its renderer and its web server as one document callback.

Subscribe it to a RunEngine (or a ``RemoteDispatcher``): documents go to the `LiveBoard`;
``frame_source`` (a detector's frame stream, ``add_frame_listener``) and ``continual`` (a
continual-learning dispatcher or loop, ``add_listener``) are listened to when given; the page
is at ``url``. `close` stops the server, the renderer and the board's listeners.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..callbacks.live_board import LiveBoard
from .renderer import ViewRenderer
from .server import ViewServer

__all__ = ["LiveView"]


class LiveView:
    """The browser view of a live pipeline (see the module docstring).

    Args:
        source: the live mosaic (a `LiveStitcher`), or None.
        results_addresses: the endpoint's result sockets (the phase patches).
        control_address: the endpoint's control socket (its status), or None.
        frame_source: a detector frame stream to show frames from, or None.
        continual: a continual-learning dispatcher or loop, or None.
        host, port, token, title: the web server (`ViewServer`): loopback and a free port by
            default; a token is required elsewhere.
        max_rate_hz: the most updates a second.
        status_period_s: seconds between polls of the endpoint's status.
    """

    def __init__(
        self,
        source: Any = None,
        *,
        results_addresses: str | Iterable[str] | None = None,
        control_address: str | None = None,
        frame_source: Any = None,
        continual: Any = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        title: str = "",
        max_rate_hz: float = 5.0,
        status_period_s: float = 1.0,
    ):
        self.board = LiveBoard(
            source,
            results_addresses=results_addresses,
            control_address=control_address,
            status_period_s=status_period_s,
        )
        self.renderer = ViewRenderer(self.board, max_rate_hz=max_rate_hz)
        try:
            self.server = ViewServer(self.renderer, host=host, port=port, token=token,
                                     title=title)  # fmt: skip
        except BaseException:
            self.renderer.close()
            self.board.close()
            raise
        self.frame_source = frame_source
        if frame_source is not None:
            frame_source.add_frame_listener(self.board.on_frames)
        if continual is not None:
            self.watch_continual(continual)

    def watch_continual(self, continual: Any) -> None:
        """Show a continual-learning dispatcher's or loop's status (``add_listener``)."""
        continual.add_listener(self.board.on_continual)

    @property
    def url(self) -> str:
        return self.server.url

    def __call__(self, name: str, doc: dict[str, Any]) -> Any:
        return self.board(name, doc)

    def close(self) -> None:
        if self.frame_source is not None:
            self.frame_source.remove_frame_listener(self.board.on_frames)
            self.frame_source = None
        self.server.close()
        self.renderer.close()
        self.board.close()
