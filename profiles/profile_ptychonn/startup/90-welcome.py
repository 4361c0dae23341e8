"""A one-paragraph greeting: what is here and how to start."""

_detector = session.config.endpoint.detector  # noqa: F821 (from 00-base.py)
print(
    session.describe() + "\n"  # noqa: F821
    "  plans spiral_scan, raster_scan, sparse_scan, fly_scan.\n"
    f"  RE(spiral_scan([{_detector}, endpoint], stage, 1e-6, step_m=100e-9))"
    "   # live mosaic + Tiled\n"
    f"  RE(fly_scan({_detector}, stage, 'spiral', (2e-6, 2e-6), overlap=0.7))"
)
