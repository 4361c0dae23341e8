"""Tiled goes away during a scan, a delivery breaks half-way, a session crashes: nothing is lost.

The session's private server (``tiled_server`` in conftest.py: every request needs the key)
serves the module; the outage tests stop it and start it again on the same folder and port.
"""

from __future__ import annotations

import collections
import threading
import time

import httpx
import numpy as np
import pytest
from bluesky import RunEngine
from tiled_helpers import DocumentRecorder, GroundTruthMosaic, SimPtychoBeamline

from bluesky_ptychonn.callbacks.tiled_mosaic import LiveMosaicWriter
from bluesky_ptychonn.callbacks.tiled_writer import SpooledTiledWriter
from bluesky_ptychonn.storage.tiled_catalog import TiledAuthError, connect
from bluesky_ptychonn.storage.tiled_results import find_reconstructions, read_live_mosaic


@pytest.fixture
def server(tiled_server):
    return tiled_server


@pytest.fixture
def catalog(server):
    return server.connect()


def _event_counts(documents):
    return collections.Counter(name for name, _ in documents)


def _assert_run_complete(catalog, uid, recorder):
    run = catalog.raw[uid]
    frames = run["primary"]["eiger"].read()
    assert frames.shape[0] == len(recorder.frames)  # no event lost, none duplicated
    np.testing.assert_array_equal(frames, np.stack(recorder.frames))
    positions = np.stack([run["primary"]["stage_y"].read(), run["primary"]["stage_x"].read()], 1)
    np.testing.assert_array_equal(positions, np.array(recorder.positions))
    assert run.metadata["stop"]["exit_status"] == "success"
    replayed = _event_counts(run.documents())
    assert replayed == _event_counts(recorder.documents)


def test_a_private_server_refuses_clients_without_the_key(server):
    with pytest.raises(TiledAuthError, match="requires an API key"):
        connect(server.uri, api_key=None)
    response = httpx.post(
        f"{server.uri}/api/v1/metadata/", json={"structure_family": "container"}, timeout=5
    )
    assert response.status_code == 401


def _outage_during_a_scan(server, catalog, tmp_path, outage_s, n_points, step_delay_s):
    sim = SimPtychoBeamline(n_points=n_points)
    recorder = DocumentRecorder()
    stitcher = GroundTruthMosaic(sim.beamline)
    writer = SpooledTiledWriter(
        server.uri,
        api_key=server.api_key,
        spool_dir=tmp_path / "spool",
        batch_size=5,
        retry_initial_s=0.2,
        retry_max_s=2.0,
    )
    mosaic = LiveMosaicWriter(stitcher, writer, period_s=0.25)
    timeline: dict[str, float] = {}
    outage_started = threading.Event()

    def outage():
        outage_started.wait()
        timeline["stop"] = time.monotonic()
        server.stop()
        try:  # the server is really gone
            httpx.get(f"{server.uri}/healthz", timeout=1)
            timeline["still_up"] = 1.0
        except httpx.TransportError:
            pass
        time.sleep(outage_s)
        server.start()
        timeline["up"] = time.monotonic()

    def start_outage_at_tenth_event(name, doc):
        if name == "event" and doc["seq_num"] == 10:
            outage_started.set()

    RE = RunEngine()
    for callback in (recorder, stitcher, writer, mosaic, start_outage_at_tenth_event):
        RE.subscribe(callback)
    thread = threading.Thread(target=outage)
    thread.start()
    began = time.monotonic()
    try:
        (uid,) = RE(sim.spiral_scan(step_delay_s=step_delay_s))
        scan_s = time.monotonic() - began
    finally:
        outage_started.set()
        thread.join()
    assert writer.flush(timeout_s=240), writer.stats
    delivered_s = time.monotonic() - timeline["up"]
    stats = writer.stats
    writer.close()

    assert "still_up" not in timeline
    # the RunEngine was never blocked: no gap between events beyond the plan's own pace
    times = [doc["time"] for name, doc in recorder.documents if name == "event"]
    assert max(np.diff(times)) < step_delay_s + 1.0
    assert scan_s < n_points * step_delay_s + 10.0
    # every document and every result write arrived, counted
    assert stats.docs_spooled == len(recorder.documents) == stats.docs_delivered
    assert stats.runs_completed == 1 and stats.items_failed == 0
    assert stats.writes_spooled == stats.writes_delivered + stats.writes_superseded
    assert stats.writes_spooled == mosaic.written >= 3
    _assert_run_complete(catalog, uid, recorder)
    [node] = find_reconstructions(catalog, scan_uid=uid).values()
    final = read_live_mosaic(node)
    assert final.metadata["final"] and final.metadata["frames_used"] == n_points
    assert final.metadata["snapshot_index"] == mosaic.written - 1
    np.testing.assert_array_equal(final.weights, stitcher.snapshot().weights)
    print(
        f"\noutage {timeline['up'] - timeline['stop']:.1f} s (stopped {outage_s} s + restart), "
        f"scan {scan_s:.1f} s (largest gap between events {max(np.diff(times)):.3f} s), "
        f"everything delivered {delivered_s:.1f} s after the restart, "
        f"{stats}"
    )


def test_tiled_stopped_for_3_s_mid_scan_loses_nothing_and_does_not_block(server, catalog, tmp_path):
    _outage_during_a_scan(server, catalog, tmp_path, outage_s=3, n_points=60, step_delay_s=0.05)


@pytest.mark.slow
def test_tiled_stopped_for_30_s_mid_scan_loses_nothing_and_does_not_block(
    server, catalog, tmp_path
):
    _outage_during_a_scan(server, catalog, tmp_path, outage_s=30, n_points=400, step_delay_s=0.1)


class _FlakyWriterFactory:
    """Make the first TiledWriter fail once, after it wrote, as when a response is lost."""

    def __init__(self, fail_at_call: int):
        self.fail_at_call = fail_at_call
        self.writers = 0

    def wrap(self, writer):
        self.writers += 1
        if self.writers > 1:
            return writer
        calls = [0]

        def flaky(name, doc):
            writer(name, doc)
            calls[0] += 1
            if calls[0] == self.fail_at_call:
                raise httpx.ReadTimeout("simulated: the response was lost")

        return flaky


def test_a_delivery_that_fails_half_way_is_replayed_without_duplicates(server, catalog, tmp_path):
    flaky = _FlakyWriterFactory(fail_at_call=12)  # after two table appends of 5 events

    class FlakySpooledWriter(SpooledTiledWriter):
        def _new_writer(self, catalog):
            return flaky.wrap(super()._new_writer(catalog))

    sim = SimPtychoBeamline(n_points=20)
    recorder = DocumentRecorder()
    writer = FlakySpooledWriter(
        server.uri,
        api_key=server.api_key,
        spool_dir=tmp_path / "spool",
        batch_size=5,
        retry_initial_s=0.1,
    )
    RE = RunEngine()
    RE.subscribe(recorder)
    RE.subscribe(writer)
    (uid,) = RE(sim.spiral_scan())
    assert writer.close(timeout_s=120)
    stats = writer.stats
    assert stats.failures == 1 and stats.runs_replayed == 1 and flaky.writers == 2
    assert stats.docs_delivered == stats.docs_spooled == len(recorder.documents)
    _assert_run_complete(catalog, uid, recorder)


def test_a_spool_left_by_a_crashed_session_is_replayed_at_the_next_start(server, catalog, tmp_path):
    spool = tmp_path / "spool"
    sim = SimPtychoBeamline(n_points=16)
    complete, cut = DocumentRecorder(), DocumentRecorder()
    stitcher = GroundTruthMosaic(sim.beamline)

    # session 1 dies before delivering anything: its delivery thread never ran
    crashed = SpooledTiledWriter(server.uri, api_key=server.api_key, spool_dir=spool, start=False)
    RE = RunEngine()
    RE.subscribe(complete)
    RE.subscribe(stitcher)
    RE.subscribe(crashed)
    RE.subscribe(LiveMosaicWriter(stitcher, crashed, period_s=0))
    (uid_complete,) = RE(sim.spiral_scan(sample="before-crash"))
    RE2 = RunEngine()
    RE2.subscribe(cut)
    (uid_cut,) = RE2(sim.spiral_scan(sample="cut-by-crash"))
    partial = cut.documents[:7]  # start, descriptor and five events; the stop never came
    for name, doc in partial:
        crashed(name, doc)
    assert crashed.stats.docs_spooled == len(complete.documents) + len(partial)
    assert crashed.stats.writes_spooled == 1
    crashed.close(timeout_s=0)

    # session 2 finds the spool and delivers it
    writer = SpooledTiledWriter(server.uri, api_key=server.api_key, spool_dir=spool)
    assert writer.close(timeout_s=120)
    stats = writer.stats
    assert stats.docs_recovered == len(complete.documents) + len(partial) + 1  # + abort stop
    assert stats.runs_completed == 2 and stats.writes_recovered == 1
    assert not list((spool / "runs").iterdir()) and not list((spool / "ops").iterdir())

    _assert_run_complete(catalog, uid_complete, complete)
    run = catalog.raw[uid_cut]
    assert run["primary"]["eiger"].read().shape[0] == 5
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert "replayed from the spool" in run.metadata["stop"]["reason"]
    [node] = find_reconstructions(catalog, scan_uid=uid_complete).values()
    assert read_live_mosaic(node).metadata["frames_used"] == 16
