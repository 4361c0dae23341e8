"""Fly scans on the simulated twins: every frame accounted for, positions, rate, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bluesky_ptychonn.ioc.hdf5 import DATA_PATH, TIMESTAMP_PATH, UNIQUE_ID_PATH
from bluesky_ptychonn.plans import fly_scan
from bluesky_ptychonn.sim import scans as trajectories


def check_fly_run(documents, n_frames, min_batches=1):
    """Every frame in the documents once, in order; returns (frame numbers, positions, file,
    frame times)."""
    assert documents.of("stop")[0]["exit_status"] == "success"
    (resource,) = documents.of("stream_resource")
    assert resource["data_key"] == "eiger_image" and resource["mimetype"] == "application/x-hdf5"
    datums = documents.of("stream_datum")
    pages = documents.of("event_page")
    assert len(datums) == len(pages) >= min_batches
    stops = [d["indices"]["start"] for d in datums[1:]]
    assert stops == [d["indices"]["stop"] for d in datums[:-1]]  # contiguous, no overlap
    assert datums[0]["indices"]["start"] == 0 and datums[-1]["indices"]["stop"] == n_frames
    for datum, page in zip(datums, pages, strict=True):  # frames and rows pair up
        span = datum["seq_nums"]
        assert page["seq_num"] == list(range(span["start"], span["stop"]))
    frame_numbers = np.concatenate([p["data"]["eiger_frame_number"] for p in pages])
    assert len(frame_numbers) == n_frames
    assert np.all(np.diff(frame_numbers) == 1), "frame numbers are not contiguous"
    positions = np.concatenate(
        [np.stack([p["data"]["stage_beam_y"], p["data"]["stage_beam_x"]], 1) for p in pages]
    )
    path = resource["uri"].removeprefix("file://localhost")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[UNIQUE_ID_PATH][:], frame_numbers)
        assert f[DATA_PATH].shape[0] == n_frames
        times = f[TIMESTAMP_PATH][:]
    return frame_numbers, positions, path, times


def test_fly_scan_accounts_for_every_frame_at_2_khz(RE, documents, eiger, stage, hutch):
    n = 1000
    RE(fly_scan(eiger, stage, "spiral", (2.4e-6, 2.4e-6), n_points=n, flush_period_s=0.1))
    # 0.5 s of frames, documents every 0.1 s: they stream while the scan runs
    frame_numbers, positions, path, times = check_fly_run(documents, n, min_batches=3)
    expected = trajectories.fermat_spiral(1.2e-6, n_points=n)
    np.testing.assert_allclose(positions, expected, atol=1e-12)
    assert np.median(np.diff(times)) == pytest.approx(1 / 2000, rel=0.01)  # the frame clock
    start = documents.start
    assert start["plan_name"] == "fly_scan" and start["frame_rate_hz"] == 2000
    assert start["num_points"] == n
    (descriptor,) = documents.of("descriptor")
    assert descriptor["data_keys"]["eiger_image"]["external"] == "STREAM:"
    assert descriptor["data_keys"]["eiger_image"]["shape"] == [128, 128]
    # the frame at each position is the beamline's pattern there
    beamline = hutch.beamlines["eiger"]
    with h5py.File(path, "r") as f:
        for index in (0, 377, n - 1):
            frame = f[DATA_PATH][index].astype(float)
            here = beamline.patterns(positions[index : index + 1], noise=False)[0]
            assert np.abs(frame - here).sum() / here.sum() < 0.05


@pytest.mark.slow
def test_fly_scan_of_ten_thousand_frames(RE, documents, eiger, stage):
    n = 10_000
    RE(fly_scan(eiger, stage, "spiral", (2.8e-6, 2.8e-6), n_points=n, flush_period_s=0.2))
    _, _, _, times = check_fly_run(documents, n, min_batches=10)
    assert (times[-1] - times[0]) == pytest.approx((n - 1) / 2000, rel=0.02)


def test_fly_raster_follows_the_pattern_and_overlap(RE, documents, eiger, stage, hutch):
    beam = hutch.beamlines["eiger"].beam_size_on_sample_m
    RE(fly_scan(eiger, stage, "raster", (0.8e-6, 0.8e-6), 0.6, frame_rate_hz=500))
    expected = trajectories.scan_positions("raster", (0.8e-6, 0.8e-6), beam, 0.6)
    _, positions, _, times = check_fly_run(documents, len(expected))
    np.testing.assert_allclose(positions, expected, atol=1e-12)
    assert trajectories.overlap_ratio(positions, beam) == pytest.approx(0.6, abs=1e-6)
    assert np.median(np.diff(times)) == pytest.approx(1 / 500, rel=0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"overlap": 1.0}, "overlap ratio must be below 1"),
        ({"frame_rate_hz": 3000}, r"frame rate must lie in \(0, 2000\] Hz"),
        ({"exposure_s": 0.001}, "exposure"),
        ({"pattern": "raster", "n_points": 10}, "n_points applies to spirals"),
        ({"pattern": "zigzag"}, "unknown scan pattern"),
        ({"extent_m": (10e-6, 10e-6)}, "outside the limits"),
    ],
)
def test_bad_fly_arguments_move_nothing(RE, documents, eiger, stage, kwargs, match):
    commands = []
    RE.msg_hook = lambda msg: commands.append(msg.command)
    stage.set((0.2e-6, 0.0)).wait(5)
    with pytest.raises((ValueError, TypeError), match=match):
        RE(fly_scan(eiger, stage, **kwargs))
    assert commands == [] and documents == []
    assert stage.position == pytest.approx((0.2e-6, 0.0))


def test_medipix3_fly_scan_at_100_hz(RE, documents, tmp_path):
    from bluesky_ptychonn.devices import SimMedipix3, SimStage
    from bluesky_ptychonn.ioc import SimHutch
    from bluesky_ptychonn.sim import SimBeamlineConfig

    config = SimBeamlineConfig(field_of_view_m=(2e-6, 2e-6), photons=1e5)
    with SimHutch(config, detectors=("medipix3",)) as hutch:
        stage = SimStage(hutch)
        medipix = SimMedipix3(hutch, file_directory=str(tmp_path))
        RE(fly_scan(medipix, stage, "spiral", (1e-6, 1e-6), n_points=40, flush_period_s=0.1))
    pages = documents.of("event_page")
    numbers = np.concatenate([p["data"]["medipix3_frame_number"] for p in pages])
    assert len(numbers) == 40 and np.all(np.diff(numbers) == 1)
    assert (
        documents.start["frame_rate_hz"] == 100 and documents.start["detector_name"] == "medipix3"
    )
    (resource,) = documents.of("stream_resource")
    with h5py.File(resource["uri"].removeprefix("file://localhost"), "r") as f:
        assert f[DATA_PATH].shape == (40, 128, 128)
        assert np.median(np.diff(f[TIMESTAMP_PATH][:])) == pytest.approx(0.01, rel=0.02)
