"""PtychoFlyer used directly: trajectory build errors, order of operations, abort."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bluesky_ptychonn.devices import FlyTrajectory, PtychoFlyer


def test_trajectory_outside_the_limits_fails_to_build_naming_the_pv(eiger, stage):
    flyer = PtychoFlyer(eiger, stage)
    positions = np.array([[0.0, 0.0], [0.0, 5e-6]])
    with pytest.raises(RuntimeError, match=r"STAGE:Traj:Build: trajectory build Failure: .*limits"):
        flyer.prepare(FlyTrajectory(positions, 5e-4, 5e-4, "bad"))


def test_kickoff_needs_prepare(eiger, stage):
    with pytest.raises(RuntimeError, match="kickoff before prepare"):
        PtychoFlyer(eiger, stage).kickoff()


def test_stop_aborts_a_running_fly_scan(hutch, eiger, stage):
    flyer = PtychoFlyer(eiger, stage)
    positions = np.zeros((400, 2))  # 2 s at 200 Hz
    flyer.prepare(FlyTrajectory(positions, 5e-3, 5e-4, "aborted"))
    flyer.kickoff().wait(60)
    completion = flyer.complete()
    time.sleep(0.2)
    flyer.stop()
    with pytest.raises(Exception, match=r"ExecStatus is Abort"):
        completion.wait(10)
    captured = eiger.hdf5.num_captured.get(use_monitor=False)
    assert 0 < captured < 400
    deadline = time.monotonic() + 5
    while hutch.detectors["eiger"].acquiring and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not hutch.detectors["eiger"].acquiring
    assert eiger.cam.acquire.get(use_monitor=False) == 0
