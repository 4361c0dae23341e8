"""areaDetector devices for the DECTRIS Eiger2 X 500K (ADEiger) and the Medipix3 (ADMerlin).

Each detector is composed the way areaDetector IOCs are: the driver's cam (``cam1:``), an ROI
plugin (``ROI1:``; the crop around the beam and the binning), an image plugin (``image1:``;
the last frame as a waveform, read by step scans) and an HDF5 plugin (``HDF1:``; files, written
by fly scans). Only the PVs used are declared (ADCore / ADEiger / ADMerlin names), so a
connection check covers exactly what the device needs.

Step scans (`PtychoDetector.trigger`): internal trigger, one image per trigger; the trigger is
done when the image plugin's ArrayCounter_RBV has moved on, then the frame is read from
``image1:ArrayData`` (a signed 16-bit waveform, read back as the detector's unsigned dtype)
into the soft signals ``image`` (the frame), ``frame_number`` (the driver's UniqueId) and
``total_counts`` (hinted: what a live plot shows). Fly scans use `flyer.PtychoFlyer`.

`PtychoDetector.geometry` gives what a reconstruction needs (energy, distance, pixel size and
shape of the delivered frames, object pixel size); each detector class reads it from the PVs
its driver has and from configuration for what it has not (the Medipix3 has no distance PV).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignalRO, EpicsSignalWithRBV, Signal
from ophyd.status import DeviceStatus

from ..geometry import object_pixel_size_m


class DetectorCam(Device):
    """PVs of ADCore's ADDriver base that every driver serves (``$(P)cam1:``)."""

    acquire = Cpt(EpicsSignalWithRBV, "Acquire", kind="omitted")
    acquire_time = Cpt(EpicsSignalWithRBV, "AcquireTime", kind="config")
    acquire_period = Cpt(EpicsSignalWithRBV, "AcquirePeriod", kind="config")
    num_images = Cpt(EpicsSignalWithRBV, "NumImages", kind="config")
    num_images_counter = Cpt(EpicsSignalRO, "NumImagesCounter_RBV", kind="omitted")
    image_mode = Cpt(EpicsSignalWithRBV, "ImageMode", kind="config", string=True)
    trigger_mode = Cpt(EpicsSignalWithRBV, "TriggerMode", kind="config", string=True)
    array_counter = Cpt(EpicsSignalWithRBV, "ArrayCounter", kind="omitted")
    detector_state = Cpt(EpicsSignalRO, "DetectorState_RBV", kind="omitted", string=True)
    status_message = Cpt(EpicsSignalRO, "StatusMessage_RBV", kind="omitted", string=True)
    max_size_x = Cpt(EpicsSignalRO, "MaxSizeX_RBV", kind="omitted")
    max_size_y = Cpt(EpicsSignalRO, "MaxSizeY_RBV", kind="omitted")
    manufacturer = Cpt(EpicsSignalRO, "Manufacturer_RBV", kind="config", string=True)
    model = Cpt(EpicsSignalRO, "Model_RBV", kind="config", string=True)


class EigerCam(DetectorCam):
    """ADEiger's cam: photon energy and threshold (eV), distance (m), beam centre, pixel size."""

    num_triggers = Cpt(EpicsSignalWithRBV, "NumTriggers", kind="config")
    photon_energy = Cpt(EpicsSignalWithRBV, "PhotonEnergy", kind="config")
    threshold_energy = Cpt(EpicsSignalWithRBV, "ThresholdEnergy", kind="config")
    det_distance = Cpt(EpicsSignalWithRBV, "DetDist", kind="config")
    beam_center_x = Cpt(EpicsSignalWithRBV, "BeamX", kind="config")
    beam_center_y = Cpt(EpicsSignalWithRBV, "BeamY", kind="config")
    x_pixel_size = Cpt(EpicsSignalRO, "XPixelSize_RBV", kind="config")
    y_pixel_size = Cpt(EpicsSignalRO, "YPixelSize_RBV", kind="config")
    count_cutoff = Cpt(EpicsSignalRO, "CountCutoff_RBV", kind="config")
    armed = Cpt(EpicsSignalRO, "Armed", kind="omitted", string=True)


class Medipix3Cam(DetectorCam):
    """ADMerlin's cam (Medipix3 read out by a Merlin): energies in keV, counter depth."""

    operating_energy = Cpt(EpicsSignalWithRBV, "OperatingEnergy", kind="config")
    threshold_energy0 = Cpt(EpicsSignalWithRBV, "ThresholdEnergy0", kind="config")
    counter_depth = Cpt(EpicsSignalWithRBV, "CounterDepth", kind="config")


class ROIPlugin(Device):
    """NDPluginROI: the region read out (native pixels) and its binning."""

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", kind="omitted", string=True)
    min_x = Cpt(EpicsSignalWithRBV, "MinX", kind="config")
    min_y = Cpt(EpicsSignalWithRBV, "MinY", kind="config")
    size_x = Cpt(EpicsSignalWithRBV, "SizeX", kind="config")
    size_y = Cpt(EpicsSignalWithRBV, "SizeY", kind="config")
    bin_x = Cpt(EpicsSignalWithRBV, "BinX", kind="config")
    bin_y = Cpt(EpicsSignalWithRBV, "BinY", kind="config")
    array_size0 = Cpt(EpicsSignalRO, "ArraySize0_RBV", kind="omitted")
    array_size1 = Cpt(EpicsSignalRO, "ArraySize1_RBV", kind="omitted")


class ImagePlugin(Device):
    """NDPluginStdArrays: the last frame as a flat waveform."""

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", kind="omitted", string=True)
    array_data = Cpt(EpicsSignalRO, "ArrayData", kind="omitted", auto_monitor=False)
    array_size0 = Cpt(EpicsSignalRO, "ArraySize0_RBV", kind="omitted")
    array_size1 = Cpt(EpicsSignalRO, "ArraySize1_RBV", kind="omitted")
    array_counter = Cpt(EpicsSignalWithRBV, "ArrayCounter", kind="omitted")
    unique_id = Cpt(EpicsSignalRO, "UniqueId_RBV", kind="omitted")


class HDF5Plugin(Device):
    """NDFileHDF5 in Stream mode: one file per capture."""

    enable = Cpt(EpicsSignalWithRBV, "EnableCallbacks", kind="omitted", string=True)
    file_path = Cpt(EpicsSignalWithRBV, "FilePath", kind="omitted", string=True)
    file_path_exists = Cpt(EpicsSignalRO, "FilePathExists_RBV", kind="omitted", string=True)
    create_directory = Cpt(EpicsSignalWithRBV, "CreateDirectory", kind="omitted")
    file_name = Cpt(EpicsSignalWithRBV, "FileName", kind="omitted", string=True)
    file_template = Cpt(EpicsSignalWithRBV, "FileTemplate", kind="omitted", string=True)
    file_number = Cpt(EpicsSignalWithRBV, "FileNumber", kind="omitted")
    auto_increment = Cpt(EpicsSignalWithRBV, "AutoIncrement", kind="omitted", string=True)
    file_write_mode = Cpt(EpicsSignalWithRBV, "FileWriteMode", kind="omitted", string=True)
    num_capture = Cpt(EpicsSignalWithRBV, "NumCapture", kind="omitted")
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind="omitted")
    capture = Cpt(EpicsSignalWithRBV, "Capture", kind="omitted", string=True)
    full_file_name = Cpt(EpicsSignalRO, "FullFileName_RBV", kind="omitted", string=True)
    write_message = Cpt(EpicsSignalRO, "WriteMessage", kind="omitted", string=True)


class FrameSignal(Signal):
    """A frame held by the device after a trigger: describes as (rows, cols) of the detector's
    dtype, with ``dtype_numpy`` so that Tiled keeps uint16 frames uint16."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.frame_shape: tuple[int, int] = (0, 0)
        self.frame_dtype = np.dtype("uint16")

    def describe(self) -> dict[str, dict[str, Any]]:
        if not all(self.frame_shape) and hasattr(self.parent, "readout_shape"):
            self.frame_shape = self.parent.readout_shape()  # before the first stage
        description = super().describe()
        key = description[self.name]
        key.update(
            dtype="array",
            shape=list(self.frame_shape),
            dtype_numpy=self.frame_dtype.str,
            units="counts",
        )
        return description


def as_unsigned(flat: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An areaDetector waveform (signed on the wire) as the detector's unsigned counts."""
    values = np.asarray(flat)
    bits = np.dtype(dtype).itemsize * 8
    return (values.astype(np.int64) & ((1 << bits) - 1)).astype(dtype)


class PtychoDetector(Device):
    """An areaDetector detector for ptychography (see the module docstring).

    Args:
        prefix: the IOC's prefix (``cam1:``, ``ROI1:``, ``image1:``, ``HDF1:`` follow it).
        name: device name; data keys are ``{name}_image``, ``{name}_frame_number``,
            ``{name}_total_counts``.
        file_directory: where fly scans ask the HDF5 plugin to write, as the IOC sees it.
        trigger_timeout_s: longest wait for one frame in a step scan.
    """

    model_name: ClassVar[str] = ""
    internal_trigger: ClassVar[str] = ""
    external_trigger: ClassVar[str] = ""
    max_frame_rate_hz: ClassVar[float] = 0.0
    frame_dtype: ClassVar[str] = "uint16"

    cam: DetectorCam
    roi = Cpt(ROIPlugin, "ROI1:", kind="config")
    image_plugin = Cpt(ImagePlugin, "image1:", kind="omitted")
    hdf5 = Cpt(HDF5Plugin, "HDF1:", kind="omitted")
    image = Cpt(FrameSignal, value=np.zeros((0, 0), dtype=np.uint16), kind="normal")
    frame_number = Cpt(Signal, value=0, kind="normal")
    total_counts = Cpt(Signal, value=0, kind="hinted")

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        file_directory: str = "/tmp/bluesky-ptychonn",
        trigger_timeout_s: float = 10.0,
        **kwargs: Any,
    ):
        super().__init__(prefix, name=name, **kwargs)
        self.file_directory = file_directory
        self.trigger_timeout_s = trigger_timeout_s
        self.image.frame_dtype = np.dtype(self.frame_dtype)
        self.stage_sigs.update(
            [
                (self.cam.acquire, 0),
                (self.cam.trigger_mode, self.internal_trigger),
                (self.cam.image_mode, "Multiple"),
                (self.cam.num_images, 1),
                (self.roi.enable, "Enable"),
                (self.image_plugin.enable, "Enable"),
            ]
        )

    # ---- geometry ---------------------------------------------------------------------------
    def photon_energy_ev(self) -> float:
        raise NotImplementedError

    def distance_m(self) -> float:
        raise NotImplementedError

    def native_pixel_size_m(self) -> float:
        raise NotImplementedError

    def readout_shape(self) -> tuple[int, int]:
        """(rows, cols) of delivered frames: the ROI divided by its binning."""
        roi = self.roi
        rows = int(roi.size_y.get()) // int(roi.bin_y.get())
        cols = int(roi.size_x.get()) // int(roi.bin_x.get())
        return (rows, cols)

    def geometry(self) -> dict[str, Any]:
        """Energy (eV), distance (m), delivered pixel size (m) and shape, object pixel size (m)."""
        rows, cols = self.readout_shape()
        binning = int(self.roi.bin_x.get())
        pixel = self.native_pixel_size_m() * binning
        energy, distance = self.photon_energy_ev(), self.distance_m()
        if not (energy > 0 and distance > 0 and pixel > 0 and rows > 0):
            raise ValueError(
                f"{self.name}: energy {energy} eV, distance {distance} m, pixel {pixel} m, "
                f"frames {rows}x{cols}: all must be positive to describe the geometry"
            )
        return {
            "energy_ev": float(energy),
            "distance_m": float(distance),
            "detector_pixel_size_m": float(pixel),
            "readout_shape": [rows, cols],
            "object_pixel_size_m": object_pixel_size_m(energy, distance, pixel, cols),
        }

    # ---- fly-scan configuration (used by PtychoFlyer) ---------------------------------------
    def configure_external_series(self, n_frames: int, exposure_s: float, period_s: float):
        """One frame per external trigger pulse, ``n_frames`` pulses."""
        raise NotImplementedError

    def is_armed(self) -> bool:
        """Ready for trigger pulses after ``Acquire`` was set."""
        return self.cam.detector_state.get(use_monitor=False) in ("Waiting", "Acquire")

    # ---- step scans -------------------------------------------------------------------------
    def stage(self):
        staged = super().stage()
        self.image.frame_shape = self.readout_shape()
        return staged

    def trigger(self) -> DeviceStatus:
        """Take one frame (internal trigger); done once the frame has been read."""
        status = DeviceStatus(self, timeout=self.trigger_timeout_s)
        counter = self.image_plugin.array_counter
        target = int(counter.get(use_monitor=False)) + 1
        done = threading.Event()

        def frame_arrived(value=None, **kwargs):
            if value is None or value < target or done.is_set():
                return
            done.set()
            counter.clear_sub(frame_arrived)
            threading.Thread(target=self._read_frame, args=(status,), daemon=True).start()

        counter.subscribe(frame_arrived, run=False)
        try:
            self.cam.acquire.put(1)
        except Exception:
            counter.clear_sub(frame_arrived)
            raise
        return status

    def _read_frame(self, status: DeviceStatus) -> None:
        try:
            plugin = self.image_plugin
            if not all(self.image.frame_shape):  # triggered without staging
                self.image.frame_shape = self.readout_shape()
            rows, cols = self.image.frame_shape
            flat = plugin.array_data.get(use_monitor=False)
            if np.size(flat) < rows * cols:
                raise RuntimeError(
                    f"{plugin.array_data.pvname} holds {np.size(flat)} values, "
                    f"expected a {rows}x{cols} frame"
                )
            frame = as_unsigned(np.asarray(flat)[: rows * cols], self.image.frame_dtype)
            frame = frame.reshape(rows, cols)
            self.frame_number.put(int(plugin.unique_id.get(use_monitor=False)))
            self.image.put(frame)
            self.total_counts.put(int(frame.sum(dtype=np.int64)))
        except Exception as error:
            status.set_exception(error)
        else:
            status.set_finished()


class EigerDetector(PtychoDetector):
    """DECTRIS Eiger2 X 500K through ADEiger (see `PtychoDetector`)."""

    model_name = "eiger"
    internal_trigger = "Internal Series"
    external_trigger = "External Series"
    max_frame_rate_hz = 2000.0

    cam = Cpt(EigerCam, "cam1:", kind="config")

    def __init__(self, prefix: str = "", *, name: str, **kwargs: Any):
        super().__init__(prefix, name=name, **kwargs)
        self.stage_sigs[self.cam.num_triggers] = 1

    def photon_energy_ev(self) -> float:
        return float(self.cam.photon_energy.get())

    def distance_m(self) -> float:
        return float(self.cam.det_distance.get())

    def native_pixel_size_m(self) -> float:
        return float(self.cam.x_pixel_size.get())

    def configure_external_series(self, n_frames: int, exposure_s: float, period_s: float):
        cam = self.cam
        cam.acquire.set(0).wait(10)
        cam.trigger_mode.set(self.external_trigger).wait(10)
        cam.num_images.set(1).wait(10)
        cam.num_triggers.set(int(n_frames)).wait(10)
        cam.acquire_time.set(float(exposure_s)).wait(10)
        cam.acquire_period.set(float(period_s)).wait(10)

    def is_armed(self) -> bool:
        return self.cam.armed.get(use_monitor=False) == "Armed"


class Medipix3Detector(PtychoDetector):
    """ASI Medipix3 quad (516 x 516, 55 um) through ADMerlin (see `PtychoDetector`).

    ADMerlin has no distance or pixel-size PVs: both are configuration (``distance_m``,
    ``pixel_size_m``), recorded in the device's configuration readings.
    """

    model_name = "medipix3"
    internal_trigger = "Internal"
    external_trigger = "Trigger start rising"
    max_frame_rate_hz = 100.0

    cam = Cpt(Medipix3Cam, "cam1:", kind="config")
    distance = Cpt(Signal, value=0.0, kind="config")
    pixel_size = Cpt(Signal, value=55e-6, kind="config")

    def __init__(
        self,
        prefix: str = "",
        *,
        name: str,
        distance_m: float = 0.0,
        pixel_size_m: float = 55e-6,
        **kwargs: Any,
    ):
        super().__init__(prefix, name=name, **kwargs)
        self.distance.put(float(distance_m))
        self.pixel_size.put(float(pixel_size_m))

    def photon_energy_ev(self) -> float:
        return float(self.cam.operating_energy.get()) * 1e3  # ADMerlin works in keV

    def distance_m(self) -> float:
        return float(self.distance.get())

    def native_pixel_size_m(self) -> float:
        return float(self.pixel_size.get())

    def configure_external_series(self, n_frames: int, exposure_s: float, period_s: float):
        cam = self.cam
        cam.acquire.set(0).wait(10)
        cam.trigger_mode.set(self.external_trigger).wait(10)
        cam.num_images.set(int(n_frames)).wait(10)
        cam.acquire_time.set(float(exposure_s)).wait(10)
        cam.acquire_period.set(float(period_s)).wait(10)
