"""The gate's early trigger: a physics residual or stated uncertainty that rises over a run
brings the recheck forward while the gate is suspended."""

import numpy as np
import pytest

from bluesky_ptychonn.retrain.gate import Gate, LiveQuality, Mismatch
from bluesky_ptychonn.retrain.options import GateOptions


def residuals(first: float, last: float, n: int = 200, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    level = np.where(np.arange(n) < n // 2, first, last)
    return list(level * rng.uniform(0.8, 1.2, n))


def suspended_gate(**options) -> Gate:
    gate = Gate(GateOptions(tolerance_ssim=0.1, recheck_interval_s=100, **options))
    assert gate.decide(Mismatch(0.95, 0.95, 0.05, 0.01, 10), 0).action == "suspend"
    return gate


def test_a_rising_residual_is_checked_even_while_suspended():
    gate = suspended_gate()
    steady = LiveQuality(residuals=residuals(0.5, 0.5))
    assert gate.before_reconstruction(50, steady).action == "skip"
    assert gate.last_alarm is None
    rising = LiveQuality(residuals=residuals(0.5, 0.9))
    assert gate.before_reconstruction(50, rising) is None  # reconstruct and check now
    assert "physics residual rose" in gate.last_alarm


def test_a_rising_uncertainty_also_triggers_and_short_runs_do_not():
    gate = suspended_gate(quality_window_frames=20)
    rising = LiveQuality(uncertainties_rad=residuals(0.1, 0.3))
    assert gate.before_reconstruction(50, rising) is None
    assert "phase uncertainty" in gate.last_alarm
    short = LiveQuality(residuals=residuals(0.5, 2.0, n=30))  # fewer than two windows
    assert gate.before_reconstruction(50, short).action == "skip"


def test_the_early_trigger_can_be_switched_off_and_is_validated():
    gate = suspended_gate(residual_rise=None)
    assert gate.before_reconstruction(50, LiveQuality(residuals=residuals(0.5, 5.0))) is not None
    with pytest.raises(ValueError):
        GateOptions(residual_rise=0.9).validate()
    with pytest.raises(ValueError):
        GateOptions(quality_window_frames=0).validate()


class RecordingLoop:
    """What the dispatcher needs of a `ContinualLoop`, recording what it is handed."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.handed = {}

    def add_listener(self, listener):
        pass

    def status(self):
        return {}

    def process_scan(self, path, uid, *, live_quality=None, initial_object_path=None):
        self.handed[uid] = live_quality
        return None


def test_the_dispatcher_hands_a_runs_live_readings_to_the_loop(tmp_path):
    from bluesky_ptychonn.retrain.dispatcher import RetrainDispatcher

    loop = RecordingLoop(tmp_path)
    dispatcher = RetrainDispatcher(loop, lambda uid, path: path.write_bytes(b""), start=False)
    dispatcher("start", {"uid": "run-1", "energy_ev": 1e4, "detector_distance_m": 2.0})
    dispatcher("descriptor", {"uid": "d-1", "run_start": "run-1"})
    for i, residual in enumerate([0.4, float("nan"), 0.5]):
        data = {"endpoint_physics_residual_mean": residual, "stage_x": 1e-6 * i,
                "endpoint_phase_uncertainty_mean": 0.1 * (i + 1)}  # fmt: skip
        dispatcher("event", {"descriptor": "d-1", "data": data, "seq_num": i + 1})
    dispatcher("event_page", {"descriptor": "d-1",
                              "data": {"endpoint_physics_residual_mean": [0.6, 0.7]}})  # fmt: skip
    dispatcher("event", {"descriptor": "other", "data": {"endpoint_physics_residual_mean": 9.0}})
    dispatcher("stop", {"run_start": "run-1", "exit_status": "success"})
    dispatcher._process("run-1")
    live = loop.handed["run-1"]
    assert live.residuals == [0.4, 0.5, 0.6, 0.7]  # NaN (no probe yet) and other runs left out
    assert live.uncertainties_rad == pytest.approx([0.1, 0.2, 0.3])
