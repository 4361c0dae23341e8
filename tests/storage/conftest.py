"""Fixtures of the storage tests: one private Tiled server process for the whole session."""

import pytest
from tiled_helpers import start_server


@pytest.fixture(autouse=True)
def _no_api_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)


@pytest.fixture(scope="session")
def tiled_server(tmp_path_factory):
    """A real Tiled server (every request needs its key) that may read ``readable[0]``.

    The resilience tests stop and restart it on the same folder and port.
    """
    folder = tmp_path_factory.mktemp("tiled")
    (folder / "external").mkdir()
    server = start_server(folder / "server", readable=[folder / "external"])
    yield server
    server.stop()
