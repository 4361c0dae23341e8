"""The browser view's web application (FastAPI): one page, a Server-Sent Events stream, PNGs.

Routes, all read-only (GET):

* ``/``: the page (`view.page`): panels, numbers, the run's metadata, continual learning;
* ``/events``: Server-Sent Events, one JSON state per update of the renderer (at most its
  ``max_rate_hz``); the page swaps a panel's image only when its version changed;
* ``/state``: the newest JSON state (for scripts and tests);
* ``/panel/{name}.png``: a panel's newest image (``frame``, ``phase``, ``mosaic``,
  ``composite``, ``uncertainty``); 404 while it has nothing to show.

With a token (required by `ViewServer` off loopback) every route wants it, as ``?token=...``
(what the page passes on, since ``EventSource`` cannot set headers) or an
``Authorization: Bearer ...`` header; a wrong or missing one gets 401. Nothing is unpickled
and nothing can be changed through the view.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from .page import page_html
from .renderer import PANELS, ViewRenderer

__all__ = ["make_app"]

NO_STORE = {"Cache-Control": "no-store"}


def make_app(renderer: ViewRenderer, *, token: str | None = None, title: str = "") -> FastAPI:
    """The view's application over ``renderer`` (see the module docstring)."""
    app = FastAPI(title="bluesky-ptychonn live view", docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    closing = threading.Event()  # set by the server when it stops: streams end
    app.state.closing = closing

    def check(request: Request) -> None:
        if token is None:
            return
        given = request.query_params.get("token", "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="a valid read-only token is required")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        check(request)
        return HTMLResponse(page_html(title=title, max_rate_hz=renderer.max_rate_hz),
                            headers=NO_STORE)  # fmt: skip

    @app.get("/state")
    def state(request: Request) -> JSONResponse:
        check(request)
        return JSONResponse(renderer.frame.state, headers=NO_STORE)

    @app.get("/panel/{name}.png")
    def panel(name: str, request: Request) -> Response:
        check(request)
        if name not in PANELS:
            raise HTTPException(status_code=404, detail=f"no panel {name!r}; panels: {PANELS}")
        image = renderer.frame.images.get(name)
        if image is None:
            raise HTTPException(status_code=404, detail=f"panel {name!r} has nothing yet")
        return Response(image, media_type="image/png", headers=NO_STORE)

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        check(request)

        async def stream() -> Any:
            renderer.clients += 1
            try:
                sent = -1
                poll_s = 0.5 / renderer.max_rate_hz
                while not closing.is_set() and not await request.is_disconnected():
                    frame = renderer.frame
                    if frame.version != sent and frame.version > 0:  # 0: nothing yet
                        sent = frame.version
                        yield f"data: {json.dumps(frame.state, allow_nan=False)}\n\n"
                    await asyncio.sleep(poll_s)
            finally:
                renderer.clients -= 1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})  # fmt: skip

    return app
