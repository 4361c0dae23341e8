"""The demo runs on a beamline session and writes the report it always wrote."""

from __future__ import annotations

import json

import pytest

REPORT_KEYS = {
    "package_version", "model", "sample", "scans", "tiled_uri", "epie", "tiled_documents",
}  # fmt: skip
SCAN_KEYS = {
    "uid", "frames", "frames_rejected", "scan_seconds", "frames_per_s",
    "endpoint_latency_p50_ms", "endpoint_latency_p99_ms", "model_version", "figure",
    "phase_ssim", "phase_rms_rad", "region_pixels", "nrmse", "phase_ssim_gaussian",
    "shift_px_row", "shift_px_col", "frc_half_bit_resolution_px",
}  # fmt: skip


@pytest.mark.slow
def test_the_demo_on_a_session_writes_its_report(tmp_path, tiny_model, monkeypatch):
    from bluesky_ptychonn.demo import DemoOptions, run_demo

    monkeypatch.delenv("TILED_API_KEY", raising=False)
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    out = tmp_path / "report"
    options = DemoOptions(  # the continual-learning part adds its own section (retrain tests)
        out=out,
        model=model,
        spiral_radius_m=0.5e-6,
        sparse_extent_m=1.2e-6,
        epie_iterations=2,
        continual=False,
    )
    report = run_demo(options)
    assert set(report) == REPORT_KEYS
    assert set(report["scans"]) == {"spiral", "sparse"}
    for scan in report["scans"].values():
        assert set(scan) == SCAN_KEYS
        assert scan["frames"] > 10 and scan["frames_rejected"] == 0
        assert scan["model_version"] == "tiny"
    documents = report["tiled_documents"]
    assert documents["docs_delivered"] == documents["docs_spooled"] > 0
    assert documents["runs_completed"] == 2 and documents["items_failed"] == 0
    assert report["epie"]["frames"] == report["scans"]["spiral"]["frames"]
    assert (
        json.loads((out / "report.json").read_text())["scans"]["sparse"]["frames"]
        == (report["scans"]["sparse"]["frames"])
    )
    for name in ("spiral-live-mosaic.png", "sparse-live-mosaic.png", "spiral-epie.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
