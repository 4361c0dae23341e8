"""Fixtures of the session tests: a session configuration on a tiny model, in a temporary
folder (its own Tiled server, spool and live picture)."""

from __future__ import annotations

import pytest

from bluesky_ptychonn.devices.config import ENV_VAR
from session_helpers import session_toml


@pytest.fixture
def session_file(tmp_path, tiny_model, monkeypatch):
    """A session TOML file on a tiny model (128-pixel frames binned to 32)."""
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    monkeypatch.delenv(ENV_VAR, raising=False)
    model = tiny_model(tmp_path / "model", version="tiny", input_px=32, frame_px=128, reduce="bin")
    path = tmp_path / "session.toml"
    path.write_text(session_toml(tmp_path, model))
    return path
