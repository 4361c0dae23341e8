"""The InferenceEndpoint device reads the mean stated uncertainty and physics residual of the
latest frames from the results it receives (NaN for a model without them)."""

import math

import numpy as np
import pytest

from bluesky_ptychonn.devices.endpoint import QUALITY_FRAMES, InferenceEndpoint
from bluesky_ptychonn.stream.wire import Message


def results(n: int, sigma: float | None, residual: float | None, first: int = 0) -> Message:
    arrays = {"phase": np.zeros((n, 8, 8), np.float32), "amplitude": np.ones((n, 8, 8), np.float32)}
    extra = {}
    if sigma is not None:
        arrays["phase_uncertainty"] = np.full((n, 8, 8), sigma, np.float32)
    if residual is not None:
        extra["physics_residual"] = [residual] * n
    return Message("results", arrays, frame_ids=list(range(first, first + n)), extra=extra)


def test_readings_average_the_latest_frames():
    device = InferenceEndpoint("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")
    device._on_result(results(4, None, None))
    assert math.isnan(device.phase_uncertainty_mean.get())
    assert math.isnan(device.physics_residual_mean.get())
    device._on_result(results(QUALITY_FRAMES, 0.2, 0.3))
    device._on_result(results(QUALITY_FRAMES // 2, 0.4, 0.9, first=QUALITY_FRAMES))
    # the window holds the last QUALITY_FRAMES frames: half at 0.2 / 0.3, half at 0.4 / 0.9
    assert device.phase_uncertainty_mean.get() == pytest.approx(0.3, abs=1e-6)
    assert device.physics_residual_mean.get() == pytest.approx(0.6, abs=1e-9)
    reading = device.read()
    assert "endpoint_phase_uncertainty_mean" in reading
    assert "endpoint_physics_residual_mean" in reading
