"""Fixtures of the session tests: a session configuration on a tiny model, in a temporary
folder (its own Tiled server, spool and live picture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluesky_ptychonn.devices.config import ENV_VAR


def session_toml(folder: Path, model: Path, **extra_tables: str) -> str:
    """A session configuration (TOML text) for the tests: simulated Eiger only, a small
    sample, the tiny model on a one-thread PyTorch endpoint, everything under ``folder``."""
    text = f"""
data_dir = "{folder / "session"}"

[sim]
detectors = ["eiger"]
field_of_view_m = [2e-6, 2e-6]

[endpoint]
model = "{model}"
backend = "pytorch"
batch_size = 8
threads = 1

[tiled]
mosaic_period_s = 0.5

[live_view]
period_s = 0.2
"""
    for name, body in extra_tables.items():
        text += f"\n[{name}]\n{body}\n"
    return text


@pytest.fixture
def session_file(tmp_path, tiny_model, monkeypatch):
    """A session TOML file on a tiny model (128-pixel frames binned to 32)."""
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    path = tmp_path / "session.toml"
    path.write_text(session_toml(tmp_path, model))
    return path
