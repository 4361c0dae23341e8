"""The devices: simulated by default; EPICS prefixes from the TOML file named by
BLUESKY_PTYCHONN_BEAMLINE (see bluesky_ptychonn.devices.config)."""

from bluesky_ptychonn.devices.config import build_devices, load_settings

beamline_settings = load_settings()
devices = build_devices(beamline_settings)
globals().update(devices)
