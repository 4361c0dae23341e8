"""`PtychoFlyer`: a hardware-triggered fly scan of a detector over a stage trajectory.

One RunEngine event per frame tops out at a few hundred Hz (``ECOSYSTEM.md``), so at kHz the
detector free-runs and the document stream carries frames by reference:

* ``prepare``: the stage's trajectory controller builds the trajectory (one element and one
  trigger pulse per frame, at the frame period); the detector is set to one frame per
  external trigger; its HDF5 plugin starts a capture of N frames in Stream mode.
* ``kickoff``: the detector is armed (``Acquire``; done when it reports itself armed), then
  the trajectory is executed: each pulse takes a frame at the position the stage is at.
* ``complete``: done when the trajectory has finished and the HDF5 plugin has written and
  closed all N frames; fails naming the PV that reports the failure, or on timeout.
* ``collect_asset_docs`` / ``collect_pages`` (called every ``flush_period`` by the plan):
  for the frames written since the last call, one ``StreamDatum`` referring to the HDF5
  file (one ``StreamResource``, data key ``{detector}_image``) and one event page with the
  frame numbers (the driver's UniqueId, read back from the file), the stage positions the
  trajectory passed at each pulse (``{stage}_beam_y``, ``{stage}_beam_x``, metres, read from
  the controller's M1Actual/M2Actual and converted by the stage) and the frame times. Both
  cover the same frames, so the event page's seq_nums match the StreamDatum's.

The frames' file must be readable from the machine running the RunEngine (frame numbers are
read from it while it is written, in SWMR mode).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from event_model import StreamRange, compose_stream_resource
from ophyd.status import Status

from ..geometry import as_positions_m
from ..ioc.hdf5 import DATA_PATH, TIMESTAMP_PATH, UNIQUE_ID_PATH
from .areadetector import PtychoDetector
from .stage import SampleStage

HDF5_MIMETYPE = "application/x-hdf5"


@dataclass(frozen=True)
class FlyTrajectory:
    """What `PtychoFlyer.prepare` needs: positions (N, 2) (y, x) m, one frame each."""

    positions_m: np.ndarray
    frame_period_s: float
    exposure_s: float
    file_name: str


class PtychoFlyer:
    """Fly scan of ``detector`` over ``stage``'s trajectory (see the module docstring).

    Args:
        detector: an Eiger or Medipix3 device (real or simulated).
        stage: the sample stage, with its trajectory controller.
        arm_timeout_s: longest wait for the detector to arm (a simulated detector simulates all
            frames while arming).
        poll_s: how often completion is checked.
    """

    def __init__(
        self,
        detector: PtychoDetector,
        stage: SampleStage,
        *,
        name: str = "flyer",
        arm_timeout_s: float = 120.0,
        poll_s: float = 0.02,
    ):
        self.name = name
        self.parent = None
        self.detector, self.stage = detector, stage
        self.arm_timeout_s, self.poll_s = arm_timeout_s, poll_s
        self.image_key = f"{detector.name}_image"
        self.frame_number_key = f"{detector.name}_frame_number"
        self.position_keys = (f"{stage.name}_beam_y", f"{stage.name}_beam_x")
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._period = 0.0
        self._path: str | None = None
        self._resource = None
        self._emitted = 0
        self._pending = (0, 0)
        self._h5: h5py.File | None = None
        self._frame_shape = (0, 0)

    # ---- description --------------------------------------------------------------------------
    def describe_collect(self) -> dict[str, dict[str, Any]]:
        det, traj = self.detector, self.stage.trajectory
        rows, cols = det.readout_shape()
        self._frame_shape = (rows, cols)
        position = {"dtype": "number", "shape": [], "units": "m", "dtype_numpy": "<f8"}
        return {
            self.image_key: {
                "source": f"PV:{det.hdf5.full_file_name.pvname}",
                "dtype": "array",
                "shape": [rows, cols],
                "dtype_numpy": np.dtype(det.frame_dtype).str,
                "units": "counts",
                "external": "STREAM:",
            },
            self.frame_number_key: {
                "source": f"HDF5:{UNIQUE_ID_PATH}",
                "dtype": "integer",
                "shape": [],
                "dtype_numpy": "<i8",
            },
            self.position_keys[0]: {"source": f"PV:{traj.m1_actual.pvname}", **position},
            self.position_keys[1]: {"source": f"PV:{traj.m2_actual.pvname}", **position},
        }

    # ---- preparation ---------------------------------------------------------------------------
    def prepare(self, value: FlyTrajectory) -> Status:
        """Build the trajectory, set up the detector and start the HDF5 capture."""
        positions = as_positions_m(value.positions_m)
        if not value.frame_period_s > 0 or not 0 < value.exposure_s <= value.frame_period_s:
            raise ValueError(
                f"need 0 < exposure ({value.exposure_s} s) <= frame period "
                f"({value.frame_period_s} s)"
            )
        self._close_file()
        self._reset()
        det, hdf = self.detector, self.detector.hdf5
        n = len(positions)
        self.stage.trajectory.load(self.stage.metres_to_motor(positions), value.frame_period_s)
        det.configure_external_series(n, value.exposure_s, value.frame_period_s)
        for signal, setting in (
            (hdf.capture, "Done"),
            (hdf.enable, "Enable"),
            (hdf.create_directory, -5),
            (hdf.file_path, str(det.file_directory).rstrip("/") + "/"),  # as the plugin reports it
            (hdf.file_name, value.file_name),
            (hdf.file_template, "%s%s_%6.6d.h5"),
            (hdf.file_write_mode, "Stream"),
            (hdf.num_capture, n),
        ):
            signal.set(setting).wait(10)
        try:
            hdf.capture.set("Capture").wait(10)
        except Exception as error:
            message = hdf.write_message.get(use_monitor=False)
            raise RuntimeError(f"{hdf.capture.pvname}: capture did not start: {message}") from error
        self._path = hdf.full_file_name.get(use_monitor=False)
        self._n, self._period = n, value.frame_period_s
        status = Status(obj=self)
        status.set_finished()
        return status

    # ---- flying --------------------------------------------------------------------------------
    def _in_thread(self, work, timeout: float | None = None) -> Status:
        status = Status(obj=self, timeout=timeout)

        def run() -> None:
            try:
                work()
            except Exception as error:
                status.set_exception(error)
            else:
                status.set_finished()

        threading.Thread(target=run, daemon=True, name=f"{self.name}-status").start()
        return status

    def kickoff(self) -> Status:
        """Arm the detector, then execute the trajectory."""
        if self._n == 0:
            raise RuntimeError(f"{self.name}: kickoff before prepare")
        det = self.detector

        def arm_and_go() -> None:
            det.cam.acquire.put(1)
            deadline = time.monotonic() + self.arm_timeout_s
            while not det.is_armed():
                state = det.cam.detector_state.get(use_monitor=False)
                if state == "Error":
                    message = det.cam.status_message.get(use_monitor=False)
                    raise RuntimeError(f"{det.cam.detector_state.pvname} is Error: {message}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{det.name} did not arm within {self.arm_timeout_s} s "
                        f"({det.cam.detector_state.pvname} = {state})"
                    )
                time.sleep(self.poll_s)
            self.stage.trajectory.execute.put("Execute", wait=True)

        return self._in_thread(arm_and_go)

    def complete(self) -> Status:
        """Done when the trajectory has run and all frames are in the (closed) file."""
        det, traj, hdf = self.detector, self.stage.trajectory, self.detector.hdf5
        n, budget = self._n, 30.0 + 2 * self._n * self._period

        def wait_for_frames() -> None:
            deadline = time.monotonic() + budget
            while True:
                captured = int(hdf.num_captured.get(use_monitor=False))
                if traj.execute.get(use_monitor=False) == "Done":
                    result = traj.exec_status.get(use_monitor=False)
                    if result != "Success":
                        message = traj.exec_message.get(use_monitor=False)
                        raise RuntimeError(f"{traj.exec_status.pvname} is {result}: {message}")
                    if captured >= n and hdf.capture.get(use_monitor=False) == "Done":
                        return
                if det.cam.detector_state.get(use_monitor=False) == "Error":
                    message = det.cam.status_message.get(use_monitor=False)
                    raise RuntimeError(f"{det.cam.detector_state.pvname} is Error: {message}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"fly scan: {captured} of {n} frames in {self._path} after {budget:.0f} s "
                        f"({traj.exec_state.pvname} = {traj.exec_state.get()}, "
                        f"{det.cam.detector_state.pvname} = {det.cam.detector_state.get()})"
                    )
                time.sleep(self.poll_s)

        return self._in_thread(wait_for_frames)

    # ---- documents -----------------------------------------------------------------------------
    def collect_asset_docs(self, index: int | None = None):
        """StreamResource (once) and a StreamDatum for the frames written since last time."""
        det, traj = self.detector, self.stage.trajectory
        written = int(det.hdf5.num_captured.get(use_monitor=False))
        passed = int(traj.nactual.get(use_monitor=False))
        available = min(written, passed, self._n)
        if index is not None:
            available = min(available, int(index))
        self._pending = (self._emitted, max(available, self._emitted))
        start, stop = self._pending
        if stop <= start:
            return
        if self._resource is None:
            rows, cols = self._frame_shape if self._frame_shape[0] else det.readout_shape()
            self._resource = compose_stream_resource(
                mimetype=HDF5_MIMETYPE,
                uri=Path(self._path).absolute().as_uri().replace("file://", "file://localhost", 1),
                data_key=self.image_key,
                parameters={"dataset": DATA_PATH, "chunk_shape": [1, rows, cols]},
            )
            yield "stream_resource", self._resource.stream_resource_doc
        yield (
            "stream_datum",
            self._resource.compose_stream_datum(indices=StreamRange(start=start, stop=stop)),
        )

    def collect_pages(self):
        """One event page for the frames of the last StreamDatum: frame numbers, positions."""
        start, stop = self._pending
        if stop <= start:
            return
        frame_numbers, times = self._read_file(start, stop)
        motor = self.stage.trajectory.actual(stop)[start:stop]
        positions = self.stage.motor_to_metres(motor)
        self._emitted = stop
        if stop >= self._n:
            self._close_file()
        times_list = times.tolist()
        keys = (self.frame_number_key, *self.position_keys)
        yield {
            "data": {
                self.frame_number_key: frame_numbers.astype(np.int64).tolist(),
                self.position_keys[0]: positions[:, 0].tolist(),
                self.position_keys[1]: positions[:, 1].tolist(),
            },
            "timestamps": {key: times_list for key in keys},
            "time": times_list,
        }

    def _read_file(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            if self._h5 is None:
                self._h5 = h5py.File(self._path, "r", libver="latest", swmr=True)
            ids, stamps = self._h5[UNIQUE_ID_PATH], self._h5[TIMESTAMP_PATH]
            ids.id.refresh()
            stamps.id.refresh()
            if len(ids) < stop:
                raise RuntimeError(f"{len(ids)} frame numbers in the file, {stop} frames reported")
            return ids[start:stop], stamps[start:stop]
        except (OSError, KeyError, RuntimeError) as error:
            raise RuntimeError(
                f"cannot read frames {start}..{stop} from {self._path} (the HDF5 plugin's file "
                f"must be readable from this machine): {error}"
            ) from error

    def _close_file(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    @property
    def file_path(self) -> str | None:
        """The HDF5 file of the last capture."""
        return self._path

    def stop(self, *, success: bool = False) -> None:
        """Abort: stop the trajectory, the detector and the capture."""
        det, traj = self.detector, self.stage.trajectory
        for signal, value in (
            (traj.abort, "Abort"),
            (det.cam.acquire, 0),
            (det.hdf5.capture, "Done"),
        ):
            try:
                signal.put(value)
            except Exception:  # stopping must try everything
                pass
        self._close_file()
