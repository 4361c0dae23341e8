"""The live pipeline end to end on loopback: a spiral scan of the simulated Eiger streams every
frame to a real endpoint process, and the LiveStitcher builds the mosaic of all of them."""

import numpy as np
import pytest
from bluesky import RunEngine

from bluesky_ptychonn.callbacks.live_stitch import LiveStitcher
from bluesky_ptychonn.devices import make_sim_devices
from bluesky_ptychonn.devices.endpoint import InferenceEndpoint
from bluesky_ptychonn.plans import spiral_scan
from bluesky_ptychonn.sim import SimBeamlineConfig


@pytest.fixture
def devices():
    devices = make_sim_devices(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6)))
    yield devices
    devices["hutch"].close()


def test_every_frame_of_a_scan_is_inferred_and_stitched_once(
    devices, tmp_path, tiny_model, endpoint_factory
):
    tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    server = endpoint_factory(tmp_path / "model")
    frames_address, results_address, control_address = server.addresses
    endpoint = InferenceEndpoint(
        frames_address, results_address, control_address,
        source=devices["hutch"].detectors["eiger"], name="endpoint",
    )  # fmt: skip
    finals = []
    stitcher = LiveStitcher(results_address, consumers=[finals.append], settle_timeout_s=60)
    RE = RunEngine({})
    documents = []
    RE.subscribe(stitcher)
    RE.subscribe(lambda name, doc: documents.append((name, doc)))
    try:
        (uid,) = RE(
            spiral_scan([devices["eiger"], endpoint], devices["stage"], 0.4e-6, step_m=100e-9)
        )
    finally:
        stitcher.close()
    start = documents[0][1]
    n_points = start["num_points"]
    assert n_points > 20
    (snapshot,) = finals
    assert snapshot.frames_used + snapshot.frames_outside == n_points
    assert snapshot.frames_outside == 0
    assert snapshot.model_version == "tiny"
    # the patches (32 px at the object pixel size) cover the scanned disc
    measured = snapshot.weights > 0
    covered_m2 = measured.sum() * snapshot.pixel_size_m**2
    assert covered_m2 > np.pi * (0.4e-6) ** 2
    events = [doc for name, doc in documents if name == "event"]
    assert events[-1]["data"]["endpoint_frames_inferred"] >= n_points - 1
    assert endpoint.frames_pending.get() == 0
    assert endpoint.frames_inferred.get() == n_points
    assert endpoint.frames_rejected.get() == 0


def test_frames_inside_documents_are_inferred_in_process_and_stitched(
    devices, tmp_path, tiny_model
):
    from bluesky_ptychonn.callbacks.live_inference import LiveInference
    from bluesky_ptychonn.inference.loader import load_engine

    tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    inference = LiveInference(load_engine(tmp_path / "model", "pytorch"))
    stitcher = LiveStitcher(settle_timeout_s=5)  # document mode: no results address
    derived = []
    inference.subscribe(stitcher)
    inference.subscribe(lambda name, doc: derived.append((name, doc)))
    RE = RunEngine({})
    RE.subscribe(inference)
    (uid,) = RE(spiral_scan([devices["eiger"]], devices["stage"], 0.3e-6, step_m=100e-9))
    start = derived[0][1]
    assert start["original_run_uid"] == uid and start["ptychonn_model_version"] == "tiny"
    events = [doc for name, doc in derived if name == "event"]
    assert len(events) == start["num_points"] == inference.frames_inferred
    assert events[0]["data"]["ptychonn_phase"].shape == (32, 32)
    assert stitcher.last_snapshot.frames_used == start["num_points"]


def test_live_view_writes_a_png_and_publishes_snapshots(tmp_path):
    from bluesky_ptychonn.callbacks.live_view import LiveMosaicView
    from bluesky_ptychonn.geometry import PixelGrid
    from bluesky_ptychonn.stitch import Mosaic, gaussian_weight
    from bluesky_ptychonn.stream.sockets import ResultSubscriber, free_tcp_port, tcp_address

    mosaic = Mosaic(PixelGrid.centred((64, 64), 10e-9), gaussian_weight((16, 16), 6))
    mosaic.add(np.full((1, 16, 16), 0.3), None, np.zeros((1, 2)))

    class Source:
        def snapshot(self):
            return mosaic.snapshot(model_version="m1")

    address = tcp_address(free_tcp_port())
    view = LiveMosaicView(Source(), period_s=0.05, png_path=tmp_path / "live.png",
                          publish_address=address)  # fmt: skip
    subscriber = ResultSubscriber(address)
    try:
        import time

        time.sleep(0.3)
        view("start", {"uid": "r1", "time": 0})
        message = subscriber.receive(timeout_s=5)
        view("stop", {"uid": "s1", "run_start": "r1", "time": 1, "exit_status": "success"})
        assert message is not None and message.kind == "mosaic" and message.run_uid == "r1"
        assert message.extra["frames_used"] == 1 and message.model_version == "m1"
        assert np.isclose(message.arrays["phase"][32, 32], 0.3, atol=1e-6)
        assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"
        assert view.updates >= 2
    finally:
        subscriber.close()
        view.close()
