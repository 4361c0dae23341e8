"""The IPython profile starts headless and runs a scan; the queue server's startup is current."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "profile_ptychonn"
QUEUE_STARTUP = REPO / "plans"


def headless_environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    env.pop("BLUESKY_PTYCHONN_BEAMLINE", None)
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    return env


def test_profile_starts_headless_and_runs_a_scan(tmp_path):
    profile = tmp_path / "profile_ptychonn"  # a copy: IPython writes its history there
    shutil.copytree(PROFILE, profile)
    code = (
        "import matplotlib; print('BACKEND', matplotlib.get_backend()); "
        "uids = RE(spiral_scan([eiger], stage, 0.3e-6, step_m=0.15e-6)); "
        "print('SCANNED', len(uids), type(medipix3).__name__, round(stage.position[1] * 1e9))"
    )
    result = subprocess.run(
        [sys.executable, "-m", "IPython", f"--profile-dir={profile}", "--no-banner", "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env=headless_environment(tmp_path),
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
        "spiral_scan", "raster_scan", "sparse_scan", "fly_scan",
    }  # fmt: skip
    assert set(generated["existing_devices"]) == {"stage", "eiger", "medipix3"}
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
    assert validate_plan(good, allowed_plans=plans, allowed_devices=devices)[0]
    assert validate_plan(fly, allowed_plans=plans, allowed_devices=devices)[0]
    ok, message = validate_plan(wrong_type, allowed_plans=plans, allowed_devices=devices)
    assert not ok and "overlap" in message
    assert not validate_plan(unknown, allowed_plans=plans, allowed_devices=devices)[0]
