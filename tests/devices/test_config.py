"""Session devices from a TOML file: simulated by default, checked settings."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.devices import SimEiger, SimStage
from bluesky_ptychonn.devices.config import ENV_VAR, build_devices, load_settings


def test_no_file_means_simulation(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert load_settings() == {"mode": "sim"}


def test_simulated_devices_follow_the_file(tmp_path, monkeypatch):
    path = tmp_path / "beamline.toml"
    path.write_text(
        'mode = "sim"\n[sim]\ndetectors = ["eiger"]\nsample = "siemens-star"\n'
        'field_of_view_m = [2e-6, 2e-6]\nmotor_sign = -1\nmotor_egu = "nm"\n'
    )
    monkeypatch.setenv(ENV_VAR, str(path))
    devices = build_devices(load_settings())
    try:
        assert set(devices) == {"hutch", "stage", "eiger"}
        assert isinstance(devices["stage"], SimStage) and isinstance(devices["eiger"], SimEiger)
        hutch = devices["hutch"]
        assert hutch.config.sample == "siemens-star" and hutch.motor_sign == -1
        assert devices["stage"].read_configuration()["stage_motor_egu"]["value"] == "nm"
        assert "siemens-star" in devices["stage"].sample_name.get()
    finally:
        devices["hutch"].close()


@pytest.mark.parametrize(
    "text, match",
    [
        ('mode = "sim"\nbeamtime = 3\n', r"unknown settings \['beamtime'\]"),
        ('mode = "real"\n', "mode must be 'sim' or 'epics'"),
        ("[sim]\nphotonz = 1e6\n", r"\[sim\]: unknown settings \['photonz'\]"),
        ('mode = "epics"\n', r"needs a \[stage\] section"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, match):
    path = tmp_path / "beamline.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        build_devices(load_settings(path))


def test_missing_settings_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        load_settings(tmp_path / "nowhere.toml")
