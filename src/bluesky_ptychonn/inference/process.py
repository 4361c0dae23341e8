"""`EndpointProcess`: an inference endpoint started as a local child process.

The embedded default of the live pipeline: ``bluesky-ptychonn serve`` on free loopback ports,
started by the code that needs it (the demo, the tests, a beamline session without a remote
endpoint) and stopped with it. A facility endpoint on another host is reached by its addresses
instead, with the same client code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..stream.sockets import LOOPBACK, free_tcp_port, tcp_address


class EndpointProcess:
    """Run ``bluesky-ptychonn serve --model MODEL`` as a child process.

    Args:
        model: model directory, sidecar, weights or ONNX file.
        ports: (frames, results, control) ports; default three free loopback ports.
        backend, precision, batch_size, buffer_frames: passed to ``serve``.
        threads: CPU threads the endpoint's engine may use (None: the engine's default).
        startup_timeout_s: how long to wait for the endpoint's "ready" line.
        batch_timeout_s: longest wait for a batch to fill (0: infer what has arrived).
        spin: let ONNX Runtime's threads spin between calls (`EndpointConfig.spin`).
        workers, micro_batch: ONNX Runtime sessions splitting each batch and the pieces they
            run (`EndpointConfig`).
        lanes: independent infer threads with an engine each (`EndpointConfig.lanes`).
        keys: CURVE key folder (`serve --keys`); the endpoint then admits only its clients.
        host: interface to bind (loopback by default; any other needs ``keys``); the
            addresses it reports are reached on loopback.
        name: the endpoint's name, which tags its results (`EndpointConfig.name`).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        ports: list[int] | None = None,
        backend: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        buffer_frames: int = 10_000,
        startup_timeout_s: float = 120.0,
        precision: str | None = None,
        batch_timeout_s: float = 0.0,
        spin: bool = False,
        workers: int = 1,
        micro_batch: int | None = None,
        lanes: int = 1,
        keys: str | os.PathLike[str] | None = None,
        host: str = LOOPBACK,
        name: str | None = None,
    ):
        self.model = Path(model)
        self.ports = list(ports) if ports else [free_tcp_port() for _ in range(3)]
        self.backend = backend
        self.batch_size = batch_size
        self.threads = threads
        self.buffer_frames = buffer_frames
        self.startup_timeout_s = startup_timeout_s
        self.precision = precision
        self.batch_timeout_s = batch_timeout_s
        self.spin = spin
        self.workers = workers
        self.micro_batch = micro_batch
        self.lanes = lanes
        self.keys = None if keys is None else Path(keys)
        self.host = host
        self.name = name
        self.process: subprocess.Popen | None = None
        self.ready: dict = {}

    @property
    def addresses(self) -> tuple[str, str, str]:
        """(frames, results, control) addresses on loopback."""
        frames, results, control = (tcp_address(port, LOOPBACK) for port in self.ports)
        return frames, results, control

    def start(self) -> EndpointProcess:
        command = [
            sys.executable, "-m", "bluesky_ptychonn.cli", "serve", "--model", str(self.model),
            "--backend", self.backend, "--batch-size", str(self.batch_size),
            "--frames-port", str(self.ports[0]), "--results-port", str(self.ports[1]),
            "--control-port", str(self.ports[2]), "--buffer-frames", str(self.buffer_frames),
            "--batch-timeout-ms", str(self.batch_timeout_s * 1e3),
        ]  # fmt: skip
        if self.precision:
            command += ["--precision", self.precision]
        if self.threads:
            command += ["--threads", str(self.threads)]
        if self.spin:
            command.append("--spin")
        if self.workers != 1:
            command += ["--workers", str(self.workers)]
        if self.micro_batch:
            command += ["--micro-batch", str(self.micro_batch)]
        if self.lanes != 1:
            command += ["--lanes", str(self.lanes)]
        if self.keys is not None:
            command += ["--keys", str(self.keys)]
        if self.host != LOOPBACK:
            command += ["--host", self.host]
        if self.name:
            command += ["--name", self.name]
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)  # the PyTorch backend's threads
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        line = self._readline(self.startup_timeout_s)
        if not line:
            code = self.process.wait(timeout=10)
            raise RuntimeError(
                f"the inference endpoint for {self.model} exited with code {code} before it was "
                "ready (see its stderr above)"
            )
        self.ready = json.loads(line)
        return self

    def _readline(self, timeout_s: float) -> str:
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            self.process.kill()
            raise TimeoutError(
                f"the inference endpoint for {self.model} was not ready within {timeout_s} s"
            )
        return self.process.stdout.readline()

    def kill(self) -> None:
        """SIGKILL (to test what survives an endpoint that dies)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> EndpointProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
