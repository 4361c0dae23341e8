"""EPICS devices built from a settings file, connected to the simulated IOC."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.devices import EigerDetector, Medipix3Detector, SampleStage
from bluesky_ptychonn.devices.config import build_devices, load_settings


def write(tmp_path, stage_prefix, eiger_prefix, mpx_prefix, on_disconnected="raise"):
    path = tmp_path / "beamline.toml"
    path.write_text(
        f'mode = "epics"\nconnection_timeout_s = 2\non_disconnected = "{on_disconnected}"\n'
        f'[stage]\nprefix = "{stage_prefix}"\negu = "um"\nsign = 1\nbeam_size_m = 3.6e-7\n'
        f'[eiger]\nprefix = "{eiger_prefix}"\nfile_directory = "{tmp_path}"\n'
        f'[medipix3]\nprefix = "{mpx_prefix}"\ndistance_m = 2.27\n'
    )
    return path


def test_epics_devices_connect_by_configuration(ioc, tmp_path):
    path = write(
        tmp_path,
        ioc["stage"]["prefix"],
        ioc["detectors"]["eiger"]["prefix"],
        ioc["detectors"]["medipix3"]["prefix"],
    )
    devices = build_devices(load_settings(path))
    assert type(devices["stage"]) is SampleStage and type(devices["eiger"]) is EigerDetector
    assert type(devices["medipix3"]) is Medipix3Detector
    assert all(device.connected for device in devices.values())
    assert devices["medipix3"].distance_m() == 2.27
    assert devices["stage"].beam_size.get() == 3.6e-7


def test_unreachable_prefix_raises_or_warns_naming_the_pv(ioc, tmp_path):
    good_eiger = ioc["detectors"]["eiger"]["prefix"]
    good_mpx = ioc["detectors"]["medipix3"]["prefix"]
    path = write(tmp_path, "GONE:STAGE:", good_eiger, good_mpx)
    with pytest.raises(TimeoutError, match=r"GONE:STAGE:Y\.RBV"):
        build_devices(load_settings(path))
    path = write(tmp_path, "GONE2:STAGE:", good_eiger, good_mpx, on_disconnected="warn")
    with pytest.warns(UserWarning, match=r"GONE2:STAGE:Y\.RBV"):
        devices = build_devices(load_settings(path))
    assert not devices["stage"].connected
