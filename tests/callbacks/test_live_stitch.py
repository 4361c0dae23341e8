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


PATCH, PIXEL_M = 32, 10e-9


def interleaved_scan(seed=0, side=9):
    """Patches of a smooth object at half-patch raster steps, each with a random phase offset
    and 0.1 rad of noise, in two passes: first every other row and column (patches that share
    no pixel), then the rest. Returns the object and the patches' event data."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    step = PATCH // 2
    extent = step * (side - 1) + PATCH + 8
    phase = ndimage.gaussian_filter(rng.normal(size=(extent, extent)), 4)
    truth = np.exp(2j * phase / np.abs(phase).max())
    index = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
    index = index.reshape(-1, 2)
    first = np.all(index % 2 == 0, axis=1)
    corners = index[np.concatenate([np.flatnonzero(first), np.flatnonzero(~first)])] * step + 4
    events = []
    for seq, (r, c) in enumerate(corners, start=1):
        noise = rng.uniform(-np.pi, np.pi) + 0.1 * rng.normal(size=(PATCH, PATCH))
        patch = truth[r : r + PATCH, c : c + PATCH] * np.exp(1j * noise)
        y, x = (np.array([r, c]) + PATCH // 2) * PIXEL_M
        events.append({"seq_num": seq, "data": {
            "ptychonn_phase": np.angle(patch).astype(np.float32),
            "ptychonn_amplitude": np.abs(patch).astype(np.float32),
            "beam_y": y, "beam_x": x, "frame_index": seq - 1,
        }})  # fmt: skip
    return truth, events


def start_document(events):
    positions = np.array([[e["data"]["beam_y"], e["data"]["beam_x"]] for e in events])
    return {
        "uid": "run-1",
        "time": 0.0,
        "object_pixel_size_m": PIXEL_M,
        "scan_extent_m": list(np.ptp(positions, axis=0)),
        "scan_centre_m": list((positions.min(0) + positions.max(0)) / 2),
        "beam_size_m": PATCH / 2 * PIXEL_M,
        "num_points": len(events),
    }


def phase_error(snapshot, truth):
    """RMS phase error (rad) against the object where the mosaic is well covered."""
    r0, c0 = np.round(np.array(snapshot.origin_m) / snapshot.pixel_size_m).astype(int)
    rows, cols = snapshot.phase.shape
    reference = truth[r0 : r0 + rows, c0 : c0 + cols]
    region = snapshot.weights > 0.2 * snapshot.weights.max()
    estimate, reference = snapshot.complex[region], reference[region]
    estimate = estimate * np.exp(-1j * np.angle(np.vdot(reference, estimate)))
    return float(np.sqrt(np.mean(np.angle(estimate * np.conj(reference)) ** 2)))


def run_documents(stitcher, events, between=None):
    stitcher("start", start_document(events))
    stitcher("descriptor", {"uid": "d-1", "run_start": "run-1", "name": "primary"})
    for event in events:
        stitcher("event", {"uid": f"e-{event['seq_num']}", "descriptor": "d-1", **event})
        if between is not None:
            between(event["seq_num"])
    stitcher("stop", {"uid": "s-1", "run_start": "run-1", "exit_status": "success"})


def test_the_final_mosaic_is_synchronised_globally_where_greedy_alignment_fails():
    truth, events = interleaved_scan()
    finals = {}
    for synchronise in (False, True):
        stitcher = LiveStitcher(synchronise=synchronise, settle_timeout_s=1)
        run_documents(stitcher, events)
        finals[synchronise] = stitcher.last_snapshot
    greedy, synchronised = (phase_error(finals[s], truth) for s in (False, True))
    assert synchronised < 0.1
    assert greedy > 5 * synchronised
    assert finals[True].metrics["phase_sync_patches"] == len(events)
    assert finals[True].frames_used == len(events)
    assert "phase_sync_patches" not in finals[False].metrics


def test_snapshots_resynchronise_every_n_new_patches():
    truth, events = interleaved_scan(seed=1)
    stitcher = LiveStitcher(resync_every=30, settle_timeout_s=1)
    seen = {}

    def look(seq):
        if seq in (29, 40, 50, 70):
            seen[seq] = stitcher.snapshot().metrics.get("phase_sync_patches")

    run_documents(stitcher, events, between=look)
    # 29 patches: not yet; 40: synchronised; 50: only 10 new; 70: 30 new again
    assert seen == {29: None, 40: 40, 50: 40, 70: 70}
    assert stitcher.last_snapshot.metrics["phase_sync_patches"] == len(events)
    assert phase_error(stitcher.last_snapshot, truth) < 0.1
    with pytest.raises(ValueError, match="resync_every"):
        LiveStitcher(resync_every=0)


def test_the_patch_weight_follows_a_given_probe():
    """A probe much narrower than the beam-size Gaussian leaves the patches' borders out."""
    _, events = interleaved_scan(seed=2, side=3)
    rows, cols = np.indices((PATCH, PATCH)) - PATCH // 2
    narrow = np.exp(-(rows**2 + cols**2) / (2 * 2.0**2)).astype(complex)  # sigma 2 px
    covered = {}
    for probe in (None, narrow):
        stitcher = LiveStitcher(settle_timeout_s=1, synchronise=False, probe=probe)
        run_documents(stitcher, events)
        weights = stitcher.last_snapshot.weights
        covered[probe is None] = np.count_nonzero(weights > 0.05 * weights.max())
    assert covered[False] < 0.5 * covered[True]


@pytest.mark.parametrize("weighting", ["probe", "inverse_variance"])
def test_patches_with_a_phase_uncertainty_give_an_uncertainty_mosaic(weighting):
    truth, events = interleaved_scan(seed=2, side=5)
    plain = LiveStitcher(settle_timeout_s=1)
    run_documents(plain, events)
    assert plain.last_snapshot.phase_uncertainty is None  # no field: as before
    for seq, event in enumerate(events):
        sigma = np.full((PATCH, PATCH), 0.05 + 0.01 * seq, np.float32)
        event["data"]["ptychonn_phase_uncertainty"] = sigma
    stitcher = LiveStitcher(settle_timeout_s=1, weighting=weighting)
    run_documents(stitcher, events)
    snapshot = stitcher.last_snapshot
    sigma = snapshot.phase_uncertainty
    measured = snapshot.weights > 0
    assert sigma.shape == snapshot.phase.shape
    assert np.all(np.isfinite(sigma[measured])) and np.all(np.isnan(sigma[~measured]))
    stated = 0.05 + 0.01 * np.arange(len(events))
    assert stated.min() - 1e-6 <= np.nanmin(sigma) and np.nanmax(sigma) <= stated.max() + 1e-6
    assert phase_error(snapshot, truth) < 0.15
    with pytest.raises(ValueError):
        LiveStitcher(weighting="loudest")
