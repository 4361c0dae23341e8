"""A one-paragraph greeting: what is here and how to start."""

_mode = beamline_settings.get("mode", "sim")  # noqa: F821 (from 10-devices.py)
print(
    f"bluesky-ptychonn session ({_mode}): devices {', '.join(sorted(devices))}; "  # noqa: F821
    "plans spiral_scan, raster_scan, sparse_scan, fly_scan.\n"
    "  RE(spiral_scan([eiger], stage, 1e-6, step_m=100e-9))\n"
    "  RE(fly_scan(eiger, stage, 'spiral', (2e-6, 2e-6), overlap=0.7))"
)
