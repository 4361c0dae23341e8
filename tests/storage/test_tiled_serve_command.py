"""`bluesky-ptychonn tiled serve`: a real server on a data folder, a key file, a clean stop."""

from __future__ import annotations

import re
import signal
import stat
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from bluesky_ptychonn.cli import build_parser
from bluesky_ptychonn.storage.tiled_catalog import TiledAuthError, connect
from bluesky_ptychonn.storage.tiled_server import TiledServerError, TiledServerProcess


def test_a_server_that_cannot_start_says_why_without_showing_its_key(tmp_path):
    class Broken(TiledServerProcess):
        def _command(self, config):  # a server that prints its key and dies
            return [sys.executable, "-c", f"print('key {self.api_key}: no luck'); exit(3)"]

    server = Broken(tmp_path, port=8999)
    with pytest.raises(TiledServerError, match="127.0.0.1:8999") as failure:
        server.start()
    assert "exited with status 3" in str(failure.value)
    assert "key <api key>: no luck" in str(failure.value)  # the log's tail, key blanked
    assert server.api_key not in str(failure.value)
    assert not server.running


def test_serve_is_a_registered_command():
    args = build_parser().parse_args(["tiled", "serve", "--data", "d", "--port", "0"])
    assert args.tiled_command == "serve" and args.port == 0 and args.host == "127.0.0.1"


def test_serve_generates_a_private_key_serves_writes_and_stops_on_ctrl_c(tmp_path):
    """With --public, anyone may read, but writing needs the key."""
    data = tmp_path / "tiled"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bluesky_ptychonn.cli",
            "tiled",
            "serve",
            "--data",
            str(data),
            "--port",
            "0",
            "--public",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "serve exited early:\n" + "".join(lines)
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        output = "".join(lines)
        uri = re.search(r"Tiled is serving (http://127\.0\.0\.1:\d+)", output).group(1)
        key_file = data / "api_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key not in output  # the key is never printed
        catalog = connect(uri, api_key=key)
        catalog.root.write_array(np.arange(3), key="hello")
        anonymous = connect(uri, api_key=None)
        np.testing.assert_array_equal(anonymous.root["hello"].read(), np.arange(3))
        with pytest.raises(TiledAuthError, match="needs the API key"):
            anonymous.container("models")  # creating a container is a write
        with pytest.raises(httpx.HTTPStatusError) as refused:
            anonymous.root.write_array(np.arange(3), key="anonymous")
        assert refused.value.response.status_code == 401
        assert "anonymous" not in catalog.root
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        try:
            httpx.get(f"{uri}/healthz", timeout=2)
            raise AssertionError("the server still answers after Ctrl-C")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: serve stops its Tiled server before exiting
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
