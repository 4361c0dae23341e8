"""The simulated hardware of a nanoprobe hutch: motors, a trajectory controller, detectors.

`SimHutch` holds what an EPICS IOC would drive, behind the PVs a beamline's IOCs serve:

* two **motor records** (``{prefix}STAGE:Y``, ``{prefix}STAGE:X``; fields VAL, RBV, DMOV, MOVN,
  VELO, ACCL, EGU, HLM, LLM, ...) that move at their velocity after an acceleration time;
* a **trajectory controller** (``{prefix}STAGE:Traj:``) with the PVs of the EPICS motor
  module's ``trajectoryScan`` database (M1Traj, M2Traj, NumElements, Time, Build, Execute,
  ExecState, Nactual, M1Actual, ...; M1 is the y motor, M2 the x motor). Executing a
  trajectory moves the motors through its elements, one per ``Time`` (per-element mode), and
  sends one trigger pulse per element to the detectors;
* **areaDetector detectors** (``{prefix}EIG:`` for the Eiger2 X 500K with ADEiger's cam PVs,
  ``{prefix}MPX:`` for the Medipix3 with ADMerlin's), each with a cam (``cam1:``), an ROI
  plugin (``ROI1:``; the crop and binning of the detector model, fixed), an image plugin
  (``image1:``, the last frame as a flattened int16 waveform) and an HDF5 plugin (``HDF1:``,
  "Stream" mode, `hdf5.StreamFile` layout). Internal trigger modes take frames at the
  acquire period; external modes (Eiger "External Series", Medipix "Trigger start rising")
  take one frame per trajectory pulse.

Every frame comes from the `SimBeamline` of the detector, at the beam position given by the
motors at mid-exposure: ``beam (y, x) m = motor_sign * motor (y, x) * metres per EGU``. The
sample is shared by all detectors. Noise is seeded by (beamline seed, frame UniqueId).

Timing: the hardware works in real time on the wall clock. Frames of an internal series are
computed just before they are due and published when their exposure ends; if the simulator
is slower than the frame rate the series runs late, as reported by the frame timestamps.
An external series is armed first: the detector simulates every frame of the loaded
trajectory before it reports itself armed (Eiger ``Armed``, DetectorState "Waiting"), so
that it keeps up with kHz trigger pulses afterwards. A real Eiger arms in well under a
second; the simulated one takes as long as simulating the frames.

The hardware talks only through a `pvs.PVDatabase`, so the same objects run in process
(`softpv.SoftPVDatabase`, for the in-process twins) and behind the caproto server.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry import METRES_PER_UNIT
from ..sim import SimBeamline, SimBeamlineConfig
from .hdf5 import StreamFile
from .pvs import PVDatabase, PVSpec, add_ro, add_rw
from .softpv import SoftPVDatabase

log = logging.getLogger(__name__)

"""Engineering units a stage may report, in metres per unit."""

DETECTOR_STATES = (
    "Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error", "Waiting",
    "Initializing", "Disconnected", "Aborted",
)  # fmt: skip
IMAGE_MODES = ("Single", "Multiple", "Continuous")
EIGER_TRIGGER_MODES = ("Internal Series", "Internal Enable", "External Series", "External Enable")
MERLIN_TRIGGER_MODES = (
    "Internal", "Trigger Enable", "Trigger start rising", "Trigger start falling",
    "Trigger both rising", "LVDS Trig Enable", "LVDS Trig start rising",
    "LVDS Trig start falling", "LVDS Trig both rising", "Soft Trigger",
)  # fmt: skip
TRIGGER_MODES = {"eiger": EIGER_TRIGGER_MODES, "medipix3": MERLIN_TRIGGER_MODES}
INTERNAL_TRIGGER = {"eiger": "Internal Series", "medipix3": "Internal"}
EXTERNAL_TRIGGER = {"eiger": "External Series", "medipix3": "Trigger start rising"}
DETECTOR_PREFIXES = {"eiger": "EIG:", "medipix3": "MPX:"}
MODEL_NAMES = {
    "eiger": ("DECTRIS", "EIGER2 X 500K"),
    "medipix3": ("ASI / Quantum Detectors", "Medipix3 quad (Merlin readout)"),
}
NO_YES = ("No", "Yes")
DISABLE_ENABLE = ("Disable", "Enable")
MAX_TRAJECTORY_ELEMENTS = 1_000_000
TICK_S = 0.01  # how often moving hardware posts its state
COMPUTE_CHUNK = 256  # frames simulated per call while arming

_PREFIX_COUNTER = itertools.count(1)


def _now() -> float:
    return time.time()


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.time()
    if delay > 0:
        time.sleep(delay)


class MotorRecord:
    """An EPICS motor record: VAL starts a move at VELO (EGU/s) after ACCL seconds.

    Args:
        db: the PV database.
        pv: record name (``{pv}.VAL``, ``{pv}.RBV``, ...; ``{pv}`` alone is VAL).
        egu: engineering units of positions.
        limits: (low, high) soft limits in EGU (the record's LLM, HLM).
        velocity: EGU per second.
        acceleration_s: time to reach the velocity (the record's ACCL), added to every move.
    """

    def __init__(
        self,
        db: PVDatabase,
        pv: str,
        *,
        egu: str,
        limits: tuple[float, float],
        velocity: float,
        acceleration_s: float,
        position: float = 0.0,
        precision: int = 5,
        description: str = "",
    ):
        self.db, self.pv = db, pv
        self._lock = threading.Lock()
        self._start = self._target = float(position)
        self._t0 = self._t1 = 0.0
        self._generation = 0
        self._moving = False

        def f(field: str) -> str:
            return f"{pv}.{field}"

        self._f = f
        position_spec = {"units": egu, "precision": precision}
        db.add(PVSpec(f("VAL"), "float", position, limits=limits, **position_spec), self._on_val)
        db.alias(pv, f("VAL"))
        add_ro(db, f("RBV"), "float", position, **position_spec)
        add_ro(db, f("DRBV"), "float", position, **position_spec)
        add_ro(db, f("DMOV"), "int", 1)
        add_ro(db, f("MOVN"), "int", 0)
        add_ro(db, f("HLS"), "int", 0)
        add_ro(db, f("LLS"), "int", 0)
        db.add(PVSpec(f("TDIR"), "int", 1))
        db.add(PVSpec(f("VELO"), "float", velocity, units=f"{egu}/s", precision=precision))
        db.add(PVSpec(f("ACCL"), "float", acceleration_s, units="s", precision=4))
        db.add(PVSpec(f("EGU"), "string", egu, max_length=16))
        db.add(PVSpec(f("HLM"), "float", limits[1], **position_spec), self._on_limit(1))
        db.add(PVSpec(f("LLM"), "float", limits[0], **position_spec), self._on_limit(0))
        db.add(PVSpec(f("OFF"), "float", 0.0, **position_spec))
        db.add(PVSpec(f("DIR"), "enum", 0, enum_strs=("Pos", "Neg")))
        db.add(PVSpec(f("FOFF"), "enum", 0, enum_strs=("Variable", "Frozen")))
        db.add(PVSpec(f("SET"), "enum", 0, enum_strs=("Use", "Set")))
        db.add(PVSpec(f("STOP"), "int", 0), self._on_stop)
        db.add(PVSpec(f("HOMF"), "int", 0), self._on_home)
        db.add(PVSpec(f("HOMR"), "int", 0), self._on_home)
        db.add(PVSpec(f("SPMG"), "enum", 3, enum_strs=("Stop", "Pause", "Move", "Go")))
        db.add(PVSpec(f("PREC"), "int", precision))
        db.add(PVSpec(f("DESC"), "string", description, max_length=40))

    # ---- kinematics -------------------------------------------------------------------------
    def position_at(self, t: float | np.ndarray | None = None) -> float | np.ndarray:
        """Position (EGU) at wall-clock time(s) ``t`` (default: now), on the current move."""
        t = _now() if t is None else t
        with self._lock:
            start, target, t0, t1 = self._start, self._target, self._t0, self._t1
        if t1 <= t0:
            return np.full(np.shape(t), target) if np.ndim(t) else target
        fraction = np.clip((np.asarray(t) - t0) / (t1 - t0), 0.0, 1.0)
        value = start + (target - start) * fraction
        return value if np.ndim(t) else float(value)

    @property
    def limits(self) -> tuple[float, float]:
        return (float(self.db.value(self._f("LLM"))), float(self.db.value(self._f("HLM"))))

    def check_within_limits(self, value: float) -> None:
        low, high = self.limits
        if low < high and not low <= value <= high:
            raise ValueError(
                f"{self.pv}: {value} {self.egu} is outside the soft limits [{low}, {high}]"
            )

    @property
    def egu(self) -> str:
        return self.db.value(self._f("EGU"))

    def _on_val(self, value: float) -> float:
        if self.db.value(self._f("SET")) == 1:  # "Set" mode: redefine the position, no motion
            self.hold(value)
            return value
        self.check_within_limits(value)
        self.move(value)
        return value

    def move(self, target: float) -> float:
        """Start a move to ``target``; returns the time (s, epoch) it will end."""
        now = _now()
        start = self.position_at(now)
        velocity = abs(float(self.db.value(self._f("VELO")))) or 1.0
        distance = abs(target - start)
        duration = distance / velocity + (float(self.db.value(self._f("ACCL"))) if distance else 0)
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._start, self._target, self._t0, self._t1 = (
                start,
                float(target),
                now,
                now + duration,
            )
        self.db.post(self._f("TDIR"), int(target >= start))
        self.db.post(self._f("DMOV"), 0)
        if distance:
            self.db.post(self._f("MOVN"), 1)
        threading.Thread(target=self._run_move, args=(generation,), daemon=True).start()
        return now + duration

    def _run_move(self, generation: int) -> None:
        while True:
            with self._lock:
                if generation != self._generation:
                    return  # superseded by a newer move, which reports its own completion
                t1 = self._t1
            now = _now()
            if now >= t1:
                break
            self._post_position(self.position_at(now))
            time.sleep(min(TICK_S, t1 - now))
        with self._lock:
            if generation != self._generation:
                return
        self._post_position(self.position_at())
        self.db.post(self._f("MOVN"), 0)
        self.db.post(self._f("DMOV"), 1)

    def _post_position(self, value: float) -> None:
        self.db.post(self._f("RBV"), value)
        self.db.post(self._f("DRBV"), value)

    def hold(self, value: float) -> None:
        """Put the axis at ``value`` now (a trajectory's servo loop, or "Set" mode)."""
        with self._lock:
            self._generation += 1
            self._start = self._target = float(value)
            self._t0 = self._t1 = 0.0
        self._post_position(value)

    def set_moving(self, moving: bool) -> None:
        self.db.post(self._f("MOVN"), int(moving))
        self.db.post(self._f("DMOV"), int(not moving))

    def stop(self) -> None:
        here = self.position_at()
        self.hold(here)
        self.db.post(self._f("VAL"), here)
        self.set_moving(False)

    def _on_stop(self, value: int) -> int:
        if value:
            self.stop()
        return 0

    def _on_home(self, value: int) -> int:
        if value:
            self.move(0.0)
        return 0

    def _on_limit(self, which: int):
        def handle(value: float) -> float:
            limits = list(self.limits)
            limits[which] = float(value)
            self.db.post(self._f("VAL"), self.db.value(self._f("VAL")), limits=tuple(limits))
            return value

        return handle


class TrajectoryController:
    """The motor module's ``trajectoryScan`` PVs driving two motors (M1 = y, M2 = x).

    Supported: absolute move mode, per-element time, one pulse per element. ``Build`` checks
    the trajectory against the motors' limits (BuildStatus, BuildMessage); ``Execute`` moves
    to the first element, then runs the trajectory in real time, sending a pulse to the
    detectors at each element and recording the positions it passed (``Nactual``,
    ``M1Actual``, ``M2Actual``, published as it goes).
    """

    def __init__(self, db: PVDatabase, prefix: str, motors: tuple[MotorRecord, MotorRecord], hutch):
        self.db, self.prefix, self.motors, self.hutch = db, prefix, motors, hutch
        self._built: tuple[np.ndarray, float] | None = None
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        p = prefix
        n = MAX_TRAJECTORY_ELEMENTS
        egu = motors[0].egu
        add_ro(db, p + "NumAxes", "int", 2)
        db.add(PVSpec(p + "NumElements", "int", 0))
        db.add(PVSpec(p + "NumPulses", "int", 0))
        db.add(PVSpec(p + "TimeMode", "enum", 1, enum_strs=("Total", "Per element")))
        db.add(PVSpec(p + "Time", "float", 0.0, units="s", precision=6))
        db.add(PVSpec(p + "MoveMode", "enum", 1, enum_strs=("Relative", "Absolute", "Hybrid")))
        for axis in ("M1", "M2"):
            db.add(PVSpec(p + f"{axis}Move", "enum", 1, enum_strs=NO_YES))
            db.add(PVSpec(p + f"{axis}Traj", "float_array", [0.0], units=egu, max_length=n))
            add_ro(db, p + f"{axis}Actual", "float_array", [0.0], units=egu, max_length=n)
        db.add(PVSpec(p + "Build", "enum", 0, enum_strs=("Done", "Build")), self._on_build)
        add_ro(db, p + "BuildState", "enum", 0, enum_strs=("Done", "Busy"))
        add_ro(db, p + "BuildStatus", "enum", 0, enum_strs=("Undefined", "Success", "Failure"))
        add_ro(db, p + "BuildMessage", "string", "", max_length=256)
        db.add(PVSpec(p + "Execute", "enum", 0, enum_strs=("Done", "Execute")), self._on_execute)
        add_ro(
            db, p + "ExecState", "enum", 0, enum_strs=("Done", "Move start", "Executing", "Flyback")
        )
        add_ro(
            db, p + "ExecStatus", "enum", 0,
            enum_strs=("Undefined", "Success", "Failure", "Abort", "Timeout"),
        )  # fmt: skip
        add_ro(db, p + "ExecMessage", "string", "", max_length=256)
        db.add(PVSpec(p + "Abort", "enum", 0, enum_strs=("Done", "Abort")), self._on_abort)
        add_ro(db, p + "Nactual", "int", 0)

    @property
    def built_positions(self) -> np.ndarray | None:
        """(K, 2) (M1 = y, M2 = x) positions in EGU of the trajectory built last, or None."""
        return None if self._built is None else self._built[0]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _post_build(self, status: int, message: str) -> None:
        self.db.post(self.prefix + "BuildStatus", status)
        self.db.post(self.prefix + "BuildMessage", message)
        self.db.post(self.prefix + "BuildState", 0)

    def _on_build(self, value: int) -> int:
        if not value:
            return 0
        p, db = self.prefix, self.db
        db.post(p + "BuildState", 1)
        self._built = None
        try:
            n = int(db.value(p + "NumElements"))
            if n < 1:
                raise ValueError("NumElements must be at least 1")
            if int(db.value(p + "NumPulses")) not in (0, n):
                raise ValueError(
                    "only one pulse per element is supported (NumPulses = NumElements)"
                )
            if db.value(p + "MoveMode") != 1:
                raise ValueError("only the Absolute move mode is supported")
            seconds = float(db.value(p + "Time"))
            dt = seconds if db.value(p + "TimeMode") == 1 else seconds / n
            if not dt > 0:
                raise ValueError("Time must be positive")
            columns = []
            for axis, motor in zip(("M1", "M2"), self.motors, strict=True):
                if db.value(p + f"{axis}Move") == 1:
                    traj = np.asarray(db.value(p + f"{axis}Traj"), dtype=np.float64)
                    if traj.size < n:
                        raise ValueError(
                            f"{axis}Traj holds {traj.size} elements, NumElements is {n}"
                        )
                    traj = traj[:n]
                    bad = np.flatnonzero(~np.isfinite(traj))
                    if bad.size:
                        raise ValueError(f"{axis}Traj element {bad[0]} is not finite")
                    for value in (traj.min(), traj.max()):
                        motor.check_within_limits(float(value))
                else:
                    traj = np.full(n, motor.position_at())
                columns.append(traj)
        except ValueError as error:
            self._post_build(2, str(error))
            return 0
        self._built = (np.stack(columns, axis=1), dt)
        self._post_build(1, f"built {n} elements, {dt:.6g} s each")
        return 0

    def _on_execute(self, value: int) -> int:
        if not value:
            return 0
        if self.running:
            raise ValueError(f"{self.prefix}Execute: a trajectory is already executing")
        if self._built is None:
            self.db.post(self.prefix + "ExecStatus", 2)
            self.db.post(self.prefix + "ExecMessage", "no trajectory built")
            return 0
        self._abort.clear()
        self._thread = threading.Thread(target=self._execute, daemon=True)
        self._thread.start()
        return 1

    def _on_abort(self, value: int) -> int:
        if value:
            self._abort.set()
        return 0

    def _execute(self) -> None:
        p, db = self.prefix, self.db
        positions, dt = self._built
        n = len(positions)
        actual = np.empty_like(positions)
        status, message = 1, f"executed {n} elements"
        try:
            db.post(p + "ExecStatus", 0)
            db.post(p + "ExecMessage", "")
            db.post(p + "Nactual", 0)
            db.post(p + "ExecState", 1)
            end = max(m.move(float(v)) for m, v in zip(self.motors, positions[0], strict=True))
            while time.time() < end and not self._abort.is_set():
                time.sleep(min(TICK_S, max(0.0, end - time.time())))
            for motor in self.motors:
                motor.set_moving(True)
            db.post(p + "ExecState", 2)
            t0 = time.time() + TICK_S
            done, last_post = 0, 0.0
            while done < n:
                if self._abort.is_set():
                    status, message = 3, f"aborted after {done} of {n} elements"
                    break
                now = time.time()
                due = min(n, int(math.floor((now - t0) / dt)) + 1) if now >= t0 else 0
                if due > done:
                    index = np.arange(done, due)
                    for motor, value in zip(self.motors, positions[due - 1], strict=True):
                        motor.hold(float(value))
                    actual[done:due] = positions[done:due]
                    self.hutch.deliver_pulses(index, t0 + index * dt, positions[done:due])
                    done = due
                if now - last_post >= 0.05 or done == n:
                    self._post_actual(actual, done)
                    last_post = now
                if done < n:
                    _sleep_until(min(t0 + done * dt, time.time() + TICK_S))
            self._post_actual(actual, done)
        except Exception as error:  # report a failure through the PVs, as an IOC would
            log.exception("trajectory execution failed")
            status, message = 2, f"{type(error).__name__}: {error}"
        finally:
            for motor in self.motors:
                motor.set_moving(False)
            db.post(p + "ExecStatus", status)
            db.post(p + "ExecMessage", message)
            db.post(p + "ExecState", 0)
            db.post(p + "Execute", 0)

    def _post_actual(self, actual: np.ndarray, count: int) -> None:
        p = self.prefix
        self.db.post(p + "M1Actual", actual[:count, 0] if count else [0.0])
        self.db.post(p + "M2Actual", actual[:count, 1] if count else [0.0])
        self.db.post(p + "Nactual", count)

    def abort(self) -> None:
        self._abort.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class AreaDetector:
    """An areaDetector IOC for one detector: cam, ROI, image and HDF5 plugins (see module doc).

    Args:
        db: the PV database.
        prefix: detector prefix, e.g. ``"PTY:EIG:"``.
        hutch: the `SimHutch` (beam position, trajectory pulses).
        beamline: the `SimBeamline` that makes this detector's frames.
        flavour: "eiger" (ADEiger cam PVs) or "medipix3" (ADMerlin cam PVs).
    """

    def __init__(self, db: PVDatabase, prefix: str, hutch, beamline: SimBeamline, flavour: str):
        if flavour not in TRIGGER_MODES:
            raise ValueError(
                f"unknown detector flavour {flavour!r}; known: {sorted(TRIGGER_MODES)}"
            )
        self.db = db
        self.prefix = prefix
        self.hutch = hutch
        self.beamline = beamline
        self.flavour = flavour
        self.model = beamline.detector
        self.cam = prefix + "cam1:"
        self.roi = prefix + "ROI1:"
        self.image = prefix + "image1:"
        self.hdf = prefix + "HDF1:"
        self._lock = threading.Lock()
        self._beamline_lock = threading.Lock()
        self._file_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._pulses: queue.Queue = queue.Queue()
        self._next_unique_id = 1
        self._file: StreamFile | None = None
        self._frame_listeners: list = []
        self._add_cam_pvs()
        self._add_plugin_pvs()

    # ---- PVs -----------------------------------------------------------------------------------
    def _add_cam_pvs(self) -> None:
        db, c, model, bl = self.db, self.cam, self.model, self.beamline
        frame_time = 1.0 / model.max_frame_rate_hz
        rows, cols = model.readout_shape

        def positive(name: str):
            def check(value: float) -> float:
                if not value > 0:
                    raise ValueError(f"{name} must be positive, got {value}")
                return value

            return check

        add_rw(db, c + "Acquire", "enum", 0, self._on_acquire, enum_strs=("Done", "Acquire"))
        seconds = {"units": "s", "precision": 6}
        add_rw(db, c + "AcquireTime", "float", frame_time, positive("AcquireTime"), **seconds)
        add_rw(db, c + "AcquirePeriod", "float", frame_time, positive("AcquirePeriod"), **seconds)
        add_rw(db, c + "NumImages", "int", 1, positive("NumImages"))
        add_ro(db, c + "NumImagesCounter_RBV", "int", 0)
        add_rw(db, c + "ImageMode", "enum", 1, enum_strs=IMAGE_MODES)
        add_rw(db, c + "TriggerMode", "enum", 0, enum_strs=TRIGGER_MODES[self.flavour])
        add_rw(db, c + "ArrayCounter", "int", 0)
        add_ro(db, c + "DetectorState_RBV", "enum", 0, enum_strs=DETECTOR_STATES)
        add_ro(db, c + "StatusMessage_RBV", "string", "Idle", max_length=256)
        add_ro(db, c + "MaxSizeX_RBV", "int", model.shape_px[1])
        add_ro(db, c + "MaxSizeY_RBV", "int", model.shape_px[0])
        add_ro(db, c + "ArraySizeX_RBV", "int", model.shape_px[1])
        add_ro(db, c + "ArraySizeY_RBV", "int", model.shape_px[0])
        manufacturer, name = MODEL_NAMES[self.flavour]
        add_ro(db, c + "Manufacturer_RBV", "string", manufacturer, max_length=64)
        add_ro(db, c + "Model_RBV", "string", name, max_length=64)
        energy = bl.energy_ev
        if self.flavour == "eiger":
            add_rw(db, c + "NumTriggers", "int", 1, positive("NumTriggers"))
            ev = {"units": "eV", "precision": 1}
            add_rw(db, c + "PhotonEnergy", "float", energy, positive("PhotonEnergy"), **ev)
            add_rw(
                db, c + "ThresholdEnergy", "float", energy / 2, positive("ThresholdEnergy"), **ev
            )
            add_rw(db, c + "DetDist", "float", bl.distance_m, units="m", precision=4)
            centre = model.centre_px
            add_rw(db, c + "BeamX", "float", float(centre[1]), units="pixels", precision=1)
            add_rw(db, c + "BeamY", "float", float(centre[0]), units="pixels", precision=1)
            add_rw(
                db, c + "Wavelength", "float", 12398.419843 / energy, units="Angstrom", precision=5
            )
            add_ro(db, c + "XPixelSize_RBV", "float", model.pixel_size_m, units="m", precision=6)
            add_ro(db, c + "YPixelSize_RBV", "float", model.pixel_size_m, units="m", precision=6)
            add_ro(db, c + "CountCutoff_RBV", "int", model.saturation_counts)
            add_ro(db, c + "Armed", "enum", 0, enum_strs=("Unarmed", "Armed"))
        else:
            kev = {"units": "keV", "precision": 3}
            add_rw(
                db, c + "OperatingEnergy", "float", energy / 1e3, positive("OperatingEnergy"), **kev
            )
            add_rw(db, c + "ThresholdEnergy0", "float", energy / 2e3, **kev)
            add_rw(db, c + "CounterDepth", "int", 12, units="bits")

    def _add_plugin_pvs(self) -> None:
        db, model = self.db, self.model
        rows, cols = model.readout_shape
        top, left = model.crop_origin_px
        for name, value in (
            ("MinX", left), ("MinY", top), ("SizeX", model.crop_px), ("SizeY", model.crop_px),
            ("BinX", model.bin_factor), ("BinY", model.bin_factor),
        ):  # fmt: skip
            # the crop and binning are those of the simulated detector: other values are refused
            # the way a driver clamps what it cannot do, by reporting what it applied
            add_rw(db, self.roi + name, "int", value, lambda _, fixed=value: fixed)
        for plugin in (self.roi, self.image):
            add_rw(db, plugin + "EnableCallbacks", "enum", 1, enum_strs=DISABLE_ENABLE)
            add_ro(db, plugin + "ArraySize0_RBV", "int", cols)
            add_ro(db, plugin + "ArraySize1_RBV", "int", rows)
        add_ro(db, self.image + "ArrayData", "int16_array", np.zeros(rows * cols, np.int16),
               max_length=rows * cols)  # fmt: skip
        add_rw(db, self.image + "ArrayCounter", "int", 0)
        add_ro(db, self.image + "UniqueId_RBV", "int", 0)

        h = self.hdf
        string = {"max_length": 256}
        add_rw(db, h + "EnableCallbacks", "enum", 0, enum_strs=DISABLE_ENABLE)
        add_rw(db, h + "FilePath", "string", "", self._on_file_path, **string)
        add_ro(db, h + "FilePathExists_RBV", "enum", 0, enum_strs=NO_YES)
        add_rw(db, h + "FileName", "string", "", **string)
        add_rw(db, h + "FileTemplate", "string", "%s%s_%6.6d.h5", **string)
        add_rw(db, h + "FileNumber", "int", 0)
        add_rw(db, h + "AutoIncrement", "enum", 1, enum_strs=NO_YES)
        add_rw(db, h + "FileWriteMode", "enum", 0, enum_strs=("Single", "Capture", "Stream"))
        add_rw(db, h + "NumCapture", "int", 1)
        add_ro(db, h + "NumCaptured_RBV", "int", 0)
        add_rw(db, h + "Capture", "enum", 0, self._on_capture, enum_strs=("Done", "Capture"))
        add_rw(db, h + "CreateDirectory", "int", 0)
        add_ro(db, h + "FullFileName_RBV", "string", "", **string)
        add_ro(db, h + "WriteMessage", "string", "", **string)
        add_ro(db, h + "WriteStatus", "enum", 0, enum_strs=("Write OK", "Write error"))
        add_ro(db, h + "ArraySize0_RBV", "int", cols)
        add_ro(db, h + "ArraySize1_RBV", "int", rows)

    # ---- acquisition ----------------------------------------------------------------------------
    @property
    def acquiring(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _status(self, state: str, message: str) -> None:
        self.db.post(self.cam + "DetectorState_RBV", DETECTOR_STATES.index(state))
        self.db.post(self.cam + "StatusMessage_RBV", message)

    def _on_acquire(self, value: int) -> int:
        if value == 0:
            if self.acquiring:
                self._abort.set()
            return 0
        with self._lock:
            if self.acquiring:
                return 1
            mode = TRIGGER_MODES[self.flavour][self.db.value(self.cam + "TriggerMode")]
            if mode == INTERNAL_TRIGGER[self.flavour]:
                target = self._run_internal
            elif mode == EXTERNAL_TRIGGER[self.flavour]:
                target = self._run_external
            else:
                self._status("Error", f"trigger mode {mode!r} is not simulated")
                raise ValueError(f"{self.cam}TriggerMode {mode!r} is not simulated")
            self._abort.clear()
            self._thread = threading.Thread(target=self._guarded, args=(target,), daemon=True)
            self._thread.start()
        return 1

    def _guarded(self, target) -> None:
        try:
            target()
        except Exception as error:  # report through the PVs, as an IOC would
            log.exception("acquisition failed")
            self._status("Error", f"{type(error).__name__}: {error}")
        else:
            self._status("Idle", "Aborted" if self._abort.is_set() else "Acquisition completed")
        finally:
            if self.flavour == "eiger":
                self.db.post(self.cam + "Armed", 0)
            self.db.post(self.cam + "Acquire_RBV", 0)
            self.db.post(self.cam + "Acquire", 0)

    def _reserve_ids(self, n: int) -> np.ndarray:
        with self._lock:
            ids = np.arange(self._next_unique_id, self._next_unique_id + n, dtype=np.int64)
            self._next_unique_id += n
        return ids

    def compute(self, positions_m: np.ndarray, unique_ids: np.ndarray) -> np.ndarray:
        """Frames at beam positions (y, x) m, with noise seeded by the frames' unique ids."""
        with self._beamline_lock:
            expected = self.beamline.expected_intensity(positions_m)
            return self.beamline.detector.read_out(
                expected, self.beamline.frame_generators(unique_ids)
            )

    def _run_internal(self) -> None:
        db, c = self.db, self.cam
        image_mode = IMAGE_MODES[db.value(c + "ImageMode")]
        count = {"Single": 1, "Multiple": int(db.value(c + "NumImages")), "Continuous": None}[
            image_mode
        ]
        exposure = float(db.value(c + "AcquireTime"))
        period = max(
            float(db.value(c + "AcquirePeriod")), exposure, 1 / self.model.max_frame_rate_hz
        )
        self._status("Acquire", "Acquiring")
        db.post(c + "NumImagesCounter_RBV", 0)
        batch = max(1, int(0.02 / period))
        t0 = time.time()
        done = 0
        while (count is None or done < count) and not self._abort.is_set():
            b = batch if count is None else min(batch, count - done)
            starts = t0 + (done + np.arange(b)) * period
            positions = self.hutch.beam_position_m(starts + exposure / 2)
            ids = self._reserve_ids(b)
            frames = self.compute(positions, ids)
            _sleep_until(starts[-1] + exposure)
            self._publish(frames, ids, starts + exposure, positions)
            done += b

    def _external_pulses(self) -> int:
        """Trigger pulses of an external series (one frame each)."""
        db, c = self.db, self.cam
        if self.flavour == "eiger":
            if int(db.value(c + "NumImages")) != 1:
                raise ValueError("External Series is simulated with NumImages = 1 per trigger")
            return int(db.value(c + "NumTriggers"))
        return int(db.value(c + "NumImages"))

    def _run_external(self) -> None:
        db, c = self.db, self.cam
        n_pulses = self._external_pulses()
        exposure = float(db.value(c + "AcquireTime"))
        ids = self._reserve_ids(n_pulses)
        planned = self.hutch.planned_positions_m()
        frames = None
        if planned is not None and len(planned) == n_pulses:
            self._status("Initializing", f"arming: simulating {n_pulses} frames")
            frames = np.empty((n_pulses, *self.model.readout_shape), dtype=self.model.dtype)
            for start in range(0, n_pulses, COMPUTE_CHUNK):
                if self._abort.is_set():
                    return
                stop = min(n_pulses, start + COMPUTE_CHUNK)
                frames[start:stop] = self.compute(planned[start:stop], ids[start:stop])
        self._pulses = queue.Queue()
        self.hutch.add_pulse_listener(self._pulses.put)
        try:
            if self.flavour == "eiger":
                db.post(c + "Armed", 1)
            self._status("Waiting", f"armed for {n_pulses} triggers")
            db.post(c + "NumImagesCounter_RBV", 0)
            received = 0
            while received < n_pulses and not self._abort.is_set():
                try:
                    _, times, positions = self._pulses.get(timeout=0.1)
                except queue.Empty:
                    continue
                if received == 0:
                    self._status("Acquire", "Acquiring")
                take = min(len(times), n_pulses - received)
                window = slice(received, received + take)
                if frames is not None and np.allclose(
                    planned[window], positions[:take], atol=1e-12
                ):
                    batch = frames[window]
                else:
                    batch = self.compute(positions[:take], ids[window])
                self._publish(
                    batch, ids[window], np.asarray(times[:take]) + exposure, positions[:take]
                )
                received += take
        finally:
            self.hutch.remove_pulse_listener(self._pulses.put)

    def add_frame_listener(self, listener) -> None:
        """Call ``listener(frames, unique_ids, times, positions_m)`` for every frame batch.

        The simulated counterpart of a detector's own frame stream (the EIGER's ZeroMQ stream
        interface, areaDetector's PVA plugin): frames leave as they are made, with the beam
        positions (y, x) in metres at which they were measured. A listener that raises is
        logged and skipped; acquisition goes on.
        """
        self._frame_listeners.append(listener)

    def remove_frame_listener(self, listener) -> None:
        if listener in self._frame_listeners:
            self._frame_listeners.remove(listener)

    def _publish(
        self, frames: np.ndarray, ids: np.ndarray, times: np.ndarray, positions_m: np.ndarray
    ) -> None:
        """Frames leave the driver: counters, the image plugin, the HDF5 plugin, the stream."""
        db, c, img = self.db, self.cam, self.image
        b = len(frames)
        counter = int(db.value(c + "ArrayCounter")) + b
        db.post(c + "ArrayCounter", counter)
        db.post(c + "ArrayCounter_RBV", counter)
        db.post(c + "NumImagesCounter_RBV", int(db.value(c + "NumImagesCounter_RBV")) + b)
        if db.value(img + "EnableCallbacks"):
            db.post(img + "ArrayData", frames[-1].ravel())
            db.post(img + "UniqueId_RBV", int(ids[-1]))
            image_counter = int(db.value(img + "ArrayCounter")) + b
            db.post(img + "ArrayCounter", image_counter)
            db.post(img + "ArrayCounter_RBV", image_counter)
        if db.value(self.hdf + "EnableCallbacks"):
            self._write(frames, ids, times)
        for listener in list(self._frame_listeners):
            try:
                listener(frames, ids, times, positions_m)
            except Exception:  # noqa: BLE001 - a consumer must not stop the detector
                log.exception("frame listener %r failed", listener)

    # ---- HDF5 plugin -------------------------------------------------------------------------
    def _on_file_path(self, value: str) -> str:
        path = value if not value or value.endswith("/") else value + "/"
        self.db.post(self.hdf + "FilePathExists_RBV", int(bool(path) and Path(path).is_dir()))
        return path

    def _hdf_error(self, message: str) -> None:
        self.db.post(self.hdf + "WriteMessage", message)
        self.db.post(self.hdf + "WriteStatus", 1)
        raise ValueError(f"{self.hdf}Capture: {message}")

    def _on_capture(self, value: int) -> int:
        db, h = self.db, self.hdf
        with self._file_lock:
            if not value:
                self._close_file()
                return 0
            if self._file is not None:
                return 1
            if db.value(h + "FileWriteMode") != 2:
                self._hdf_error("only the Stream file write mode is simulated")
            directory = db.value(h + "FilePath")
            if not Path(directory).is_dir():
                if int(db.value(h + "CreateDirectory")) == 0 or not directory:
                    self._hdf_error(f"file path {directory!r} does not exist")
                Path(directory).mkdir(parents=True, exist_ok=True)
                db.post(h + "FilePathExists_RBV", 1)
            try:
                full = db.value(h + "FileTemplate") % (
                    directory,
                    db.value(h + "FileName"),
                    int(db.value(h + "FileNumber")),
                )
            except (TypeError, ValueError) as error:
                self._hdf_error(f"bad FileTemplate: {error}")
            try:
                self._file = StreamFile(full, self.model.readout_shape, self.model.dtype)
            except OSError as error:
                self._hdf_error(f"cannot create {full}: {error}")
            db.post(h + "FullFileName_RBV", full)
            db.post(h + "NumCaptured_RBV", 0)
            db.post(h + "WriteMessage", "")
            db.post(h + "WriteStatus", 0)
        return 1

    def _write(self, frames: np.ndarray, ids: np.ndarray, times: np.ndarray) -> None:
        db, h = self.db, self.hdf
        with self._file_lock:
            if self._file is None:
                return
            wanted = int(db.value(h + "NumCapture"))
            room = len(frames) if wanted <= 0 else max(0, wanted - self._file.count)
            if room:
                self._file.append(frames[:room], ids[:room], times[:room])
                db.post(h + "NumCaptured_RBV", self._file.count)
            if wanted > 0 and self._file.count >= wanted:
                self._close_file()

    def _close_file(self) -> None:
        db, h = self.db, self.hdf
        if self._file is None:
            return
        self._file.close()
        self._file = None
        db.post(h + "Capture", 0)
        db.post(h + "Capture_RBV", 0)
        if db.value(h + "AutoIncrement"):
            number = int(db.value(h + "FileNumber")) + 1
            db.post(h + "FileNumber", number)
            db.post(h + "FileNumber_RBV", number)

    def close(self) -> None:
        self._abort.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._file_lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class SimHutch:
    """Simulated hutch hardware: a sample stage (two motors and a trajectory controller) and
    areaDetector detectors, all drawing on one simulated sample (see the module docstring).

    Args:
        config: the beamline (sample, probe, dose, ...); ``config.detector`` is the first
            detector's preset, the others use the same settings with their own preset.
        prefix: PV prefix of everything (default: a unique ``"SIM<n>:"`` in this process).
        detectors: detector presets to simulate, a subset of ("eiger", "medipix3").
        database: where the PVs live (default: in process, a `SoftPVDatabase`).
        motor_egu: engineering units of the motors ("m", "mm", "um", "nm").
        motor_sign: +1 if the motors report where the beam is on the sample, -1 if they report
            the sample's own displacement (then the beam moves the other way).
        velocity_m_s: motor velocity in metres per second.
        acceleration_s: time added to every move (acceleration and settling), seconds.
    """

    def __init__(
        self,
        config: SimBeamlineConfig | None = None,
        *,
        prefix: str | None = None,
        detectors: tuple[str, ...] | list[str] = ("eiger",),
        database: PVDatabase | None = None,
        motor_egu: str = "um",
        motor_sign: int = 1,
        velocity_m_s: float = 200e-6,
        acceleration_s: float = 2e-3,
    ):
        if motor_egu not in METRES_PER_UNIT:
            raise ValueError(f"unknown motor units {motor_egu!r}; known: {sorted(METRES_PER_UNIT)}")
        if motor_sign not in (1, -1):
            raise ValueError(f"motor_sign must be +1 or -1, got {motor_sign!r}")
        if not detectors:
            raise ValueError("a hutch needs at least one detector")
        unknown = [d for d in detectors if d not in DETECTOR_PREFIXES]
        if unknown:
            raise ValueError(f"unknown detector {unknown[0]!r}; known: {sorted(DETECTOR_PREFIXES)}")
        self.config = replace(config or SimBeamlineConfig())
        self.prefix = prefix if prefix is not None else f"SIM{next(_PREFIX_COUNTER)}:"
        self.database = database if database is not None else SoftPVDatabase()
        self.motor_egu, self.motor_sign = motor_egu, motor_sign
        self.metres_per_unit = METRES_PER_UNIT[motor_egu]
        self.beamlines = self._make_beamlines(list(dict.fromkeys(detectors)))
        self._listeners: list = []
        self._listeners_lock = threading.Lock()

        first = next(iter(self.beamlines.values()))
        self.stage_prefix = self.prefix + "STAGE:"
        unit = self.metres_per_unit
        motors = []
        for axis, (low, high) in zip("YX", first.scan_limits_m, strict=True):
            limits = sorted((motor_sign * low / unit, motor_sign * high / unit))
            motors.append(
                MotorRecord(
                    self.database,
                    self.stage_prefix + axis,
                    egu=motor_egu,
                    limits=(limits[0], limits[1]),
                    velocity=velocity_m_s / unit,
                    acceleration_s=acceleration_s,
                    description=f"sample {axis.lower()}",
                )
            )
        self.motor_y, self.motor_x = motors
        self.trajectory = TrajectoryController(
            self.database, self.stage_prefix + "Traj:", (self.motor_y, self.motor_x), self
        )
        self.detectors = {
            kind: AreaDetector(self.database, self.detector_prefix(kind), self, beamline, kind)
            for kind, beamline in self.beamlines.items()
        }

    def _make_beamlines(self, kinds: list[str]) -> dict[str, SimBeamline]:
        beamlines: dict[str, SimBeamline] = {}
        sample = None
        for kind in kinds:
            if kind == self.config.detector:
                config = replace(self.config)
            else:  # the other detector sits at its own default distance
                config = replace(self.config, detector=kind, distance_m=None)
            try:
                beamlines[kind] = SimBeamline(config, sample=sample)
            except ValueError:  # another object pixel size: the detector gets its own sample
                beamlines[kind] = SimBeamline(config)
            if sample is None:
                sample = beamlines[kind].sample
        self.config = beamlines[kinds[0]].config  # with the distance resolved
        return beamlines

    def detector_prefix(self, kind: str) -> str:
        return self.prefix + DETECTOR_PREFIXES[kind]

    # ---- geometry: motors <-> beam on the sample ------------------------------------------------
    def to_metres(self, motor_units: np.ndarray) -> np.ndarray:
        """Beam positions (y, x) in metres from motor positions in EGU (the hardware's truth)."""
        return self.motor_sign * self.metres_per_unit * np.asarray(motor_units, dtype=np.float64)

    def to_motor_units(self, positions_m: np.ndarray) -> np.ndarray:
        return np.asarray(positions_m, dtype=np.float64) / (self.motor_sign * self.metres_per_unit)

    def beam_position_m(self, t: float | np.ndarray | None = None) -> np.ndarray:
        """Beam position(s) (y, x) in metres at wall-clock time(s) ``t`` (default now):
        shape (2,) for one time, (n, 2) for n times."""
        units = np.stack(
            [np.asarray(self.motor_y.position_at(t)), np.asarray(self.motor_x.position_at(t))],
            axis=-1,
        )
        return self.to_metres(units)

    def planned_positions_m(self) -> np.ndarray | None:
        """Positions (K, 2) m of the trajectory built last (its pulses), or None."""
        built = self.trajectory.built_positions
        return None if built is None else self.to_metres(built)

    # ---- trigger pulses ------------------------------------------------------------------------
    def add_pulse_listener(self, listener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_pulse_listener(self, listener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def deliver_pulses(self, index: np.ndarray, times: np.ndarray, motor_units: np.ndarray) -> None:
        """Trigger pulses from the trajectory: element indices, times (s), motor positions."""
        positions = self.to_metres(motor_units)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener((index, times, positions))

    # ---- bookkeeping ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: prefixes, stage units and sign, each detector's beamline."""
        return {
            "prefix": self.prefix,
            "stage": {
                "prefix": self.stage_prefix,
                "motors": {"y": self.motor_y.pv, "x": self.motor_x.pv},
                "trajectory": self.trajectory.prefix,
                "egu": self.motor_egu,
                "sign": self.motor_sign,
            },
            "detectors": {
                kind: {"prefix": self.detector_prefix(kind), "beamline": bl.describe()}
                for kind, bl in self.beamlines.items()
            },
        }

    def close(self) -> None:
        """Stop every acquisition and trajectory, close files, stop serving in-process PVs."""
        self.trajectory.abort()
        for detector in self.detectors.values():
            detector.close()
        close = getattr(self.database, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> SimHutch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
