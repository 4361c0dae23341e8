"""The IPython profile starts a session headless and runs a scan whose mosaic reaches Tiled;
the queue server's startup builds the same session and is current."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from session_helpers import session_toml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "profile_ptychonn"
QUEUE_STARTUP = REPO / "plans"


def headless_environment(tmp_path: Path, session_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env.pop("BLUESKY_PTYCHONN_BEAMLINE", None)
    env.pop("BLUESKY_PTYCHONN_SERVICES", None)
    env.pop("TILED_API_KEY", None)
    if session_file is not None:
        env["BLUESKY_PTYCHONN_BEAMLINE"] = str(session_file)
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    return env


@pytest.fixture
def session_file(tmp_path, tiny_model) -> Path:
    """The session's configuration: simulated Eiger and Medipix3, a tiny model (the default
    demo network trains for minutes on first use), Tiled and spool in the test's folder."""
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    path = tmp_path / "session.toml"
    path.write_text(session_toml(tmp_path, model, detectors=("eiger", "medipix3")))
    return path


def test_profile_starts_headless_and_runs_a_scan(tmp_path, session_file):
    """What a newcomer does: start the profile, scan, scan with the endpoint, find the mosaic in
    Tiled (the session started the endpoint and the Tiled server, and stops them at exit)."""
    profile = tmp_path / "profile_ptychonn"  # a copy: IPython writes its history there
    shutil.copytree(PROFILE, profile)
    code = "\n".join(
        [
            "import matplotlib; print('BACKEND', matplotlib.get_backend())",
            "uids = RE(spiral_scan([eiger], stage, 0.3e-6, step_m=0.15e-6))",
            "print('SCANNED', len(uids), type(medipix3).__name__, round(stage.position[1] * 1e9))",
            "(uid,) = RE(spiral_scan([eiger, endpoint], stage, 0.4e-6, step_m=0.1e-6))",
            "assert session.wait(timeout_s=120)",
            "from bluesky_ptychonn.storage.tiled_results import find_reconstructions as f",
            "from bluesky_ptychonn.storage.tiled_results import read_live_mosaic",
            "(node,) = f(catalog, scan_uid=uid, final=True).values()",
            "mosaic = read_live_mosaic(node)",
            "points = catalog.raw[uid].metadata['start']['num_points']",
            "frames = catalog.raw[uid]['primary']['eiger_image'].read().shape[0]",
            "print('MOSAIC', mosaic.metadata['frames_used'], points, frames, mosaic.phase.shape)",
            "print('FINAL', stitcher.last_snapshot.phase.shape, session.live_view.png_path)",
            "print('PIDS', session.endpoint_process.process.pid, session.tiled_server.pid)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-m", "IPython", f"--profile-dir={profile}", "--no-banner", "-c", code],
        capture_output=True,
        text=True,
        timeout=240,
        env=headless_environment(tmp_path, session_file),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    assert "bluesky-ptychonn session (sim)" in output  # the welcome line
    assert "backend agg" in output.lower()
    assert "SCANNED 1 SimMedipix3" in output, output
    assert "Transient Scan ID: 1" in output  # the best-effort callback's table
    [mosaic_line] = [line for line in output.splitlines() if line.startswith("MOSAIC")]
    frames_used, points, frames = (int(v) for v in mosaic_line.split()[1:4])
    assert frames_used == points == frames > 20  # every frame in Tiled and in the mosaic
    [final_line] = [line for line in output.splitlines() if line.startswith("FINAL")]
    assert mosaic_line.split(maxsplit=4)[4] in final_line  # the shape of the final mosaic
    png = Path(final_line.split()[-1])
    assert png.read_bytes()[:4] == b"\x89PNG"  # the live picture
    [pids] = [line.split()[1:] for line in output.splitlines() if line.startswith("PIDS")]
    for pid in pids:  # the session stopped its endpoint and Tiled server at exit
        assert not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid), pid


def _state(pid: str) -> str:
    text = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in text.splitlines() if line.startswith("State")).lower()


def test_the_queue_server_startup_builds_the_session_and_its_run_engine(tmp_path, session_file):
    """In the RE worker the startup's namespace holds the session's RunEngine, with the
    session's callbacks, and the devices the committed lists name."""
    env = headless_environment(tmp_path, session_file)
    env["BLUESKY_PTYCHONN_SERVICES"] = "0"  # the services are the session tests' business
    code = (
        "import runpy, sys; ns = runpy.run_path(sys.argv[1]); s = ns['session']; "
        "print('STARTUP', type(s).__name__, ns['RE'] is s.RE, sorted(s.devices), "
        "type(ns['endpoint']).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(QUEUE_STARTUP / "00-session.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (
        "STARTUP Session True ['eiger', 'endpoint', 'hutch', 'medipix3', 'stage'] "
        "InferenceEndpoint" in output
    ), output


def test_queue_server_startup_lists_the_committed_plans_and_devices(tmp_path):
    """`qserver-list-plans-devices` regenerates existing_plans_and_devices.yaml unchanged."""
    command = shutil.which("qserver-list-plans-devices", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.fail("qserver-list-plans-devices is missing: install the [dev] extra", pytrace=False)
    result = subprocess.run(
        [command, "--startup-dir", str(QUEUE_STARTUP), "--file-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=headless_environment(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    generated = yaml.safe_load((tmp_path / "existing_plans_and_devices.yaml").read_text())
    committed = yaml.safe_load((QUEUE_STARTUP / "existing_plans_and_devices.yaml").read_text())
    assert set(generated["existing_plans"]) == {
        "spiral_scan", "raster_scan", "sparse_scan", "fly_scan", "adaptive_scan",
    }  # fmt: skip
    assert set(generated["existing_devices"]) == {"stage", "eiger", "medipix3", "endpoint"}
    assert generated == committed, (
        "plans/existing_plans_and_devices.yaml is out of date: regenerate it with "
        "qserver-list-plans-devices --startup-dir plans --file-dir plans"
    )


def test_queue_server_validates_plans_against_the_committed_lists():
    from bluesky_queueserver.manager.profile_ops import (
        load_allowed_plans_and_devices,
        validate_plan,
    )

    plans, devices = load_allowed_plans_and_devices(
        path_existing_plans_and_devices=QUEUE_STARTUP / "existing_plans_and_devices.yaml",
        path_user_group_permissions=QUEUE_STARTUP / "user_group_permissions.yaml",
    )
    plans, devices = plans["primary"], devices["primary"]
    good = {"name": "spiral_scan", "args": [["eiger"], "stage", 1e-6], "kwargs": {"step_m": 1e-7}}
    fly = {"name": "fly_scan", "args": ["eiger", "stage", "raster"], "kwargs": {"overlap": 0.5}}
    wrong_type = {"name": "sparse_scan", "args": [["eiger"], "stage", [1e-6, 1e-6], "high"]}
    unknown = {"name": "count", "args": [["eiger"]]}
    adaptive = {"name": "adaptive_scan",
                "args": [["eiger"], "stage", "endpoint", [-1e-6, 1e-6, -1e-6, 1e-6], 50],
                "kwargs": {"mode": "overlap", "batch": 8}}  # fmt: skip
    bad_budget = {"name": "adaptive_scan",
                  "args": [["eiger"], "stage", "endpoint", [-1e-6, 1e-6, -1e-6, 1e-6], "many"]}
    assert validate_plan(adaptive, allowed_plans=plans, allowed_devices=devices)[0]
    ok, message = validate_plan(bad_budget, allowed_plans=plans, allowed_devices=devices)
    assert not ok and "budget" in message
    assert validate_plan(good, allowed_plans=plans, allowed_devices=devices)[0]
    assert validate_plan(fly, allowed_plans=plans, allowed_devices=devices)[0]
    ok, message = validate_plan(wrong_type, allowed_plans=plans, allowed_devices=devices)
    assert not ok and "overlap" in message
    assert not validate_plan(unknown, allowed_plans=plans, allowed_devices=devices)[0]
