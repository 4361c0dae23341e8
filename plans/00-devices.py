"""bluesky-queueserver startup: the devices (simulated unless BLUESKY_PTYCHONN_BEAMLINE names
a TOML file; see bluesky_ptychonn.devices.config). The queue server makes its own RunEngine."""

from bluesky_ptychonn.devices.config import build_devices, load_settings

globals().update(build_devices(load_settings()))
