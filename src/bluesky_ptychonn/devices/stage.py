"""`SampleStage`: the x/y scanner under the beam, as two EPICS motor records.

Positions in documents and plans are beam positions on the sample, (y, x) in metres (the
package's contract). Motors report in their engineering units (EGU, typically mm or um) and
some report the sample's own displacement rather than the beam's position on it. Both are
configuration of the stage, and `SampleStage.metres_to_motor` / `motor_to_metres` are the one
place that converts::

    beam position (m) = sign * motor position (EGU) * metres per EGU

with ``sign = -1`` for motors that report the sample's displacement. The stage's ``beam_y``
and ``beam_x`` signals (hinted) carry the converted readbacks into every event; the motors'
own readbacks (EGU) are read too.

`TrajectoryScan` holds the PVs of the EPICS motor module's ``trajectoryScan`` database, which
a fly scan uses to run a trajectory with one trigger pulse per element (M1 = y, M2 = x).
"""

from __future__ import annotations

import time

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd import FormattedComponent as FCpt
from ophyd.signal import DerivedSignal
from ophyd.status import AndStatus

from ..geometry import METRES_PER_UNIT

EGU_ALIASES = {
    "m": "m", "meter": "m", "metre": "m", "mm": "mm", "millimeter": "mm", "millimetre": "mm",
    "um": "um", "µm": "um", "μm": "um", "micron": "um", "microns": "um", "nm": "nm",
}  # fmt: skip
AXES = ("y", "x")


def canonical_egu(egu) -> str:
    """ "mm", "um", "nm" or "m" for the ways EPICS motor records spell them."""
    if isinstance(egu, np.ndarray):  # a char waveform
        egu = bytes(egu.astype(np.uint8)).split(b"\0")[0].decode("latin-1")
    key = str(egu).strip().lower()
    if key not in EGU_ALIASES:
        raise ValueError(f"unknown length unit {egu!r}; known: {sorted(set(EGU_ALIASES))}")
    return EGU_ALIASES[key]


class BeamPositionSignal(DerivedSignal):
    """Beam position on the sample along one axis, metres, from a motor readback in EGU."""

    def __init__(self, derived_from, *, axis: int, **kwargs):
        self._axis = axis
        super().__init__(derived_from, write_access=False, **kwargs)

    def inverse(self, value):
        return float(self.parent.motor_to_metres(value, axis=self._axis))

    def describe(self):
        description = super().describe()
        key = description[self.name]
        key["units"] = "m"
        key["dtype"] = "number"
        key["precision"] = 12
        key.pop("lower_ctrl_limit", None)
        key.pop("upper_ctrl_limit", None)
        return description


class TrajectoryScan(Device):
    """The motor module's ``trajectoryScan`` PVs for two axes (M1 = y, M2 = x)."""

    num_axes = Cpt(EpicsSignalRO, "NumAxes", kind="omitted")
    num_elements = Cpt(EpicsSignal, "NumElements", kind="omitted")
    num_pulses = Cpt(EpicsSignal, "NumPulses", kind="omitted")
    time_mode = Cpt(EpicsSignal, "TimeMode", kind="omitted", string=True)
    time = Cpt(EpicsSignal, "Time", kind="omitted")
    move_mode = Cpt(EpicsSignal, "MoveMode", kind="omitted", string=True)
    m1_move = Cpt(EpicsSignal, "M1Move", kind="omitted", string=True)
    m2_move = Cpt(EpicsSignal, "M2Move", kind="omitted", string=True)
    m1_traj = Cpt(EpicsSignal, "M1Traj", kind="omitted")
    m2_traj = Cpt(EpicsSignal, "M2Traj", kind="omitted")
    build = Cpt(EpicsSignal, "Build", kind="omitted", string=True)
    build_status = Cpt(EpicsSignalRO, "BuildStatus", kind="omitted", string=True)
    build_message = Cpt(EpicsSignalRO, "BuildMessage", kind="omitted", string=True)
    execute = Cpt(EpicsSignal, "Execute", kind="omitted", string=True)
    exec_state = Cpt(EpicsSignalRO, "ExecState", kind="omitted", string=True)
    exec_status = Cpt(EpicsSignalRO, "ExecStatus", kind="omitted", string=True)
    exec_message = Cpt(EpicsSignalRO, "ExecMessage", kind="omitted", string=True)
    abort = Cpt(EpicsSignal, "Abort", kind="omitted", string=True)
    nactual = Cpt(EpicsSignalRO, "Nactual", kind="omitted")
    m1_actual = Cpt(EpicsSignalRO, "M1Actual", kind="omitted")
    m2_actual = Cpt(EpicsSignalRO, "M2Actual", kind="omitted")

    def load(self, motor_positions: np.ndarray, element_time_s: float, timeout: float = 30.0):
        """Load and build a trajectory of (K, 2) (y, x) motor positions (EGU), one element per
        ``element_time_s``, one pulse per element. Raises RuntimeError with the controller's
        message if the build fails."""
        positions = np.asarray(motor_positions, dtype=np.float64)
        n = len(positions)
        self.num_elements.put(n, wait=True)
        self.num_pulses.put(n, wait=True)
        self.time_mode.put("Per element", wait=True)
        self.time.put(float(element_time_s), wait=True)
        self.move_mode.put("Absolute", wait=True)
        self.m1_move.put("Yes", wait=True)
        self.m2_move.put("Yes", wait=True)
        self.m1_traj.put(positions[:, 0], wait=True)
        self.m2_traj.put(positions[:, 1], wait=True)
        self.build.put("Build", wait=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.build.get(use_monitor=False) != "Done" and time.monotonic() < deadline:
            time.sleep(0.01)
        status = self.build_status.get(use_monitor=False)
        if status != "Success":
            message = self.build_message.get(use_monitor=False)
            raise RuntimeError(f"{self.build.pvname}: trajectory build {status}: {message}")

    def actual(self, count: int) -> np.ndarray:
        """The first ``count`` (y, x) motor positions (EGU) the trajectory passed."""
        m1 = np.asarray(self.m1_actual.get(use_monitor=False), dtype=np.float64)
        m2 = np.asarray(self.m2_actual.get(use_monitor=False), dtype=np.float64)
        if min(len(m1), len(m2)) < count:
            raise RuntimeError(f"{self.m1_actual.pvname} holds {len(m1)} positions, need {count}")
        return np.stack([m1[:count], m2[:count]], axis=1)


class SampleStage(Device):
    """x/y scanner: two EPICS motors, beam positions in metres (see the module docstring).

    Args:
        prefix: PV prefix shared by the motors and the trajectory controller.
        y_suffix, x_suffix: motor record names after the prefix.
        trajectory_suffix: prefix of the ``trajectoryScan`` PVs after ``prefix`` (fly scans).
        egu: the motors' engineering units ("mm", "um", "nm" or "m"); checked against the
            records' EGU field before a plan moves anything.
        sign: +1 if the motors report where the beam is on the sample, -1 if they report the
            sample's own displacement.
        beam_size_m: beam size on the sample (half-power diameter, m) at the current focus;
            the overlap of scans is computed from it. 0 means unknown.
        sample_name: the mounted sample, recorded in every run.
    """

    y = FCpt(EpicsMotor, "{prefix}{_y_suffix}", kind="normal")
    x = FCpt(EpicsMotor, "{prefix}{_x_suffix}", kind="normal")
    beam_y = Cpt(BeamPositionSignal, derived_from="_y_readback", axis=0, kind="hinted")
    beam_x = Cpt(BeamPositionSignal, derived_from="_x_readback", axis=1, kind="hinted")
    trajectory = FCpt(TrajectoryScan, "{prefix}{_trajectory_suffix}", kind="omitted", lazy=True)
    motor_egu = Cpt(Signal, value="um", kind="config")
    motor_sign = Cpt(Signal, value=1, kind="config")
    beam_size = Cpt(Signal, value=0.0, kind="config")
    sample_name = Cpt(Signal, value="", kind="config")

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        y_suffix: str = "Y",
        x_suffix: str = "X",
        trajectory_suffix: str = "Traj:",
        egu: str = "um",
        sign: int = 1,
        beam_size_m: float = 0.0,
        sample_name: str = "",
        **kwargs,
    ):
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign!r}")
        self._y_suffix, self._x_suffix = y_suffix, x_suffix
        self._trajectory_suffix = trajectory_suffix
        self._egu = canonical_egu(egu)
        self._sign = sign
        super().__init__(prefix, name=name, **kwargs)
        self.motor_egu.put(self._egu)
        self.motor_sign.put(sign)
        self.beam_size.put(float(beam_size_m))
        self.sample_name.put(sample_name)
        for motor in (self.y, self.x):  # the hints are the beam positions in metres
            motor.user_readback.kind = Kind.normal

    @property
    def _y_readback(self):
        return self.y.user_readback

    @property
    def _x_readback(self):
        return self.x.user_readback

    @property
    def metres_per_unit(self) -> float:
        return METRES_PER_UNIT[self._egu]

    @property
    def motors(self) -> tuple[EpicsMotor, EpicsMotor]:
        return (self.y, self.x)

    # ---- the one place that converts -------------------------------------------------------
    def motor_to_metres(self, motor_units, axis: int | None = None):
        """Beam position(s) in metres from motor position(s) in EGU (either axis: same scale)."""
        return self._sign * self.metres_per_unit * np.asarray(motor_units, dtype=np.float64)

    def metres_to_motor(self, positions_m, axis: int | None = None):
        """Motor position(s) in EGU that put the beam at position(s) in metres."""
        return np.asarray(positions_m, dtype=np.float64) / (self._sign * self.metres_per_unit)

    # ---- limits and checks -----------------------------------------------------------------
    def check_units(self) -> None:
        """Raise ValueError if a motor record's EGU is not the configured unit."""
        for motor in self.motors:
            reported = motor.motor_egu.get()
            try:
                same = canonical_egu(reported) == self._egu
            except ValueError:
                same = False
            if not same:
                raise ValueError(
                    f"{motor.motor_egu.pvname} reports {reported!r} but the stage {self.name!r} "
                    f"is configured for {self._egu!r}: positions would be wrong by a unit factor"
                )

    def limits_m(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((y_min, y_max), (x_min, x_max)) of the beam position in metres, from the motors'
        soft limits (infinite where a motor has none)."""
        result = []
        for motor in self.motors:
            low, high = motor.limits
            if not low < high:  # EPICS: equal limits mean no limits
                result.append((-np.inf, np.inf))
                continue
            ends = sorted(float(v) for v in self.motor_to_metres([low, high]))
            result.append((ends[0], ends[1]))
        return (result[0], result[1])

    def check_positions(self, positions_m: np.ndarray) -> None:
        """Raise ValueError, naming the first offending point, if any (y, x) position (m) lies
        outside the motors' limits; also checks the motors' units. Moves nothing."""
        self.check_units()
        positions = np.asarray(positions_m, dtype=np.float64)
        for axis, (low, high) in enumerate(self.limits_m()):
            values = positions[:, axis]
            bad = np.flatnonzero((values < low) | (values > high))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"scan point {i} puts the beam at {AXES[axis]} = {values[i]:.4g} m, outside "
                    f"the limits [{low:.4g}, {high:.4g}] m of {self.motors[axis].name} "
                    f"({bad.size} of {len(values)} points are outside)"
                )

    # ---- motion ---------------------------------------------------------------------------
    def set(self, position_m) -> AndStatus:
        """Move both motors so that the beam sits at (y, x) metres; returns their statuses."""
        y_m, x_m = (float(v) for v in position_m)
        target = self.metres_to_motor([y_m, x_m])
        return AndStatus(self.y.set(float(target[0])), self.x.set(float(target[1])))

    @property
    def position(self) -> tuple[float, float]:
        """Current beam position (y, x) in metres."""
        return (self.beam_y.get(), self.beam_x.get())

    def stop(self, *, success: bool = False) -> None:
        for motor in self.motors:
            motor.stop(success=success)
