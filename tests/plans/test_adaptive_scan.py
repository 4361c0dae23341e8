"""Adaptive scans through the RunEngine: the simulated Eiger and stage, a real endpoint
process, the agent steering by the endpoint's phase; bad input and faults."""

import os
import signal

import numpy as np
import pytest
from bluesky import RunEngine

from bluesky_ptychonn.adaptive import AgentOptions, MosaicAgent
from bluesky_ptychonn.callbacks.live_stitch import LiveStitcher
from bluesky_ptychonn.devices import make_sim_devices
from bluesky_ptychonn.devices.endpoint import FrameResultTimeoutError, InferenceEndpoint
from bluesky_ptychonn.plans import adaptive_problem, adaptive_scan
from bluesky_ptychonn.plans.adaptive import LivePhaseError
from bluesky_ptychonn.sim import SimBeamlineConfig
from bluesky_ptychonn.stream.streamer import FrameStreamer

REGION = (-0.6e-6, 0.6e-6, -0.6e-6, 0.6e-6)


@pytest.fixture
def devices():
    devices = make_sim_devices(SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6)))
    yield devices
    devices["hutch"].close()


@pytest.fixture
def served(devices, tmp_path, tiny_model, endpoint_factory):
    tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    server = endpoint_factory(tmp_path / "model")
    endpoint = InferenceEndpoint(
        *server.addresses,
        source=devices["hutch"].detectors["eiger"],
        result_timeout_s=10,
        flush_timeout_s=2,
    )
    return server, endpoint


def test_an_adaptive_scan_is_one_run_whose_readings_hold_each_points_frame(devices, served):
    server, endpoint = served
    stitcher_finals = []
    stitcher = LiveStitcher(server.addresses[1], consumers=[stitcher_finals.append])
    observed = []  # the live mosaic the agent read after each batch
    RE = RunEngine({})
    docs = []
    RE.subscribe(stitcher)
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        RE(
            adaptive_scan(
                [devices["eiger"]],
                devices["stage"],
                endpoint,
                REGION,
                12,
                batch=4,
                mosaic_source=lambda: observed.append(stitcher.snapshot()) or observed[-1],
            )
        )
    finally:
        stitcher.close()
    starts = [d for n, d in docs if n == "start"]
    events = [d for n, d in docs if n == "event"]
    assert len(starts) == 1 and starts[0]["plan_name"] == "adaptive_scan"
    assert starts[0]["adaptive_agent"]["budget_points"] == 12
    assert starts[0]["adaptive_region_m"] == list(REGION)
    assert len(events) == 12
    for e in events:  # the phase reading belongs to the frame taken at that point
        assert e["data"]["endpoint_frame_id"] == e["data"]["eiger_frame_number"]
        assert e["data"]["agent_reason"]
        y, x = e["data"]["stage_beam_y"], e["data"]["stage_beam_x"]
        assert (
            REGION[0] - 1e-9 <= y <= REGION[1] + 1e-9 and REGION[2] - 1e-9 <= x <= REGION[3] + 1e-9
        )
    assert len({e["data"]["agent_point_id"] for e in events}) == 12
    assert stitcher_finals and stitcher_finals[0].frames_used == 12
    assert len(observed) == 3 and all(o is not None for o in observed)
    assert observed[0].frames_used <= observed[-1].frames_used
    assert [n for n, _ in docs].count("stop") == 1


def test_bad_input_moves_nothing(devices):
    stage = devices["stage"]
    endpoint = InferenceEndpoint("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")
    before = (stage.beam_y.get(), stage.beam_x.get())
    outside = (-50e-6, 50e-6, -0.5e-6, 0.5e-6)
    with pytest.raises(ValueError):
        next(adaptive_scan([devices["eiger"]], stage, endpoint, outside, 10))
    with pytest.raises(ValueError, match="at least 1 point"):
        next(adaptive_scan([devices["eiger"]], stage, endpoint, REGION, 0))
    with pytest.raises(TypeError):
        next(adaptive_scan([devices["eiger"]], stage, object(), REGION, 5))
    assert (stage.beam_y.get(), stage.beam_x.get()) == before


@pytest.mark.slow
def test_nan_from_the_endpoint_stops_the_scan_before_the_next_motion(devices, served):
    _, endpoint = served
    original = endpoint.result_for
    frames: list[int] = []

    def poisoned(frame_id, timeout_s=None):
        result = original(frame_id, timeout_s)
        if frame_id not in frames:
            frames.append(frame_id)
        if frames.index(frame_id) == 2:  # the third point's frame comes back as NaN
            result["phase"] = np.full_like(result["phase"], np.nan)
        return result

    endpoint.result_for = poisoned
    moves = []
    RE = RunEngine({})
    RE.msg_hook = lambda msg: (
        moves.append(msg) if msg.command == "set" and msg.obj is devices["stage"] else None
    )
    with pytest.raises(LivePhaseError, match="NaN"):
        RE(adaptive_scan([devices["eiger"]], devices["stage"], endpoint, REGION, 10, batch=5))
    assert len(moves) == 3  # the third point was measured; nothing moved after its NaN


@pytest.mark.slow
def test_a_dead_endpoint_ends_the_scan_with_a_clear_error(devices, served):
    server, endpoint = served
    endpoint.result_timeout_s = 2.0
    RE = RunEngine({})
    events = []

    def kill_after_two(name, doc):
        if name == "event":
            events.append(doc)
            if len(events) == 2:
                os.kill(server.process.pid, signal.SIGKILL)

    RE.subscribe(kill_after_two)
    with pytest.raises((FrameResultTimeoutError, TimeoutError)) as info:
        RE(adaptive_scan([devices["eiger"]], devices["stage"], endpoint, REGION, 10, batch=5))
    assert "frame" in str(info.value) or "answered" in str(info.value)
    assert len(events) == 2


@pytest.mark.slow
def test_optimize_with_no_iteration_limit_ends_by_the_agents_stopping_rule(devices, served):
    from bluesky_adaptive.plans import optimize

    _, endpoint = served
    agent = MosaicAgent(
        AgentOptions(region_m=REGION, beam_size_m=devices["stage"].beam_size.get(), budget_points=9)
    )
    problem = adaptive_problem(agent, [devices["eiger"]], devices["stage"], endpoint)
    RE = RunEngine({})
    starts = []
    RE.subscribe(lambda name, doc: starts.append(doc) if name == "start" else None)
    RE(optimize(problem, iterations=None, n_points=4))
    assert len(agent.measured) == 9
    assert agent.should_stop() == (True, "point budget reached: 9 of 9")
    assert starts[0]["plan_name"] == "optimize"
    assert {s["plan_name"] for s in starts[1:]} == {"acquire_points"}


def test_readings_follow_frames_that_arrive_through_another_sender(devices, served):
    """As with `pva-ingest`: the frames go to the endpoint under the sender's own run id."""
    server, _ = served
    hutch_eiger = devices["hutch"].detectors["eiger"]
    ingest = FrameStreamer(server.addresses[0], server.addresses[1], run_uid="pva-ingest")
    hutch_eiger.add_frame_listener(ingest)
    endpoint = InferenceEndpoint(
        *server.addresses, source=None, result_timeout_s=10, flush_timeout_s=2
    )
    endpoint.follow(devices["eiger"])
    RE = RunEngine({})
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        RE(adaptive_scan([devices["eiger"]], devices["stage"], endpoint, REGION, 5, batch=5))
    finally:
        hutch_eiger.remove_frame_listener(ingest)
        ingest.close()
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 5
    for e in events:
        assert e["data"]["endpoint_frame_id"] == e["data"]["eiger_frame_number"]
    assert events[-1]["data"]["endpoint_frames_inferred"] >= 4


def test_configure_model_version_hot_swaps_and_is_recorded(devices, served, tmp_path, tiny_model):
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    server, endpoint = served
    tiny_model(tmp_path / "model2", version="tiny-2", input_px=32, frame_px=128, reduce="bin")
    endpoint.check()
    assert endpoint.model_version.get() == "tiny"
    RE = RunEngine({})
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))

    @bpp.run_decorator()
    def plan():
        yield from bps.configure(endpoint, {"model_version": str(tmp_path / "model2")})
        yield from bps.trigger_and_read([endpoint])

    RE(plan())
    descriptor = next(d for n, d in docs if n == "descriptor")
    config = descriptor["configuration"]["endpoint"]["data"]
    assert config["endpoint_model_version"] == "tiny-2"
    assert config["endpoint_model_source"] == str(tmp_path / "model2")
    with pytest.raises(RuntimeError, match="refused"):
        endpoint.configure({"model_version": str(tmp_path / "missing")})
    assert endpoint.client.status()["model_version"] == "tiny-2"
