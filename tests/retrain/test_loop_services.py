"""The loop against real parts: a Tiled server that goes down, a real endpoint for the hot swap,
a RunEngine with the dispatcher, a Dask LocalCluster whose worker is killed mid-training, and a
scheduler that does not answer."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from scans import small_scan
from test_loop import fast_options

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
from tiled_helpers import SimPtychoBeamline, start_server  # noqa: E402

from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter  # noqa: E402
from bluesky_ptychonn.inference.server import EndpointClient  # noqa: E402
from bluesky_ptychonn.retrain.dispatcher import RetrainDispatcher, TiledRunSource  # noqa: E402
from bluesky_ptychonn.retrain.executors import DaskExecutor, InlineExecutor  # noqa: E402
from bluesky_ptychonn.retrain.loop import ContinualLoop  # noqa: E402
from bluesky_ptychonn.retrain.status import status_device  # noqa: E402
from bluesky_ptychonn.stream.sockets import free_tcp_port  # noqa: E402


@pytest.fixture(autouse=True)
def _no_api_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return small_scan(tmp_path_factory.mktemp("scan") / "scan0.cxi", seed=0)


def test_tiled_down_while_labels_are_written_loses_nothing(scan, tmp_path):
    server = start_server(tmp_path / "tiled")
    try:
        catalog = server.connect()
        writer = SpooledTiledWriter(catalog, spool_dir=tmp_path / "spool", retry_max_s=0.5)
        server.stop()
        loop = ContinualLoop(tmp_path / "state", fast_options(), writer=writer)
        record = loop.process_scan(scan, "scan0")
        assert record.promoted
        assert writer.stats.pending > 0  # labels, model and record wait in the spool
        server.restart()
        assert writer.flush(timeout_s=60), writer.stats
        writer.close()
        catalog = server.connect()
        pairs = list(catalog.training.values())
        assert [dict(p.metadata)["scan_uid"] for p in pairs] == ["scan0"]
        assert pairs[0]["holdout"].read().sum() == record.labels["n_holdout"]
        model = catalog.models[list(catalog.models)[0]]
        assert dict(model.metadata)["version"] == record.model_version
        assert dict(model.metadata)["continual"]["scans"] == ["scan0"]
        records = [dict(n.metadata)["record"] for n in catalog.container("continual").values()]
        assert [r["decision"] for r in records] == ["train_from_scratch"]
    finally:
        server.stop()


def test_endpoint_unreachable_at_push_time_is_retried_and_the_model_served(
    scan, tmp_path, endpoint_factory, tiny_model
):
    ports = [free_tcp_port() for _ in range(3)]
    control = f"tcp://127.0.0.1:{ports[2]}"
    options = fast_options(promote={"push_attempts": 2, "push_retry_s": 0.1, "push_timeout_s": 1})
    loop = ContinualLoop(tmp_path / "state", options, endpoint_control=control)
    record = loop.process_scan(scan, "scan0")
    assert record.promoted and record.pushed is False
    assert "push pending" in record.promotion_reason
    assert loop.status()["pending_push"] == record.model_path
    # the endpoint comes up (serving another model); the next scan retries the push first
    old = tiny_model(tmp_path / "old", input_px=32, frame_px=128, reduce="crop", version="old")
    endpoint_factory(old.parent, ports=ports)
    client = EndpointClient(control)
    assert client.status()["model_version"] == "old"
    loop.options.gate.recheck_interval_s = 1e6
    loop.gate.suspended_until = time.time() + 1e6  # the next run is skipped: only the push
    second = loop.process_scan(scan, "scan0-again")
    assert second.decision == "skip" and second.pushed is True
    assert loop.pending_push is None
    assert client.status()["model_version"] == record.model_version
    client.close()


def test_dispatcher_takes_a_finished_run_from_tiled_without_blocking_the_run_engine(tmp_path):
    from bluesky import RunEngine

    server = start_server(tmp_path / "tiled")
    try:
        catalog = server.connect()
        writer = SpooledTiledWriter(catalog, spool_dir=tmp_path / "spool")
        beamline = SimPtychoBeamline(n_points=40)
        # this hutch's 64-pixel readout cuts off scattering that a band-limited ePIE cannot
        # explain: its data error settles near 12x the Poisson floor (refused by default)
        options = fast_options(quality={"max_noise_ratio": 20})
        loop = ContinualLoop(tmp_path / "state", options, executor=InlineExecutor())
        dispatcher = RetrainDispatcher(loop, TiledRunSource(catalog.root, wait_s=60))
        device = status_device(dispatcher)
        stop_call_s = []

        def timed(name, doc):
            t = time.perf_counter()
            dispatcher(name, doc)
            if name == "stop":
                stop_call_s.append(time.perf_counter() - t)

        RE = RunEngine({})
        RE.subscribe(writer)
        RE.subscribe(timed)
        (uid,) = RE(beamline.spiral_scan())
        assert stop_call_s and stop_call_s[0] < 0.05
        assert dispatcher.wait_idle(timeout_s=120), dispatcher.status()
        assert [r.scan_uid for r in dispatcher.records] == [uid]
        assert dispatcher.records[0].decision == "train_from_scratch", dispatcher.records[0].reason
        assert device.last_decision.get() == "train_from_scratch"
        assert device.model_version.get() == loop.model_version
        assert device.queued.get() == 0 and device.state.get() == "idle"
        writer.close()
        dispatcher.close()
    finally:
        server.stop()


def test_no_scheduler_reachable_keeps_the_run_queued_and_says_so(scan, tmp_path):
    port = free_tcp_port()
    executor = DaskExecutor(
        {"kind": "address", "address": f"tcp://127.0.0.1:{port}", "connect_timeout_s": 1}
    )
    loop = ContinualLoop(tmp_path / "state", fast_options(), executor=executor)

    def source(uid, path):
        path.write_bytes(Path(scan).read_bytes())
        return path

    dispatcher = RetrainDispatcher(loop, source, retry_s=0.2, retry_max_s=0.5)
    device = status_device(dispatcher)
    start = time.perf_counter()
    dispatcher("start", {"uid": "run-1", "energy_ev": 1e4, "detector_distance_m": 2.0})
    dispatcher("stop", {"run_start": "run-1", "exit_status": "success"})
    assert time.perf_counter() - start < 0.05
    deadline = time.monotonic() + 30
    while dispatcher.last_error is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "run-1 stays queued" in dispatcher.last_error
    assert str(port) in dispatcher.last_error
    assert device.queued.get() == 1 and loop.records == []
    dispatcher.close()
    assert json.loads((tmp_path / "state" / "queue.json").read_text()) == ["run-1"]


def test_a_dask_worker_killed_mid_training_is_replaced_and_the_loop_completes(scan, tmp_path):
    executor = DaskExecutor({"kind": "local", "n_workers": 1})
    options = fast_options(train={"epochs": 2, "scratch": {"epochs": 40}})
    loop = ContinualLoop(tmp_path / "state", options, executor=executor)
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", loop.process_scan(scan)))
    runner.start()
    try:
        client = executor.handle.client
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline:
            processing = client.processing()
            for worker, keys in processing.items():
                if any("train_step" in str(k) for k in keys):
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    time.sleep(1.0)  # well inside the training
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            time.sleep(0.1)
        assert killed is not None, "the training step never started"
        runner.join(timeout=300)
        record = result["r"]
        assert record.decision == "train_from_scratch"
        assert record.trained and record.promoted, (record.error, record.promotion_reason)
        pids = client.run(os.getpid)
        assert killed not in pids.values()
    finally:
        runner.join(timeout=300)
        executor.close()


def test_a_run_without_positions_is_refused_with_a_record_and_nothing_promoted(tmp_path):
    import bluesky.plans as bp
    from bluesky import RunEngine

    server = start_server(tmp_path / "tiled")
    try:
        catalog = server.connect()
        writer = SpooledTiledWriter(catalog, spool_dir=tmp_path / "spool")
        beamline = SimPtychoBeamline(n_points=4)
        loop = ContinualLoop(tmp_path / "state", fast_options(), executor=InlineExecutor())
        dispatcher = RetrainDispatcher(loop, TiledRunSource(catalog.root, wait_s=60))
        RE = RunEngine({})
        RE.subscribe(writer)
        RE.subscribe(dispatcher)
        # frames and geometry, but the stage is not read: no position for any frame
        (uid,) = RE(bp.count([beamline.detector], 3, md=beamline.start_metadata()))
        assert dispatcher.wait_idle(timeout_s=60), dispatcher.status()
        (record,) = dispatcher.records
        assert record.scan_uid == uid and record.decision == "refused"
        assert "position" in record.reason
        assert loop.model_version is None and not record.promoted
        writer.close()
        dispatcher.close()
    finally:
        server.stop()


def test_a_sparse_run_is_refused_without_being_read(tmp_path):
    calls = []
    loop = ContinualLoop(tmp_path / "state", fast_options())
    dispatcher = RetrainDispatcher(loop, lambda uid, path: calls.append(uid), min_overlap=0.3)
    geometry = {"energy_ev": 1e4, "detector_distance_m": 2.0}
    dispatcher("start", {"uid": "sparse", "overlap": 0.0, **geometry})
    dispatcher("stop", {"run_start": "sparse", "exit_status": "success"})
    dispatcher("start", {"uid": "aborted", "overlap": 0.7, **geometry})
    dispatcher("stop", {"run_start": "aborted", "exit_status": "abort"})
    assert dispatcher.wait_idle(timeout_s=30)
    (record,) = dispatcher.records
    assert record.scan_uid == "sparse" and record.decision == "refused"
    assert "overlap 0 is below 0.3" in record.reason
    assert calls == []  # neither read: one too sparse, one aborted
    dispatcher.close()
