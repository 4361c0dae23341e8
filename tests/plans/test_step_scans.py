"""Step scans on the simulated twins: documents, positions, overlap, start document, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.plans import raster_scan, sparse_scan, spiral_scan
from bluesky_ptychonn.sim import scans as trajectories

RUN_ENGINE_KEYS = {"uid", "time", "versions", "scan_id", "plan_type"}
START_KEYS = {
    "plan_name", "detectors", "motors", "num_points", "hints", "scan_pattern", "scan_extent_m",
    "scan_step_m", "scan_centre_m", "overlap", "beam_size_m", "energy_ev", "detector_distance_m",
    "detector_pixel_size_m", "object_pixel_size_m", "detector_name", "sample_name",
    "exposure_s", "frames_key", "frame_numbers_key", "position_keys", "simulated",
}  # fmt: skip


def event_positions(documents):
    events = documents.of("event")
    return np.array([[e["data"]["stage_beam_y"], e["data"]["stage_beam_x"]] for e in events])


def test_spiral_scan_visits_the_spiral(RE, documents, eiger, stage, hutch):
    RE(spiral_scan([eiger], stage, 0.5e-6, step_m=0.12e-6))
    expected = trajectories.fermat_spiral(0.5e-6, step_m=0.12e-6)
    np.testing.assert_allclose(event_positions(documents), expected, atol=1e-12)
    start = documents.start
    assert set(start) - RUN_ENGINE_KEYS == START_KEYS
    beam = hutch.beamlines["eiger"].beam_size_on_sample_m
    assert start["beam_size_m"] == pytest.approx(beam)
    assert start["overlap"] == pytest.approx(1 - 0.12e-6 / beam)
    assert trajectories.overlap_ratio(event_positions(documents), beam) == pytest.approx(
        start["overlap"], abs=0.03
    )
    assert start["num_points"] == len(expected) == len(documents.of("event"))
    assert start["object_pixel_size_m"] == pytest.approx(hutch.beamlines["eiger"].pixel_size_m)
    assert start["detector_name"] == "eiger" and start["frames_key"] == "eiger_image"
    assert start["hints"]["dimensions"] == [
        [["stage_beam_x"], "primary"],
        [["stage_beam_y"], "primary"],
    ]
    (descriptor,) = documents.of("descriptor")
    assert descriptor["data_keys"]["eiger_image"]["dtype_numpy"] == "<u2"
    frame_numbers = [e["data"]["eiger_frame_number"] for e in documents.of("event")]
    assert np.all(np.diff(frame_numbers) == 1)
    assert documents.of("stop")[0]["exit_status"] == "success"


def test_spiral_by_point_count_records_the_measured_overlap(RE, documents, eiger, stage, hutch):
    RE(spiral_scan([eiger], stage, 0.5e-6, n_points=20, md={"operator": "test"}))
    positions = event_positions(documents)
    assert len(positions) == 20
    beam = hutch.beamlines["eiger"].beam_size_on_sample_m
    assert documents.start["overlap"] == pytest.approx(trajectories.overlap_ratio(positions, beam))
    assert documents.start["operator"] == "test"  # md is merged into the start document


def test_raster_scan_snakes_over_the_grid(RE, documents, eiger, stage):
    RE(raster_scan([eiger], stage, (0.4e-6, 0.6e-6), 0.2e-6, exposure_s=0.002))
    expected = trajectories.raster_scan((0.4e-6, 0.6e-6), 0.2e-6)
    np.testing.assert_allclose(event_positions(documents), expected, atol=1e-12)
    assert documents.start["scan_pattern"] == "raster" and documents.start["exposure_s"] == 0.002
    (descriptor,) = documents.of("descriptor")
    assert descriptor["configuration"]["eiger"]["data"]["eiger_cam_acquire_time"] == 0.002


@pytest.mark.parametrize("overlap", [0.0, 0.5, -0.25])
def test_sparse_scan_step_follows_the_overlap(RE, documents, eiger, stage, hutch, overlap):
    beam = hutch.beamlines["eiger"].beam_size_on_sample_m
    RE(sparse_scan([eiger], stage, (1.2e-6, 1.2e-6), overlap))
    positions = event_positions(documents)
    assert trajectories.overlap_ratio(positions, beam) == pytest.approx(overlap, abs=1e-6)
    assert documents.start["overlap"] == overlap
    assert documents.start["scan_step_m"] == pytest.approx(beam * (1 - overlap))


class MessageLog:
    def __init__(self, RE):
        self.commands = []
        RE.msg_hook = lambda msg: self.commands.append(msg.command)


@pytest.mark.parametrize(
    "plan, match",
    [
        (lambda d, s: sparse_scan(d, s, (1e-6, 1e-6), 1.0), "overlap ratio must be below 1"),
        (lambda d, s: sparse_scan(d, s, (1e-6, 1e-6), 1.5), "overlap ratio must be below 1"),
        (lambda d, s: spiral_scan(d, s, 1e-6, n_points=0), "no points"),
        (lambda d, s: raster_scan(d, s, (-1e-6, 1e-6), 0.1e-6), "extent"),
        (lambda d, s: spiral_scan(d, s, 10e-6, step_m=1e-6), "outside the limits"),
        (lambda d, s: spiral_scan(d, s, 1e-6, step_m=0.1e-6, step_m_typo=1), "unexpected keyword"),
        (lambda d, s: spiral_scan(d, s, 1e-6, step_m=0.1e-6, exposure_s=-1), "exposure"),
        (lambda d, s: spiral_scan(d, s, 1e-6, step_m=0.1e-6, beam_size_m=0), "beam size"),
        (lambda d, s: spiral_scan(d, s, 1e-6, step_m=0.1e-6, sample_name=""), "name the sample"),
        (lambda d, s: spiral_scan([], s, 1e-6, step_m=0.1e-6), "at least one detector"),
        (lambda d, s: spiral_scan(d, d[0], 1e-6, step_m=0.1e-6), "must be a SampleStage"),
    ],
)
def test_bad_arguments_move_nothing(RE, documents, eiger, stage, plan, match):
    stage.set((0.1e-6, -0.1e-6)).wait(5)
    log = MessageLog(RE)
    with pytest.raises((ValueError, TypeError), match=match):
        RE(plan([eiger], stage))
    assert log.commands == []  # the plan raised before its first message
    assert documents == []
    assert stage.position == pytest.approx((0.1e-6, -0.1e-6))
