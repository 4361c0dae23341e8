"""SampleStage: motor units and sign converted in one place, limits, unit check, motion."""

from __future__ import annotations

import numpy as np
import pytest

from bluesky_ptychonn.devices import SimEiger, SimStage
from bluesky_ptychonn.ioc import SimHutch


def test_stage_reads_beam_positions_in_metres_and_motors_in_their_units(stage):
    stage.set((0.3e-6, -0.2e-6)).wait(5)
    reading = stage.read()
    assert reading["stage_beam_y"]["value"] == pytest.approx(0.3e-6)
    assert reading["stage_beam_x"]["value"] == pytest.approx(-0.2e-6)
    assert reading["stage_y"]["value"] == pytest.approx(0.3)  # um
    assert stage.describe()["stage_beam_x"]["units"] == "m"
    assert set(stage.hints["fields"]) == {"stage_beam_y", "stage_beam_x"}
    config = stage.read_configuration()
    assert config["stage_motor_egu"]["value"] == "um" and config["stage_motor_sign"]["value"] == 1


def test_sign_and_units_convert_in_one_place(small_config):
    """Motors in mm that report the sample's displacement: the beam goes the other way."""
    with SimHutch(small_config, detectors=("eiger",), motor_egu="mm", motor_sign=-1) as hutch:
        stage = SimStage(hutch)
        stage.set((0.5e-6, 0.25e-6)).wait(5)
        assert stage.y.position == pytest.approx(-0.5e-3)
        assert stage.x.position == pytest.approx(-0.25e-3)
        assert stage.position == pytest.approx((0.5e-6, 0.25e-6))
        np.testing.assert_allclose(hutch.beam_position_m(), [0.5e-6, 0.25e-6])
        (y_low, y_high), _ = stage.limits_m()
        assert y_low == pytest.approx(-1.5e-6) and y_high == pytest.approx(1.5e-6)


def test_frames_follow_the_configured_sign(small_config):
    """The frame at the position a stage reports is the sample's pattern there, and a stage
    configured with the wrong sign reports the mirror position instead."""
    with SimHutch(small_config, detectors=("eiger",), motor_sign=-1) as hutch:
        right, wrong = SimStage(hutch), SimStage(hutch, name="wrong", sign=1)
        eiger = SimEiger(hutch)
        beamline = hutch.beamlines["eiger"]
        right.set((0.4e-6, -0.7e-6)).wait(5)
        eiger.stage()
        try:
            eiger.trigger().wait(5)
        finally:
            eiger.unstage()
        frame = eiger.image.get().astype(float)

        def misfit(position):
            expected = beamline.patterns(np.array([position]), noise=False)[0]
            return np.abs(frame - expected).sum() / expected.sum()

        assert misfit(right.position) < 0.05
        assert wrong.position == pytest.approx((-0.4e-6, 0.7e-6))
        assert misfit(wrong.position) > 3 * misfit(right.position)


def test_positions_outside_the_limits_are_refused_before_moving(stage):
    stage.set((0.0, 0.0)).wait(5)
    positions = np.array([[0.0, 0.0], [0.5e-6, 2.0e-6], [0.0, 3e-6]])
    with pytest.raises(
        ValueError, match=r"scan point 1 .* x = 2e-06 m, outside the limits"
    ) as info:
        stage.check_positions(positions)
    assert "2 of 3 points" in str(info.value)
    assert stage.position == (0.0, 0.0)


def test_a_unit_mismatch_names_the_egu_pv(hutch):
    stage = SimStage(hutch, name="mm_stage", egu="mm")
    with pytest.raises(ValueError, match=r"STAGE:Y\.EGU reports 'um' .* configured for 'mm'"):
        stage.check_positions(np.zeros((1, 2)))


def test_motion_takes_the_time_the_velocity_sets(hutch, stage):
    import time

    stage.set((0.0, 0.0)).wait(5)
    velocity_m_s = hutch.motor_x.db.value(hutch.motor_x.pv + ".VELO") * 1e-6
    start = time.perf_counter()
    stage.set((0.0, 1.0e-6)).wait(5)
    elapsed = time.perf_counter() - start
    assert elapsed >= 1.0e-6 / velocity_m_s  # 5 ms at 200 um/s, plus the acceleration time
    assert stage.position[1] == pytest.approx(1.0e-6)
