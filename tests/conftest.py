"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared reference-data folder, ``<repo>/../shared/data``.

    Fails (never skips) when the folder is missing: tests on real data must not pass silently.
    """
    if not SHARED_DATA_DIR.is_dir():
        pytest.fail(
            f"shared reference data folder not found at {SHARED_DATA_DIR} (expected next to the "
            f"repository {REPO_ROOT}, as <repo>/../shared/data); it holds siemens-star-tike.cxi",
            pytrace=False,
        )
    return SHARED_DATA_DIR
