"""pvAccess ingest against a real p4p server on loopback (`SimPvaDetector`): every frame of a
burst arrives once with its id, shape, dtype and position; gaps and malformed arrays are
counted with reasons and the source goes on; frames published on PVA come back from a real
inference endpoint as results."""

from __future__ import annotations

import json
import threading
import time
import warnings

import numpy as np
import pytest
import zmq

pytest.importorskip("p4p")

from p4p.nt import NTNDArray  # noqa: E402

from bluesky_ptychonn.ioc.pva_server import SimPvaDetector  # noqa: E402
from bluesky_ptychonn.stream.pva import PvaFrameSource, ntndarray_to_frame  # noqa: E402

FRAME = (128, 128)


class Recorder:
    """A frame listener that keeps what it is given."""

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]] = []
        self.delay_s = delay_s

    def __call__(self, frames, frame_ids, times, positions_m):
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append((frames.copy(), frame_ids, times, positions_m))

    @property
    def ids(self) -> list[int]:
        return [int(i) for call in self.calls for i in call[1]]


def random_frames(n: int, dtype=np.uint16, shape=FRAME, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, (n, *shape)).astype(dtype)


@pytest.fixture
def detector():
    with SimPvaDetector("TEST:Pva1:Image") as sim:
        yield sim


def subscribe(detector, listener, **options) -> PvaFrameSource:
    source = PvaFrameSource(
        detector.pv, listener, conf=detector.client_conf(), useenv=False, **options
    )
    assert source.wait_connected(10), "the subscription did not connect"
    return source


def settle(source: PvaFrameSource, last_id: int, timeout_s: float = 10.0) -> None:
    """Wait until the frame ``last_id`` has been received and everything is forwarded."""
    deadline = time.monotonic() + timeout_s
    while source.stats().last_unique_id != last_id and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.drain(timeout_s)


def test_ntndarray_decodes_to_a_frame_with_id_time_and_attributes(detector):
    frame = np.arange(12, dtype=np.uint16).reshape(3, 4)  # 3 rows (y), 4 columns (x)
    value = detector.ntndarray(frame, 17, position_m=(1.5e-6, -2e-6), timestamp=1.7e9 + 0.25)
    decoded, unique_id, timestamp, attributes = ntndarray_to_frame(value)
    np.testing.assert_array_equal(decoded, frame)
    assert decoded.dtype == np.uint16 and unique_id == 17
    assert timestamp == pytest.approx(1.7e9 + 0.25, abs=1e-6)
    assert attributes["SampleY"] == 1.5e-6 and attributes["SampleX"] == -2e-6


def test_ntndarray_that_is_compressed_miscounted_or_not_2d_is_refused_with_a_reason(detector):
    good = detector.ntndarray(np.ones((4, 4), np.uint16), 1)
    compressed = detector.ntndarray(np.ones((4, 4), np.uint16), 1)
    compressed["codec.name"] = "lz4"
    with pytest.raises(ValueError, match="codec 'lz4'"):
        ntndarray_to_frame(compressed)
    short = detector.ntndarray(np.ones((4, 4), np.uint16), 1)
    short["value"] = np.ones(15, np.uint16)
    with pytest.raises(ValueError, match="15 elements for dimensions 4 x 4"):
        ntndarray_to_frame(short)
    cube = NTNDArray().wrap(np.ones((2, 4, 4), np.uint16), attrib={"ColorMode": 0})
    with pytest.raises(ValueError, match="2-D array, this one has 3 dimensions"):
        ntndarray_to_frame(cube)
    empty = NTNDArray().wrap(np.zeros((0, 0), np.uint16))
    with pytest.raises(ValueError, match="empty array"):
        ntndarray_to_frame(empty)
    assert ntndarray_to_frame(good)[0].shape == (4, 4)


def test_a_burst_arrives_exactly_once_with_ids_shapes_dtype_and_positions(detector):
    n = 400
    frames = random_frames(n)
    positions = np.random.default_rng(1).uniform(-2e-6, 2e-6, (n, 2))
    recorder = Recorder()
    # a monitor queue deep enough for the whole burst: published flat out on a busy machine,
    # a shallower queue squashes updates (that case is tested below, with a slow listener)
    source = subscribe(detector, recorder, queue_size=n + 16)
    try:
        ids = detector.publish_burst(frames, positions)  # flat out
        settle(source, ids[-1])
    finally:
        stats = source.stop()
    assert ids == list(range(1, n + 1))
    assert recorder.ids == ids  # each once, in order
    got = np.concatenate([call[0] for call in recorder.calls])
    np.testing.assert_array_equal(got, frames)
    assert got.dtype == np.uint16
    got_positions = np.concatenate([call[3] for call in recorder.calls])
    np.testing.assert_array_equal(got_positions, positions)
    times = np.concatenate([call[2] for call in recorder.calls])
    assert np.all(np.abs(times - time.time()) < 60)
    assert stats.frames_received == stats.frames_forwarded == n
    assert stats.frames_missing == stats.frames_rejected == stats.overruns == 0
    assert stats.initial_skipped == 1  # the PV's empty value at connection
    assert stats.batches < n  # frames that arrived together travelled together
    assert not stats.connected


def test_a_gap_in_unique_id_is_counted_and_reported(detector):
    recorder = Recorder()
    source = subscribe(detector, recorder)
    try:
        frames = random_frames(6, shape=(8, 8))
        for frame in frames[:3]:
            detector.publish(frame)  # 1, 2, 3
        detector.publish(frames[3], unique_id=7)  # the plugin dropped 4..6
        detector.publish(frames[4])  # 8
        detector.publish(frames[5], unique_id=12)  # dropped 9..11
        settle(source, 12)
    finally:
        stats = source.stop()
    assert recorder.ids == [1, 2, 3, 7, 8, 12]
    assert stats.frames_missing == 6
    assert stats.gaps == [(4, 6), (9, 11)]


def test_corrupt_arrays_are_rejected_with_a_reason_and_the_source_keeps_going(detector):
    recorder = Recorder()
    source = subscribe(detector, recorder)
    try:
        detector.publish(np.ones((8, 8), np.uint16))  # 1
        short = detector.ntndarray(np.ones((8, 8), np.uint16), 2)
        short["value"] = np.ones(60, np.uint16)
        detector.post(short)
        compressed = detector.ntndarray(np.ones((8, 8), np.uint16), 3)
        compressed["codec.name"] = "blosc"
        detector.post(compressed)
        detector.publish(np.ones((8, 8), np.uint16), unique_id=4)
        wide = detector.ntndarray(np.ones((8, 8), np.uint64), 5)  # the wire carries no uint64
        detector.post(wide)
        detector.publish(np.ones((8, 8), np.float32), unique_id=6)
        settle(source, 6)
    finally:
        stats = source.stop()
    assert recorder.ids == [1, 4, 6]
    # per frame (frames that arrive together travel in one call, one dtype per call)
    dtypes = [call[0].dtype for call in recorder.calls for _ in range(len(call[0]))]
    assert dtypes == [np.uint16, np.uint16, np.float32]
    assert stats.frames_rejected == 3 and stats.frames_missing == 0
    reasons = " | ".join(stats.reject_reasons)
    assert "60 elements for dimensions 8 x 8" in reasons
    assert "codec 'blosc'" in reasons
    assert "uint64" in reasons


def test_positions_come_from_a_lookup_when_the_attributes_are_missing(detector):
    recorder = Recorder()
    source = subscribe(
        detector,
        recorder,
        position_lookup=lambda uid: (uid * 1e-7, -uid * 1e-7),
        position_attributes=("PosY", "PosX"),
        position_units_m=1e-3,
    )
    try:
        detector.publish(np.ones((8, 8), np.uint16))  # 1: no attributes -> lookup
        detector.publish(np.ones((8, 8), np.uint16), attributes={"PosY": 0.002, "PosX": 0.001})
        settle(source, 2)
    finally:
        source.stop()
    positions = {
        int(i): p for call in recorder.calls for i, p in zip(call[1], call[3], strict=True)
    }
    np.testing.assert_allclose(positions[1], [1e-7, -1e-7])
    np.testing.assert_allclose(positions[2], [2e-6, 1e-6])  # mm attributes -> metres


def test_frames_without_positions_travel_without_them(detector):
    recorder = Recorder()
    source = subscribe(detector, recorder)
    try:
        detector.publish_burst(random_frames(3, shape=(8, 8)))
        settle(source, 3)
    finally:
        source.stop()
    assert recorder.ids == [1, 2, 3] and all(call[3] is None for call in recorder.calls)


def test_a_slow_listener_loses_frames_only_in_counted_overruns_and_gaps(detector):
    """A listener far slower than the detector: the monitor queue squashes updates (uniqueId
    gaps) and the forwarder's buffer overflows (overruns); every frame is accounted for."""
    n = 300
    recorder = Recorder(delay_s=0.02)
    source = subscribe(detector, recorder, queue_size=2, buffer_frames=4, max_batch=2)
    try:
        ids = detector.publish_burst(random_frames(n, shape=(16, 16)))
        settle(source, ids[-1], timeout_s=15)
    finally:
        stats = source.stop()
    forwarded = recorder.ids
    assert len(forwarded) == len(set(forwarded)) == stats.frames_forwarded
    assert forwarded == sorted(forwarded) and stats.last_unique_id == n
    assert stats.frames_forwarded + stats.frames_missing + stats.overruns == n
    assert stats.frames_missing + stats.overruns > 0
    missing = {i for first, last in stats.gaps for i in range(first, last + 1)}
    assert not missing & set(forwarded)


def test_updates_squashed_by_a_full_monitor_queue_are_counted_as_missing(detector):
    """With a slow monitor callback the pvAccess queue (``queueSize=2``) squashes updates:
    the squashed frames never arrive and are counted as missing; the newest one survives."""
    n = 100
    recorder = Recorder()
    source = PvaFrameSource(
        detector.pv, recorder, conf=detector.client_conf(), useenv=False, queue_size=2, start=False
    )
    on_update = source._on_update

    def slow_on_update(value):
        time.sleep(0.005)
        on_update(value)

    source._on_update = slow_on_update
    source.start()
    assert source.wait_connected(10)
    try:
        ids = detector.publish_burst(random_frames(n, shape=(16, 16)))
        settle(source, ids[-1])
    finally:
        stats = source.stop()
    assert stats.frames_missing > 0 and stats.overruns == 0
    assert stats.frames_forwarded + stats.frames_missing == n
    assert recorder.ids[-1] == n and len(set(recorder.ids)) == len(recorder.ids)


def test_the_value_at_connection_is_skipped_and_seeds_the_gap_detection(detector):
    detector.publish(np.ones((8, 8), np.uint16), unique_id=41)  # served before anyone listens
    recorder = Recorder()
    source = subscribe(detector, recorder)
    try:
        detector.publish(np.ones((8, 8), np.uint16))  # 42
        settle(source, 42)
    finally:
        stats = source.stop()
    assert recorder.ids == [42]
    assert stats.initial_skipped == 1 and stats.frames_missing == 0


def test_stop_ends_the_forwarder_and_a_failing_listener_does_not_stop_the_source(detector):
    calls = []

    def flaky(frames, frame_ids, times, positions_m):
        calls.append(list(frame_ids))
        if len(calls) == 1:
            raise BufferError("endpoint not keeping up")

    source = subscribe(detector, flaky, max_batch=1)
    detector.publish(np.ones((8, 8), np.uint16))
    settle(source, 1)
    detector.publish(np.ones((8, 8), np.uint16))
    settle(source, 2)
    stats = source.stop()
    assert calls == [[1], [2]]
    assert stats.listener_errors == 1 and stats.frames_forwarded == 1
    assert not any(t.name.startswith("pva-") and t.is_alive() for t in threading.enumerate())


def test_frames_published_on_pva_come_back_from_the_endpoint_as_results(
    tmp_path, tiny_model, endpoint_factory
):
    """SimBeamline frames -> NTNDArray PV -> PvaFrameSource -> FrameStreamer -> endpoint ->
    results: every frame id answered exactly once, with its position."""
    from bluesky_ptychonn.sim import SimBeamline, SimBeamlineConfig
    from bluesky_ptychonn.sim.scans import fermat_spiral
    from bluesky_ptychonn.stream.sockets import ResultCollector
    from bluesky_ptychonn.stream.streamer import FrameStreamer

    model = tiny_model(tmp_path / "model", frame_px=128, version="tiny-pva")
    endpoint = endpoint_factory(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beamline = SimBeamline(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6)))
    positions = fermat_spiral(0.8e-6, n_points=120)
    collector, results, lock = ResultCollector(), {}, threading.Lock()

    def on_result(message):
        if message.kind != "results":
            return
        with lock:
            for index in collector.new_indices(message):
                results[message.frame_ids[index]] = message.positions_m[index]

    streamer = FrameStreamer(
        endpoint.addresses[0],
        endpoint.addresses[1],
        run_uid="pva-run",
        on_result=on_result,
        context=zmq.Context(),
    )
    with SimPvaDetector("TEST:E2E:Image", beamline=beamline) as detector:
        source = subscribe(detector, streamer)
        try:
            time.sleep(0.3)  # the result subscription connects
            ids = detector.acquire(positions, rate_hz=500, seed=3)
            settle(source, ids[-1])
        finally:
            stats = source.stop()
        assert streamer.flush(30), f"{streamer.pending} frames unanswered"
        streamer.close()
    assert stats.frames_forwarded == len(ids) == 120
    assert sorted(results) == ids and collector.duplicates == 0
    assert streamer.frames_rejected == 0
    got = np.stack([results[i] for i in ids])
    np.testing.assert_allclose(got, positions, rtol=0, atol=1e-15)


def test_pva_ingest_command_forwards_frames_to_an_endpoint(detector, monkeypatch, capsys):
    """The command against a stand-in endpoint that answers every frame."""
    from bluesky_ptychonn.cli import main
    from bluesky_ptychonn.stream.sockets import (
        FrameReceiver,
        ResultPublisher,
        free_tcp_port,
        tcp_address,
    )
    from bluesky_ptychonn.stream.wire import Message

    frames_address, results_address = tcp_address(free_tcp_port()), tcp_address(free_tcp_port())
    context = zmq.Context()
    receiver = FrameReceiver(frames_address, context=context)
    publisher = ResultPublisher(results_address, context=context)
    running = threading.Event()
    running.set()

    def answer():
        while running.is_set():
            message = receiver.receive(timeout_s=0.05)
            if message is not None:
                publisher.publish(
                    Message("results", run_uid=message.run_uid, frame_ids=message.frame_ids)
                )

    echo = threading.Thread(target=answer, daemon=True)
    echo.start()
    conf = [f"--conf={k}={v}" for k, v in detector.client_conf().items()]
    for key in ("EPICS_PVA_ADDR_LIST", "EPICS_PVA_AUTO_ADDR_LIST", "EPICS_PVA_NAME_SERVERS"):
        monkeypatch.delenv(key, raising=False)
    status = {}

    def command():
        status["rc"] = main(
            [
                "pva-ingest",
                "--pv",
                detector.pv,
                "--frames",
                frames_address,
                "--results",
                results_address,
                "--max-frames",
                "50",
                "--duration",
                "15",
                *conf,
            ]
        )

    thread = threading.Thread(target=command)
    thread.start()
    try:
        frame = np.ones((16, 16), np.uint16)
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            detector.publish(frame)  # until the command has forwarded 50
            time.sleep(0.005)
        thread.join(20)
    finally:
        running.clear()
        echo.join(5)
        receiver.close(), publisher.close()
        context.term()
    assert status.get("rc") == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["final"] and final["frames_forwarded"] >= 50 and final["pending"] == 0
    assert final["frames_answered"] == final["frames_forwarded"]
