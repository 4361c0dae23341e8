"""The simulated IOC as a real subprocess, on loopback and on ports no other session uses.

Channel Access is configured here, at import, before any client context exists in this test
process: loopback only, and a server port picked free for this session.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from bluesky_ptychonn.ioc.server import READY_LINE, loopback_ca_environment

PREFIX = "PTYTEST:"
START_TIMEOUT_S = 90


CA_ENVIRONMENT = loopback_ca_environment()
os.environ.update(CA_ENVIRONMENT)


@pytest.fixture(scope="session")
def ioc():
    """Start ``python -m bluesky_ptychonn.ioc``; yields its description (prefixes, beamline)."""
    command = [
        sys.executable, "-m", "bluesky_ptychonn.ioc", "--prefix", PREFIX,
        "--field-of-view", "3e-6", "--detectors", "eiger", "medipix3",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **CA_ENVIRONMENT, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if READY_LINE in line:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the simulated IOC did not start:\n{''.join(output)}", pytrace=False)
    text = "".join(output)
    description = json.loads(text[text.index("{") : text.rindex("}") + 1])
    yield description
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.returncode == 0, "".join(output[-20:])
