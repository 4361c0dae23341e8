"""Simulated detectors: the real classes' keys, frames from the beamline, realistic timing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bluesky_ptychonn.devices import (
    EigerDetector,
    Medipix3Detector,
    SimEiger,
    SimMedipix3,
)
from bluesky_ptychonn.ioc import SimHutch


def _component_tree(cls, prefix=""):
    names = set()
    for name in cls.component_names:
        component = getattr(cls, name)
        names.add(prefix + name)
        if hasattr(component.cls, "component_names"):
            names |= _component_tree(component.cls, f"{prefix}{name}.")
    return names


@pytest.mark.parametrize("sim, real", [(SimEiger, EigerDetector), (SimMedipix3, Medipix3Detector)])
def test_twins_are_the_real_classes(sim, real):
    assert issubclass(sim, real)
    assert _component_tree(sim) == _component_tree(real)


def test_eiger_reads_one_uint16_frame_per_trigger(eiger, stage):
    stage.set((0.0, 0.0)).wait(5)
    eiger.stage()
    try:
        numbers = []
        for _ in range(3):
            eiger.trigger().wait(5)
            numbers.append(eiger.frame_number.get())
        reading = eiger.read()
    finally:
        eiger.unstage()
    description = eiger.describe()
    assert set(reading) == {"eiger_image", "eiger_frame_number", "eiger_total_counts"}
    frame = reading["eiger_image"]["value"]
    assert frame.shape == (128, 128) and frame.dtype == np.uint16
    assert description["eiger_image"]["shape"] == [128, 128]
    assert description["eiger_image"]["dtype_numpy"] == "<u2"
    assert eiger.hints["fields"] == ["eiger_total_counts"]
    assert reading["eiger_total_counts"]["value"] == int(frame.sum(dtype=np.int64))
    assert np.diff(numbers).tolist() == [1, 1]  # UniqueId: one per frame


def test_frame_is_the_beamline_pattern_at_the_stage_position(hutch, eiger, stage):
    stage.set((-0.6e-6, 0.45e-6)).wait(5)
    eiger.stage()
    try:
        eiger.trigger().wait(5)
    finally:
        eiger.unstage()
    frame = eiger.image.get().astype(float)
    beamline = hutch.beamlines["eiger"]
    here = beamline.patterns(np.array([[-0.6e-6, 0.45e-6]]), noise=False)[0]
    elsewhere = beamline.patterns(np.array([[0.6e-6, -0.45e-6]]), noise=False)[0]
    assert np.abs(frame - here).sum() / here.sum() < 0.05
    assert np.abs(frame - elsewhere).sum() / elsewhere.sum() > 0.1
    # photon counting: the total is the expected total within Poisson noise
    assert abs(frame.sum() - here.sum()) < 6 * np.sqrt(here.sum())


def test_exposure_time_is_honoured(eiger):
    eiger.stage()
    try:
        eiger.cam.acquire_time.set(0.05).wait(5)
        eiger.cam.acquire_period.set(0.05).wait(5)
        start = time.perf_counter()
        eiger.trigger().wait(5)
        elapsed = time.perf_counter() - start
    finally:
        eiger.cam.acquire_time.set(0.0005).wait(5)
        eiger.cam.acquire_period.set(0.0005).wait(5)
        eiger.unstage()
    assert 0.05 <= elapsed < 1.0


def test_configuration_and_geometry_come_from_the_beamline(hutch, eiger):
    beamline = hutch.beamlines["eiger"]
    geometry = eiger.geometry()
    assert geometry["energy_ev"] == beamline.energy_ev
    assert geometry["distance_m"] == pytest.approx(beamline.distance_m)
    assert geometry["detector_pixel_size_m"] == beamline.detector.readout_pixel_size_m
    assert geometry["object_pixel_size_m"] == pytest.approx(beamline.pixel_size_m, rel=1e-9)
    config = eiger.read_configuration()
    assert config["eiger_cam_photon_energy"]["value"] == 10_000.0
    assert config["eiger_cam_trigger_mode"]["value"] == "Internal Series"
    assert config["eiger_roi_size_x"]["value"] == 128


def test_medipix3_frames_are_binned_and_its_geometry_configured(small_config):
    with SimHutch(small_config, detectors=("medipix3",)) as hutch:
        medipix = SimMedipix3(hutch)
        beamline = hutch.beamlines["medipix3"]
        geometry = medipix.geometry()
        assert geometry["readout_shape"] == [128, 128]
        assert geometry["detector_pixel_size_m"] == pytest.approx(4 * 55e-6)
        assert geometry["energy_ev"] == pytest.approx(10_000.0)  # OperatingEnergy is keV
        assert geometry["object_pixel_size_m"] == pytest.approx(beamline.pixel_size_m)
        medipix.stage()
        try:
            medipix.trigger().wait(5)
        finally:
            medipix.unstage()
        frame = medipix.image.get()
        assert frame.shape == (128, 128) and frame.sum() > 0
        assert medipix.read_configuration()["medipix3_cam_trigger_mode"]["value"] == "Internal"


def test_missing_detector_is_a_clear_error(hutch):
    with pytest.raises(ValueError, match="simulates \\['eiger'\\], not 'medipix3'"):
        SimMedipix3(hutch)
