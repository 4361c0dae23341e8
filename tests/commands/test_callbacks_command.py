"""`bluesky-ptychonn callbacks`: the session's callbacks in another process behind bluesky's
0MQ Publisher and proxy stitch every frame and write the run and its mosaic to Tiled."""

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

import pytest
from bluesky import RunEngine
from bluesky.callbacks.zmq import Publisher

from bluesky_ptychonn.devices import make_sim_devices
from bluesky_ptychonn.devices.endpoint import InferenceEndpoint
from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.sim import SimBeamlineConfig
from bluesky_ptychonn.storage.spool import document_to_json
from bluesky_ptychonn.storage.tiled_results import find_reconstructions, read_live_mosaic
from bluesky_ptychonn.storage.tiled_server import TiledServerProcess
from bluesky_ptychonn.stream.sockets import free_tcp_port
from session_helpers import session_toml


def _read_until(process: subprocess.Popen, text: str, timeout_s: float) -> str:
    """The process's output up to the line holding ``text`` (read on a thread: a pipe's
    buffered lines would hide from select)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    seen = ""
    deadline = time.monotonic() + timeout_s
    while text not in seen:
        try:
            seen += lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {text!r} from {process.args}: {seen}") from None
    return seen


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.mark.slow  # four processes (endpoint, Tiled, proxy, callbacks): 26 s alone, 46 s loaded
def test_callbacks_in_another_process_stitch_every_frame_and_write_to_tiled(
    tmp_path, tiny_model, endpoint_factory, monkeypatch
):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    frames, results, control = endpoint_factory(model).addresses
    config = tmp_path / "session.toml"
    config.write_text(session_toml(tmp_path, model))
    tiled = TiledServerProcess(tmp_path / "tiled").start()
    devices = make_sim_devices(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6)))
    port_in, port_out = free_tcp_port(), free_tcp_port()
    proxy_command = shutil.which("bluesky-0MQ-proxy", path=str(Path(sys.executable).parent))
    proxy = subprocess.Popen(
        [proxy_command, "--in-address", f"tcp://127.0.0.1:{port_in}",
         "--out-address", f"tcp://127.0.0.1:{port_out}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = dict(os.environ, TILED_API_KEY=tiled.api_key)
    callbacks = subprocess.Popen(
        [sys.executable, "-m", "bluesky_ptychonn.cli", "callbacks",
         "--zmq", f"127.0.0.1:{port_out}", "--results", results, "--tiled", tiled.uri,
         "--config", str(config)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    publisher = None
    try:
        _read_until(callbacks, "bluesky-ptychonn callbacks: ready", timeout_s=60)
        endpoint = InferenceEndpoint(
            frames, results, control, source=devices["hutch"].detectors["eiger"]
        )
        RE = RunEngine({})
        publisher = Publisher(f"127.0.0.1:{port_in}", serializer=document_to_json)
        RE.subscribe(publisher)
        time.sleep(1.0)  # PUB/SUB: the publisher and the dispatcher are connected first
        (uid,) = RE(
            spiral_scan([devices["eiger"], endpoint], devices["stage"], 0.4e-6, step_m=1e-7)
        )
        catalog = tiled.connect()
        deadline, nodes = time.monotonic() + 90, {}
        while not nodes and time.monotonic() < deadline:
            nodes = dict(find_reconstructions(catalog, scan_uid=uid, final=True).items())
            time.sleep(0.5)
        assert nodes, "the final mosaic did not reach Tiled"
        (node,) = nodes.values()
        run = catalog.raw[uid]
        n_points = run.metadata["start"]["num_points"]
        assert n_points > 20
        mosaic = read_live_mosaic(node)
        assert mosaic.metadata["frames_used"] == n_points  # every frame stitched, remotely
        assert mosaic.metadata["model_version"] == "tiny"
        deadline = time.monotonic() + 30
        while "stop" not in run.metadata and time.monotonic() < deadline:
            time.sleep(0.2)
            run = catalog.raw[uid]
        assert run["primary"]["eiger_image"].read().shape == (n_points, 128, 128)
        assert (tmp_path / "session" / "live-mosaic.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        if publisher is not None:  # linger 0: unsent messages must not hold the exit
            publisher._context.destroy(linger=0)
        code = _stop(callbacks)
        _stop(proxy)
        tiled.stop()
        devices["hutch"].close()
    assert code == 0  # SIGTERM: the last runs handed on, then a clean exit
