"""The session's callbacks in a child process: a 0MQ proxy, ``bluesky-ptychonn callbacks`` and
a ``Publisher`` on the RunEngine (``[callbacks] process = true``; see docs/session.md)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..ports import free_port
from .config import SessionConfig

__all__ = ["RemoteCallbacks"]

READY = "bluesky-ptychonn callbacks: ready"


class RemoteCallbacks:
    """Start (and own) the proxy and the callbacks process; `publisher` feeds them.

    Args:
        config: the session's configuration (its ``source`` file goes to the child).
        results_address: the endpoint's results (None: no stitching).
        control_address: the endpoint's control socket (the browser view polls its status).
        tiled_uri, api_key: where the child writes (None: no Tiled).
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        results_address: str | None,
        tiled_uri: str | None,
        api_key: str | None,
        control_address: str | None = None,
    ):
        self.config = config
        self.results_address = results_address
        self.control_address = control_address
        self.tiled_uri = tiled_uri
        self.api_key = api_key
        self.proxy: subprocess.Popen | None = None
        self.process: subprocess.Popen | None = None
        self.publisher: Any = None
        settings = config.callbacks
        if settings.proxy_in and settings.proxy_out:
            self.proxy_in, self.proxy_out = settings.proxy_in, settings.proxy_out
        else:
            self.proxy_in = f"127.0.0.1:{free_port()}"
            self.proxy_out = f"127.0.0.1:{free_port()}"

    def start(self) -> RemoteCallbacks:
        from bluesky.callbacks.zmq import Publisher

        from ..storage.spool import document_to_json

        settings = self.config.callbacks
        if not (settings.proxy_in and settings.proxy_out):
            proxy = shutil.which("bluesky-0MQ-proxy", path=str(Path(sys.executable).parent))
            proxy = proxy or shutil.which("bluesky-0MQ-proxy")
            if proxy is None:
                raise FileNotFoundError("bluesky-0MQ-proxy (from bluesky) is not installed")
            self.proxy = subprocess.Popen(
                [proxy, "--in-address", f"tcp://{self.proxy_in}",
                 "--out-address", f"tcp://{self.proxy_out}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        command = [sys.executable, "-m", "bluesky_ptychonn.cli", "callbacks",
                   "--zmq", self.proxy_out, "--data-dir", str(self.config.data_dir)]  # fmt: skip
        if self.results_address:
            command += ["--results", self.results_address]
        if self.control_address:
            command += ["--control", self.control_address]
        if self.tiled_uri:
            command += ["--tiled", self.tiled_uri]
        if self.config.source is not None:
            command += ["--config", str(self.config.source)]
        env = dict(os.environ)
        env.pop("BLUESKY_PTYCHONN_BEAMLINE", None)  # the child reads --config or the defaults
        if self.api_key:
            env[self.config.tiled.api_key_env] = self.api_key
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env,
            start_new_session=True,  # Ctrl-C in the session does not kill it mid-delivery
        )  # fmt: skip
        self._wait_ready(settings.startup_timeout_s)
        self.publisher = Publisher(self.proxy_in, serializer=document_to_json)
        time.sleep(0.5)  # PUB/SUB: the publisher's connection is up before the first document
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                lines.put(line)

        threading.Thread(target=read, name="callbacks-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        seen = ""
        while READY not in seen:
            try:
                seen += lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"the callbacks process did not say it was ready within {timeout_s:g} s "
                    f"(exit status {self.process.poll()}): {seen}"
                ) from None

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop publishing, let the child hand its last runs on (SIGTERM), stop the proxy."""
        if self.publisher is not None:
            self.publisher._context.destroy(linger=1000)  # unsent documents: 1 s, then go
            self.publisher = None
        for process, wait_s in ((self.process, timeout_s + 10), (self.proxy, 10)):
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
