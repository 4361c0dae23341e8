"""`benchmarks/gpu_check.sh` cannot run here (no GPU): what it does without one is tested —
it stops at once with one line, exit 3 and a JSON saying why, and installs nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(tmp_path: Path, nvidia_smi: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NVIDIA_SMI": nvidia_smi, "GPU_CHECK_VENV": str(tmp_path / "venv")}
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("case", ["no-driver", "no-gpu-listed", "driver-error"])
def test_without_a_gpu_the_script_stops_at_once_and_says_why(tmp_path, case):
    fake = tmp_path / "nvidia-smi"
    if case == "no-driver":
        smi = str(tmp_path / "absent" / "nvidia-smi")
    else:
        body = "exit 0" if case == "no-gpu-listed" else "echo 'NVIDIA-SMI has failed' >&2; exit 9"
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
        smi = str(fake)
    start = time.monotonic()
    done = run_script(tmp_path, smi)
    assert time.monotonic() - start < 10
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check:") and "NVIDIA GPU" in lines[0]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["status"] == "no-gpu" and "NVIDIA GPU" in report["error"]
    assert not (tmp_path / "venv").exists()  # nothing installed


def test_a_listed_gpu_goes_on_to_the_install_step(tmp_path):
    """With a GPU listed, the script passes the check and goes on (here: to the venv, which
    a python that cannot make venvs refuses at once)."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    env = {**os.environ, "NVIDIA_SMI": str(fake), "GPU_CHECK_VENV": str(tmp_path / "venv"),
           "PYTHON": "/bin/false"}  # fmt: skip
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out.json")],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert "GPU 0: NVIDIA H200" in done.stdout
    assert done.returncode == 4 and "cannot create" in done.stderr


def test_the_python_check_refuses_without_cuda_and_writes_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the check would run")
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--json", str(out)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 3
    assert json.loads(out.read_text())["status"] == "no-gpu"
    assert "sees no CUDA device" in done.stderr
