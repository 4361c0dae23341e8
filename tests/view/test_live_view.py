"""The browser view without a browser: board, decimating renderer, web server, token."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from bluesky_ptychonn.callbacks.live_board import LiveBoard
from bluesky_ptychonn.stream.wire import Message
from bluesky_ptychonn.view.renderer import ViewRenderer
from bluesky_ptychonn.view.server import ViewServer, is_loopback

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = {
    "uid": "run-1",
    "scan_id": 7,
    "plan_name": "spiral_scan",
    "sample_name": "star",
    "num_points": 1000,
    "object_pixel_size_m": 10e-9,
    "scan_extent_m": [1e-6, 1e-6],
    "scan_centre_m": [0.0, 0.0],
    "beam_size_m": 160e-9,
    "detector_distance_m": 2.0,
}


def results(first_id: int, n: int = 4, *, uncertainty: bool = False) -> Message:
    rng = np.random.default_rng(first_id)
    arrays = {
        "phase": rng.uniform(-1, 1, (n, 32, 32)).astype(np.float32),
        "amplitude": np.ones((n, 32, 32), np.float32),
    }
    if uncertainty:
        arrays["phase_uncertainty"] = rng.uniform(0, 0.3, (n, 32, 32)).astype(np.float32)
    return Message(
        kind="results",
        arrays=arrays,
        run_uid="stream-1",
        frame_ids=list(range(first_id, first_id + n)),
        positions_m=rng.uniform(-0.4e-6, 0.4e-6, (n, 2)),
        model_version="v-test",
    )


@pytest.fixture
def board():
    board = LiveBoard()
    board("start", START)
    board("descriptor", {"configuration": {"endpoint": {"data": {"endpoint_stream_id":
                                                                  "stream-1"}}}})  # fmt: skip
    yield board
    board.close()


def test_a_burst_of_results_is_shown_at_most_at_the_renderers_rate(board):
    renderer = ViewRenderer(board, max_rate_hz=5.0, always=True)
    try:
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # ~1,000 batches a second for 1.5 s
            board.add(results(sent))
            board.on_frames(np.ones((4, 64, 64), np.uint16), np.arange(sent, sent + 4))
            sent += 4
            time.sleep(0.001)
        elapsed = time.monotonic() - started
        frame = renderer.wait_for(renderer.frame.version, timeout_s=2.0)
    finally:
        renderer.close()
    batches = sent // 4
    assert batches > 200
    # at most max_rate_hz updates a second (one more for the phase of the ticks)
    assert 3 <= frame.version <= 5.0 * (elapsed + 0.5) + 1
    assert frame.state["decimation"]["policy"] == "latest wins"
    # the shown phase belongs to the newest batch, and the frame shown is that frame
    assert frame.state["phase_frame_id"] == frame.state["frame_id"]
    assert frame.state["phase_frame_id"] >= sent - 4 * 5.0 / 5.0 * 1000
    assert frame.images["phase"].startswith(PNG_MAGIC)
    assert frame.state["stats"]["model_version"] == "v-test"
    assert frame.state["metadata"]["sample_name"] == "star"


def test_results_of_another_stream_are_ignored(board):
    other = results(0)
    other.run_uid = "someone-else"
    board.add(other)
    assert board.state().phase is None
    board.add(results(0))
    assert board.state().phase is not None


def test_the_uncertainty_panel_appears_only_with_an_uncertainty(board):
    renderer = ViewRenderer(board, max_rate_hz=50.0)
    try:
        board.add(results(0))
        assert "uncertainty" not in renderer.render().images
        for first in range(4, 400, 4):
            board.add(results(first, uncertainty=True))
        frame = renderer.render()
    finally:
        renderer.close()
    assert frame.images["uncertainty"].startswith(PNG_MAGIC)
    mean = board.state().uncertainty
    assert np.nanmax(mean) <= 0.3 and np.nanmin(mean) >= 0.0
    assert np.isfinite(mean).mean() > 0.3  # the scanned area is covered
    assert "uncertainty" in frame.state["panels"]


@pytest.fixture
def served(board):
    renderer = ViewRenderer(board, max_rate_hz=10.0)
    server = ViewServer(renderer, token="a-read-only-token-0123")
    yield board, renderer, server
    server.close()
    renderer.close()


def test_the_server_streams_states_and_serves_the_panels(served):
    board, renderer, server = served
    base = f"http://127.0.0.1:{server.port}"
    auth = {"token": server.token}
    assert "?token=" in server.url
    with httpx.Client(timeout=10) as client:
        page = client.get(base + "/", params=auth)
        assert page.status_code == 200 and "EventSource" in page.text
        versions = []
        with client.stream("GET", base + "/events", params=auth) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            board.add(results(0))
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    state = json.loads(line[6:])
                    versions.append(state["version"])
                    if "phase" in state["panels"]:
                        break
        assert versions == sorted(set(versions))  # each update once, in order
        assert renderer.clients == 0 or renderer.clients == 1  # the stream is closing
        png = client.get(base + "/panel/phase.png", params=auth)
        assert png.status_code == 200 and png.content.startswith(PNG_MAGIC)
        assert client.get(base + "/panel/uncertainty.png", params=auth).status_code == 404
        assert client.get(base + "/panel/secrets.png", params=auth).status_code == 404
        assert client.get(base + "/state", params=auth).json()["version"] >= 1
        # read-only: nothing to post to
        assert client.post(base + "/state", params=auth).status_code == 405


def test_every_route_wants_the_token(served):
    _, _, server = served
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(timeout=10) as client:
        for route in ("/", "/state", "/panel/phase.png"):
            assert client.get(base + route).status_code == 401
            assert client.get(base + route, params={"token": "wrong"}).status_code == 401
        bearer = {"Authorization": f"Bearer {server.token}"}
        assert client.get(base + "/state", headers=bearer).status_code == 200


def test_off_loopback_without_a_token_is_refused(board):
    renderer = ViewRenderer(board)
    try:
        with pytest.raises(ValueError, match="without a read-only token"):
            ViewServer(renderer, host="0.0.0.0")
        with pytest.raises(ValueError, match="at least 16"):
            ViewServer(renderer, host="0.0.0.0", token="short")
    finally:
        renderer.close()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("beamline-host")


def test_the_renderer_idles_without_a_browser(board):
    renderer = ViewRenderer(board, max_rate_hz=20.0)
    try:
        board.add(results(0))
        time.sleep(0.3)
        assert renderer.frame.version == 0
        renderer.clients = 1
        deadline = time.monotonic() + 2
        while renderer.frame.version == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert renderer.frame.version >= 1
    finally:
        renderer.close()


def test_the_board_keeps_the_continual_learning_status_and_the_run_state(board):
    board.on_continual({"state": "training", "queued": np.int64(2), "last_scan": "abc"})
    board("stop", {"uid": "s", "run_start": "run-1", "exit_status": "success"})
    state = board.state()
    assert state.continual == {"state": "training", "queued": 2, "last_scan": "abc"}
    assert state.run["state"] == "finished" and state.run["exit_status"] == "success"
    json.dumps(state.continual)


def test_board_threads_stop(board):
    before = threading.active_count()
    board.close()
    assert threading.active_count() <= before


def test_the_view_command_refuses_an_open_address_without_a_token(monkeypatch, capsys):
    from bluesky_ptychonn.cli import main
    from bluesky_ptychonn.stream.sockets import free_tcp_port

    monkeypatch.delenv("BLUESKY_PTYCHONN_VIEW_TOKEN", raising=False)
    results = f"tcp://127.0.0.1:{free_tcp_port()}"
    assert main(["view", "--results", results, "--host", "0.0.0.0"]) == 2
    assert "without a read-only token" in capsys.readouterr().err
