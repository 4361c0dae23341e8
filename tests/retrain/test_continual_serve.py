"""`bluesky-ptychonn continual serve` as a beamline runs it: its own process, fed by the
RunEngine through bluesky's 0MQ proxy (JSON, no pickle), reading runs from a real Tiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from tiled_helpers import SimPtychoBeamline, start_server  # noqa: E402

from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter  # noqa: E402
from bluesky_ptychonn.storage.spool import document_to_json  # noqa: E402
from bluesky_ptychonn.stream.sockets import free_tcp_port  # noqa: E402

BIN = Path(sys.executable).parent


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(autouse=True)
def _no_api_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)


def test_continual_serve_learns_from_a_run_published_by_the_run_engine(tmp_path):
    from bluesky import RunEngine
    from bluesky.callbacks.zmq import Publisher

    server = start_server(tmp_path / "tiled")
    in_port, out_port = free_tcp_port(), free_tcp_port()
    config = tmp_path / "cl.toml"
    # this hutch's 64-pixel readout: see test_loop_services
    config.write_text(
        "[recon]\niterations = 30\n[train]\nepochs = 2\nthreads = 1\n"
        "[train.scratch]\nepochs = 3\n[promote]\nonnx = false\n[quality]\nmax_noise_ratio = 20\n"
    )
    state = tmp_path / "state"
    proxy = subprocess.Popen(
        [str(BIN / "bluesky-0MQ-proxy"), "--in-address", f"tcp://127.0.0.1:{in_port}",
         "--out-address", f"tcp://127.0.0.1:{out_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    serve = subprocess.Popen(
        [str(BIN / "bluesky-ptychonn"), "continual", "serve", "--documents",
         f"tcp://127.0.0.1:{out_port}", "--tiled", server.uri, "--api-key", server.api_key,
         "--state", str(state), "--config", str(config), "--cluster", "inline"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        time.sleep(3.0)  # the subscriber connects (0MQ drops what is published before)
        assert serve.poll() is None, serve.stdout.read()
        catalog = server.connect()
        writer = SpooledTiledWriter(catalog, spool_dir=tmp_path / "spool")
        publisher = Publisher(f"tcp://127.0.0.1:{in_port}", serializer=document_to_json)
        beamline = SimPtychoBeamline(n_points=40)
        RE = RunEngine({})
        RE.subscribe(writer)
        RE.subscribe(publisher)
        (uid,) = RE(beamline.spiral_scan())
        writer.flush(timeout_s=60)
        deadline = time.monotonic() + 300  # generous: CI machines may be loaded
        records = []
        while not records and time.monotonic() < deadline:
            if (state / "loop.json").is_file():
                records = json.loads((state / "loop.json").read_text())["records"]
            time.sleep(0.5)
        if not records:
            _stop(serve)
        assert [r["scan_uid"] for r in records] == [uid], serve.stdout.read()[-3000:]
        assert records[0]["decision"] == "train_from_scratch", records[0]["reason"]
        assert records[0]["promoted"]
        publisher.close()
        writer.close()
    finally:
        _stop(serve)
        _stop(proxy)
        server.stop()
